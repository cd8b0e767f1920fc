#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang-14, ASan + UBSan, see
# docs/fuzzing.md) in the sanitizer build, build-asan/ (or
# $KVTIER_SANITIZE_BUILD_DIR; tools/build.sh --sanitize), and runs each
# for $KVTIER_FUZZ_SECONDS (default 20) seconds from a scratch copy of its seed
# corpus, $KVTIER_JOBS (default 2) at a time. Exits 1 if any target crashes,
# leaks, times out or runs out of memory, naming the input that did it.
# Usage: tools/fuzz.sh [TARGET...]    (TARGET: e.g. trace or trace_fuzz; default all)
# Needs clang-14 and libclang-rt-14-dev (Debian 12).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${KVTIER_SANITIZE_BUILD_DIR:-$root/build-asan}"
seconds="${KVTIER_FUZZ_SECONDS:-20}"
jobs="${KVTIER_JOBS:-2}"

targets=()
if [ $# -gt 0 ]; then
  for t in "$@"; do targets+=("${t%_fuzz}"); done
else
  for f in "$root"/tests/fuzz/*_fuzz.cc; do
    t="$(basename "$f" .cc)"
    targets+=("${t%_fuzz}")
  done
fi

start=$SECONDS
build_targets=()
for t in "${targets[@]}"; do build_targets+=("${t}_fuzz"); done
mkdir -p "$build_dir"
if ! KVTIER_SANITIZE_BUILD_DIR="$build_dir" "$root/tools/build.sh" --sanitize "${build_targets[@]}" \
  >"$build_dir/fuzz-build.log" 2>&1; then
  tail -40 "$build_dir/fuzz-build.log" >&2
  echo "tools/fuzz.sh: build failed; log $build_dir/fuzz-build.log" >&2
  exit 1
fi
echo "tools/fuzz.sh: built ${#targets[@]} targets in $((SECONDS - start)) s"

# Runs write only under $scratch: corpus copies, artifacts, temporary files.
# RocksDB stores go to tmpfs when there is one with 1 GiB free (fsync is free
# there; a container's 64 MiB /dev/shm is not enough); the flash target needs
# O_DIRECT, so it stays on the build directory's disk.
scratch="$build_dir/fuzz-run"
rm -rf "$scratch"
mkdir -p "$scratch"
fast_tmp="$scratch"
shm_free_kib="$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')"
if [ -w /dev/shm ] && [ "${shm_free_kib:-0}" -ge 1048576 ]; then
  fast_tmp="$(mktemp -d /dev/shm/kvtier-fuzz.XXXXXX)"
  trap 'rm -rf "$fast_tmp"' EXIT
fi

run_one() {
  local t="$1" dir="$scratch/$1"
  local tmp="$fast_tmp/$t"
  [ "$t" = flash_recovery ] && tmp="$dir/tmp"
  mkdir -p "$dir/corpus" "$tmp"
  if [ -d "$root/tests/fuzz/corpus/$t" ]; then cp -r "$root/tests/fuzz/corpus/$t/." "$dir/corpus/"; fi
  # -timeout: one input may take 25 s at most (a hang is a failure too).
  TMPDIR="$tmp" UBSAN_OPTIONS=print_stacktrace=1 \
    "$build_dir/bin/${t}_fuzz" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$dir/" "$dir/corpus" >"$dir/log" 2>&1
}

start=$SECONDS
pids=() names=()
failed=()
reap() {  # waits for the oldest run
  local pid="${pids[0]}" t="${names[0]}"
  pids=("${pids[@]:1}") names=("${names[@]:1}")
  if wait "$pid"; then
    local runs
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$t/log" | grep -o '[0-9]*$' || echo '?')"
    echo "tools/fuzz.sh: ${t}_fuzz ok ($runs runs)"
  else
    failed+=("$t")
    echo "tools/fuzz.sh: ${t}_fuzz FAILED; log $scratch/$t/log" >&2
    grep -E '==ERROR|FUZZ_CHECK|runtime error|SUMMARY|Test unit written' "$scratch/$t/log" |
      head -20 >&2 || true
    for a in "$scratch/$t"/crash-* "$scratch/$t"/leak-* "$scratch/$t"/timeout-* "$scratch/$t"/oom-*; do
      if [ -e "$a" ]; then echo "tools/fuzz.sh: crash input: $a" >&2; fi
    done
  fi
}
for t in "${targets[@]}"; do
  [ -x "$build_dir/bin/${t}_fuzz" ] || { echo "tools/fuzz.sh: no target ${t}_fuzz" >&2; exit 2; }
  run_one "$t" &
  pids+=("$!") names+=("$t")
  [ "${#pids[@]}" -ge "$jobs" ] && reap
done
while [ "${#pids[@]}" -gt 0 ]; do reap; done
echo "tools/fuzz.sh: ran ${#targets[@]} targets for ${seconds} s each in $((SECONDS - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "tools/fuzz.sh: FAILED: ${failed[*]} (docs/fuzzing.md: turning a crash into a regression seed)" >&2
  exit 1
fi
