#!/usr/bin/env bash
# What lag-aware trimming (redis.consumer_groups) costs and how it behaves, in one run.
#   bench/worker-lag.sh [SECONDS=10] [CAP=200000]
# Cases, each on a fresh redis-server (no persistence), 10,000 piles, QoS 1, 8 in flight each:
#   maxlen  no groups: every XADD trims with MAXLEN ~ 10,000,000 (the cap is not reached):
#           gateway CPU and Redis CPU per acknowledged message;
#   groups  consumer_groups = ["workers"] (a group nobody reads, cap not reached): plain
#           XADD plus the review every second: the same two figures;
#   cap     the same group, stream_maxlen = CAP: piles run into the cap and are held; the
#           stream's memory at the cap (MEMORY USAGE); then the workers catch up at once
#           (XGROUP SETID to the end) and the time until the gateway stores and
#           acknowledges uplink again is measured from its /metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS=${1:-10}; CAP=${2:-200000}
out=$(pwd)/bench/results/worker-lag-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16392; PORT=18887; APORT=19887
redis_cpu() { awk '{print $14 + $15}' "/proc/$(cat "$out/redis.pid")/stat"; }   # clock ticks
metric() { curl -s "http://127.0.0.1:$APORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

run() {  # name config-extra
  local name=$1 extra=$2
  redis-cli -p $RPORT flushall >/dev/null
  if [ "$name" != maxlen ]; then redis-cli -p $RPORT XGROUP CREATE pilegate:up workers '$' MKSTREAM >/dev/null; fi
  printf '[redis]\naddress = "127.0.0.1:%s"\n%s\n[admin]\nbind = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n' \
    $RPORT "$extra" $APORT >"$out/$name.toml"
  .build/release/pilegate --listen 0.0.0.0:$PORT --config "$out/$name.toml" >"$out/pilegate-$name.log" 2>&1 &
  local pid=$!; sleep 1
  local r0; r0=$(redis_cpu)
  timeout 300 .build/release/pileload --target 127.0.0.1:$PORT --profile uplink --qos 1 --burst 8 --connections 10000 \
    --sources 64 --connect-rate 30000 --broker-pid $pid --duration "$SECS" --json "$out/$name.json" >"$out/$name.txt" &
  local load=$!
  if [ "$name" = cap ]; then
    # Wait for the hold, let it stand for 2 s, then let the workers catch up at once.
    for _ in $(seq 600); do [ "$(metric pilegate_uplink_held_for_workers)" = "1.0" ] && break; sleep 0.05; done
    sleep 2
    redis-cli -p $RPORT MEMORY USAGE pilegate:up SAMPLES 0 >"$out/cap-memory.txt"
    redis-cli -p $RPORT XLEN pilegate:up >"$out/cap-length.txt"
    local stored; stored=$(metric pilegate_uplink_stored_total)
    local t0; t0=$(date +%s%N)
    redis-cli -p $RPORT XGROUP SETID pilegate:up workers '$' >/dev/null
    for _ in $(seq 2000); do [ "$(metric pilegate_uplink_stored_total)" != "$stored" ] && break; sleep 0.005; done
    echo $(( ($(date +%s%N) - t0) / 1000000 )) >"$out/cap-resume-ms.txt"
  fi
  wait $load || true
  echo $(( $(redis_cpu) - r0 )) >"$out/$name-redis-ticks.txt"
  kill -INT $pid 2>/dev/null || true; wait $pid || true
}
start_redis $RPORT "$out"
run maxlen "stream_maxlen = 10000000"
run groups "stream_maxlen = 10000000
consumer_groups = [\"workers\"]"
run cap "stream_maxlen = $CAP
consumer_groups = [\"workers\"]"
python3 - "$out" "$(getconf CLK_TCK)" "$CAP" <<'PY'
import json, os, sys
d, tck, cap = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def case(n):
    j = json.load(open(os.path.join(d, n + ".json")))
    ticks = int(open(os.path.join(d, n + "-redis-ticks.txt")).read())
    return j, j["broker_cpu_seconds"] / max(1, j["acked"]) * 1e6, ticks / tck / max(1, j["acked"]) * 1e6
print(f"{'case':8} {'acked/s':>9} {'gateway us/msg':>15} {'redis us/msg':>13}")
rows = {}
for n in ("maxlen", "groups"):
    j, g, r = case(n)
    rows[n] = (g, r)
    print(f"{n:8} {j['acked_per_s']:>9} {g:>15.2f} {r:>13.2f}")
print(f"groups / maxlen: gateway {rows['groups'][0] / rows['maxlen'][0]:.3f}, redis {rows['groups'][1] / rows['maxlen'][1]:.3f}")
mem = int(open(os.path.join(d, "cap-memory.txt")).read() or 0)
length = int(open(os.path.join(d, "cap-length.txt")).read() or 0)
print(f"at the cap ({cap}): stream length {length}, memory {mem / 2**20:.1f} MiB ({mem / max(1, length):.0f} B per entry)")
print(f"workers caught up -> uplink stored again after {open(os.path.join(d, 'cap-resume-ms.txt')).read().strip()} ms")
print(f"raw results: {d}")
PY
