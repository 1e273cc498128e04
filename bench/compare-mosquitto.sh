#!/usr/bin/env bash
# pilegate vs Mosquitto (Debian 2.0.11), same machine, same load, one run.
#   bench/compare-mosquitto.sh [IDLE_CMP=19900] [IDLE_BIG="50000 100000 200000"] [PUBLISHERS=1000] [SECONDS=10] [QOS1_RATE=40000] [STORM=200000] [UPLINK=1]
# Cases (each broker started fresh, loopback only, every run bounded):
#   idle   N pile connections, each subscribed to its own cmd topic (at most 100 connects in
#          flight: Mosquitto listens with a backlog of 100): user RSS per connection
#          (broker RSS after connecting minus before, / N). Mosquitto cannot hold more than
#          ~19,900 here (RLIMIT_NOFILE 20000), so the comparison is at that count and
#          pilegate alone goes on to each count in IDLE_BIG.
#   fanin  PUBLISHERS piles publish QoS 0 as fast as TCP lets them; one subscriber on
#          /xjdy/ops/v1/TCU/+/# counts deliveries: delivered msgs/s and broker CPU per message.
#   qos1   the same publishers at QOS1_RATE msgs/s in total, QoS 1 both ways (8 in flight
#          per pile): acknowledged and delivered msgs/s, PUBACK p99, and messages
#          acknowledged but never delivered. pilegate also stores each one in Redis
#          (embedded) before its PUBACK; Mosquitto keeps them in memory.
#   storm  (pilegate alone) STORM subscribed piles connect, all drop at once and come back:
#          seconds until every one is back, gateway RSS before and after.
#   uplink (UPLINK=1) bench/uplink-redis.sh: the Redis ceiling (pipelined XADD) next to
#          pilegate's QoS 1 uplink into Redis, and the pile profile at 200k piles.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_CMP=${1:-19900}; IDLE_BIG=${2:-"50000 100000 200000"}; PUBLISHERS=${3:-1000}; SECS=${4:-10}; QOS1_RATE=${5:-40000}; STORM=${6:-200000}; UPLINK=${7:-1}
out=bench/results/$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
PORT=18883

start_pilegate() {
  .build/release/pilegate --listen 0.0.0.0:$PORT --log-level warning >"$out/pilegate-$1.log" 2>&1 &
  echo $! >"$out/pid"; sleep 1
}
start_mosquitto() {
  cat >"$out/mosquitto.conf" <<CONF
listener $PORT 0.0.0.0
allow_anonymous true
max_connections -1
persistence false
log_type error
user root
CONF
  mosquitto -c "$out/mosquitto.conf" >"$out/mosquitto-$1.log" 2>&1 &
  echo $! >"$out/pid"; sleep 1
}
stop_broker() {  # graceful stop (up to 60 s), then wait until the port is free again
  local pid; pid=$(cat "$out/pid")
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  for _ in $(seq 300); do ss -ltn | grep -q ":$PORT " || break; sleep 0.1; done
}

run_case() {  # broker name profile connections extra...
  local broker=$1 name=$2 profile=$3 n=$4; shift 4
  start_$broker "$name"
  timeout 600 .build/release/pileload --target 127.0.0.1:$PORT --profile "$profile" --connections "$n" \
    --broker-pid "$(cat "$out/pid")" --json "$out/$broker-$name.json" "$@" >"$out/$broker-$name.txt" || true
  stop_broker
  echo "  $broker $name: $(tr -d '{}"' <"$out/$broker-$name.json" 2>/dev/null | tr ',' '\n' | grep -E 'connected:|failed|connect_rate|received_per_s|rss_per_connection|cpu_s_per_million' | tr -d ' ' | tr '\n' ' ')"
}

echo "== idle: $IDLE_CMP pile connections, subscribed, held ${SECS}s"
run_case pilegate idle-cmp idle "$IDLE_CMP" --subscribe --duration "$SECS" --connect-rate 100000 --max-pending 100
run_case mosquitto idle-cmp idle "$IDLE_CMP" --subscribe --duration "$SECS" --connect-rate 100000 --max-pending 100
for n in $IDLE_BIG; do
  echo "== idle: $n pile connections (pilegate alone; past one process's fd limit)"
  run_case pilegate "idle-$n" idle "$n" --subscribe --duration "$SECS" --connect-rate 100000 --sources 64
