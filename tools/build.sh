#!/usr/bin/env bash
# Configures and builds kvtier with $KVTIER_JOBS (default 2) jobs.
# Usage: tools/build.sh [Release|RelWithDebInfo|Debug] [extra cmake args]
#          into build/ (or $KVTIER_BUILD_DIR)
#        tools/build.sh --sanitize [TARGET...]
#          the ASan + UBSan build into build-asan/ (or $KVTIER_SANITIZE_BUILD_DIR):
#          clang-14 with KVTIER_FUZZ=ON, so it holds the tests and the fuzz
#          targets; no benchmarks, no CUDA. Only the TARGETs when given.
# $KVTIER_BUILD_LOCK names a lock file held while building, for machines
# shared by several builds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="${KVTIER_JOBS:-2}"
lock=()
[ -n "${KVTIER_BUILD_LOCK:-}" ] && lock=(flock "$KVTIER_BUILD_LOCK")

if [ "${1:-}" = "--sanitize" ]; then
  shift
  for tool in clang-14 clang++-14; do
    command -v "$tool" >/dev/null ||
      { echo "tools/build.sh: $tool not found (tools/deps.sh installs it)" >&2; exit 2; }
  done
  build_dir="${KVTIER_SANITIZE_BUILD_DIR:-$root/build-asan}"
  # -O1 without NDEBUG: asserts stay on, and line tables make reports readable.
  CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build_dir" -G Ninja \
    -DKVTIER_FUZZ=ON -DKVTIER_WERROR=ON -DKVTIER_CUDA=OFF -DKVTIER_BUILD_TESTS=ON \
    -DKVTIER_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" >/dev/null
  targets=()
  [ $# -gt 0 ] && targets=(--target "$@")
  "${lock[@]}" cmake --build "$build_dir" -j "$jobs" "${targets[@]}"
  exit
fi

build_type="${1:-RelWithDebInfo}"
shift || true
build_dir="${KVTIER_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" "$@" >/dev/null
"${lock[@]}" cmake --build "$build_dir" -j "$jobs"
