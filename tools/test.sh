#!/usr/bin/env bash
# What CI runs (.ci/run); one command, each step timed:
#   deps        install what is missing (tools/deps.sh)
#   layout      the #include dependency rule (tools/check_layout.sh)
#   format      clang-format (tools/lint.sh format)
#   build       build/ (or $KVTIER_BUILD_DIR), RelWithDebInfo, warnings are errors
#   ctest       every test
#   asan build  the ASan + UBSan build, build-asan/ (tools/build.sh --sanitize)
#   tidy        clang-tidy over both builds' sources (tools/lint.sh tidy)
#   asan ctest  every test again, under the sanitizers
#   fuzz        each fuzz target for $KVTIER_FUZZ_SECONDS (10) s (tools/fuzz.sh)
# Usage: tools/test.sh [--sanitize | --integration]
#   --sanitize: deps, then only the sanitizer steps (asan build, asan ctest, fuzz).
#   --integration: deps, the build, then the integrations too large for CI:
#     vLLM's CPU engine with kvtier's connector (tools/integration/vllm.sh,
#     a 6 GB virtualenv outside the repo; docs/vllm.md).
# With KVTIER_CI=1 (.ci/run sets it: a fresh clone, 2 cores, a time budget)
# the build has no debug info (-O2, a third faster to compile) and clang-tidy
# skips tests/ (tools/lint.sh tidy checks them; CI's budget does not).
# docs/ci.md says what each step checks and how long it takes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${KVTIER_BUILD_DIR:-$root/build}"
asan_dir="${KVTIER_SANITIZE_BUILD_DIR:-$root/build-asan}"
jobs="${KVTIER_JOBS:-2}"
# Tests at once: two per job. About half of a test's time is waiting (daemons
# starting, sockets, timers), so two a core keep the cores busy (docs/ci.md).
test_jobs="${KVTIER_TEST_JOBS:-$((2 * jobs))}"
sanitize_only=""
integration=""
case "${1:-}" in
  "") ;;
  --sanitize) sanitize_only=1 ;;
  --integration) integration=1 ;;
  *) echo "usage: tools/test.sh [--sanitize | --integration]" >&2; exit 2 ;;
esac

timings=()
report() {
  [ ${#timings[@]} -eq 0 ] || printf 'tools/test.sh: %s\n' "${timings[@]}"
}
trap report EXIT
# step NAME COMMAND...: runs COMMAND, then notes how long it took.
step() {
  local name="$1" start=$SECONDS
  shift
  echo "tools/test.sh: == $name"
  if ! "$@"; then
    timings+=("$(printf '%-11s FAILED after %4d s' "$name" $((SECONDS - start)))")
    exit 1
  fi
  timings+=("$(printf '%-11s %4d s' "$name" $((SECONDS - start)))")
}

run_ctest() {
  (cd "$1" && ctest --output-on-failure -j "$test_jobs" --timeout 600)
}

run_asan_ctest() {
  # A UBSan report carries its stack (ASan's always do). Leaks fail a test too:
  # LeakSanitizer is on with ASan.
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}" run_ctest "$asan_dir"
}

build_args=(RelWithDebInfo)
tidy_env=()
if [ "${KVTIER_CI:-}" = 1 ]; then
  build_args=(Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG" "-DCMAKE_C_FLAGS_RELEASE=-O2 -DNDEBUG")
  tidy_env=(KVTIER_TIDY_EXCLUDE=tests/)
fi

step deps "$root/tools/deps.sh"
if [ -n "$integration" ]; then
  step build "$root/tools/build.sh" "${build_args[@]}"
  step vllm "$root/tools/integration/vllm.sh"
  exit 0
fi
if [ -z "$sanitize_only" ]; then
  step layout "$root/tools/check_layout.sh"
  step format "$root/tools/lint.sh" format
  step build "$root/tools/build.sh" "${build_args[@]}" -DKVTIER_WERROR=ON
  step ctest run_ctest "$build_dir"
fi
step "asan build" "$root/tools/build.sh" --sanitize
if [ -z "$sanitize_only" ]; then
  step tidy env "${tidy_env[@]}" "$root/tools/lint.sh" tidy "$asan_dir" "$build_dir"
fi
step "asan ctest" run_asan_ctest
step fuzz env KVTIER_FUZZ_SECONDS="${KVTIER_FUZZ_SECONDS:-10}" \
  KVTIER_SANITIZE_BUILD_DIR="$asan_dir" "$root/tools/fuzz.sh"
