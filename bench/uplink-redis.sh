#!/usr/bin/env bash
# QoS 1 uplink into Redis Streams: pilegate's acknowledged messages/s and PUBACK
# latency, next to the same Redis's own ceiling for pipelined XADD, in one run.
#   bench/uplink-redis.sh [CONNECTIONS="10000 100000"] [SECONDS=15] [PACED_RATE=20000] [PILES=200000] [PILE_SECONDS=60]
# For each connection count:
#   max    every pile keeps a window of 8 QoS 1 messages in flight: the most pilegate
#          gets acknowledged by Redis per second (PUBACK only after XADD is confirmed);
#   paced  PACED_RATE messages/s spread over the piles, one in flight each (the pile
#          profile: 200k piles sending every 10 s is 20k/s): PUBACK latency.
#   pile   (once) PILES piles in the pile profile (2 guns, run data every 10-30 s each,
#          trade records): ~PILES/10 msgs/s QoS 1 into Redis, PUBACK percentiles, for
#          PILE_SECONDS; then again with the echo worker answering each message
#          through the downlink stream (end-to-end latency).
# Ceiling: redis-benchmark pipelining the same XADD (same fields, 400-byte payload) over
# as many connections as pilegate has shards. Redis runs without persistence for both.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
COUNTS=${1:-"10000 100000"}; SECS=${2:-15}; PACED=${3:-20000}; PILES=${4:-200000}; PILE_SECS=${5:-60}
out=$(pwd)/bench/results/uplink-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16390; PORT=18884
start_redis $RPORT "$out"
payload=$(printf '{"命令":"运行数据","reqid":1,"数据分区":"1枪数据","pad":"%0340d"}' 0)
shards=11   # pilegate's default layout: ceil(200000 / 19744) rings, one Redis connection each
ceiling=$(redis-benchmark -p $RPORT -c "$shards" -P 100 -n 2000000 -q XADD bench:ceiling MAXLEN '~' 1000000 '*' \
  device AAAAAAAA topic /xjdy/ops/v1/TCU/AAAAAAAA/msg qos 1 ts 1795267226012 node bench msgid bench-1-1-1 \
  payload "$payload" | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
redis-cli -p $RPORT del bench:ceiling >/dev/null
echo "redis ceiling, pipelined XADD: ${ceiling} /s"
printf '[redis]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n' $RPORT >"$out/pilegate.toml"

run() {  # name connections profile extra...
  local name=$1 n=$2 profile=$3; shift 3
  .build/release/pilegate --listen 0.0.0.0:$PORT --config "$out/pilegate.toml" >"$out/pilegate-$name.log" 2>&1 &
  local pid=$!; sleep 1
  timeout 900 .build/release/pileload --target 127.0.0.1:$PORT --profile "$profile" --qos 1 --connections "$n" \
    --sources 64 --connect-rate 30000 --broker-pid $pid --json "$out/$name.json" "$@" >"$out/$name.txt" || true
  kill -INT $pid 2>/dev/null || true; wait $pid || true
  redis-cli -p $RPORT del pilegate:up pilegate:events pilegate:presence >/dev/null
}
for n in $COUNTS; do
  run "max-$n" "$n" uplink --burst 8 --duration "$SECS"
  run "paced-$n" "$n" uplink --burst 1 --rate "$PACED" --duration "$SECS"
done
run "pile-$PILES" "$PILES" pile --duration "$PILE_SECS" --plot "$out/pile-$PILES.png"
run "pile-echo-$PILES" "$PILES" pile --duration "$PILE_SECS" --redis 127.0.0.1:$RPORT --plot "$out/pile-echo-$PILES.png"
python3 - "$out" "$ceiling" "$PILES" $COUNTS <<'PY'
import json, os, sys
d, ceiling, piles, counts = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
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
for name in (f"pile-{piles}", f"pile-echo-{piles}"):
    p = os.path.join(d, name + ".json")
    if not os.path.exists(p):
        continue
    j = json.load(open(p))
    print(f"\n{name}: {j['connected']} of {piles} piles, {j['acked_per_s']} QoS 1 msgs/s stored; PUBACK ms p50 {j['puback_ms_p50']} "
          f"p99 {j['puback_ms_p99']} p99.9 {j['puback_ms_p999']} max {j['puback_ms_max']}; closed by server {j['closed_by_server']}; "
          f"gateway RSS {j.get('broker_rss_end_kib')} KiB")
    if "end_to_end_ms_p50" in j:
        print(f"  echo worker: {j.get('echoed')} commands written, {j['received_per_s']} delivered/s; end to end ms p50 "
              f"{j['end_to_end_ms_p50']} p99 {j['end_to_end_ms_p99']}")
best = max((json.load(open(os.path.join(d, f"max-{n}.json")))["acked_per_s"] for n in counts
            if os.path.exists(os.path.join(d, f"max-{n}.json"))), default=0)
print(f"QoS 1 uplink at most {best}/s = {best / ceiling:.0%} of the Redis ceiling")
print(f"\nredis ceiling (redis-benchmark, pipelined XADD): {ceiling:.0f}/s; raw results: {d}")
PY
