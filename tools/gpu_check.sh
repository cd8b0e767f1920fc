#!/usr/bin/env bash
# Runs on a GPU machine from a bundle made by tools/gpu_bundle.sh: the GPU
# tests, kvtierd --device cuda against the real tiny model's golden output, and
# gpu_bench --json. Logs and the bench's JSON go to OUT_DIR.
# Usage: bash gpu-bundle/gpu_check.sh OUT_DIR [--quick]
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: gpu_check.sh OUT_DIR [--quick]}"
if [ -f "$here/bundle.tar.gz" ]; then
  unpacked=$(mktemp -d)
  tar -C "$unpacked" -xzf "$here/bundle.tar.gz"
  here="$unpacked"
fi
quick="${2:-}"
mkdir -p "$out"
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KVTIER_SHARED_DATA="$here/data"
nvidia-smi -L || true
status=0
for t in kernels_test hbm_test gpu_forward_test; do
  timeout 300 "$here/bin/$t" --gtest_brief=1 >"$out/$t.log" 2>&1
  rc=$?
  echo "== $t rc=$rc"
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|error|Expected|Which is|actual" "$out/$t.log" | head -40
  [ $rc -ne 0 ] && status=1
done

timeout 300 "$here/bin/engine_test" --gtest_brief=1 --gtest_filter='*Cuda*:*Device*' \
  >"$out/engine_test.log" 2>&1
rc=$?
echo "== engine_test (cuda) rc=$rc"
grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|actual" "$out/engine_test.log" | head -20
[ $rc -ne 0 ] && status=1

# kvtierd on the GPU: the golden greedy output of stories260K through the API.
data=$(mktemp -d)
"$here/bin/kvtierd" --device cuda --data-dir "$data" --listen 127.0.0.1:50077 \
  --model "$here/data/models/stories260K/stories260K.bin" --metrics-listen "" \
  >"$out/kvtierd.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  "$here/bin/kvtier" --addr 127.0.0.1:50077 health >/dev/null 2>&1 && break
  sleep 0.2
done
grep -o '"device":"[a-z]*"' "$out/kvtierd.log" | head -1
"$here/bin/kvtier" --addr 127.0.0.1:50077 --json generate --tokens 1 --no-bos --max-tokens 256 \
  --ignore-eos >"$out/generate.json" 2>&1
echo "== generate rc=$?"; head -c 600 "$out/generate.json"; echo
"$here/bin/kvtier" --addr 127.0.0.1:50077 --json generate --tokens 1 --no-bos --max-tokens 256 \
  --ignore-eos >"$out/generate2.json" 2>&1
head -c 300 "$out/generate2.json"; echo
# The first 256 generated ids against the golden file (stopping where the
# model emits BOS, as the golden run did).
python3 - "$out/generate.json" "$out/generate2.json" \
  "$here/data/models/stories260K/greedy_t0_expected.json" <<'PY' || status=1
import json, sys
golden = json.load(open(sys.argv[3]))["generated_token_ids"]
for f in sys.argv[1:3]:
    got = json.loads(open(f).read().strip().splitlines()[-1])["token_ids"]
    got = got[:got.index(1)] if 1 in got else got
    ok = got[:len(golden)] == golden
    print(f, "golden match" if ok else "MISMATCH", len(got), len(golden))
    if not ok:
        sys.exit(1)
PY
kill -TERM $pid; wait $pid
echo "== kvtierd exit $?"
tail -n 5 "$out/kvtierd.log"

timeout 400 "$here/bin/gpu_bench" --json $quick >"$out/gpu_bench.log" 2>&1
echo "== gpu_bench rc=$?"
cat "$out/gpu_bench.log" | tail -n 30
exit $status
