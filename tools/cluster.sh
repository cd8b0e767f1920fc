#!/usr/bin/env bash
# A local scale-out demo (docs/scale-out.md): a Redis Cluster of M masters
# (each with R replicas) and N kvtierd nodes on loopback, every node with the
# cluster tier below its local tiers, one shared cache secret, and each other
# as peers.
#
#   tools/cluster.sh start [--dir DIR] [--masters M] [--replicas R] [--nodes N]
#                          [--base-port P] [-- KVTIERD_FLAGS...]
#   tools/cluster.sh status [--dir DIR]
#   tools/cluster.sh stop [--dir DIR]
#
# Defaults: DIR ./var/cluster, M 3, R 1, N 3, P 7000. Redis node i listens on
# P+i (cluster bus P+400+i); kvtierd node i on P+100+i (gRPC), P+200+i
# (HTTP API) and P+300+i (metrics): every port is in [P, P+499]. Builds kvtierd first (Release, like
# tools/run.sh) unless $KVTIER_BUILD_DIR/bin/kvtierd exists.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

cmd="${1:-}"
[ -n "$cmd" ] && shift
dir="$root/var/cluster"
masters=3
replicas=1
nodes=3
base=7000
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --masters) masters="$2"; shift 2 ;;
    --replicas) replicas="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --base-port) base="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "tools/cluster.sh: unknown argument '$1' (see the comment at the top)" >&2; exit 2 ;;
  esac
done
for v in masters replicas nodes base; do
  if ! [[ "${!v}" =~ ^[0-9]+$ ]]; then
    echo "tools/cluster.sh: --${v/base/base-port} needs a number" >&2
    exit 2
  fi
done
if [ "$masters" -lt 3 ]; then
  echo "tools/cluster.sh: Redis Cluster needs at least 3 masters" >&2
  exit 2
fi
if [ $((masters * (1 + replicas))) -gt 100 ] || [ "$nodes" -gt 100 ]; then
  echo "tools/cluster.sh: at most 100 Redis servers and 100 kvtierd nodes (each kind has 100 ports)" >&2
  exit 2
fi
if [ "$base" -lt 1024 ] || [ $((base + 499)) -gt 65535 ]; then
  echo "tools/cluster.sh: --base-port must be in [1024, 65036] (ports P to P+499 are used)" >&2
  exit 2
fi

stop_all() {
  [ -f "$dir/pids" ] || return 0
  # kvtierd first (they drain), then Redis.
  tac "$dir/pids" | while read -r pid name; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 100); do
    alive=0
    while read -r pid name; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$dir/pids"
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  while read -r pid name; do kill -KILL "$pid" 2>/dev/null || true; done < "$dir/pids"
  rm -f "$dir/pids"
}

case "$cmd" in
  stop)
    stop_all
    echo "tools/cluster.sh: stopped ($dir)"
    exit 0
    ;;
  status)
    [ -f "$dir/pids" ] || { echo "tools/cluster.sh: nothing running under $dir"; exit 1; }
    while read -r pid name; do
      if kill -0 "$pid" 2>/dev/null; then echo "up   $name (pid $pid)"; else echo "DOWN $name (pid $pid)"; fi
    done < "$dir/pids"
    exit 0
    ;;
  start) ;;
  *) echo "usage: tools/cluster.sh start|status|stop [flags] (see the comment at the top)" >&2; exit 2 ;;
esac

command -v redis-server >/dev/null && command -v redis-cli >/dev/null || "$root/tools/deps.sh"
export KVTIER_BUILD_DIR="${KVTIER_BUILD_DIR:-$root/build-release}"
if [ ! -x "$KVTIER_BUILD_DIR/bin/kvtierd" ]; then
  "$root/tools/deps.sh"
  "$root/tools/build.sh" Release -DKVTIER_BUILD_TESTS=OFF -DKVTIER_BUILD_BENCH=OFF
fi
[ -f "$dir/pids" ] && stop_all
mkdir -p "$dir"
: > "$dir/pids"
trap 'echo "tools/cluster.sh: start failed at line $LINENO ($BASH_COMMAND); stopping what started (logs in $dir)" >&2; stop_all' ERR

