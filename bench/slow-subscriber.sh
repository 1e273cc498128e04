#!/usr/bin/env bash
# One slow operator subscriber (paho, QoS 1 on /xjdy/ops/v1/TCU/+/#, 0.2 ms of work per
# message) under a burst from 2,000 QoS 1 publishers (~10,000 msgs/s for 2 s, 300 B),
# bridge off: messages the gateway accepted vs messages the subscriber received, and
# the drop counters. Give it one or more pilegate binaries to compare, e.g.
#   bench/slow-subscriber.sh /tmp/old/pilegate .build/release/pilegate
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product pileload >/dev/null
PORT=18889; APORT=19889
out=$(pwd)/bench/results/slow-sub-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
printf '[redis]\nenabled = false\n[admin]\nbind = "127.0.0.1:%s"\n[log]\nlevel = "warning"\n' $APORT >"$out/config.toml"
for bin in "$@"; do
  "$bin" --listen 127.0.0.1:$PORT --config "$out/config.toml" >"$out/pilegate.log" 2>&1 &
  pid=$!; sleep 1
  python3 Tests/GatewayTests/interop/slow_subscriber.py 127.0.0.1 $PORT 0.0002 3 90 >"$out/sub.txt" &
  sub=$!; sleep 1.5
  .build/release/pileload --target 127.0.0.1:$PORT --sources 4 --profile uplink --qos 1 --connections 2000 \
    --burst 1 --rate 10000 --payload 300 --duration 2 >"$out/pileload.txt" 2>&1 || true
  wait $sub || true
  metrics=$(curl -s "http://127.0.0.1:$APORT/metrics")
  accepted=$(awk '$1 == "pilegate_publishes_total{direction=\"in\"}" {print $2}' <<<"$metrics")
  drops=$(grep '^pilegate_queue_drops_total' <<<"$metrics" | awk '{s += $2} END {print s + 0}')
  echo "$bin: accepted $accepted, received $(tail -1 "$out/sub.txt"), dropped $drops"
  kill -INT $pid; wait $pid || true
done
