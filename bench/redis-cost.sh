#!/usr/bin/env bash
# What one uplink message costs Redis, fed by pilegate, against the same XADD from
# redis-benchmark pipelining 100 deep, on one Redis in one run:
#   1. pilegate: PILES piles publish QoS 1 (300 B) as fast as they can for SECONDS, then
#      paced at RATE msgs/s; Redis CPU (from /proc) and pilegate CPU per stored message;
#   2. redis-benchmark -P 100 over as many connections as pilegate has shards, the same
#      XADD (MAXLEN ~, the same seven fields and a 300 B payload): Redis CPU per XADD.
# Prints the ratios: Redis per message (pilegate / benchmark) and pilegate / Redis.
#   bench/redis-cost.sh [PILES=10000] [SECONDS=15] [RATE=20000]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PILES=${1:-10000}; SECS=${2:-15}; RATE=${3:-20000}
out=$(pwd)/bench/results/redis-cost-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16392; PORT=18886
start_redis $RPORT "$out"
rpid=$(cat "$out/redis.pid")
ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
printf '[redis]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n' $RPORT >"$out/pilegate.toml"

run() {  # name pileload-args...
  local name=$1; shift
  .build/release/pilegate --listen 127.0.0.1:$PORT --config "$out/pilegate.toml" >"$out/$name.log" 2>&1 &
  local pid=$!; sleep 1
  cat /proc/$pid/task/*/comm | grep -c '^shard-' >"$out/shards" || true
  local before; before=$(ticks "$rpid")
  timeout 300 .build/release/pileload --target 127.0.0.1:$PORT --profile uplink --qos 1 --connections "$PILES" \
    --sources 16 --connect-rate 20000 --payload 300 --broker-pid $pid --json "$out/$name.json" "$@" >"$out/$name.txt" || true
  echo $(( $(ticks "$rpid") - before )) >"$out/$name.redis-ticks"
  kill -INT $pid 2>/dev/null || true; wait $pid || true
  redis-cli -p $RPORT flushall >/dev/null
}
run max --burst 8 --duration "$SECS"
run paced --burst 1 --rate "$RATE" --duration "$SECS"
shards=$(cat "$out/shards")   # pilegate's shards, one Redis connection each
payload=$(printf '%0300d' 0)
n=2000000
before=$(ticks "$rpid")
redis-benchmark -p $RPORT -c "$shards" -P 100 -n $n -q XADD bench:cost MAXLEN '~' 1000000 '*' \
  device AAAAAAAA topic /xjdy/ops/v1/TCU/AAAAAAAA/msg qos 1 ts 1795267226012 node bench msgid bench-1-1-1 \
  payload "$payload" >"$out/benchmark.txt" 2>&1
echo $(( $(ticks "$rpid") - before )) >"$out/benchmark.redis-ticks"
python3 - "$out" "$(getconf CLK_TCK)" "$n" "$shards" <<'PY'
import json, os, sys
d, hz, n, shards = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
bench = int(open(os.path.join(d, "benchmark.redis-ticks")).read()) / hz / n * 1e6
print(f"redis-benchmark -P 100 -c {shards}: Redis {bench:.2f} us per XADD")
print(f"{'case':>6} {'stored/s':>9} {'PUBACK p50':>10} {'p99':>7} {'Redis us/msg':>12} {'x benchmark':>11} {'pilegate us/msg':>15} {'x Redis':>8}")
for name in ("max", "paced"):
    j = json.load(open(os.path.join(d, name + ".json")))
    msgs = max(1, j["acked"])
    r = int(open(os.path.join(d, name + ".redis-ticks")).read()) / hz / msgs * 1e6
    g = j["broker_cpu_seconds"] / msgs * 1e6
    print(f"{name:>6} {j['acked_per_s']:>9} {j['puback_ms_p50']:>10} {j['puback_ms_p99']:>7} {r:>12.2f} {r / bench:>11.2f} {g:>15.2f} {g / r:>8.2f}")
print(f"raw results: {d}")
PY
