#!/usr/bin/env bash
# Runs every fuzz target of the collector (collector/fuzz) for a bounded time each, with libFuzzer
# through cargo fuzz. Usage: scripts/fuzz.sh [seconds per target, default 30] [target ...]
# A crash stops the script with the failing input saved under collector/fuzz/artifacts/<target>/.
# cargo fuzz passes unstable compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them,
# so no nightly toolchain is needed. No sanitizer: the workspace forbids unsafe code, so what a run
# looks for is panics, overflows, unbounded allocation and hangs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
cache="${METRICSHARD_CACHE:-$HOME/.cache/metricshard}"
cargo_fuzz="$cache/cargo-fuzz/bin/cargo-fuzz"
if [ ! -x "$cargo_fuzz" ]; then
  cargo install cargo-fuzz --locked --version 0.13.2 --root "$cache/cargo-fuzz"
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$cache/fuzz-target"
cd collector
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("$cargo_fuzz" list)
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
  # The corpus grows between runs on one machine (cached); the committed seeds start it.
  corpus="$cache/fuzz-corpus/$target"
  mkdir -p "$corpus"
  echo "[fuzz] $target for ${seconds}s"
  # -rss_limit_mb and -malloc_limit_mb make unbounded allocation a finding, not a slow machine.
  if ! "$cargo_fuzz" run --sanitizer none "$target" "$corpus" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "[fuzz] $target failed; a crashing input is under collector/fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" | tr '\n' ' '
  echo
done
