#!/usr/bin/env bash
# Redis Cluster against one Redis, in one run on this machine (issue: Redis Cluster):
#   1. QoS 1 uplink at full speed (CONNECTIONS piles, 8 messages in flight each):
#      stored/s, and Redis CPU per message (all redis-server processes, from /proc),
#      with one Redis, then a 3-master cluster (3 replicas), wait_replicas 0 and 1;
#   2. PUBACK p50/p99 at a paced RATE msgs/s (one in flight per pile), wait_replicas 0 vs 1;
#   3. failover: SIGKILL of a master under QoS 1 load (bench/cluster_failover.py):
#      time to the replica's promotion and to the first PUBACK after it, and
#      acknowledged vs stored.
#   bench/cluster.sh [CONNECTIONS=5000] [SECONDS=15] [RATE=5000]
# Everything runs on this box: six redis-servers, pilegate and pileload share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}; SECS=${2:-15}; RATE=${3:-5000}
out=$(pwd)/bench/results/cluster-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
RPORT=16391; CBASE=21000; PORT=18885
redis() {  # port dir extra...
  local port=$1 dir=$2; shift 2; mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize yes \
    --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" "$@" >/dev/null
}
cleanup() {
  for p in $RPORT $(seq $CBASE $((CBASE + 5))); do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
redis $RPORT "$out/single"
for i in 0 1 2 3 4 5; do
  redis $((CBASE + i)) "$out/node-$i" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
    --repl-diskless-sync-delay 0
done
sleep 0.5
redis-cli --cluster create $(for i in 0 1 2 3 4 5; do echo 127.0.0.1:$((CBASE + i)); done) --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 100); do
  [ "$(redis-cli -p $CBASE cluster info | grep -c cluster_state:ok)" = 1 ] \
    && [ "$(for i in 0 1 2 3 4 5; do redis-cli -p $((CBASE + i)) info replication; done | grep -c -e master_link_status:up)" = 3 ] && break
  sleep 0.2
done
seeds="127.0.0.1:$CBASE,127.0.0.1:$((CBASE + 1))"
pids() { cat "$out"/*/redis.pid; }
cpu() {  # total utime+stime ticks of the given pids
  local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/"$p"/stat))); done; echo $t
}

run() {  # name config profile-args...
  local name=$1 config=$2; shift 2
  printf '%s\n[log]\nlevel = "warning"\n' "$config" >"$out/$name.toml"
  .build/release/pilegate --listen 127.0.0.1:$PORT --config "$out/$name.toml" >"$out/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do grep -q "listening on" "$out/$name.log" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  local before; before=$(cpu $(pids))
  timeout 300 .build/release/pileload --target 127.0.0.1:$PORT --profile uplink --qos 1 --connections "$N" \
    --sources 16 --connect-rate 20000 --broker-pid $pid --json "$out/$name.json" "$@" >"$out/$name.txt" || true
  echo $(( $(cpu $(pids)) - before )) >"$out/$name.redis-ticks"
  kill -INT $pid 2>/dev/null || true; wait $pid || true
  for p in $RPORT $(seq $CBASE $((CBASE + 5))); do redis-cli -p "$p" flushall >/dev/null 2>&1 || true; done
}
single="[redis]
address = \"127.0.0.1:$RPORT\""
cluster="[redis]
cluster = true
address = \"$seeds\""
run single-max "$single" --burst 8 --duration "$SECS"
run cluster-max "$cluster" --burst 8 --duration "$SECS"
run cluster-wait-max "$cluster
wait_replicas = 1" --burst 8 --duration "$SECS"
run cluster-paced "$cluster" --burst 1 --rate "$RATE" --duration "$SECS"
run cluster-wait-paced "$cluster
wait_replicas = 1" --burst 1 --rate "$RATE" --duration "$SECS"

python3 - "$out" "$(getconf CLK_TCK)" <<'PY'
import json, os, sys
d, hz = sys.argv[1], int(sys.argv[2])
print(f"\n{'case':>20} {'stored/s':>9} {'PUBACK p50':>10} {'p99':>7} {'p99.9':>7} {'redis CPU us/msg':>16} {'pilegate CPU us/msg':>19}")
rows = {}
for name in ("single-max", "cluster-max", "cluster-wait-max", "cluster-paced", "cluster-wait-paced"):
    j = json.load(open(os.path.join(d, name + ".json")))
    ticks = int(open(os.path.join(d, name + ".redis-ticks")).read())
    n = max(1, j["acked"])
    rows[name] = j
    print(f"{name:>20} {j['acked_per_s']:>9} {j['puback_ms_p50']:>10} {j['puback_ms_p99']:>7} {j['puback_ms_p999']:>7} "
          f"{ticks / hz / n * 1e6:>16.2f} {j['broker_cpu_seconds'] / n * 1e6:>19.2f}")
s, c = rows["single-max"]["acked_per_s"], rows["cluster-max"]["acked_per_s"]
print(f"\ncluster / single stored/s: {c / max(1, s):.2f}x; wait_replicas 1 / 0: {rows['cluster-wait-max']['acked_per_s'] / max(1, c):.2f}x")
PY
echo "== failover under load (wait_replicas = 1)"
printf '[redis]\ncluster = true\naddress = "%s"\nwait_replicas = 1\n[log]\nlevel = "warning"\n' "$seeds" >"$out/failover.toml"
.build/release/pilegate --listen 127.0.0.1:$PORT --config "$out/failover.toml" >"$out/failover.log" 2>&1 &
gw=$!
sleep 2
python3 bench/cluster_failover.py $PORT "$CBASE" "$out" || true
kill -INT $gw 2>/dev/null || true; wait $gw || true
echo "raw results: $out"
