#!/usr/bin/env bash
# What per-device overrides (rate.overrides_hash) cost, in one run, one build.
#   bench/overrides.sh [ROUNDS=2] [SECONDS=10]
# off: no overrides hash. on: an overrides hash with one entry for every simulated
# pile (a rate limit far above what it sends, so every PUBLISH takes the override's
# path and none is held). Alternating off on on off:
#   uplink   10,000 piles, QoS 1, 8 in flight each, into a local Redis: gateway CPU
#            per acknowledged message (the lookup per PUBLISH);
#   connect  50,000 piles connect: gateway CPU seconds per 100k connects (the lookup
#            per CONNECT).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-2}; SECS=${2:-10}
out=$(pwd)/bench/results/overrides-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16396; PORT=18891
start_redis $RPORT "$out"
python3 - >"$out/overrides.redis" <<'PY'
def pile(n):
    s = ""
    for _ in range(8):
        s = chr(65 + n % 26) + s
        n //= 26
    return s
for n in range(50000):
    print(f"HSET pilegate:overrides {pile(n)} messages_per_second=100000;burst=100000;note=bench")
PY

run() {  # name extra case
  local name=$1 extra=$2 what=$3
  redis-cli -p $RPORT del pilegate:up >/dev/null
  printf '[redis]\naddress = "127.0.0.1:%s"\n[rate]\n%s\n[log]\nlevel = "warning"\n' $RPORT "$extra" >"$out/$name.toml"
  .build/release/pilegate --listen 0.0.0.0:$PORT --config "$out/$name.toml" >"$out/pilegate-$name.log" 2>&1 &
  local pid=$!; sleep 2
  if [ "$what" = uplink ]; then
    timeout 300 .build/release/pileload --target 127.0.0.1:$PORT --profile uplink --qos 1 --burst 8 --connections 10000 \
      --sources 64 --connect-rate 30000 --broker-pid $pid --duration "$SECS" --json "$out/$name.json" >"$out/$name.txt" || true
  else
    timeout 300 .build/release/pileload --target 127.0.0.1:$PORT --profile idle --connections 50000 \
      --sources 64 --connect-rate 30000 --broker-pid $pid --duration 2 --json "$out/$name.json" >"$out/$name.txt" || true
  fi
  kill -INT $pid 2>/dev/null || true; wait $pid || true
  for _ in $(seq 300); do ss -ltn | grep -q ":$PORT " || break; sleep 0.1; done
}
redis-cli -p $RPORT <"$out/overrides.redis" >/dev/null
on=$'overrides_hash = "pilegate:overrides"'
for r in $(seq "$ROUNDS"); do
  order="off on"; [ $((r % 2)) = 0 ] && order="on off"
  for side in $order; do
    extra=""; [ $side = on ] && extra=$on
    run "$side-uplink-$r" "$extra" uplink
    run "$side-connect-$r" "$extra" connect
  done
done
python3 - "$out" "$ROUNDS" <<'PY'
import json, os, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def get(side, case, key):
    return [key(json.load(open(os.path.join(d, f"{side}-{case}-{r}.json")))) for r in range(1, rounds + 1)]
rows = [("uplink acknowledged/s", "uplink", lambda j: j["acked_per_s"]),
        ("uplink gateway CPU us per message", "uplink", lambda j: j["broker_cpu_seconds"] / max(1, j["acked"]) * 1e6),
        ("gateway CPU s per 100k connects", "connect", lambda j: j["broker_cpu_connect_seconds"] / max(1, j["connected"]) * 1e5)]
print(f"\n{'measure':36} {'off':>18} {'on':>18} {'on/off':>8}")
for name, case, key in rows:
    off, on = get("off", case, key), get("on", case, key)
    fmt = lambda v: " ".join(f"{x:.0f}" if x >= 100 else f"{x:.2f}" for x in v)
    print(f"{name:36} {fmt(off):>18} {fmt(on):>18} {sum(on) / sum(off):>8.3f}")
PY
