#!/usr/bin/env bash
# Before/after: two builds of pilegate side by side in one run, on the same load,
# alternating A B B A so drift on a shared machine, and whatever one run leaves
# behind for the next, hits both alike.
#   bench/ab.sh BEFORE_DIR AFTER_DIR [ROUNDS=2] [SECONDS=10] [IDLE=50000]
#   CASES="fanin uplink idle" (the default; also "connect", "downlink") picks the cases; PIN=1 runs the gateway on
#   CPU 1 and pileload (and Redis) on CPU 0, which takes the scheduler's placement out
#   of the comparison (the gateway then has one core: compare ratios, not totals).
# BEFORE_DIR and AFTER_DIR each hold a release `pilegate` binary (e.g. a checkout's
# .build/release); pileload comes from this checkout. Cases, each bounded:
#   fanin   1000 piles publish QoS 0 as fast as TCP lets them into one wildcard
#           subscriber, Redis bridge off: delivered msgs/s, gateway CPU s per million.
#   uplink  10,000 piles, 8 QoS 1 PUBLISHes in flight each, into a local redis-server
#           (PUBACK after XADD): acknowledged msgs/s, gateway CPU µs per message.
#   idle    IDLE piles connect, subscribe to their command topic and stay: gateway
#           user RSS per pile (RSS after connecting minus before, / piles).
#   connect 50,000 piles connect and subscribe through the Redis bridge at 20,000/s:
#           connects per gateway CPU-second, Redis CPU per connect (the presence write).
#   downlink  DOWN (200,000) piles connect and subscribe; one QoS 1 command each is
#           XADDed to the node's downlink stream as fast as Redis takes them: commands
#           delivered and acknowledged by the piles per second (until the last one), and
#           the outcome entries the gateway wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-2}; SECS=${4:-10}; IDLE=${5:-50000}; DOWN=${DOWN:-200000}
CASES=${CASES:-"fanin uplink idle"}
GW_CPU=""; LOAD_CPU=""
if [ "${PIN:-0}" = 1 ]; then GW_CPU="taskset -c 1"; LOAD_CPU="taskset -c 0"; fi
out=$(pwd)/bench/results/ab-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pileload >/dev/null
RPORT=16391; PORT=18885
start_redis $RPORT "$out"
if [ "${PIN:-0}" = 1 ]; then taskset -pc 0 "$(cat "$out/redis.pid")" >/dev/null; fi
printf '[redis]\nenabled = false\n[log]\nlevel = "warning"\n' >"$out/mqtt-only.toml"
printf '[redis]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n' $RPORT >"$out/redis.toml"

redis_cpu() { redis-cli -p $RPORT info cpu | awk -F: '/used_cpu_(sys|user):/ {s += $2} END {printf "%.3f", s}'; }

