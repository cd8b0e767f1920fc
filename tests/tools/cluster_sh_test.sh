#!/usr/bin/env bash
# tools/cluster.sh end to end: a 3-master Redis Cluster (a replica each) and
# two kvtierd nodes; a prompt run on one node is a cache hit on the other;
# stop leaves nothing running. Needs KVTIER_BUILD_DIR (ctest sets it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="$(mktemp -d /tmp/kvtier_cluster_sh.XXXXXX)"
# cluster.sh uses ports base to base+499. They are drawn below Linux's
# ephemeral range (32768 up, where any process's outgoing connection may
# take one: CI saw three starts in a row fail so) and apart from the C++
# tests' own (tests/free_port.h: daemons 10000-19999, Redis nodes
# 20000-22767 with buses 30000-32767). A start that fails anyway is tried
# again on other ports.
ephemeral_low="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2> /dev/null || echo 32768)"
[ "$ephemeral_low" -ge 30000 ] ||
  echo "warning: the ephemeral port range starts at $ephemeral_low, among the ports drawn here" >&2
draw_base() { echo $((23000 + RANDOM % 6500)); }  # [23000, 29499]: all ports < 30000
base=0
squatter=""
cleanup() {
  [ -z "$squatter" ] || kill "$squatter" 2> /dev/null || true
  "$root/tools/cluster.sh" stop --dir "$dir" > /dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'echo "failed at line $LINENO; logs:" >&2; tail -n 5 "$dir"/*.log "$dir"/*/log >&2 2>/dev/null' ERR
# Arguments that cannot work exit 2 with the reason, and start nothing.
for bad in "--base-port 65200" "--base-port 80" "--nodes 101" "--masters 60 --replicas 1" "--nodes x"; do
  rc=0
  # shellcheck disable=SC2086
  "$root/tools/cluster.sh" start --dir "$dir/bad" $bad 2> "$dir/bad.err" || rc=$?
  if [ "$rc" != 2 ] || [ ! -s "$dir/bad.err" ] || [ -e "$dir/bad/pids" ]; then
    echo "start $bad: exit $rc, $(cat "$dir/bad.err")" >&2; exit 1
  fi
done

# A node whose port is taken fails the start at once, saying which and why
# (not after a minute of asking it for its health), and leaves nothing
# running. A Redis server of our own takes the first node's port. (Another
# of the start's ports may be taken by chance too: then it says so, and the
# check is tried again on other ports.)
clear_error=0
for attempt in 1 2 3; do
  base="$(draw_base)"
  redis-server --port "$((base + 100))" --bind 127.0.0.1 --save "" --appendonly no \
    > "$dir/squatter.log" 2>&1 &
  squatter=$!
  for _ in $(seq 1 100); do
    redis-cli -p "$((base + 100))" PING 2>/dev/null | grep -q PONG && break
    sleep 0.05
  done
  kill -0 "$squatter" 2> /dev/null || continue  # its port was taken: others
  if "$root/tools/cluster.sh" start --dir "$dir/taken" --base-port "$base" --nodes 1 \
      2> "$dir/taken.err"; then
    echo "start succeeded although port $((base + 100)) was taken" >&2; exit 1
  fi
  kill "$squatter"
  squatter=""
  [ ! -s "$dir/taken/pids" ] || { echo "processes left after a failed start" >&2; exit 1; }
  if grep -q "kvtierd 127.0.0.1:$((base + 100)) exited" "$dir/taken.err" &&
     grep -q "Address already in use" "$dir/taken.err"; then
    clear_error=1
    break
  fi
done
[ "$clear_error" = 1 ] || { echo "no clear error for a taken port:" >&2; cat "$dir/taken.err" >&2; exit 1; }

started=0
for attempt in 1 2 3; do
  base="$(draw_base)"
  if "$root/tools/cluster.sh" start --dir "$dir" --base-port "$base" --nodes 2; then
    started=1
    break
  fi
  echo "start on base port $base failed; trying other ports" >&2
done
[ "$started" = 1 ]
kvtier="$KVTIER_BUILD_DIR/bin/kvtier"
tokens="$(seq -s, 1 300)"
first="$("$kvtier" --addr "127.0.0.1:$((base + 100))" --json generate --tokens "$tokens" --max-tokens 4)"
[ "$(jq '.usage.cache_read_input_tokens' <<< "$first")" = 0 ]
# Wait for node 0's copies (to the cluster tier and to each block's owner):
# its metrics count them. Then one run on node 1, which has computed nothing.
metric() {
  exec 3<> "/dev/tcp/127.0.0.1/$1"
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  awk -v f="$2" '$1 == f {print $2}' <&3
  exec 3<&-
}
for _ in $(seq 1 200); do
  n="$(metric $((base + 300)) kvtier_cache_shared_writes_total)"
  [ "${n%.*}" -ge 8 ] 2> /dev/null && break
  sleep 0.1
done
second="$("$kvtier" --addr "127.0.0.1:$((base + 101))" --json generate --tokens "$tokens" --max-tokens 4)"
[ "$(jq '.usage.cache_read_input_tokens' <<< "$second")" -ge 256 ] || {
  echo "node 1 did not read node 0's prefix: $second" >&2; exit 1; }
[ "$(jq -c '.token_ids' <<< "$first")" = "$(jq -c '.token_ids' <<< "$second")" ]
pids="$(awk '{print $1}' "$dir/pids")"
"$root/tools/cluster.sh" stop --dir "$dir" > /dev/null
for p in $pids; do
  if kill -0 "$p" 2> /dev/null; then echo "pid $p still running after stop" >&2; exit 1; fi
done
echo "tools/cluster.sh: ok"
