#!/usr/bin/env bash
# What one connect costs the broker, pilegate next to Mosquitto, measured by two
# different clients in one run: bench/epoll_connect.py (plain epoll sockets, Python)
# and pileload (io_uring). PILES piles connect (at most INFLIGHT handshakes at once),
# connect only and connect + SUBSCRIBE, ROUNDS rounds, each broker started fresh.
# Broker CPU (user + system from /proc) from before the first connect to the moment
# the last pile is in (pileload samples the same boundaries with --broker-pid); with the
# epoll client also the user-space part alone (utime), which leaves the kernel's share.
#   bench/connect-cost.sh [PILES=19900] [INFLIGHT=100] [ROUNDS=2]
#   BROKERS="mosquitto mqttonly deferred pilegate" BUILD=/tmp/before/.build/release/pilegate bench/connect-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PILES=${1:-19900}; INFLIGHT=${2:-100}; ROUNDS=${3:-2}
BROKERS=${BROKERS:-"mosquitto mqttonly"}; BUILD=${BUILD:-.build/release/pilegate}
out=$(pwd)/bench/results/connect-cost-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
PORT=18890
ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
user_ticks() { awk '{print $14}' /proc/"$1"/stat; }   # user space only: the rest is the kernel's TCP work
start() {  # broker -> pid in $out/pid
  case $1 in
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_type error\nuser root\n' $PORT >"$out/mosquitto.conf"
      mosquitto -c "$out/mosquitto.conf" >"$out/mosquitto.log" 2>&1 & ;;
    mqttonly)   # pilegate as a plain MQTT broker: Mosquitto's job exactly
      printf '[redis]\nenabled = false\n[log]\nlevel = "warning"\n' >"$out/mqttonly.toml"
      "$BUILD" --listen 127.0.0.1:$PORT --config "$out/mqttonly.toml" >"$out/mqttonly.log" 2>&1 & ;;
    deferred)   # MQTT only, with listener.defer_accept: the accept completes with the CONNECT
      printf '[listener]\ndefer_accept = 5\n[redis]\nenabled = false\n[log]\nlevel = "warning"\n' >"$out/deferred.toml"
      "$BUILD" --listen 127.0.0.1:$PORT --config "$out/deferred.toml" >"$out/deferred.log" 2>&1 & ;;
    pilegate)   # as deployed: embedded Redis, presence and a connect event per pile
      "$BUILD" --listen 127.0.0.1:$PORT --log-level warning >"$out/pilegate.log" 2>&1 & ;;
  esac
  echo $! >"$out/pid"; sleep 1.5
}
stop() {
  local pid; pid=$(cat "$out/pid")
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true; wait 2>/dev/null || true
  for _ in $(seq 300); do ss -ltn | grep -q ":$PORT " || break; sleep 0.1; done
}
rows=()
for round in $(seq "$ROUNDS"); do for mode in connect subscribe; do for b in $BROKERS; do
  flag=(); [ $mode = subscribe ] && flag=(--subscribe)
  # the epoll client
  start $b; pid=$(cat "$out/pid"); f="$out/$b-$mode-$round"
  rm -f "$f.fifo"; mkfifo "$f.fifo"
  python3 bench/epoll_connect.py 127.0.0.1 $PORT "$PILES" "$INFLIGHT" "${flag[@]}" <"$f.fifo" >"$f.epoll.json" &
  cpid=$!; exec 4>"$f.fifo"
  c0=$(ticks $pid); u0=$(user_ticks $pid)
  until [ -s "$f.epoll.json" ] || ! kill -0 $cpid 2>/dev/null; do sleep 0.05; done
  c1=$(ticks $pid); u1=$(user_ticks $pid)
  exec 4>&-; wait $cpid || true; stop
  rows+=("$b $mode $round epoll $(( c1 - c0 )) $(( u1 - u0 )) $(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["connected"], j["seconds"])' "$f.epoll.json")")
  # pileload
  start $b; pid=$(cat "$out/pid")
  timeout 300 .build/release/pileload --target 127.0.0.1:$PORT --profile idle --connections "$PILES" "${flag[@]}" \
    --max-pending "$INFLIGHT" --connect-rate 1000000 --sources 1 --duration 1 --broker-pid $pid \
    --json "$f.pileload.json" >"$f.pileload.txt" 2>&1 || true
  stop
  rows+=("$b $mode $round pileload $(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(round(j["broker_cpu_connect_seconds"] * int(sys.argv[2])), -1, j["connected"], j["connect_seconds"])' "$f.pileload.json" "$(getconf CLK_TCK)")")
done; done; done
printf '%s\n' "${rows[@]}" >"$out/rows"
python3 - "$out/rows" "$(getconf CLK_TCK)" <<'PY'
import sys, collections
hz = int(sys.argv[2])
cpu = collections.defaultdict(list)
user = collections.defaultdict(list)
print(f"{'broker':>10} {'mode':>9} {'round':>5} {'client':>8} {'broker CPU s':>12} {'of it user':>10} {'connected':>9} {'seconds':>8}")
for line in open(sys.argv[1]):
    b, mode, rnd, client, ticks, uticks, n, secs = line.split()
    cpu[(mode, client, b)].append(int(ticks) / hz)
    if int(uticks) >= 0: user[(mode, b)].append(int(uticks) / hz)
    u = f"{int(uticks) / hz:.2f}" if int(uticks) >= 0 else "-"
    print(f"{b:>10} {mode:>9} {rnd:>5} {client:>8} {int(ticks) / hz:>12.2f} {u:>10} {n:>9} {float(secs):>8.2f}")
print()
brokers = sorted({k[2] for k in cpu})
for mode in ("connect", "subscribe"):
    for client in ("epoll", "pileload"):
        cells = "  ".join(f"{b} {'-'.join(f'{v:.2f}' for v in cpu[(mode, client, b)])}" for b in brokers)
        print(f"{mode:>9} by {client:>8}: broker CPU-s {cells}")
    cells = "  ".join(f"{b} {'-'.join(f'{v:.2f}' for v in user[(mode, b)])}" for b in brokers)
    print(f"{mode:>9} by {'epoll':>8}: of it user-space CPU-s {cells}")
PY
echo "raw results: $out"
