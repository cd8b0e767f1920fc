#!/usr/bin/env bash
# Configures and builds kvtier into build/ (or $KVTIER_BUILD_DIR) with two
# jobs. Usage: tools/build.sh [Release|RelWithDebInfo|Debug] [extra cmake args]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_type="${1:-RelWithDebInfo}"
shift || true
build_dir="${KVTIER_BUILD_DIR:-$root/build}"
jobs="${KVTIER_JOBS:-2}"

cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" "$@" >/dev/null
cmake --build "$build_dir" -j "$jobs"
