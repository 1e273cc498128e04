#!/usr/bin/env bash
# Piles on 4G-like links (LoadTest/faultproxy.py between pileload and pilegate):
# PILES piles at 300 +- 200 ms RTT and 64 kbit/s each way, with random 5 s stalls
# (non-overlapping, every STALL_EVERY s on average), publish QoS 1 once a second for
# SECONDS with a 30 s keepalive. Reported: acknowledged vs stored, keepalive expiries
# (none is called for: the longest silence is a 5 s stall), connections closed by the
# server, the gateway's RSS every 10 s, and the proxy's counters.
#   bench/bad-links.sh [PILES=2000] [SECONDS=180] [STALL_EVERY=30]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PILES=${1:-2000}; SECS=${2:-180}; EVERY=${3:-30}
out=$(pwd)/bench/results/bad-links-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16393; PORT=18887; PROXY=18888; ADMIN=18889
start_redis $RPORT "$out"
printf '[redis]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n[admin]\nbind = "127.0.0.1:%s"\n' $RPORT $ADMIN >"$out/pilegate.toml"
.build/release/pilegate --listen 127.0.0.1:$PORT --config "$out/pilegate.toml" >"$out/pilegate.log" 2>&1 &
gw=$!
python3 LoadTest/faultproxy.py --listen 127.0.0.1:$PROXY --target 127.0.0.1:$PORT --delay-ms 150 --jitter-ms 100 \
  --rate-kbit 64 --stall-every "$EVERY" --stall-ms 5000 --duration $((SECS + 120)) --stats "$out/proxy.json" >"$out/proxy.log" 2>&1 &
proxy=$!
trap 'kill $gw $proxy 2>/dev/null || true' EXIT
sleep 1
( while kill -0 $gw 2>/dev/null; do echo "$(date +%s) $(awk '/VmRSS/ {print $2}' /proc/$gw/status)"; sleep 10; done ) >"$out/rss.txt" &
timeout $((SECS + 300)) .build/release/pileload --target 127.0.0.1:$PROXY --profile uplink --qos 1 --connections "$PILES" \
  --burst 1 --rate "$PILES" --keepalive 30 --connect-rate 500 --sources 8 --duration "$SECS" \
  --json "$out/load.json" >"$out/load.txt" 2>&1 || true
kill -TERM $proxy; wait $proxy || true   # its queued bytes and closes go with it
sleep 2
metrics=$(curl -s http://127.0.0.1:$ADMIN/metrics)
stored=$(redis-cli -p $RPORT xlen pilegate:up)
python3 - "$out" "$stored" "$metrics" <<'PY'
import json, sys
d, stored, metrics = sys.argv[1], int(sys.argv[2]), sys.argv[3]
m = {l.split(" ")[0]: float(l.split(" ")[1]) for l in metrics.splitlines() if l and not l.startswith("#")}
j = json.load(open(d + "/load.json"))
p = json.load(open(d + "/proxy.json"))
print(f"piles {j['connected']}; acknowledged {j['acked']}, stored {stored} (stored >= acknowledged: "
      f"{stored >= j['acked']}); PUBACK ms p50 {j['puback_ms_p50']} p99 {j['puback_ms_p99']} max {j['puback_ms_max']}")
print(f"keepalive expiries {m.get('pilegate_keepalive_expiries_total', 0):.0f}; closed by the server {j['closed_by_server']}; "
      f"connections left after the run {m.get('pilegate_connections', 0):.0f}")
print(f"proxy: {p}")
rss = [int(l.split()[1]) for l in open(d + "/rss.txt") if len(l.split()) == 2]
print("gateway RSS KiB every 10 s: " + " ".join(map(str, rss)))
print(f"raw results: {d}")
PY
