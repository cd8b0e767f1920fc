#!/usr/bin/env bash
# Creates (or reuses) the virtualenv the SDK tests run in: var/venv with the
# pinned client SDKs of tests/http/requirements.txt from PyPI. Idempotent: a
# venv made from the same requirements is kept. Prints the venv's python.
# Safe to run concurrently (CTest starts both SDK tests at once): the first
# caller builds the venv under a lock while the others wait for it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KVTIER_VENV:-$root/var/venv}"
req="$root/tests/http/requirements.txt"
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