# Redis Cluster.
seeds=()
count=$((masters * (1 + replicas)))
for i in $(seq 0 $((count - 1))); do
  port=$((base + i))
  mkdir -p "$dir/redis-$port"
  redis-server --port "$port" --cluster-port "$((base + 400 + i))" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$dir/redis-$port/nodes.conf" --cluster-node-timeout 2000 \
    --dir "$dir/redis-$port" --save "" --appendonly no --daemonize no \
    > "$dir/redis-$port/log" 2>&1 &
  echo "$! redis-127.0.0.1:$port" >> "$dir/pids"
  seeds+=("127.0.0.1:$port")
done
for s in "${seeds[@]}"; do
  for _ in $(seq 1 200); do
    redis-cli -p "${s##*:}" PING 2>/dev/null | grep -q PONG && break
    sleep 0.05
  done
  if ! redis-cli -p "${s##*:}" PING 2>/dev/null | grep -q PONG; then
    echo "tools/cluster.sh: redis-server on $s did not start (a port in use?):" >&2
    tail -n 3 "$dir/redis-${s##*:}/log" >&2
    false
  fi
done
redis-cli --cluster create "${seeds[@]}" --cluster-replicas "$replicas" --cluster-yes \
  > "$dir/cluster-create.log" 2>&1
for _ in $(seq 1 300); do
  redis-cli -p "$base" CLUSTER INFO 2>/dev/null | grep -q "cluster_state:ok" && break
  sleep 0.1
done
redis-cli -p "$base" CLUSTER INFO | grep -q "cluster_state:ok"

# One cache secret for every node: a tenant's salt and keys agree across them.
[ -f "$dir/cache_secret" ] || head -c 32 /dev/urandom > "$dir/cache_secret"
chmod 600 "$dir/cache_secret"

# kvtierd nodes.
seed_list="$(IFS=,; echo "${seeds[*]}")"
addrs=()
node_pids=()
for i in $(seq 0 $((nodes - 1))); do addrs+=("127.0.0.1:$((base + 100 + i))"); done
for i in $(seq 0 $((nodes - 1))); do
  peers=()
  for j in $(seq 0 $((nodes - 1))); do [ "$j" -ne "$i" ] && peers+=("${addrs[$j]}"); done
  peer_flags=()
  [ ${#peers[@]} -gt 0 ] && peer_flags=(--peers "$(IFS=,; echo "${peers[*]}")")
  "$KVTIER_BUILD_DIR/bin/kvtierd" --listen "${addrs[$i]}" --data-dir "$dir/node-$i" \
    --cluster-redis "$seed_list" --cache-secret "$dir/cache_secret" "${peer_flags[@]}" \
    --http-listen "127.0.0.1:$((base + 200 + i))" --metrics-listen "127.0.0.1:$((base + 300 + i))" \
    --dram-bytes 256M --flash-bytes 256M --rocks-bytes 1G ${extra[@]+"${extra[@]}"} \
    > "$dir/node-$i.log" 2>&1 &
  node_pids+=("$!")
  echo "$! kvtierd-${addrs[$i]}" >> "$dir/pids"
done
for i in "${!addrs[@]}"; do
  a="${addrs[$i]}"
  for _ in $(seq 1 600); do
    "$KVTIER_BUILD_DIR/bin/kvtier" --addr "$a" health > /dev/null 2>&1 && break
    # A node that exited (one of its ports taken, say) will never answer.
    if ! kill -0 "${node_pids[$i]}" 2>/dev/null; then
      echo "tools/cluster.sh: kvtierd $a exited:" >&2
      tail -n 3 "$dir/node-$i.log" >&2
      false
    fi
    sleep 0.1
  done
  "$KVTIER_BUILD_DIR/bin/kvtier" --addr "$a" health > /dev/null
done
trap - ERR

echo "tools/cluster.sh: Redis Cluster ${seeds[*]} ($masters masters, $replicas replica(s) each)"
echo "tools/cluster.sh: kvtierd ${addrs[*]} (HTTP API on $((base + 200))+, metrics on $((base + 300))+)"
echo "  try: $KVTIER_BUILD_DIR/bin/kvtier --addr ${addrs[0]} generate --tokens \$(seq -s, 1 300) --max-tokens 4"
echo "       and the same on ${addrs[$((nodes > 1 ? 1 : 0))]}: its usage shows the prefix read from the cache"
echo "  stop: tools/cluster.sh stop --dir $dir"
