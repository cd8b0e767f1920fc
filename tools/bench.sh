#!/usr/bin/env bash
# Builds the benchmarks (Release) and runs them; with --json each bench's JSON
# object is collected, one per line, into build-release/bench-results.jsonl.
# Usage: tools/bench.sh [--json] [bench-name ...]   (default: every bench)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
json=""
if [ "${1:-}" = "--json" ]; then json="--json"; shift; fi
"$root/tools/deps.sh" --bench
export KVTIER_BUILD_DIR="${KVTIER_BUILD_DIR:-$root/build-release}"
"$root/tools/build.sh" Release -DKVTIER_BUILD_TESTS=OFF -DKVTIER_BUILD_BENCH=ON
benches=("$@")
[ ${#benches[@]} -eq 0 ] && benches=(key_hashing_bench tier_bench engine_bench policy_bench load_bench)
results="$KVTIER_BUILD_DIR/bench-results.jsonl"
: >"$results"
for b in "${benches[@]}"; do
  echo "== $b" >&2
  if [ -n "$json" ]; then
    "$KVTIER_BUILD_DIR/bin/$b" --json | tee /dev/stderr | tail -n 1 >>"$results"
  else
    "$KVTIER_BUILD_DIR/bin/$b"
  fi
done
[ -n "$json" ] && echo "results: $results" >&2
exit 0
