#!/usr/bin/env bash
# pilegate vs Mosquitto (Debian 2.0.11), same machine, same load, one run.
#   bench/compare-mosquitto.sh [IDLE_CMP=19900] [IDLE_BIG="50000 100000 200000"] [PUBLISHERS=1000] [SECONDS=10] [QOS1_RATE=40000] [STORM=200000] [UPLINK=1]
# Cases (each broker started fresh, loopback only, every run bounded):
#   idle   N pile connections, each subscribed to its own cmd topic (at most 100 connects in
#          flight: Mosquitto listens with a backlog of 100): user RSS per connection
#          (broker RSS after connecting minus before, / N). Mosquitto cannot hold more than
#          ~19,900 here (RLIMIT_NOFILE 20000), so the comparison is at that count and
#          pilegate alone goes on to each count in IDLE_BIG.
# pilegate runs twice where Mosquitto runs: as deployed (Redis bridge on, embedded Redis)
# and as a plain MQTT broker (bridge off), which is the like-for-like comparison.
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

start_pilegate() {  # as deployed: every message also stored in Redis (embedded), presence and events
  .build/release/pilegate --listen 0.0.0.0:$PORT --log-level warning >"$out/pilegate-$1.log" 2>&1 &
  echo $! >"$out/pid"; sleep 1
}
start_mqttonly() {  # pilegate as a plain MQTT broker (Redis bridge off), Mosquitto's job exactly
  printf '[redis]\nenabled = false\n' >"$out/mqtt-only.toml"
  .build/release/pilegate --listen 0.0.0.0:$PORT --log-level warning --config "$out/mqtt-only.toml" >"$out/mqttonly-$1.log" 2>&1 &
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
run_case mqttonly idle-cmp idle "$IDLE_CMP" --subscribe --duration "$SECS" --connect-rate 100000 --max-pending 100
run_case mosquitto idle-cmp idle "$IDLE_CMP" --subscribe --duration "$SECS" --connect-rate 100000 --max-pending 100
for n in $IDLE_BIG; do
  echo "== idle: $n pile connections (pilegate alone; past one process's fd limit)"
  run_case pilegate "idle-$n" idle "$n" --subscribe --duration "$SECS" --connect-rate 100000 --sources 64
done
echo "== idle: $STORM pile connections, connect and hold only (no subscription; pilegate alone)"
run_case pilegate idle-bare idle "$STORM" --duration "$SECS" --connect-rate 100000 --sources 64
echo "== fanin: $PUBLISHERS QoS 0 publishers -> 1 wildcard subscriber, ${SECS}s"
run_case pilegate fanin fanin "$PUBLISHERS" --duration "$SECS"
run_case mqttonly fanin fanin "$PUBLISHERS" --duration "$SECS"
run_case mosquitto fanin fanin "$PUBLISHERS" --duration "$SECS"
echo "== qos1: $PUBLISHERS QoS 1 publishers at $QOS1_RATE msgs/s -> 1 QoS 1 wildcard subscriber, ${SECS}s"
run_case pilegate qos1 fanin "$PUBLISHERS" --duration "$SECS" --qos 1 --rate "$QOS1_RATE"
run_case mqttonly qos1 fanin "$PUBLISHERS" --duration "$SECS" --qos 1 --rate "$QOS1_RATE"
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
def ratio(a, b, lower_wins):
    try:
        return f"{(b / a if lower_wins else a / b):.2f}x"
    except Exception:
        return "-"
print("\npilegate = as deployed (each message also XADDed to Redis, presence and events per pile);")
print("mqtt-only = pilegate with the Redis bridge off, doing exactly what Mosquitto does.")
print(f"\n{'measure':50} {'pilegate':>11} {'mqtt-only':>11} {'mosquitto':>11} {'ratio':>7} {'mqtt-only':>9}")
def row(name, case, key, lower_wins=False, fmt=lambda v: v):
    p, q, m = (j(f"{b}-{case}").get(key) for b in ("pilegate", "mqttonly", "mosquitto"))
    show = lambda v: "-" if v is None else fmt(v)
    print(f"{name:50} {show(p):>11} {show(q):>11} {show(m):>11} {ratio(p, m, lower_wins) if p is not None and m else '-':>7} "
          f"{ratio(q, m, lower_wins) if q is not None and m else '-':>9}")
pi = j("pilegate-idle-cmp")
row(f"idle conns held (of {pi.get('connections')})", "idle-cmp", "connected")
row("user RSS per idle connection, bytes (lower wins)", "idle-cmp", "rss_per_connection_bytes", True)
row("connect rate /s", "idle-cmp", "connect_rate")
row("connects per broker CPU second", "idle-cmp", "connects_per_broker_cpu_second")
for n in big:
    row(f"idle conns held (of {n}), pilegate alone", f"idle-{n}", "connected")
    row("  RSS per connection at that count, bytes", f"idle-{n}", "rss_per_connection_bytes", True)
row(f"idle conns held, not subscribed (of {j('pilegate-idle-bare').get('connections')})", "idle-bare", "connected")
row("  RSS per connection, bytes", "idle-bare", "rss_per_connection_bytes", True)
row(f"QoS 0 fan-in delivered msgs/s ({j('pilegate-fanin').get('connections')} connections)", "fanin", "received_per_s")
row("  broker CPU s per million delivered (lower wins)", "fanin", "broker_cpu_s_per_million_delivered", True)
row(f"QoS 1 fan-in, offered {j('pilegate-qos1').get('published_per_s')}/s: acknowledged/s", "qos1", "acked_per_s")
row("  delivered/s", "qos1", "received_per_s")
row("  PUBACK p99 ms (lower wins)", "qos1", "puback_ms_p99", True)
row("  acknowledged but never delivered (after a drain)", "qos1", "acked_not_delivered", True)
row("  broker CPU s per million delivered (lower wins)", "qos1", "broker_cpu_s_per_million_delivered", True)
ps = j("pilegate-storm")
row(f"storm: all {ps.get('connections')} piles back after, s", "storm", "storm_reconnect_seconds", True)
row("  reconnect attempts refused or failed, retried", "storm", "retries", True)
row("  gateway RSS connected, KiB", "storm", "broker_rss_connected_kib", True)
row("  gateway RSS at the end, KiB", "storm", "broker_rss_end_kib", True)
print(f"\nraw results: {d}")
PY
if [ "$UPLINK" = 1 ]; then
  echo "== uplink: Redis ceiling and pilegate's QoS 1 uplink into Redis (bench/uplink-redis.sh)"
  bench/uplink-redis.sh
fi
