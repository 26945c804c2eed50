#!/usr/bin/env bash
# Stops the test bed started by up.sh (its processes die with it).
set -euo pipefail

state="${METRICSHARD_TESTBED_STATE:-/tmp/metricshard-testbed}"
if [[ ! -f "$state/pid" ]]; then
	echo "no test bed running (no $state/pid)" >&2
	exit 0
fi
pid="$(cat "$state/pid")"
if kill -0 "$pid" 2>/dev/null; then
	kill -TERM "$pid"
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid"
	fi
fi
rm -f "$state/pid" "$state/env"
echo "test bed stopped"
