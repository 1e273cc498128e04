#!/usr/bin/env bash
# Upgrade or restart a fleet node by node, losing no acknowledged message and no
# command (ops/OPERATIONS.md, "Rolling upgrade"). For each node, in order:
#   1. POST /drain: the node leaves LISTEN, /readyz turns 503 (the balancer sends it no
#      new piles), and its piles are closed at [admin] drain_rate; they reconnect
#      through the balancer to the other nodes. Their unacknowledged PUBLISHes are
#      resent there; their pending commands wait in Redis (mailbox, stream).
#   2. wait until the node holds no pile (pilegate_connections = 0);
#   3. run the restart command (after installing the new package, say);
#   4. wait until /readyz answers 200, then go on with the next node.
#
#   ops/rolling-restart.sh --token TOKEN --restart 'COMMAND' ADMIN_URL...
# COMMAND may name the node by {n} (its position, from 1) or {host} (of its URL):
#   --restart 'ssh {host} systemctl restart pilegate'
#   --restart 'ops/fleet.sh restart {n}'                  (the local fleet)
# Options: --timeout SECONDS for each wait (600).
set -euo pipefail
token="" restart="" timeout=600 urls=()
while (($#)); do
  case "$1" in
    --token) token=$2; shift 2 ;;
    --restart) restart=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    *) urls+=("$1"); shift ;;
  esac
done
[ -n "$restart" ] && ((${#urls[@]})) || { sed -n '2,18p' "$0"; exit 2; }

connections() { curl -s "$1/metrics" | awk '$1 == "pilegate_connections" {printf "%d", $2}'; }
until_true() {   # until_true WHAT COMMAND...: poll every 0.2 s, up to the timeout
  local what=$1; shift
  for _ in $(seq $((timeout * 5))); do "$@" && return 0; sleep 0.2; done
  echo "rolling restart: $what did not happen within $timeout s" >&2; exit 1
}
empty() { [ "$(connections "$1")" = 0 ]; }
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/readyz")" = 200 ]; }

n=0
for url in "${urls[@]}"; do
  n=$((n + 1))
  host=$(sed -E 's|^[a-z]+://([^:/]+).*|\1|' <<<"$url")
  started=$(date +%s.%N)
  before=$(connections "$url")
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $token" "$url/drain")
  [ "$code" = 202 ] || { echo "rolling restart: POST $url/drain answered $code" >&2; exit 1; }
  until_true "draining $url" empty "$url"
  drained=$(date +%s.%N)
  cmd=${restart//\{n\}/$n}
  sh -c "${cmd//\{host\}/$host}" >/dev/null
  until_true "$url becoming ready" ready "$url"
  awk -v n="$n" -v u="$url" -v p="${before:-?}" -v s="$started" -v d="$drained" -v e="$(date +%s.%N)" \
    'BEGIN { printf "node %d (%s): %s piles drained in %.1f s, back and ready after %.1f s\n", n, u, p, d - s, e - s }'

done
echo "rolling restart: ${#urls[@]} nodes done"
