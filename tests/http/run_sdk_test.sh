#!/usr/bin/env bash
# Runs one SDK test (tests/http/NAME.py) in the venv tools/python_env.sh
# makes; CTest calls it with KVTIER_BIN_DIR set.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python=$("$root/tools/python_env.sh")
cd "$root/tests/http"
exec "$python" -m unittest -v "$1"
