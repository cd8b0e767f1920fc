#!/usr/bin/env bash
# One command: install what is missing, build, run every test, then the fuzz
# targets under ASan and UBSan (tools/fuzz.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/tools/deps.sh"
"$root/tools/build.sh" RelWithDebInfo
(cd "${KVTIER_BUILD_DIR:-$root/build}" &&
  ctest --output-on-failure -j "${KVTIER_JOBS:-2}" --timeout 600)
# The sanitizer pass: every fuzz target, built with ASan and UBSan, runs for a
# bounded time from its committed seed corpus (docs/fuzzing.md).
KVTIER_FUZZ_SECONDS="${KVTIER_FUZZ_SECONDS:-10}" "$root/tools/fuzz.sh"
