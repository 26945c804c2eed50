#!/usr/bin/env bash
# Exposition parse throughput of metricshard's parser against Prometheus' own (model/textparse at
# the version pinned in go.mod), on the same generated body and machine, in one run.
#   bench/parser-vs-prometheus/run.sh
# Prints both figures per format and their ratio (metricshard samples/s ÷ Prometheus samples/s).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
bodies="$(mktemp -d)"
trap 'rm -rf "$bodies"' EXIT

(cd "$repo" && PARSER_BENCH_BODY_DIR="$bodies" cargo bench -p metricshard-collector --bench parser -- --noplot >&2)
(cd "$here" && GOFLAGS=-mod=readonly go build -o "$bodies/textparse-bench" .)

for case in "text text.prom text_0_0_4" "openmetrics openmetrics.txt openmetrics_1_0"; do
  read -r format file criterion_id <<<"$case"
  samples=$(grep -c '^[^#]' "$bodies/$file")
  ours_ns=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' \
    "$target/criterion/exposition_parse/$criterion_id/new/estimates.json")
  ours=$(python3 -c "print(round($samples / $ours_ns * 1e9))")
  echo "metricshard format=$format samples=$samples ns_per_body=${ours_ns%.*} samples_per_s=$ours"
  "$bodies/textparse-bench" -body "$bodies/$file" -format "$format" | while read -r line; do
    echo "$line"
    theirs=$(sed -n 's/.*samples_per_s=\([0-9]*\).*/\1/p' <<<"$line")
    mode=$(sed -n 's/.*mode=\([a-z]*\).*/\1/p' <<<"$line")
    python3 -c "print(f'ratio format=$format vs mode=$mode: {$ours / $theirs:.2f}x')"
  done
done
