#!/usr/bin/env bash
# Redis memory per peer and Redis CPU per announce with 1, 2 and 4 replicas
# of one tracker (TRACKER_REUSEPORT, one port), under the same paced load:
# scaling out must cost nothing per announce.
#
#   scripts/bench-replicas.sh [replica counts...]     (default: 1 2 4)
#
# For each count: a fresh redis-server, that many `tracker` processes of
# node "bench" on one port, and `tracker loadgen -rate $RATE (default 3000) -duration 20s
# -torrents 5000 -peers 10 -conns 16 -sources 16` (16 loopback source
# addresses, so that every replica serves some). Prints one line per count.
#
# Redis runs alone on CPU $REDIS_CPU (default 0), the trackers, the hub and
# the load generator on the other CPUs, as Redis would have cores of its
# own in production: shared with four tracker processes and the load
# generator, its every command costs about a quarter more (its caches
# are shared), which is the test machine's and not the design's cost.
# REDIS_CPU=none runs everything unpinned.
#
# TORRENTS and PEERS change the swarms (default 5000 of 10).
#
# With LINKED=1, the same counts of *linked* nodes instead (node ids
# bench1..N, a port each, a hub relaying), the load on the first: what
# running one tracker as several linked nodes costs, for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 2 4)
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
redis_pin=() others_pin=()
if [ "${REDIS_CPU:-0}" != none ]; then
  command -v taskset >/dev/null || { echo "taskset is not installed (util-linux); or REDIS_CPU=none" >&2; exit 1; }
  ncpu=$(nproc)
  [ "$ncpu" -ge 2 ] || { echo "pinning Redis needs 2 CPUs; REDIS_CPU=none runs unpinned" >&2; exit 1; }
  rcpu=${REDIS_CPU:-0}
  others=$(seq 0 $((ncpu - 1)) | grep -vx "$rcpu" | paste -sd,)
  redis_pin=(taskset -c "$rcpu") others_pin=(taskset -c "$others")
fi
work=$(mktemp -d)
go build -o "$work/tracker" ./cmd/tracker
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
# Stops the trackers (and the hub) first, Redis last, so that none of them
# logs a lost Redis on its way out.
stop_all() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

for n in "${counts[@]}"; do
  rport=$(free_port); hport=$(free_port)
  "${redis_pin[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --loglevel warning >/dev/null &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  if [ "${LINKED:-0}" = 1 ]; then
    link=(TRACKER_LINK_PASSWORD=bench-link-password)
    env TRACKER_REDIS_URL="redis://127.0.0.1:$rport" TRACKER_HTTP_ADDR="127.0.0.1:$(free_port)" \
        TRACKER_LOG_LEVEL=warn "${link[@]}" "${others_pin[@]}" "$work/tracker" hub &
    pids+=($!)
    for i in $(seq "$n"); do
      port=$hport; [ "$i" = 1 ] || port=$(free_port)
      env TRACKER_REDIS_URL="redis://127.0.0.1:$rport" TRACKER_HTTP_ADDR="127.0.0.1:$port" TRACKER_UDP_ADDR=off \
          TRACKER_NODE_ID="bench$i" TRACKER_LOG_LEVEL=warn "${link[@]}" "${others_pin[@]}" "$work/tracker" &
      pids+=($!)
    done
  else
    for _ in $(seq "$n"); do
      env TRACKER_REDIS_URL="redis://127.0.0.1:$rport" TRACKER_HTTP_ADDR="127.0.0.1:$hport" TRACKER_UDP_ADDR=off \
          TRACKER_NODE_ID=bench TRACKER_REUSEPORT=true TRACKER_LOG_LEVEL=warn "${others_pin[@]}" "$work/tracker" &
      pids+=($!)
    done
  fi
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$hport/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 3 # the replicas read each other from the registry
  out=$("${others_pin[@]}" "$work/tracker" loadgen -url "http://127.0.0.1:$hport/announce" -rate "${RATE:-3000}" -duration 20s \
      -torrents "${TORRENTS:-5000}" -peers "${PEERS:-10}" -conns 16 -sources 16 -numwant 50 -redis "127.0.0.1:$rport")
  what=replicas; [ "${LINKED:-0}" = 1 ] && what=linked
  echo "$what=$n $(echo "$out" | tr '\n' ' ')"
  # With STATS=1, Redis's command table (fill and measured phase together).
  [ "${STATS:-0}" = 1 ] && redis-cli -p "$rport" info commandstats | grep '^cmdstat' | sort -t= -k3 -rn | head -12
  stop_all
done
