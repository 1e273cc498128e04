#!/usr/bin/env bash
# Cost of metrics and per-device accounting on the hot path, and /metrics at scale.
#   bench/observability.sh [PILES=10000] [RATE=20000] [SECONDS=15] [BASELINE=20b39e8] [SCRAPE_PILES=200000]
# 1. QoS 1 uplink into Redis (the pile profile's path: ACL, counters by packet type,
#    XADD latency histogram, per-stream counter, DailyUsage, silent-device stamp),
#    PILES piles sending RATE msgs/s in total, one in flight each, for SECONDS:
#      on        this tree, with [devices] traffic rollup every second (the default is
#                60 s) and silent-device review on;
#      off       this tree, rollup and silent review off (the per-packet counters and
#                the usage bookkeeping cannot be turned off, see 2);
#      baseline  the tree at commit BASELINE, before packets-by-type, the histograms,
#                per-stream and per-rule counters, the rollup and silent detection.
#    Alternated twice; gateway CPU seconds per million acknowledged messages, and the ratio.
# 2. perf profile of the "on" run: the share of gateway CPU samples in the metrics and
#    accounting code (Counters, Histogram, countIn/countOut, Ops/TrafficRollup.swift, Ops/SilentDevices.swift).
# 3. SCRAPE_PILES idle piles subscribed to their command topic: /metrics time (20
#    scrapes) and size.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PILES=${1:-10000}; RATE=${2:-20000}; SECS=${3:-15}; BASELINE=${4:-20b39e8}; SCRAPE=${5:-200000}
out=$(pwd)/bench/results/observability-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
base=/tmp/pilegate-baseline-$BASELINE
if [ ! -x "$base/.build/release/pilegate" ]; then
  echo "== building the baseline ($BASELINE) in $base (once; a few minutes)"
  rm -rf "$base"; git worktree add -f --detach "$base" "$BASELINE" >/dev/null 2>&1 || git clone -q . "$base"
  (cd "$base" && git checkout -q "$BASELINE" && swift build -c release --product pilegate >/dev/null)
fi
RPORT=16391; PORT=18885; APORT=19885
start_redis $RPORT "$out"
conf() {  # name devices-section
  printf '[redis]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n[admin]\nbind = "127.0.0.1:%s"\n%s\n' \
    $RPORT $APORT "$2" >"$out/$1.toml"
}
conf on  $'[devices]\ntraffic_flush_seconds = 1\nsilent_seconds = 5'
conf off $'[devices]\ntraffic_prefix = ""\nsilent_seconds = 0'
printf '[redis]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n[admin]\nbind = "127.0.0.1:%s"\n' $RPORT $APORT >"$out/baseline.toml"

run() {  # label binary config [perf]
  local label=$1 bin=$2 cfg=$3
  "$bin" --listen 127.0.0.1:$PORT --config "$out/$cfg.toml" >"$out/pilegate-$label.log" 2>&1 &
  local pid=$!; sleep 1
  local perfpid=""
  if [ "${4:-}" = perf ]; then
    (sleep 8; perf record -F 999 -g -p $pid -o "$out/perf.data" -- sleep 8 >/dev/null 2>&1) &
    perfpid=$!
  fi
  timeout 600 .build/release/pileload --target 127.0.0.1:$PORT --profile uplink --qos 1 --connections "$PILES" \
    --sources 16 --connect-rate 50000 --duration "$SECS" --burst 1 --rate "$RATE" --broker-pid $pid \
    --json "$out/$label.json" >"$out/$label.txt" || true
  [ -n "$perfpid" ] && wait $perfpid || true
  kill -INT $pid; wait $pid || true
  redis-cli -p $RPORT flushall >/dev/null
}
for round in 1 2; do
  run "on-$round" .build/release/pilegate on $([ $round = 1 ] && echo perf)
  run "off-$round" .build/release/pilegate off
  run "baseline-$round" "$base/.build/release/pilegate" baseline
done

echo "== perf: share of samples in metrics and accounting code"
perf report -i "$out/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null >"$out/perf.txt" || true
python3 - "$out/perf.txt" <<'PY' | tee "$out/perf-share.txt"
import re, sys
total = 0.0; ours = {}
pat = re.compile(r"Counters|Histogram|countIn|countOut|DailyUsage|TrafficRollup|flushTraffic|reviewSilence|spoke|rateAction|routed|Metrics")
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"\s+([0-9.]+)%\s+\[.\]\s+(.*)", line)
    if not m: continue
    pct, sym = float(m.group(1)), m.group(2).strip()
    total += pct
    if pat.search(sym): ours[sym[:110]] = ours.get(sym[:110], 0) + pct
share = sum(ours.values())
for s, p in sorted(ours.items(), key=lambda x: -x[1])[:12]: print(f"  {p:5.2f}%  {s}")
print(f"metrics + accounting: {share:.2f}% of gateway samples (self time; {total:.0f}% listed)")
PY

echo "== /metrics with $SCRAPE idle piles"
.build/release/pilegate --listen 127.0.0.1:$PORT --config "$out/on.toml" >"$out/pilegate-scrape.log" 2>&1 &
pid=$!; sleep 1
timeout 900 .build/release/pileload --target 127.0.0.1:$PORT --profile idle --subscribe --connections "$SCRAPE" \
  --sources 64 --connect-rate 30000 --duration 40 --broker-pid $pid --json "$out/scrape-load.json" >"$out/scrape-load.txt" &
lp=$!
for _ in $(seq 1 300); do
  n=$(curl -s 127.0.0.1:$APORT/metrics | awk '/^pilegate_connections /{print $2}')
  [ "${n%.*}" = "$SCRAPE" ] && break; sleep 1
done
for _ in $(seq 1 20); do curl -s -o "$out/scrape.txt" -w '%{time_total} %{size_download}\n' 127.0.0.1:$APORT/metrics; done >"$out/scrape-times.txt"
wait $lp || true
kill -INT $pid; wait $pid || true

python3 - "$out" <<'PY'
import json, os, sys, statistics
d = sys.argv[1]
def cpu(label):
    j = json.load(open(os.path.join(d, label + ".json")))
    return j["broker_cpu_seconds"] / max(1, j["acked"]) * 1e6, j["acked_per_s"], j["puback_ms_p99"]
print(f"\n{'run':>12} {'CPU s/M msgs':>13} {'acked/s':>8} {'PUBACK p99 ms':>14}")
res = {}
for k in ("on", "off", "baseline"):
    for r in (1, 2):
        c, a, p = cpu(f"{k}-{r}"); res.setdefault(k, []).append(c)
        print(f"{k + '-' + str(r):>12} {c:>13.2f} {a:>8} {p:>14}")
m = {k: statistics.mean(v) for k, v in res.items()}
print(f"\non / off      = {m['on'] / m['off']:.3f}  (traffic rollup every second + silent review)")
print(f"on / baseline = {m['on'] / m['baseline']:.3f}  (everything this tree adds over the baseline commit)")
t = [float(l.split()[0]) * 1000 for l in open(os.path.join(d, "scrape-times.txt")) if l.strip()]
size = open(os.path.join(d, "scrape-times.txt")).readline().split()[1]
if t: print(f"/metrics at scale: median {statistics.median(t):.2f} ms, max {max(t):.2f} ms, {size} bytes")
print(f"raw results: {d}")
PY
