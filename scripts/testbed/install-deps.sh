#!/usr/bin/env bash
# Installs the Debian packages the test bed runs: Redis, Prometheus (remote-write receiver),
# VictoriaMetrics, InfluxDB 1.x, node_exporter (the reference the host source is tested
# against), plus openssl and curl. Idempotent: when every program is already on the machine it
# does nothing (not even `apt-get update`).
#
# The test harness starts its own instances on free loopback ports with their own data dirs, so
# any daemon the packages start is stopped again here (and kept from starting during install).
set -euo pipefail

log() { printf '[install-deps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# program -> Debian package
declare -A packages=(
	[redis-server]=redis-server
	[redis-cli]=redis-tools
	[prometheus]=prometheus
	[victoria-metrics]=victoria-metrics
	[influxd]=influxdb
	[prometheus-node-exporter]=prometheus-node-exporter
	[openssl]=openssl
	[curl]=curl
)

missing=()
for program in "${!packages[@]}"; do
	command -v "$program" >/dev/null 2>&1 || missing+=("${packages[$program]}")
done

if ((${#missing[@]} == 0)); then
	log "all test bed packages already installed"
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	sudo=(sudo)
fi

# Keep the packages' init scripts from starting daemons during installation. Debian's
# invoke-rc.d honours /usr/sbin/policy-rc.d exiting 101 ("action forbidden"). An existing
# policy (container images ship one) is left as it is.
policy=/usr/sbin/policy-rc.d
installed_policy=0
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\n# metricshard install-deps: no service starts during install\nexit 101\n' |
		"${sudo[@]}" tee "$policy" >/dev/null
	"${sudo[@]}" chmod 755 "$policy"
	installed_policy=1
fi
cleanup_policy() {
	if ((installed_policy)); then
		"${sudo[@]}" rm -f "$policy"
	fi
}
trap cleanup_policy EXIT

start=$SECONDS
log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

# Belt and braces: if some daemon started anyway (no policy honoured, systemd running), stop
# and disable it so it holds neither ports nor data directories the tests might want.
for service in redis-server prometheus victoria-metrics influxdb prometheus-node-exporter; do
	if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
		"${sudo[@]}" systemctl disable --now "$service" >/dev/null 2>&1 || true
	elif command -v service >/dev/null 2>&1; then
		"${sudo[@]}" service "$service" stop >/dev/null 2>&1 || true
	fi
done
# Anything still running from the packages' own service users (not our test instances, which
# run as the invoking user with their data under a temp dir) is killed by its exact pid.
for user in redis prometheus victoriametrics influxdb; do
	if id "$user" >/dev/null 2>&1; then
		for pid in $(pgrep -u "$user" 2>/dev/null || true); do
			log "stopping package daemon pid $pid (user $user)"
			"${sudo[@]}" kill "$pid" 2>/dev/null || true
		done
	fi
done

for program in "${!packages[@]}"; do
	command -v "$program" >/dev/null 2>&1 || { log "still missing after install: $program"; exit 1; }
done
log "installed in $((SECONDS - start))s"
