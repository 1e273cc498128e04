#!/usr/bin/env bash
# A pilegate fleet on this machine, for trying it out and for the tests: one
# redis-server (AOF on), N pilegate nodes, and HAProxy in front of them with
# PROXY protocol v2 and health checks on each node's health listener, all on
# loopback. Piles connect to the balancer's port.
#
#   ops/fleet.sh start N [PORT]   start a fleet of N nodes; PORT: the balancer (1883)
#   ops/fleet.sh restart I        stop node I (SIGTERM), start it again, wait until ready
#   ops/fleet.sh status           each node's connections and readiness
#   ops/fleet.sh stop             stop everything (nodes first, then HAProxy and Redis)
#
# Node I listens on BASE+10*I+1 (MQTT), +2 (admin, token $FLEET_TOKEN), +3 (health);
# Redis on BASE. Environment: FLEET_DIR (state, logs, configs; /tmp/pilegate-fleet),
# FLEET_BASE (21000), FLEET_TOKEN (fleet), PILEGATE (.build/release/pilegate, built
# when missing), FLEET_DRAIN_RATE (2000 piles/s per draining node).
set -euo pipefail
cd "$(dirname "$0")/.."
# The daemons started below must not inherit the caller's descriptors beyond the
# standard three: a caller that waits for one of them to close (Foundation's Process
# does) would wait for the whole fleet.
for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null; done; true
dir=${FLEET_DIR:-/tmp/pilegate-fleet}
base=${FLEET_BASE:-21000}
token=${FLEET_TOKEN:-fleet}
bin=${PILEGATE:-.build/release/pilegate}

port() { echo $((base + 10 * $1 + $2)); }   # port NODE KIND(1 mqtt, 2 admin, 3 health)

wait_ready() {   # wait_ready NODE: /readyz 200 on its health listener, 30 s at most
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port "$1" 3)/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "node $1 not ready; see $dir/node-$1.log" >&2; return 1
}

start_node() {
  cat > "$dir/node-$1.toml" <<TOML
[listener]
bind = "127.0.0.1:$(port "$1" 1)"
proxy_protocol = true
[server]
node = "node-$1"
[redis]
address = "127.0.0.1:$base"
[admin]
bind = "127.0.0.1:$(port "$1" 2)"
health_bind = "127.0.0.1:$(port "$1" 3)"
token = "$token"
drain_rate = ${FLEET_DRAIN_RATE:-2000}
TOML
  nohup "$bin" --config "$dir/node-$1.toml" </dev/null >> "$dir/node-$1.log" 2>&1 &
  echo $! > "$dir/node-$1.pid"
  wait_ready "$1"
}

stop_node() {
  local pid; pid=$(cat "$dir/node-$1.pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

case "${1:-}" in
start)
  n=${2:?"ops/fleet.sh start N [PORT]"}; front=${3:-1883}
  [ -x "$bin" ] || swift build -c release --product pilegate
  mkdir -p "$dir"; echo "$n" > "$dir/nodes"
  redis-server --port "$base" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
    --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" --daemonize yes </dev/null >/dev/null
  for _ in $(seq 50); do redis-cli -p "$base" ping >/dev/null 2>&1 && break; sleep 0.1; done
  for i in $(seq "$n"); do start_node "$i"; done
  # HAProxy holds two sockets per pile: as many as this shell's fd limit allows.
  hmax=$(( ($(ulimit -n) - 100) / 2 ))
  {
    printf 'global\n    maxconn %s\n    pidfile %s/haproxy.pid\n' "$hmax" "$dir"
    printf 'defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 10m\n    timeout server 10m\n    option redispatch\n    retries 2\n'
    printf 'frontend mqtt\n    bind 127.0.0.1:%s\n    maxconn %s\n    default_backend nodes\n' "$front" "$hmax"
    printf 'backend nodes\n    balance leastconn\n    option httpchk GET /readyz\n    http-check expect status 200\n'
    printf '    default-server send-proxy-v2 check inter 500ms fall 2 rise 2\n'
    for i in $(seq "$n"); do printf '    server node-%s 127.0.0.1:%s check port %s\n' "$i" "$(port "$i" 1)" "$(port "$i" 3)"; done
  } > "$dir/haproxy.cfg"
  # Daemons get no standard streams of ours (a caller reading our output waits for them).
  haproxy -c -q -f "$dir/haproxy.cfg"
  haproxy -q -D -f "$dir/haproxy.cfg" </dev/null >/dev/null 2>&1
  echo "fleet of $n nodes: piles to 127.0.0.1:$front, Redis 127.0.0.1:$base, admin 127.0.0.1:$(port 1 2) ... (token $token), state in $dir"
  ;;
restart)
  i=${2:?"ops/fleet.sh restart I"}
  stop_node "$i"; start_node "$i"
  ;;
status)
  for i in $(seq "$(cat "$dir/nodes")"); do
    c=$(curl -s "http://127.0.0.1:$(port "$i" 2)/metrics" | awk '$1 == "pilegate_connections" {printf "%d", $2}')
    r=$(curl -s "http://127.0.0.1:$(port "$i" 3)/readyz")
    echo "node-$i connections=${c:-down} ${r:-down}"
  done
  ;;
stop)
  [ -f "$dir/nodes" ] || exit 0
  for i in $(seq "$(cat "$dir/nodes")"); do stop_node "$i"; done
  [ -f "$dir/haproxy.pid" ] && kill "$(cat "$dir/haproxy.pid")" 2>/dev/null || true
  redis-cli -p "$base" shutdown nosave >/dev/null 2>&1 || true
  rm -f "$dir/nodes"
  ;;
*) sed -n '2,16p' "$0"; exit 2 ;;
esac
