#!/usr/bin/env bash
# Creates (or reuses) a virtualenv for the Python tests from pinned PyPI
# requirements, and prints its python.
#   tools/python_env.sh            tests/http/requirements.txt in var/venv
#                                  (the anthropic and openai SDKs)
#   tools/python_env.sh REQ VENV   REQ (a requirements file, relative to the
#                                  repo) in VENV (relative to the repo)
# Idempotent: a venv made from the same requirements is kept. Safe to run
# concurrently (CTest starts several Python tests at once): the first caller
# builds the venv under a lock while the others wait for it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/${1:-tests/http/requirements.txt}"
venv="${KVTIER_VENV:-$root/${2:-var/venv}}"
[[ -f $req ]] || { echo "python_env.sh: no requirements file $req" >&2; exit 1; }
stamp="$venv/.kvtier-requirements"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [[ -x $venv/bin/python ]] && [[ -f $stamp ]] && cmp -s "$req" "$stamp"; then
  echo "$venv/bin/python"
  exit 0
fi
python=$(command -v python3 || true)
if [[ -z $python ]]; then
  echo "python_env.sh: python3 is missing (tools/deps.sh installs it)" >&2
  exit 1
fi
rm -rf "$venv"
"$python" -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
cp "$req" "$stamp"
echo "$venv/bin/python"