run() {  # label bin config name profile connections extra...
  local label=$1 bin=$2 config=$3 name=$4 profile=$5 n=$6; shift 6
  $GW_CPU "$bin/pilegate" --listen 0.0.0.0:$PORT --config "$config" >"$out/$label-$name.log" 2>&1 &
  local pid=$!; sleep 1
  local r0; r0=$(redis_cpu)
  timeout 600 $LOAD_CPU .build/release/pileload --target 127.0.0.1:$PORT --profile "$profile" --connections "$n" \
    --broker-pid $pid --json "$out/$label-$name.json" "$@" >"$out/$label-$name.txt" || true
  # Redis's CPU over the run, into the same report.
  python3 - "$out/$label-$name.json" "$r0" "$(redis_cpu)" <<'PY' || true
import json, sys
p = sys.argv[1]; j = json.load(open(p)); j["redis_cpu_seconds"] = float(sys.argv[3]) - float(sys.argv[2])
json.dump(j, open(p, "w"))
PY
  if [ "$profile" = downlink ]; then   # the outcomes the gateway wrote, by kind, 2 s after the last delivery
    sleep 2
    redis-cli -p $RPORT --raw xrange pilegate:down:outcome - + | grep -A1 -x outcome | grep -vx -- '--' | grep -vx outcome \
      | sort | uniq -c >"$out/$label-$name.outcomes" || true
  fi
  kill -INT $pid 2>/dev/null || true; wait $pid || true
  for _ in $(seq 300); do ss -ltn | grep -q ":$PORT " || break; sleep 0.1; done
  redis-cli -p $RPORT flushall >/dev/null
}
for r in $(seq "$ROUNDS"); do
  # A B, then B A: whatever a run leaves behind (TIME_WAIT sockets, a warm page
  # cache) favours neither side.
  order="before after"; [ $((r % 2)) = 0 ] && order="after before"
  for side in $order; do
    bin=$A; [ $side = after ] && bin=$B
    for c in $CASES; do case $c in
      fanin) run "$side" "$bin" "$out/mqtt-only.toml" "fanin-$r" fanin 1000 --duration "$SECS" ;;
      uplink) run "$side" "$bin" "$out/redis.toml" "uplink-$r" uplink 10000 --qos 1 --burst 8 --sources 64 --duration "$SECS" ;;
      idle) run "$side" "$bin" "$out/mqtt-only.toml" "idle-$r" idle "$IDLE" --subscribe --sources 64 --connect-rate 100000 --duration 3 ;;
      connect) run "$side" "$bin" "$out/redis.toml" "connect-$r" idle 50000 --subscribe --sources 64 --connect-rate 20000 --duration 1 ;;
      downlink) run "$side" "$bin" "$out/redis.toml" "downlink-$r" downlink "$DOWN" --sources 64 --connect-rate 100000 \
                  --duration 120 --redis 127.0.0.1:$RPORT --node "$(hostname)" ;;
    esac; done
  done
done
python3 - "$out" "$ROUNDS" <<'PY'
import json, os, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def get(side, case, key):
    vals = []
    for r in range(1, rounds + 1):
        p = os.path.join(d, f"{side}-{case}-{r}.json")
        if os.path.exists(p):
            vals.append(key(json.load(open(p))))
    return vals
rows = [
    ("QoS 0 fan-in delivered msgs/s", "fanin", lambda j: j["received_per_s"], False),
    ("QoS 0 fan-in gateway CPU s per million", "fanin", lambda j: j["broker_cpu_s_per_million_delivered"], True),
    ("QoS 1 uplink into Redis acknowledged/s", "uplink", lambda j: j["acked_per_s"], False),
    ("QoS 1 uplink gateway CPU us per message", "uplink", lambda j: j["broker_cpu_seconds"] / max(1, j["acked"]) * 1e6, True),
    ("idle subscribed pile, user RSS bytes", "idle", lambda j: j["rss_per_connection_bytes"], True),
    ("connect+subscribe per gateway CPU-second", "connect", lambda j: j["connects_per_broker_cpu_second"], False),
    ("connect+subscribe Redis CPU us each", "connect", lambda j: j["redis_cpu_seconds"] / max(1, j["connected"]) * 1e6, True),
    ("downlink commands delivered+acked/s", "downlink", lambda j: j["received"] / max(0.001, j["steady_seconds"]), False),
    ("downlink gateway CPU us per command", "downlink", lambda j: j["broker_cpu_seconds"] / max(1, j["received"]) * 1e6, True),
]
print(f"\n{'measure':42} {'before':>22} {'after':>22} {'after/before':>12}")
for name, case, key, lower in rows:
    b, a = get("before", case, key), get("after", case, key)
    if not b or not a:
        print(f"{name:42} (missing)"); continue
    mb, ma = sum(b) / len(b), sum(a) / len(a)
    fmt = lambda v: " ".join(f"{x:.0f}" if x >= 100 else f"{x:.2f}" for x in v)
    print(f"{name:42} {fmt(b):>22} {fmt(a):>22} {ma / mb:>11.3f}{' (lower wins)' if lower else ''}")
for f in sorted(os.listdir(d)):
    if f.endswith(".outcomes"):
        print(f"{f[:-9]:24} outcomes: " + ", ".join(" ".join(l.split()[::-1]) for l in open(os.path.join(d, f))))
print(f"\nraw results: {d}")
PY
