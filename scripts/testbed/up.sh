#!/usr/bin/env bash
# Starts a standing test bed for interactive use: the local control plane (and, with
# --backends, Redis, Prometheus, VictoriaMetrics, InfluxDB) in the background.
#
#   scripts/testbed/up.sh [--backends]
#   source /tmp/metricshard-testbed/env      # KUBECONFIG, kubectl/helm paths, backend URLs
#   "$METRICSHARD_TESTBED_KUBECTL" get ns
#   scripts/testbed/down.sh
#
# The e2e tests do not use it: every test binary starts its own control plane (or uses
# $KUBECONFIG). State lives in $METRICSHARD_TESTBED_STATE (default /tmp/metricshard-testbed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${METRICSHARD_TESTBED_STATE:-/tmp/metricshard-testbed}"
mkdir -p "$state"

if [[ -f "$state/pid" ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
	echo "test bed already running (pid $(cat "$state/pid")); source $state/env" >&2
	exit 0
fi
rm -f "$state/env" "$state/pid"

"$here/build-k8s.sh"
(cd "$root" && cargo build -q -p metricshard-e2e --bin metricshard-testbed)
target_dir="${CARGO_TARGET_DIR:-$root/target}"

# setsid: the test bed must not die with this shell's job control; its children still die
# with it (parent-death signal), and down.sh stops it by pid.
METRICSHARD_E2E_DIR="$state" setsid "$target_dir/debug/metricshard-testbed" "$@" \
	--kubeconfig-out "$state/kubeconfig" --env-out "$state/env.partial" \
	</dev/null >"$state/testbed.log" 2>&1 &
pid=$!
echo "$pid" >"$state/pid"

for _ in $(seq 1 300); do
	if [[ -f "$state/env.partial" ]]; then
		mv "$state/env.partial" "$state/env"
		cat "$state/testbed.log"
		echo "source $state/env    # then: \"\$METRICSHARD_TESTBED_KUBECTL\" get ns"
		exit 0
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		cat "$state/testbed.log" >&2
		echo "test bed failed to start" >&2
		rm -f "$state/pid"
		exit 1
	fi
	sleep 0.5
done
echo "test bed did not come up within 150s; log: $state/testbed.log" >&2
exit 1
