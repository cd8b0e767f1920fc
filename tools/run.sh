#!/usr/bin/env bash
# One command: install what is missing, build (Release) and run kvtierd in the
# foreground with its embedded defaults (127.0.0.1:50051, data in ./var/kvtier).
# Extra arguments go to kvtierd (see build-release/bin/kvtierd --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/tools/deps.sh"
export KVTIER_BUILD_DIR="${KVTIER_BUILD_DIR:-$root/build-release}"
"$root/tools/build.sh" Release -DKVTIER_BUILD_TESTS=OFF -DKVTIER_BUILD_BENCH=OFF
cd "$root"
echo "kvtierd: starting; stop it with Ctrl-C. In another shell: $KVTIER_BUILD_DIR/bin/kvtier health" >&2
exec "$KVTIER_BUILD_DIR/bin/kvtierd" "$@"
