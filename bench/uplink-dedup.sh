#!/usr/bin/env bash
# What storing uplink resends once costs (redis.dedup_window_ms), in one run.
#   bench/uplink-dedup.sh [ROUNDS=2] [SECONDS=10] [RATE=0]
# RATE (messages/s, 0 = as fast as they go) holds both sides to the same load, so the
# CPU per message compares the work and not how well each side batches at its peak.
# Cases, each on a fresh redis-server (no persistence), one release build:
#   off / on  10,000 piles, QoS 1, 8 in flight each (the uplink profile), with
#             dedup_window_ms = 0 and with the default: acknowledged msgs/s, gateway and
#             Redis CPU per message, alternating off on on off. After each "on" run the
#             dedup keys are deleted and Redis's used_memory before minus after is what
#             the window held: per client (one key each) and per 100k messages.
#   records   2,000 piles sending only trade records through a route with
#             dedup_json_key (every record new): the memory of the identity keys, per
#             100k records.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-2}; SECS=${2:-10}; RATE=${3:-0}
out=$(pwd)/bench/results/uplink-dedup-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16393; PORT=18888
start_redis $RPORT "$out"
redis_cpu() { awk '{print $14 + $15}' "/proc/$(cat "$out/redis.pid")/stat"; }   # clock ticks
used() { redis-cli -p $RPORT info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }
forget() {  # delete keys matching $1; prints how many
  local n; n=$(redis-cli -p $RPORT --scan --pattern "$1" | tee "$out/keys" | wc -l)
  xargs -a "$out/keys" -n 1000 redis-cli -p $RPORT del >/dev/null 2>&1 || true
  echo "$n"
}

run() {  # name config-extra profile-args...
  local name=$1 extra=$2; shift 2
  redis-cli -p $RPORT flushall >/dev/null
  printf '[redis]\naddress = "127.0.0.1:%s"\n%s\n[log]\nlevel = "warning"\n' $RPORT "$extra" >"$out/$name.toml"
  .build/release/pilegate --listen 0.0.0.0:$PORT --config "$out/$name.toml" >"$out/pilegate-$name.log" 2>&1 &
  local pid=$!; sleep 1
  local r0; r0=$(redis_cpu)
  timeout 300 .build/release/pileload --target 127.0.0.1:$PORT --sources 64 --connect-rate 30000 --broker-pid $pid \
    --json "$out/$name.json" "$@" >"$out/$name.txt" || true
  echo "$(( $(redis_cpu) - r0 ))" >"$out/$name.redis-ticks"
  kill -INT $pid 2>/dev/null || true; wait $pid || true
  for _ in $(seq 300); do ss -ltn | grep -q ":$PORT " || break; sleep 0.1; done
  redis-cli -p $RPORT xlen pilegate:up >"$out/$name.stored"
  case $name in
    on-*) local before; before=$(used); echo "$(forget 'pilegate:up:dd:*') $before $(used)" >"$out/$name.memory" ;;
    records) local before; before=$(used); echo "$(forget 'pilegate:trade:dd:*:*') $before $(used)" >"$out/$name.memory"
             redis-cli -p $RPORT xlen pilegate:trade >"$out/$name.stored" ;;
  esac
}
uplink=(--profile uplink --qos 1 --burst 8 --connections 10000 --duration "$SECS" --rate "$RATE")
for r in $(seq "$ROUNDS"); do
  order="off on"; [ $((r % 2)) = 0 ] && order="on off"
  for side in $order; do
    if [ $side = off ]; then run "off-$r" "dedup_window_ms = 0" "${uplink[@]}"; else run "on-$r" "" "${uplink[@]}"; fi
  done
done
run records $'[[route]]\nfilter = "/xjdy/ops/v1/TCU/+/msg"\nstream = "pilegate:trade"\ndedup_json_key = "交易流水号"' \
  --profile pile --qos 1 --connections 2000 --guns 2 --min-interval 0.1 --max-interval 0.2 --trade-every 1 --duration 5
python3 - "$out" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY'
import json, os, sys
d, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    j = json.load(open(os.path.join(d, name + ".json")))
    j["redis_s"] = int(open(os.path.join(d, name + ".redis-ticks")).read()) / hz
    return j
rows = [("QoS 1 uplink acknowledged/s", lambda j: j["acked_per_s"]),
        ("gateway CPU us per message", lambda j: j["broker_cpu_seconds"] / max(1, j["acked"]) * 1e6),
        ("Redis CPU us per message", lambda j: j["redis_s"] / max(1, j["acked"]) * 1e6)]
print(f"\n{'measure':34} {'off':>18} {'on':>18} {'on/off':>8}")
for name, key in rows:
    off = [key(load(f"off-{r}")) for r in range(1, rounds + 1)]
    on = [key(load(f"on-{r}")) for r in range(1, rounds + 1)]
    fmt = lambda v: " ".join(f"{x:.0f}" if x >= 100 else f"{x:.2f}" for x in v)
    print(f"{name:34} {fmt(off):>18} {fmt(on):>18} {sum(on) / sum(off):>8.3f}")
for r in range(1, rounds + 1):
    keys, before, after = map(int, open(os.path.join(d, f"on-{r}.memory")).read().split())
    stored = int(open(os.path.join(d, f"on-{r}.stored")).read())
    print(f"resend window, round {r}: {keys} keys, {before - after} bytes: {(before - after) / max(1, keys):.0f} B per client,"
          f" {(before - after) / max(1, stored) * 1e5 / 2**20:.2f} MiB per 100k messages ({stored} stored)")
keys, before, after = map(int, open(os.path.join(d, "records.memory")).read().split())
stored = int(open(os.path.join(d, "records.stored")).read())
print(f"record identities: {keys} keys for {stored} records, {before - after} bytes:"
      f" {(before - after) / max(1, keys):.0f} B each, {(before - after) / max(1, keys) * 1e5 / 2**20:.2f} MiB per 100k records")
PY
