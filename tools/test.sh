#!/usr/bin/env bash
# One command: install what is missing, build, run every test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/tools/deps.sh"
"$root/tools/build.sh" RelWithDebInfo
cd "${KVTIER_BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "${KVTIER_JOBS:-2}" --timeout 600
