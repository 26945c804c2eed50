#!/usr/bin/env bash
# Runs the whole test suite, starting from a fresh machine: installs the Debian packages the
# tests run (Redis, Prometheus, VictoriaMetrics, InfluxDB), builds and caches the pinned
# Kubernetes control plane and helm, builds the project's binaries, then runs every test tier.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p metricshard-collector`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testbed/install-deps.sh
scripts/testbed/build-k8s.sh
# The end-to-end tests start the built collector and operator as processes.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast "$@"
