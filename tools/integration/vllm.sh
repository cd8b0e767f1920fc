#!/usr/bin/env bash
# vLLM (CPU build) with kvtier behind it, end to end; not in CI (a 6 GB
# virtualenv, minutes of CPU). Run by hand or by tools/test.sh --integration.
#
#   tools/integration/vllm.sh
#
# Sets up the vLLM virtualenv once (vllm_env.sh), writes the bench50m model
# (kvtier-mkmodel), starts kvtierd, then runs four vLLM engine processes one
# after another on one prompt (a 2048-token shared prefix and a short tail):
#   producer  with KvtierConnector: computes it cold and publishes its blocks
#   consumer  with KvtierConnector, a new process with an empty prefix cache:
#             must load the shared prefix from kvtierd
#   consumer2 the same again: the second reuse, after kvtierd saw the first
#             (its cost model may have promoted the blocks by then)
#   baseline  without a connector: reference tokens, cold and local-hit TTFT
# and checks that the consumer loaded the prefix (vLLM's external prefix-cache
# hit counter), that its greedy tokens equal the baseline's and its top
# logprobs equal vLLM's own prefix-hit run's, and that its TTFT is below the
# cold one. The last line printed is one JSON object; exit 1 if a check fails.
#
# Needs build/bin/kvtierd and build/bin/kvtier-mkmodel ($KVTIER_BIN_DIR).
# KVTIER_VLLM_DTYPE=bfloat16 runs the model and its KV in bf16 (default float32).
# KVTIER_DAEMON_ARGS adds kvtierd flags, e.g. "--dram-price 0 --flash-price 0
#   --rocks-price 0" to keep every block in DRAM (docs/placement.md).
# KVTIER_BLOCK_TOKENS=256 makes kvtier's blocks 256 tokens (2 of vLLM's 128).
# KVTIER_KEEP=1 keeps the work directory (logs, model) for a look.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin_dir="${KVTIER_BIN_DIR:-$root/build/bin}"
for b in kvtierd kvtier-mkmodel; do
  [[ -x $bin_dir/$b ]] || { echo "vllm.sh: $bin_dir/$b is missing; build it first (tools/build.sh)" >&2; exit 1; }
done

dtype="${KVTIER_VLLM_DTYPE:-float32}"
case $dtype in
  float32) model_dtype=f32 ;;
  bfloat16) model_dtype=bf16 ;;
  *) echo "vllm.sh: KVTIER_VLLM_DTYPE is float32 or bfloat16, not $dtype" >&2; exit 1 ;;
esac
python=$("$root/tools/integration/vllm_env.sh")
work=$(mktemp -d "${TMPDIR:-/tmp}/kvtier-vllm.XXXXXX")
daemon_pid=""
cleanup() {
  if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill "$daemon_pid"
    wait "$daemon_pid" || true
  fi
  if [[ -n ${KVTIER_KEEP:-} ]]; then
    echo "vllm.sh: kept $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

echo "vllm.sh: model" >&2
"$bin_dir/kvtier-mkmodel" --preset bench50m --dtype "$model_dtype" --out "$work/model" >&2

echo "vllm.sh: kvtierd" >&2
read -r -a daemon_args <<<"${KVTIER_DAEMON_ARGS:-}"
"$bin_dir/kvtierd" --listen 127.0.0.1:0 --data-dir "$work/data" --no-engine \
  --metrics-listen "" --http-listen "" --dram-bytes 1G --flash-bytes 256M \
  --flash-region-bytes 16M --shm-socket "$work/kvtierd.sock" "${daemon_args[@]}" \
  >"$work/kvtierd.out" 2>"$work/kvtierd.log" &
daemon_pid=$!
line=""
for _ in $(seq 300); do
  line=$(head -n 1 "$work/kvtierd.out" 2>/dev/null || true)
  [[ $line == "kvtierd serving on "* ]] && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/kvtierd.log" >&2; echo "vllm.sh: kvtierd did not start" >&2; exit 1; }
  sleep 0.1
done
[[ $line == "kvtierd serving on "* ]] || { echo "vllm.sh: kvtierd did not report its address" >&2; exit 1; }
addr=${line##* }

# vLLM's CPU KV cache (GiB); the prompt needs a few MB.
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
run_engine() {
  local role=$1
  shift
  echo "vllm.sh: vLLM $role" >&2
  if ! "$python" "$root/tools/integration/vllm_driver.py" run --role "$role" \
      --model "$work/model" --dtype "$dtype" --out "$work/$role.json" "$@" \
      >"$work/$role.log" 2>&1; then
    tail -n 60 "$work/$role.log" >&2
    echo "vllm.sh: the $role engine failed (log: $work/$role.log; KVTIER_KEEP=1 keeps it)" >&2
    exit 1
  fi
  grep "kvtier:" "$work/$role.log" | sed "s/^/vllm.sh: $role: /" >&2 || true
}
kvtier_args=(--addr "$addr" --block-tokens "${KVTIER_BLOCK_TOKENS:-0}")
run_engine producer "${kvtier_args[@]}"
run_engine consumer "${kvtier_args[@]}"
run_engine consumer2 "${kvtier_args[@]}"
run_engine baseline

"$python" "$root/tools/integration/vllm_driver.py" compare \
  "$work/producer.json" "$work/consumer.json" "$work/consumer2.json" "$work/baseline.json"
