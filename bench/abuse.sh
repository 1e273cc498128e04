#!/usr/bin/env bash
# Memory under abuse (bench/abuse.py): 20,000 connections dribbling a CONNECT a byte
# every 2 s (closed at mqtt.connect_timeout, 10 s), then one client retaining a
# million distinct topics (bounded by mqtt.max_retained_messages / max_retained_bytes).
# The gateway's RSS before, at the peak, and after each, with the counters.
#   bench/abuse.sh [DRIBBLERS=20000] [TOPICS=1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-20000}; M=${2:-1000000}
out=$(pwd)/bench/results/abuse-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
RPORT=16394; PORT=18890; ADMIN=18891
start_redis $RPORT "$out"
printf '[redis]\naddress = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n[admin]\nbind = "127.0.0.1:%s"\n' $RPORT $ADMIN >"$out/pilegate.toml"
.build/release/pilegate --listen 127.0.0.1:$PORT --config "$out/pilegate.toml" >"$out/pilegate.log" 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null || true' EXIT
sleep 1
rss() { awk '/VmRSS/ {print $2}' /proc/$gw/status; }
metric() { curl -s http://127.0.0.1:$ADMIN/metrics | awk -v m="$1" '$1 == m {print $2}'; }
peak() { local p=0 r; while kill -0 "$1" 2>/dev/null; do r=$(rss); [ "$r" -gt "$p" ] && p=$r; sleep 0.5; done; echo $p; }
echo "baseline RSS $(rss) KiB"
half=$((N / 2))
for round in 1 2; do   # the second round shows whether what the first left resident is reused or grows
  python3 bench/abuse.py dribble $PORT $half 2 >"$out/dribble-1.txt" & a=$!
  python3 bench/abuse.py dribble $PORT $((N - half)) 100 >"$out/dribble-2.txt" & b=$!
  p=$(peak $a); wait $a $b || true
  cat "$out"/dribble-*.txt
  sleep 2
  echo "dribble round $round: peak RSS $p KiB, after $(rss) KiB; connect timeouts $(metric pilegate_connect_timeouts_total)"
done
python3 bench/abuse.py retain $PORT "$M" >"$out/retain.txt" & c=$!
p=$(peak $c); wait $c || true
cat "$out/retain.txt"
echo "retain: peak RSS $p KiB, after $(rss) KiB; retained $(metric pilegate_retained_messages) messages, $(metric pilegate_retained_bytes) bytes; refused $(metric pilegate_retained_refused_total)"
grep -m1 "retained store full" "$out/pilegate.log" || true
echo "raw results: $out"
