#!/usr/bin/env bash
# Absorbing a failed node: EXISTING piles in the pile profile (QoS 1 run data into
# Redis, authenticated) are on this node when ABSORB more piles, dropped at once by
# another node, all connect here (authenticated, subscribing, retrying when refused).
# For each node-wide connect limit in RATES (limits.connect_rate; 0: none), a fresh
# node and Redis: the seconds until every absorbed pile is back, and the existing
# piles' PUBACK p99 second by second meanwhile (the worst worker's p99 of the second).
# The limit applies to the existing piles' first connects too (they retry when refused).
# OVER_RATE=wait sets limits.over_rate = "wait" (hold CONNECTs for their slot and stop
# accepting while the queue is over half full) instead of refusing.
#   bench/absorb.sh [EXISTING=200000] [ABSORB=300000] [RATES="0 10000"]
#   OVER_RATE=wait bench/absorb.sh 200000 300000 1000
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
EXISTING=${1:-200000}; ABSORB=${2:-300000}; RATES=${3:-"0 10000"}; OVER_RATE=${OVER_RATE:-refuse}
out=$(pwd)/bench/results/absorb-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16395; PORT=18891
echo "== generating $((EXISTING + ABSORB)) pile credentials"
python3 - "$out/passwd" $((EXISTING + ABSORB)) <<'PY'
import base64, hashlib, os, sys
path, n = sys.argv[1], int(sys.argv[2])
def pile(i):
    s = ""
    for _ in range(8): s = chr(65 + i % 26) + s; i //= 26
    return s
salt = os.urandom(12)   # one salt: generating 500k derivations would take minutes here
h = base64.b64encode(hashlib.pbkdf2_hmac("sha512", b"pile-secret", salt, 101, 64)).decode()
s = base64.b64encode(salt).decode()
with open(path, "w") as f:
    for i in range(n):
        f.write(f"{pile(i)}:$7$101${s}${h}\n")
PY
for rate in $RATES; do
  start_redis $RPORT "$out"
  printf '[server]\nmax_connections = %s\n[auth]\nallow_anonymous = "loopback"\npassword_file = "%s"\n[limits]\nconnect_rate = %s\nconnect_burst = 2000\nover_rate = "%s"\n[redis]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n' \
    $((EXISTING + ABSORB + 10000)) "$out/passwd" "$rate" "$OVER_RATE" $RPORT >"$out/rate-$rate.toml"
  .build/release/pilegate --listen 127.0.0.1:$PORT --config "$out/rate-$rate.toml" >"$out/rate-$rate.log" 2>&1 &
  pid=$!; sleep 1.5
  te=$(date +%s.%N)
  .build/release/pileload --target 127.0.0.1:$PORT --profile pile --qos 1 --connections "$EXISTING" --sources 64 \
    --password pile-secret --connect-rate 20000 --retry --connect-timeout 900 --duration 600 --broker-pid $pid \
    --json "$out/existing-$rate.json" >"$out/existing-$rate.txt" 2>&1 &
  ep=$!
  until grep -q "ALL CONNECTED" "$out/existing-$rate.txt" 2>/dev/null; do kill -0 $ep || break; sleep 1; done
  sleep 20   # the existing piles publish for a while first
  t0=$(date +%s.%N)
  timeout 600 .build/release/pileload --target 127.0.0.1:$PORT --profile idle --subscribe --connections "$ABSORB" \
    --first-pile "$EXISTING" --sources 64 --password pile-secret --connect-rate 1000000 --max-pending 30000 --retry \
    --connect-timeout 500 --duration 1 --json "$out/absorb-$rate.json" >"$out/absorb-$rate.txt" 2>&1 || true
  t1=$(date +%s.%N)
  kill -INT $ep 2>/dev/null || true; wait $ep || true
  kill -INT $pid; wait $pid || true
  redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1 || true
  python3 - "$out" "$rate" "$t0" "$t1" "$te" <<'PY'
import json, re, sys, time
d, rate, t0, t1, te = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
a = json.load(open(f"{d}/absorb-{rate}.json"))
print(f"connect_rate {rate}: {a['connected']} of {a['connections']} absorbed piles back in {a['connect_seconds']:.1f} s "
      f"({a['retries']} retries, {a['failed']} failed)")
# The existing piles' per-second lines: t=SECONDS ... p99=MS
rows = []
for line in open(f"{d}/existing-{rate}.txt"):
    m = re.search(r"t=([\d.]+)s .*acked/s=(\d+) puback_p99=([\d.]+)ms", line)
    if m: rows.append((float(m.group(1)), float(m.group(2)), float(m.group(3))))
print(f"  existing piles, second by second (t s: acked/s, PUBACK p99 ms); the drop came at t={t0 - te:.0f}, all back by t={t1 - te:.0f}:")
print("  " + "  ".join(f"{t:.0f}: {int(a)}, {p}" for t, a, p in rows))
back = [(float(m.group(1)), int(m.group(2))) for m in
        (re.search(r"connecting t=([\d.]+)s connected=(\d+)/", l) for l in open(f"{d}/absorb-{rate}.txt")) if m]
print("  absorbed piles back (t s from the drop: connected):")
print("  " + "  ".join(f"{t:.0f}: {n}" for t, n in back))
PY
done
echo "raw results: $out"
