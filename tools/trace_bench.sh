#!/usr/bin/env bash
# Replays the shared serving traces through every eviction policy and Belady
# (Release build of kvtier-trace), and the Mooncake trace through each tier
# stack of bench/scenarios/*.json; renders the miss-ratio and occupancy plots
# into bench/plots/ and rewrites the trace section of bench/RESULTS.md
# (between its trace markers). One command regenerates it all.
# Usage: tools/trace_bench.sh   (needs ../shared/data/traces; gnuplot from tools/deps.sh --bench)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
traces="${KVTIER_SHARED_DATA:-$root/../shared/data}/traces"
"$root/tools/deps.sh" --bench
export KVTIER_BUILD_DIR="${KVTIER_BUILD_DIR:-$root/build-release}"
"$root/tools/build.sh" Release -DKVTIER_BUILD_TESTS=OFF >/dev/null
bin="$KVTIER_BUILD_DIR/bin/kvtier-trace"
sizes=0.005,0.01,0.02,0.05,0.1,0.2,0.5,inf
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$bin" --trace "$traces/mooncake_fast25/conversation_trace.jsonl" --format mooncake \
  --sizes "$sizes" --markdown "$out/mooncake.md" --plot "$root/bench/plots/mooncake" \
  --json | tail -n 1 >"$out/mooncake.json"
for t in conv code; do
  "$bin" --trace "$traces/azure_llm_2023/AzureLLMInferenceTrace_$t.csv" --format azure \
    --azure-shared-prefix-tokens 1024 --sizes "$sizes" --markdown "$out/azure_$t.md" \
    --plot "$root/bench/plots/azure_$t" >/dev/null
done
scenarios=()
for f in "$root"/bench/scenarios/*.json; do
  name=$(basename "$f" .json)
  scenarios+=("$name")
  "$bin" --trace "$traces/mooncake_fast25/conversation_trace.jsonl" --format mooncake \
    --scenario "$f" --tier-policies all --markdown "$out/scenario_$name.md" \
    --plot "$root/bench/plots/mooncake_$name" >/dev/null
done
# Plots carry absolute paths of this machine in their scripts: keep the SVGs.
find "$root/bench/plots" -name '*.dat' -delete -o -name '*.gp' -delete

inf=$(grep -o '"infinite_hit_ratio":[0-9.]*' "$out/mooncake.json" | cut -d: -f2)
refs=$(grep -o '"block_refs":[0-9]*' "$out/mooncake.json" | cut -d: -f2)
{
  echo "<!-- trace:begin (tools/trace_bench.sh writes this section) -->"
  echo "## kvtier-trace: eviction policies on real traces"
  echo
  echo "Regenerate with \`tools/trace_bench.sh\`. Each cell is block hit ratio / token"
  echo "hit ratio (prefill tokens saved) with prefix semantics at a tier size in blocks"
  echo "(fractions of the footprint); \`belady\` is the offline bound (docs/traces.md)."
  echo "The last column is the slowest replay's speed on this machine (one core)."
  echo "gdsf and ttl-cost coincide on every trace here: the traces carry no TTLs, so"
  echo "ttl-cost ranks by GDSF's priority alone. Other rows that coincide (lfu and sieve on"
  echo "Mooncake) do so on that trace only: they differ on a Zipf trace, and each policy's"
  echo "decisions are pinned on hand traces in tests/cache/*_policy_test.cc."
  echo
  echo "### Mooncake FAST'25 conversation trace ($refs block references, infinite-cache hit ratio $inf)"
  echo
  cat "$out/mooncake.md"
  echo
  echo "![miss ratio](plots/mooncake/miss_ratio.svg)"
  echo
  echo "### Tiered: the Mooncake trace through the drain-time placement"
  echo
  echo '`kvtier-trace --scenario` replays the trace through the daemon'"'"'s CacheManager over'
  echo "a tier stack from bench/scenarios/ (sizes only: no bytes stored; docs/traces.md)."
  echo "Hit share: of the block hits, the part each tier served. TTFT is prefill at the"
  echo "scenario's FLOP/s plus hit fetches at the tier's bandwidth. Costs per million input"
  echo "tokens: the tiers provisioned for the trace's hour, or only the bytes they held"
  echo "(a shared service), plus the GPU's prefill and fetch time; against no cache and"
  echo "against everything in HBM (sized to the whole footprint)."
  echo
  echo "Reading them: the cache cuts TTFT by the share of prefill it saves, but at these"
  echo "prices the tiers' hardware (HBM and DRAM above all) can cost more than the GPU time"
  echo "saved on one hour of this trace, most of whose blocks are never used again: compare"
  echo "the tiered and no-cache rows. The cost model prices a block as if it will be reused"
  echo "(DESIGN §4); it does not weigh the chance that it is not. Everything in HBM is the"
  echo "upper bound on hits and costs one to two orders of magnitude more."
  for name in "${scenarios[@]}"; do
    cat "$out/scenario_$name.md"
    echo
    echo "![occupancy](plots/mooncake_$name/occupancy.svg)"
  done
  for t in conv code; do
    echo
    echo "### Azure LLM inference 2023, $t (synthetic: every request shares its first 1024 tokens)"
    echo
    echo "The Azure traces have no prefix hashes; this assumes one shared system prompt."
    echo
    cat "$out/azure_$t.md"
    echo
    echo "![miss ratio](plots/azure_$t/miss_ratio.svg)"
  done
  echo "<!-- trace:end -->"
} >"$out/section.md"
results="$root/bench/RESULTS.md"
if grep -q '<!-- trace:begin' "$results"; then
  awk -v section="$out/section.md" '
    /<!-- trace:begin/ { while ((getline line < section) > 0) print line; skip = 1; next }
    /<!-- trace:end -->/ { skip = 0; next }
    !skip { print }' "$results" >"$out/results.md"
  cp "$out/results.md" "$results"
else
  { echo; cat "$out/section.md"; } >>"$results"
fi
echo "bench/RESULTS.md: trace section rewritten; plots in bench/plots/" >&2
