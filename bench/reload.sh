#!/usr/bin/env bash
# What a reload costs with many piles connected, in one run.
#   bench/reload.sh [PILES=200000] [SECONDS=30] [EVERY=2]
# Two runs of the pile profile (PILES piles, QoS 1 run data into a local Redis) of
# SECONDS each on one build: without reloads, then with a SIGHUP every EVERY seconds.
# Prints the time from SIGHUP to the new config in force on every shard (the
# gateway's "reloaded ... in N ms" lines), PUBACK p50/p99 of both runs, and whether
# any pile was dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PILES=${1:-200000}; SECS=${2:-30}; EVERY=${3:-2}
out=$(pwd)/bench/results/reload-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16394; PORT=18889
start_redis $RPORT "$out"
printf '[redis]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "notice"\n' $RPORT >"$out/pilegate.toml"

run() {  # name reload?
  local name=$1 reload=$2
  redis-cli -p $RPORT flushall >/dev/null
  .build/release/pilegate --listen 0.0.0.0:$PORT --config "$out/pilegate.toml" >"$out/pilegate-$name.log" 2>&1 &
  local pid=$!; sleep 1
  timeout 600 .build/release/pileload --target 127.0.0.1:$PORT --profile pile --qos 1 --connections "$PILES" \
    --sources 64 --connect-rate 30000 --broker-pid $pid --duration "$SECS" --json "$out/$name.json" >"$out/$name.txt" &
  local load=$!
  if [ "$reload" = 1 ]; then
    # once every pile is connected (pileload prints its steady phase), SIGHUP every EVERY s
    for _ in $(seq 600); do grep -q "ALL CONNECTED" "$out/$name.txt" 2>/dev/null && break; sleep 0.5; done
    while kill -0 $load 2>/dev/null; do kill -HUP $pid; sleep "$EVERY"; done
  fi
  wait $load || true
  kill -INT $pid 2>/dev/null || true; wait $pid || true
  for _ in $(seq 300); do ss -ltn | grep -q ":$PORT " || break; sleep 0.1; done
}
run plain 0
run reloading 1
python3 - "$out" <<'PY'
import json, os, re, sys
d = sys.argv[1]
ms = [float(m) for m in re.findall(r"reloaded .* in ([0-9.]+) ms", open(os.path.join(d, "pilegate-reloading.log")).read())]
refused = open(os.path.join(d, "pilegate-reloading.log")).read().count("refused")
print(f"reloads: {len(ms)} applied, {refused} refused; SIGHUP to in force on every shard: "
      + (f"min {min(ms):.2f} ms, median {sorted(ms)[len(ms) // 2]:.2f} ms, max {max(ms):.2f} ms" if ms else "none"))
for name in ("plain", "reloading"):
    j = json.load(open(os.path.join(d, name + ".json")))
    print(f"{name:10} connected {j['connected']}, closed by server {j['closed_by_server']}, acked {j['acked']},"
          f" PUBACK p50 {j.get('puback_ms_p50')} ms p99 {j.get('puback_ms_p99')} ms p99.9 {j.get('puback_ms_p999')} ms")
PY
