#!/usr/bin/env bash
# QoS 1 uplink into Redis Streams: pilegate's acknowledged messages/s and PUBACK
# latency, next to the same Redis's own ceiling for pipelined XADD, in one run.
#   bench/uplink-redis.sh [CONNECTIONS="10000 100000"] [SECONDS=15] [PACED_RATE=20000]
# For each connection count:
#   max    every pile keeps a window of 8 QoS 1 messages in flight: the most pilegate
#          gets acknowledged by Redis per second (PUBACK only after XADD is confirmed);
#   paced  PACED_RATE messages/s spread over the piles, one in flight each (the pile
#          profile: 200k piles sending every 10 s is 20k/s): PUBACK latency.
# Ceiling: redis-benchmark pipelining the same XADD (same fields, 400-byte payload) over
# as many connections as pilegate has shards. Redis runs without persistence for both.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${1:-"10000 100000"}; SECS=${2:-15}; PACED=${3:-20000}
out=$(pwd)/bench/results/uplink-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16390; PORT=18884
redis-server --port $RPORT --bind 127.0.0.1 --save "" --appendonly no --dir "$out" --daemonize yes \
  --logfile "$out/redis.log" --pidfile "$out/redis.pid" >/dev/null
trap 'redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1 || true' EXIT
sleep 0.5
payload=$(printf '{"命令":"运行数据","reqid":1,"数据分区":"1枪数据","pad":"%0340d"}' 0)
shards=11   # pilegate's default layout: ceil(200000 / 19744) rings, one Redis connection each
ceiling=$(redis-benchmark -p $RPORT -c "$shards" -P 100 -n 2000000 -q XADD bench:ceiling MAXLEN '~' 1000000 '*' \
  device AAAAAAAA topic /xjdy/ops/v1/TCU/AAAAAAAA/msg qos 1 ts 1795267226012 node bench msgid bench-1-1-1 \
  payload "$payload" | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
redis-cli -p $RPORT del bench:ceiling >/dev/null
echo "redis ceiling, pipelined XADD: ${ceiling} /s"
printf '[redis]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n' $RPORT >"$out/pilegate.toml"

run() {  # name connections extra...
  local name=$1 n=$2; shift 2
  .build/release/pilegate --listen 0.0.0.0:$PORT --config "$out/pilegate.toml" >"$out/pilegate-$name.log" 2>&1 &
  local pid=$!; sleep 1
  timeout 900 .build/release/pileload --target 127.0.0.1:$PORT --profile uplink --qos 1 --connections "$n" \
    --sources 64 --connect-rate 50000 --duration "$SECS" --broker-pid $pid --json "$out/$name.json" "$@" >"$out/$name.txt" || true
  kill -INT $pid; wait $pid || true
  redis-cli -p $RPORT del pilegate:up pilegate:events pilegate:presence >/dev/null
}
for n in $COUNTS; do
  run "max-$n" "$n" --burst 8
  run "paced-$n" "$n" --burst 1 --rate "$PACED"
done
python3 - "$out" "$ceiling" $COUNTS <<'PY'
import json, os, sys
d, ceiling, counts = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
print(f"\n{'connections':>11} {'case':>6} {'acked/s':>9} {'of ceiling':>10} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'CPU s/M':>8} {'failed':>6}")
for n in counts:
    for case in ("max", "paced"):
        p = os.path.join(d, f"{case}-{n}.json")
        if not os.path.exists(p):
            print(f"{n:>11} {case:>6} (no result)"); continue
        j = json.load(open(p))
        a = j["acked_per_s"]
        cpu = j["broker_cpu_seconds"] / max(1, j["acked"]) * 1e6
        print(f"{n:>11} {case:>6} {a:>9} {a/ceiling:>9.0%} {j['puback_ms_p50']:>7} {j['puback_ms_p99']:>7} {j['puback_ms_p999']:>8} {cpu:>8.2f} {j['failed']:>6}")
print(f"\nredis ceiling (redis-benchmark, pipelined XADD): {ceiling:.0f}/s; raw results: {d}")
PY
