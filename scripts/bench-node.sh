#!/usr/bin/env bash
# Announce throughput of one node on a local Redis, the way the targets are
# stated: the node and its Redis share CPU 0, the load generator runs on
# CPU 1; 10k torrents of 10 peers, numwant 50, keep-alive connections.
#
#   scripts/bench-node.sh [conns] [duration] [extra TRACKER_* assignments...]
#
# With LINK=1 the link is on: a hub and a second (idle) node also run, so
# every announce is published, relayed and written into the second node's
# keyspace in the same Redis. They run on CPU $HUB_CPU (default 1, beside
# the load generator, as a hub is a process of its own); HUB_CPU=0 puts the
# whole link on the node's core.
#
# Prints announces/s, p50/p99 latency, Redis commands and new connections per
# announce during the measured phase, and Redis bytes per stored peer.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-64}
duration=${2:-15s}
shift $(( $# > 2 ? 2 : $# ))
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is not installed" >&2; exit 1; }

work=$(mktemp -d)
go build -o "$work/tracker" ./cmd/tracker
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port); hport=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --loglevel warning &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done

linkenv=()
if [ "${LINK:-0}" = 1 ]; then
  linkenv=(TRACKER_LINK_PASSWORD=bench-link-password)
  env TRACKER_REDIS_URL="redis://127.0.0.1:$rport" TRACKER_HTTP_ADDR="127.0.0.1:$(free_port)" \
      TRACKER_LOG_LEVEL=warn TRACKER_UDP_ADDR=off "${linkenv[@]}" taskset -c "${HUB_CPU:-1}" "$work/tracker" hub &
  pids+=($!)
  env TRACKER_REDIS_URL="redis://127.0.0.1:$rport" TRACKER_HTTP_ADDR="127.0.0.1:$(free_port)" \
      TRACKER_NODE_ID=bench2 TRACKER_LOG_LEVEL=warn TRACKER_UDP_ADDR=off "${linkenv[@]}" taskset -c "${HUB_CPU:-1}" "$work/tracker" &
  pids+=($!)
fi
env TRACKER_REDIS_URL="redis://127.0.0.1:$rport" TRACKER_HTTP_ADDR="127.0.0.1:$hport" \
    TRACKER_NODE_ID=bench TRACKER_LOG_LEVEL=warn TRACKER_UDP_ADDR=off "${linkenv[@]}" "$@" \
    taskset -c 0 "$work/tracker" &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$hport/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

taskset -c 1 "$work/tracker" loadgen -url "http://127.0.0.1:$hport/announce" -conns "$conns" \
    -duration "$duration" -torrents 10000 -peers 10 -numwant 50 -redis "127.0.0.1:$rport"
