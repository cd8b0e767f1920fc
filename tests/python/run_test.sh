#!/usr/bin/env bash
# Runs one Python test module (tests/python/NAME.py) against the real kvtierd
# in $KVTIER_BIN_DIR (CTest sets it), in the venv tools/python_env.sh makes
# from tests/python/requirements.txt, with clients/python installed editable.
#   tests/python/run_test.sh client_test
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 TEST_MODULE" >&2; exit 2; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python=$("$root/tools/python_env.sh" tests/python/requirements.txt var/venv-client)
venv="$(dirname "$(dirname "$python")")"
# pip install -e again only when pyproject.toml or the set of top-level
# packages changed: the editable install's import hook maps just the packages
# that existed when it was made. Under the venv's lock (as python_env.sh
# takes it), since CTest starts several of these at once.
want="$(cat "$root/clients/python/pyproject.toml"; printf '%s\n' "$root"/clients/python/*/__init__.py)"
stamp="$venv/.kvtier-client-editable"
exec 9>"$venv.lock"
flock 9
if [[ ! -f $stamp ]] || [[ "$(cat "$stamp")" != "$want" ]]; then
  "$python" -m pip install --quiet --disable-pip-version-check -e "$root/clients/python" >&2
  printf '%s' "$want" >"$stamp"
fi
exec 9>&-
cd "$root/tests/python"
exec "$python" -m unittest -v "$1"
