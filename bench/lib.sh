# Shared by the bench scripts (sourced, not run).

# start_redis PORT DIR: a throwaway redis-server on loopback, no persistence, its log
# and pid in DIR; shut down when the calling script exits.
start_redis() {
  local port=$1 dir=$2
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize yes \
    --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >/dev/null
  trap "redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true" EXIT
  sleep 0.5
}
