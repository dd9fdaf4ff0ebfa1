#!/usr/bin/env bash
# UDP announce throughput of one node, beside its own HTTP keep-alive rate
# and beside Debian's opentracker (an in-memory C tracker), in one run on one
# core layout: the server side (node + its Redis, or opentracker) on CPU
# $SERVER_CPU (default 0), the load generator (`tracker loadgen`) on the
# other. Same swarm model for all: 10k torrents of 10 peers, half seeders,
# numwant 50; each simulated client is a keep-alive connection (HTTP) or a
# UDP socket that connects once and then announces, one request at a time.
# Last, the load generator against a UDP responder that does nothing
# (scripts/udp-responder) on the server's CPU: the most it can drive, which
# must be well above every rate it measured for those to be the servers'.
#
#   scripts/bench-udp.sh [conns] [duration] [extra TRACKER_* assignments for the node...]
#
# MUX=n drives every UDP measurement from n shared sockets (tracker
# loadgen -mux: cheaper per request for the load generator); default: a
# socket per client.
#
# Needs redis-server, redis-cli, taskset, python3 and opentracker
# (apt-get install redis-server redis-tools opentracker). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-64}
duration=${2:-10s}
shift $(( $# > 2 ? 2 : $# ))
server_cpu=${SERVER_CPU:-0}
load_cpu=$(( 1 - server_cpu ))
for c in redis-server redis-cli taskset python3 opentracker; do
  command -v "$c" >/dev/null || { echo "$c is not installed" >&2; exit 1; }
done

work=$(mktemp -d)
chmod 755 "$work"
go build -o "$work/tracker" ./cmd/tracker
go build -o "$work/udp-responder" ./scripts/udp-responder
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port); nport=$(free_port); oport=$(free_port); eport=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

taskset -c "$server_cpu" redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --loglevel warning &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
env TRACKER_REDIS_URL="redis://127.0.0.1:$rport" TRACKER_HTTP_ADDR="127.0.0.1:$nport" TRACKER_UDP_ADDR="127.0.0.1:$nport" \
    TRACKER_UDP_SECRET=bench-udp-secret-0123456789 TRACKER_NODE_ID=bench TRACKER_LOG_LEVEL=warn "$@" \
    taskset -c "$server_cpu" "$work/tracker" &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$nport/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

load() { taskset -c "$load_cpu" "$work/tracker" loadgen -conns "$conns" -duration "$duration" -torrents 10000 -peers 10 -numwant 50 "$@"; }
mux=()
[ "${MUX:-0}" -gt 0 ] && mux=(-mux "$MUX")
echo "== tracklink HTTP keep-alive"
load -url "http://127.0.0.1:$nport/announce" -redis "127.0.0.1:$rport" | tee "$work/http.out"
echo "== tracklink UDP"
load "${mux[@]}" -url "udp://127.0.0.1:$nport/announce" -metrics "http://127.0.0.1:$nport/metrics" -redis "127.0.0.1:$rport" | tee "$work/udp.out"

# opentracker: Debian's build answers only whitelisted torrents, so list the
# load generator's info hashes ('t' and 19 digits).
mkdir -p "$work/ot"
python3 -c 'for i in range(10000): print(("t%019d" % i).encode().hex())' > "$work/ot/whitelist.txt"
chmod 755 "$work/ot"; chmod 644 "$work/ot/whitelist.txt"
printf 'listen.tcp 127.0.0.1:%s\nlisten.udp 127.0.0.1:%s\naccess.whitelist /whitelist.txt\ntracker.rootdir %s\ntracker.user nobody\n' \
  "$oport" "$oport" "$work/ot" > "$work/ot/opentracker.conf"
taskset -c "$server_cpu" opentracker -f "$work/ot/opentracker.conf" >"$work/ot.log" 2>&1 &
pids+=($!)
sleep 1
echo "== opentracker UDP"
load "${mux[@]}" -url "udp://127.0.0.1:$oport/announce" | tee "$work/ot.out"

kill "${pids[-1]}" 2>/dev/null || true
taskset -c "$server_cpu" "$work/udp-responder" "127.0.0.1:$eport" &
pids+=($!)
sleep 0.5
echo "== load generator ceiling: a UDP responder that does nothing"
load "${mux[@]}" -url "udp://127.0.0.1:$eport/announce" | tee "$work/echo.out"

rate() { awk '/^rate:/{print $2}' "$1"; }
p99() { awk '/^latency:/{print $5}' "$1"; }
echo
echo "summary ($conns clients, $duration each, server on CPU $server_cpu):"
printf '  tracklink HTTP keep-alive  %8.0f announces/s  p99 %s\n' "$(rate "$work/http.out")" "$(p99 "$work/http.out")"
printf '  tracklink UDP              %8.0f announces/s  p99 %s\n' "$(rate "$work/udp.out")" "$(p99 "$work/udp.out")"
printf '  opentracker UDP            %8.0f announces/s  p99 %s\n' "$(rate "$work/ot.out")" "$(p99 "$work/ot.out")"
printf '  load generator ceiling     %8.0f announces/s  p99 %s\n' "$(rate "$work/echo.out")" "$(p99 "$work/echo.out")"
cpu() { awk '/^redis CPU per announce:/{print $5}' "$1"; }
ncpu() { awk '/^node CPU per announce:/{print $5}' "$1"; }
refr() { awk '/^refreshes:/{print $2}' "$1"; }
# Every announce of the measured phase re-announces a peer the fill
# announced, without an event: with the soft state on, nearly all are
# refreshes (the share printed), so Redis CPU per announce here is Redis
# CPU per regular re-announce, the cache's swarm reads included.
printf '  tracklink UDP: redis CPU per announce %s, node CPU per announce %s, refreshes %s of the announces\n' "$(cpu "$work/udp.out")" "$(ncpu "$work/udp.out")" "$(refr "$work/udp.out")"
python3 - "$(rate "$work/http.out")" "$(rate "$work/udp.out")" "$(rate "$work/ot.out")" "$(rate "$work/echo.out")" <<'PY'
import sys
h, u, o, e = map(float, sys.argv[1:])
print("  UDP / HTTP keep-alive: %.2fx   tracklink UDP / opentracker UDP: %.2fx" % (u / h, u / o))
print("  load generator ceiling / fastest rate measured: %.2fx (at least 1.5x: the rates are the servers')" % (e / max(h, u, o)))
PY
