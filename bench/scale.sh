#!/usr/bin/env bash
# What an idle pile costs at scale, per build, in one run: for each COUNT, a fresh
# pilegate (Redis bridge on, its own Redis) takes COUNT piles (subscribed to their
# command topic, or not: SUBSCRIBE=0), holds them HOLD seconds, and the script reports
#   - user memory per pile: (gateway RSS connected - RSS before) / piles, and the same
#     at the end of the hold (after the post-burst heap trim, server.memory_trim_interval);
#   - kernel memory per pile: (Slab + kernel stack + page tables in /proc/meminfo,
#     connected - before) / piles, both ends of each loopback pair on this box;
#   - gateway CPU while held (keepalive traffic only), as % of one core;
#   - the time one /metrics scrape takes at that count.
#   bench/scale.sh [COUNTS="50000 100000 200000"] [HOLD=30] [KEEPALIVE=60]
#   BUILDS="before:/tmp/before/.build/release/pilegate after:" SUBSCRIBE=0 bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
COUNTS=${1:-"50000 100000 200000"}; HOLD=${2:-30}; KEEPALIVE=${3:-60}
BUILDS=${BUILDS:-"pilegate:"}; SUBSCRIBE=${SUBSCRIBE:-1}
out=$(pwd)/bench/results/scale-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16394; PORT=18888; APORT=18889
kernel_kib() { awk '/^(Slab|KernelStack|PageTables):/ {s += $2} END {print s}' /proc/meminfo; }
ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
sub=(); [ "$SUBSCRIBE" = 1 ] && sub=(--subscribe)
for b in $BUILDS; do
  IFS=: read -r name bin <<<"$b"; bin=${bin:-.build/release/pilegate}
  for n in $COUNTS; do
    case="$name-$n"
    start_redis $RPORT "$out"
    printf '[server]\nmax_connections = %s\n[redis]\naddress = "127.0.0.1:%s"\n[admin]\nbind = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n' \
      $((n + 1000)) $RPORT $APORT >"$out/$case.toml"
    sync; echo 2 >/proc/sys/vm/drop_caches   # free dentries and inodes: the slab figure is the sockets'
    k0=$(kernel_kib)
    "$bin" --listen 127.0.0.1:$PORT --config "$out/$case.toml" >"$out/$case.log" 2>&1 &
    pid=$!; sleep 1
    # pileload holds the piles for HOLD s after connecting; the script samples meanwhile.
    .build/release/pileload --target 127.0.0.1:$PORT --profile idle "${sub[@]}" --connections "$n" --sources 64 \
      --connect-rate 50000 --keepalive "$KEEPALIVE" --duration $((HOLD + 15)) --broker-pid $pid \
      --connect-timeout 600 --json "$out/$case.json" >"$out/$case.txt" 2>&1 &
    lp=$!
    until grep -q "ALL CONNECTED" "$out/$case.txt" 2>/dev/null; do kill -0 $lp 2>/dev/null || break; sleep 1; done
    sleep 5   # settle
    k1=$(kernel_kib); c0=$(ticks $pid); t0=$(date +%s.%N)
    sleep "$HOLD"
    c1=$(ticks $pid); t1=$(date +%s.%N); rss_held=$(awk '/^VmRSS:/ {print $2}' /proc/$pid/status)
    scrape=$(curl -s -o /dev/null -w '%{time_total}' localhost:$APORT/metrics)
    held=$(curl -s localhost:$APORT/metrics | awk '/^pilegate_connections /{printf "%d", $2}')
    wait $lp || true
    kill -INT $pid; wait $pid || true
    redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1 || true
    python3 - "$out/$case.json" "$n" "$k0" "$k1" "$c0" "$c1" "$t0" "$t1" "$scrape" "$held" "$(getconf CLK_TCK)" "$rss_held" >"$out/$case.row" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); n = int(sys.argv[2])
k0, k1, c0, c1 = (int(x) for x in sys.argv[3:7]); t0, t1, scrape = (float(x) for x in sys.argv[7:10])
held, hz, rss_held = sys.argv[10], int(sys.argv[11]), int(sys.argv[12])
held_b = (rss_held - j['broker_rss_before_kib']) * 1024 // n
print(f"{n} {held} {j['rss_per_connection_bytes']} {held_b} {(k1 - k0) * 1024 // n} {(c1 - c0) / hz / (t1 - t0) * 100:.1f} {scrape * 1000:.0f} {j['connect_seconds'] if 'connect_seconds' in j else '-'}")
PY
    echo "$case: $(cat "$out/$case.row")"
  done
done
echo
printf '%-24s %9s %8s %14s %12s %16s %12s %10s\n' build-count piles held "user B/pile" "after hold" "kernel B/pile" "idle CPU %" "scrape ms"
for b in $BUILDS; do IFS=: read -r name _ <<<"$b"; for n in $COUNTS; do
  read -r cnt held user userheld kern cpu scrape _ <"$out/$name-$n.row"
  printf '%-24s %9s %8s %14s %12s %16s %12s %10s\n' "$name-$n" "$cnt" "$held" "$user" "$userheld" "$kern" "$cpu" "$scrape"
done; done
echo "raw results: $out"