done
echo "== fanin: $PUBLISHERS QoS 0 publishers -> 1 wildcard subscriber, ${SECS}s"
run_case pilegate fanin fanin "$PUBLISHERS" --duration "$SECS"
run_case mosquitto fanin fanin "$PUBLISHERS" --duration "$SECS"
echo "== qos1: $PUBLISHERS QoS 1 publishers at $QOS1_RATE msgs/s -> 1 QoS 1 wildcard subscriber, ${SECS}s"
run_case pilegate qos1 fanin "$PUBLISHERS" --duration "$SECS" --qos 1 --rate "$QOS1_RATE"
run_case mosquitto qos1 fanin "$PUBLISHERS" --duration "$SECS" --qos 1 --rate "$QOS1_RATE"
echo "== storm: $STORM piles drop at once and reconnect (pilegate alone)"
# --retry: a pile refused (the old connections are still being closed) comes back
# 100-1000 ms later, as real piles do.
run_case pilegate storm storm "$STORM" --subscribe --retry --sources 64 --connect-rate 100000 --duration 40

python3 - "$out" $IDLE_BIG <<'PY'
import json, sys, os
d, big = sys.argv[1], sys.argv[2:]
def j(n):
    p = os.path.join(d, n + ".json")
    return json.load(open(p)) if os.path.exists(p) else {}
rows = []
pi, mi = j("pilegate-idle-cmp"), j("mosquitto-idle-cmp")
pf, mf = j("pilegate-fanin"), j("mosquitto-fanin")
pq, mq = j("pilegate-qos1"), j("mosquitto-qos1")
def ratio(a, b, inv=False):
    try:
        return f"{(b/a if inv else a/b):.2f}x"
    except Exception:
        return "-"
print(f"\n{'measure':48} {'pilegate':>12} {'mosquitto':>12} {'ratio':>8}")
def row(name, a, b, inv=False):
    print(f"{name:48} {a if a is not None else '-':>12} {b if b is not None else '-':>12} {ratio(a, b, inv) if a and b else '-':>8}")
row(f"idle conns held (of {pi.get('connections')})", pi.get("connected"), mi.get("connected"))
row("user RSS per idle connection, bytes (lower wins)", pi.get("rss_per_connection_bytes"), mi.get("rss_per_connection_bytes"), inv=True)
row("connect rate /s", pi.get("connect_rate"), mi.get("connect_rate"))
for n in big:
    pb = j(f"pilegate-idle-{n}")
    row(f"idle conns held (of {n}), pilegate alone", pb.get("connected"), None)
    row("  RSS per connection at that count, bytes", pb.get("rss_per_connection_bytes"), None)
row(f"QoS 0 fan-in delivered msgs/s ({pf.get('connections')} conns)", pf.get("received_per_s"), mf.get("received_per_s"))
row("broker CPU s per million delivered (lower wins)", pf.get("broker_cpu_s_per_million_delivered"), mf.get("broker_cpu_s_per_million_delivered"), inv=True)
row(f"QoS 1 fan-in offered {pq.get('published_per_s')}/s: acknowledged/s", pq.get("acked_per_s"), mq.get("acked_per_s"))
row("  delivered/s", pq.get("received_per_s"), mq.get("received_per_s"))
row("  PUBACK p99 ms (lower wins)", pq.get("puback_ms_p99"), mq.get("puback_ms_p99"), inv=True)
row("  acknowledged but never delivered (after a drain)", pq.get("acked_not_delivered"), mq.get("acked_not_delivered"))
row("  broker CPU s per million delivered (lower wins)", pq.get("broker_cpu_s_per_million_delivered"), mq.get("broker_cpu_s_per_million_delivered"), inv=True)
ps = j("pilegate-storm")
row(f"storm: all {ps.get('connections')} piles back after, s", ps.get("storm_reconnect_seconds"), None)
row("  reconnect attempts refused or failed, retried", ps.get("retries"), None)
row("  gateway RSS connected / at the end, KiB", f"{ps.get('broker_rss_connected_kib')}/{ps.get('broker_rss_end_kib')}", None)
print(f"\nraw results: {d}")
PY
if [ "$UPLINK" = 1 ]; then
  echo "== uplink: Redis ceiling and pilegate's QoS 1 uplink into Redis (bench/uplink-redis.sh)"
  bench/uplink-redis.sh
fi
