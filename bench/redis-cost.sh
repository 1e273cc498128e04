#!/usr/bin/env bash
# What one uplink message costs Redis, fed by pilegate, against the same XADD from
# redis-benchmark pipelining 100 deep, on one Redis in one run:
#   1. for each VARIANT (a name and [redis] settings), pilegate: PILES piles publish
#      QoS 1 (300 B) as fast as they can for SECONDS, then paced at each of RATES
#      msgs/s; Redis CPU and pilegate CPU per stored message, both from /proc over
#      the publishing window only (pileload --broker-pid --redis-pid: the piles'
#      connects and disconnects, presence and events, are not in it);
#   2. redis-benchmark -P 100 over as many connections as pilegate has shards, the same
#      XADD (MAXLEN ~, the same seven fields and a 300 B payload): Redis CPU per XADD.
# Prints the ratios: Redis per message (pilegate / benchmark) and pilegate / Redis.
#   bench/redis-cost.sh [PILES=10000] [SECONDS=15] [RATES="20000 50000"]
#   VARIANTS="every-shard:uplink_writers=1024,write_interval_us=0 writers:" bench/redis-cost.sh
# PILE_PROFILE=200000: each variant also runs the pile profile (that many piles, 2 guns
# each every 10-30 s, trade records; PILE_SECONDS=60) where every shard carries piles.
# A variant is NAME:KEY=VALUE,..[:BINARY] (another build of pilegate, e.g. a worktree
# of the commit before a change, to measure before and after in one run).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PILES=${1:-10000}; SECS=${2:-15}; RATES=${3:-"20000 50000"}
VARIANTS=${VARIANTS:-"every-shard:uplink_writers=1024,write_interval_us=0 writers:"}
out=$(pwd)/bench/results/redis-cost-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16392; PORT=18886
start_redis $RPORT "$out"
rpid=$(cat "$out/redis.pid")
ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }

run() {  # name config binary pileload-args...
  local name=$1 conf=$2 bin=$3; shift 3
  "$bin" --listen 127.0.0.1:$PORT --config "$conf" >"$out/$name.log" 2>&1 &
  local pid=$!; sleep 1
  cat /proc/$pid/task/*/comm | grep -c '^shard-' >"$out/shards" || true
  timeout 600 .build/release/pileload --target 127.0.0.1:$PORT --connections "$PILES" \
    --connect-rate 20000 --broker-pid $pid --redis-pid "$rpid" \
    --json "$out/$name.json" "$@" >"$out/$name.txt" || true
  kill -INT $pid 2>/dev/null || true; wait $pid || true
  redis-cli -p $RPORT flushall >/dev/null
}
benchmark() {  # NAME: the XADD pipelined 100 deep; Redis CPU ticks to NAME.redis-ticks
  local n=1000000 payload; payload=$(printf '%0300d' 0)
  local before; before=$(ticks "$rpid")
  redis-benchmark -p $RPORT -c "$(cat "$out/shards")" -P 100 -n $n -q XADD bench:cost MAXLEN '~' 1000000 '*' \
    device AAAAAAAA topic /xjdy/ops/v1/TCU/AAAAAAAA/msg qos 1 ts 1795267226012 node bench msgid bench-1-1-1 \
    payload "$payload" >"$out/$1.txt" 2>&1
  echo $(( $(ticks "$rpid") - before )) >"$out/$1.redis-ticks"
  redis-cli -p $RPORT flushall >/dev/null
}
uplink="--profile uplink --qos 1 --payload 300 --sources 16"
cases=()
for v in $VARIANTS; do
  IFS=: read -r name settings bin <<<"$v"
  bin=${bin:-.build/release/pilegate}
  conf="$out/$name.toml"
  { printf '[redis]\naddress = "127.0.0.1:%s"\n' $RPORT
    for kv in ${settings//,/ }; do echo "$kv"; done
    printf '[log]\nlevel = "warning"\n'; } >"$conf"
  run "$name-max" "$conf" "$bin" $uplink --burst 8 --duration "$SECS"; cases+=("$name-max")
  [ -f "$out/benchmark-first.redis-ticks" ] || benchmark benchmark-first   # as many connections as pilegate has shards
  for r in $RATES; do run "$name-$r" "$conf" "$bin" $uplink --burst 1 --rate "$r" --duration "$SECS"; cases+=("$name-$r"); done
  if [ -n "${PILE_PROFILE:-}" ]; then
    { printf '[server]\nmax_connections = %s\n' $((PILE_PROFILE + 1000)); cat "$conf"; } >"$conf.pile"
    PILES=$PILE_PROFILE run "$name-pile$PILE_PROFILE" "$conf.pile" "$bin" --profile pile --qos 1 --sources 64 \
      --duration "${PILE_SECONDS:-60}" --connect-timeout 300
    cases+=("$name-pile$PILE_PROFILE")
  fi
done
benchmark benchmark-last
python3 - "$out" "$(getconf CLK_TCK)" "$(cat "$out/shards")" "${cases[@]}" <<'PY'
import json, os, sys
d, hz, shards, cases = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
runs = [int(open(os.path.join(d, f"benchmark-{w}.redis-ticks")).read()) / hz / 1e6 * 1e6 for w in ("first", "last")]
bench = sum(runs) / 2
print(f"redis-benchmark -P 100 -c {shards}: Redis {runs[0]:.2f} and {runs[1]:.2f} us per XADD (first, last); ratios against {bench:.2f}")
print(f"{'case':>20} {'stored/s':>9} {'PUBACK p50':>10} {'p99':>7} {'p99.9':>7} {'Redis us/msg':>12} {'x benchmark':>11} {'pilegate us/msg':>15} {'x Redis':>8}")
for name in cases:
    j = json.load(open(os.path.join(d, name + ".json")))
    msgs = max(1, j["acked"])
    r = j["redis_cpu_seconds"] / msgs * 1e6
    g = j["broker_cpu_seconds"] / msgs * 1e6
    print(f"{name:>20} {j['acked_per_s']:>9} {j['puback_ms_p50']:>10} {j['puback_ms_p99']:>7} {j.get('puback_ms_p999', '-'):>7} {r:>12.2f} {r / bench:>11.2f} {g:>15.2f} {g / r:>8.2f}")
print(f"raw results: {d}")
PY
