#!/usr/bin/env bash
# Issue 5's endurance target: PILES pile connections held for SECONDS, none dropped.
#   bench/hold.sh [PILES=200000] [SECONDS=600]
# Piles subscribe to their own command topic and ping at the keepalive (120 s) for
# the whole hold; pileload reports piles the server closed, and the gateway's RSS
# after connecting and at the end (growth over the hold = a leak or queues).
set -euo pipefail
cd "$(dirname "$0")/.."
PILES=${1:-200000}; SECS=${2:-600}
out=$(pwd)/bench/results/hold-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
PORT=18886
printf '[log]\nlevel = "warning"\n[admin]\nbind = "127.0.0.1:19886"\n' >"$out/pilegate.toml"
.build/release/pilegate --listen 127.0.0.1:$PORT --config "$out/pilegate.toml" >"$out/pilegate.log" 2>&1 &
pid=$!; sleep 1
# The gateway's own view, sampled while the piles are held (pileload's exit closes them
# all, so a scrape after it would count those): connected clients and closes so far.
(while kill -0 $pid 2>/dev/null; do
   m=$(curl -s 127.0.0.1:19886/metrics) || true
   c=$(grep -E '^pilegate_connections ' <<<"$m" | awk '{printf "%d", $2}')   # gauges render as 200000.0
   [ "${c:-0}" = "$PILES" ] && grep -E '^pilegate_connections_closed_total ' <<<"$m" | awk '{printf "%d\n", $2}' >"$out/closed-while-held"
   sleep 5
 done) &
timeout $((SECS + 600)) .build/release/pileload --target 127.0.0.1:$PORT --profile idle --subscribe --connections "$PILES" \
  --sources 64 --connect-rate 30000 --duration "$SECS" --broker-pid $pid --json "$out/hold.json" >"$out/hold.txt" || true
closed=$(cat "$out/closed-while-held" 2>/dev/null || echo "never all connected")
kill -INT $pid; wait $pid || true
python3 - "$out" "$closed" <<'PY'
import json, sys
d, closed = sys.argv[1], sys.argv[2]
j = json.load(open(d + "/hold.json"))
print(f"held {j['connected']} of {j['connections']} piles for {j['steady_seconds']:.0f} s; closed by server: {j['closed_by_server']}; "
      f"gateway connections closed while all were held (metrics, last sample): {closed}")
print(f"gateway RSS: {j['broker_rss_connected_kib']} KiB connected, {j['broker_rss_end_kib']} KiB at the end; "
      f"{j['rss_per_connection_bytes']} B per connection; connect {j['connect_seconds']:.1f} s")
print(f"raw results: {d}")
PY
