#!/usr/bin/env bash
# Cross-checks kvtier's eviction policies against libCacheSim (the
# `libcachesim` PyPI package), reference by reference: each block reference
# of a trace counted on its own (kvtier-trace --semantics independent), same
# sequence, same cache sizes; bench/peer/libcachesim_check.py says what it
# compares and why some counts differ.
#   tools/libcachesim_check.sh                  the Mooncake conversation trace
#                                               and both Azure LLM traces (1024
#                                               shared prefix tokens) at 1%, 5%
#                                               and 25% of the footprint
#   tools/libcachesim_check.sh ARGS...          libcachesim_check.py with ARGS
#                                               (--trace, --format, --sizes ...)
# Needs build/bin/kvtier-trace (or $KVTIER_BUILD_DIR/bin); the venv is made
# once in ~/.cache/kvtier/libcachesim-venv from bench/peer/requirements-libcachesim.txt.
# $KVTIER_TRACES: the traces' folder (default /work/shared/data/traces).
# $KVTIER_LIBCACHESIM_MD: also append the tables to this Markdown file.
# Exits 1 when a count differs for a reason not documented in the script.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${KVTIER_BUILD_DIR:-$root/build}/bin/kvtier-trace"
[[ -x $bin ]] || { echo "tools/libcachesim_check.sh: $bin not built (tools/build.sh)" >&2; exit 2; }
python=$(KVTIER_VENV="$HOME/.cache/kvtier/libcachesim-venv" \
  tools/python_env.sh bench/peer/requirements-libcachesim.txt)
check=("$python" bench/peer/libcachesim_check.py --kvtier-trace "$bin")
[[ -n ${KVTIER_LIBCACHESIM_MD:-} ]] && check+=(--markdown "$KVTIER_LIBCACHESIM_MD")
if (($# > 0)); then
  exec "${check[@]}" "$@"
fi
traces="${KVTIER_TRACES:-/work/shared/data/traces}"
status=0
"${check[@]}" --trace "$traces/mooncake_fast25/conversation_trace.jsonl" --format mooncake || status=1
for t in code conv; do
  echo
  "${check[@]}" --trace "$traces/azure_llm_2023/AzureLLMInferenceTrace_$t.csv" --format azure \
    --azure-shared-prefix-tokens 1024 || status=1
done
exit $status
