#!/usr/bin/env bash
# Builds the benchmarks (Release) and runs them; with --json each bench's JSON
# object is collected, one per line, into build-release/bench-results.jsonl.
# With --peer, the engine is also measured against vLLM's CPU engine
# (bench/peer/vllm_cpu.sh: a 6 GB virtualenv, minutes; not in CI), whose
# ratios kvtier / vLLM are the last JSON object.
# Usage: tools/bench.sh [--json] [--peer] [bench-name ...]   (default: every bench)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
json=""
peer=""
while [ $# -gt 0 ]; do
  case $1 in
    --json) json="--json"; shift ;;
    --peer) peer=1; shift ;;
    *) break ;;
  esac
done
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
if [ -n "$peer" ]; then
  echo "== vllm_cpu (peer)" >&2
  KVTIER_BIN_DIR="$KVTIER_BUILD_DIR/bin" "$root/bench/peer/vllm_cpu.sh" | tee /dev/stderr |
    tail -n 1 >>"$results"
fi
[ -n "$json" ] && echo "results: $results" >&2
exit 0
