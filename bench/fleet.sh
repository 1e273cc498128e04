#!/usr/bin/env bash
# A fleet of three release nodes on one Redis behind HAProxy (ops/fleet.sh), measured:
#   1. takeover across nodes, a command published on one node for a pile on another,
#      the operator fleet feed's delay and its CPU per message (bench/fleet_latency.py);
#   2. a rolling restart (ops/rolling-restart.sh) while PILES piles publish QoS 1
#      through HAProxy: total time, piles back, messages acknowledged vs stored.
#   bench/fleet.sh [PILES]          (default 9000: HAProxy holds two sockets per pile,
#                                    and this machine's hard fd limit is 20,000)
set -euo pipefail
cd "$(dirname "$0")/.."
piles=${1:-9000}
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
export FLEET_DIR=$(mktemp -d) FLEET_BASE=${FLEET_BASE:-24000} FLEET_TOKEN=bench PILEGATE=$PWD/.build/release/pilegate
front=$((FLEET_BASE + 999))
trap 'ops/fleet.sh stop; rm -rf "$FLEET_DIR"' EXIT
ops/fleet.sh start 3 "$front"
node() { echo $((FLEET_BASE + 10 * $1 + $2)); }
echo "== latencies (node 1 and node 2 directly)"
python3 bench/fleet_latency.py "$(node 1 1)" "$(node 2 1)" "$(cat "$FLEET_DIR/node-1.pid")"
echo "== rolling restart under $piles piles (QoS 1 through HAProxy)"
redis-cli -p "$FLEET_BASE" del pilegate:up >/dev/null
.build/release/pileload --target "127.0.0.1:$front" --profile pile --connections "$piles" --qos 1 --retry \
  --min-interval 2 --max-interval 4 --trade-every 0 --connect-rate 3000 --duration 60 \
  --json "$FLEET_DIR/load.json" > "$FLEET_DIR/load.log" 2>&1 &
load=$!
for _ in $(seq 120); do
  [ "$(ops/fleet.sh status | awk -F'[= ]' '{s += $3} END {print s}')" -ge "$piles" ] && break; sleep 0.5
done
ops/fleet.sh status
started=$(date +%s.%N)
ops/rolling-restart.sh --token bench --restart "ops/fleet.sh restart {n}" \
  "http://127.0.0.1:$(node 1 2)" "http://127.0.0.1:$(node 2 2)" "http://127.0.0.1:$(node 3 2)"
awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "rolling restart of 3 nodes: %.1f s\n", e - s }'
for _ in $(seq 120); do
  [ "$(ops/fleet.sh status | awk -F'[= ]' '{s += $3} END {print s}')" -ge "$piles" ] && break; sleep 0.5
done
ops/fleet.sh status
wait "$load" || true
python3 - "$FLEET_DIR/load.json" "$(redis-cli -p "$FLEET_BASE" xlen pilegate:up)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("pileload: acknowledged %d, stored in Redis %s (includes the connect phase)" % (r["acked"], sys.argv[2]))
PY
