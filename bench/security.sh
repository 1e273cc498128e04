#!/usr/bin/env bash
# Cost of the front door's security, on this machine, one run:
#   bench/security.sh [PILES=20000] [TLS_CONNECTS=2000] [PUBLISHERS=1000] [SECONDS=8] [STORM=200000]
# 1. CONNECT+auth per second of pilegate CPU ("per core"): PILES piles with their own
#    user names and passwords (PBKDF2-SHA512 file, 101 iterations) connect at once:
#    cold (every password derived once), then all drop and reconnect (warm: verified
#    cache). pileload --broker-pid measures the gateway's CPU over the connect phase.
# 2. The same over TLS 1.3, with an RSA 2048 and an ECDSA P-256 server key: Python clients doing TLS +
#    CONNECT + CONNACK + DISCONNECT, full handshakes and resumed sessions; the gateway's
#    CPU from /proc per connect (the clients' own speed does not enter).
# 3. ACL + rate rules + quota accounting per PUBLISH: QoS 0 fan-in from authenticated
#    piles (role pile: the ACL pattern with %c is checked on every PUBLISH) with
#    [acl] enabled and a device rate rule and daily quota that never trigger, against
#    the same run with ACL off and no rules; alternated twice, ratio of CPU per message.
# 4. A STORM-pile reconnect storm: STORM authenticated piles connect at once (cold
#    caches), all drop together (pileload exits), and all come back at once (warm):
#    gateway CPU for each connect phase and for the mass close in between.
# PARTS="1 2 3 4" (the default) picks the parts to run.
# The embedded Redis bridge is on in 1 and 2 (presence and connect events per pile, as
# in production) and off in 3 (fan-in measures the broker path alone).
set -euo pipefail
cd "$(dirname "$0")/.."
PILES=${1:-20000}; TLS_CONNECTS=${2:-2000}; PUBLISHERS=${3:-1000}; SECS=${4:-8}; STORM=${5:-200000}
out=bench/results/security-$(date +%Y%m%d-%H%M%S); mkdir -p "$out"
ops/loadtest-sysctl.sh
swift build -c release --product pilegate >/dev/null
swift build -c release --product pileload >/dev/null
PORT=18883; TLSPORT=18884; PARTS=${PARTS:-1 2 3 4}
want() { [[ " $PARTS " == *" $1 "* ]]; }

echo "== generating $PILES pile credentials and test certificates"
users=$PILES; if [[ " $PARTS " == *" 4 "* ]] && (( STORM > users )); then users=$STORM; fi
python3 - "$out/passwd" "$users" <<'PY'
import base64, hashlib, os, sys
path, n = sys.argv[1], int(sys.argv[2])
def pile(i):
    s = ""
    for _ in range(8): s = chr(65 + i % 26) + s; i //= 26
    return s
with open(path, "w") as f:
    for i in range(n + 1):
        salt = os.urandom(12)
        h = hashlib.pbkdf2_hmac("sha512", b"pile-secret", salt, 101, 64)
        f.write(f"{pile(i)}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(h).decode()}\n")
PY
( cd "$out"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj '/CN=bench CA' 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.csr -subj '/CN=localhost' 2>/dev/null
  openssl x509 -req -in rsa.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out rsa.crt -days 2 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ec.key -out ec.csr -subj '/CN=localhost' 2>/dev/null
  openssl x509 -req -in ec.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out ec.crt -days 2 2>/dev/null )

start() {  # name config-extra
  cat >"$out/$1.toml" <<CONF
[server]
max_connections = 250000
[auth]
allow_anonymous = "loopback"
password_file = "$out/passwd"
$2
CONF
  .build/release/pilegate --listen 127.0.0.1:$PORT --config "$out/$1.toml" --log-level warning >"$out/$1.log" 2>&1 &
  PID=$!; sleep 1.5
}
stop() {
  kill -INT "$PID"; for _ in $(seq 600); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null || true; wait 2>/dev/null || true
  for _ in $(seq 300); do ss -ltn | grep -q ":$PORT " || break; sleep 0.1; done
}
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }   # ticks
hz=$(getconf CLK_TCK)
field() { tr -d '{}"' <"$1" | tr ',' '\n' | grep -E "^ ?$2:" | cut -d: -f2 | tr -d ' '; }

if want 1; then
echo "== 1. CONNECT + password auth, $PILES piles at once (bridge on)"
start auth ""
for run in cold warm; do
  timeout 300 .build/release/pileload --target 127.0.0.1:$PORT --connections "$PILES" --password pile-secret \
    --connect-rate 100000 --sources 16 --duration 1 --broker-pid "$PID" --json "$out/auth-$run.json" >"$out/auth-$run.txt" || true
  echo "  $run: connected $(field "$out/auth-$run.json" connected) in $(field "$out/auth-$run.json" connect_seconds) s," \
       "gateway CPU $(field "$out/auth-$run.json" broker_cpu_connect_seconds) s" \
       "-> $(field "$out/auth-$run.json" connects_per_broker_cpu_second) CONNECT+auth per CPU-second"
  sleep 2
done
stop
fi

if want 2; then
echo "== 2. TLS + CONNECT + password auth, $TLS_CONNECTS connects (bridge on)"
for key in rsa ec; do
start tls-$key "[tls]
enabled = true
bind = \"127.0.0.1:$TLSPORT\"
certificate = \"$out/$key.crt\"
private_key = \"$out/$key.key\""
for mode in full resumed; do
  c0=$(cpu)
  python3 - "$TLSPORT" "$out/ca.crt" "$TLS_CONNECTS" "$mode" <<'PY'
import multiprocessing, socket, ssl, struct, sys
port, ca, total, mode = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
def pile(i):
    s = ""
    for _ in range(8): s = chr(65 + i % 26) + s; i //= 26
    return s
def connect_packet(cid):
    def s(b): return struct.pack("!H", len(b)) + b
    body = s(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60) + s(cid.encode()) + s(cid.encode()) + s(b"pile-secret")
    return bytes([0x10, len(body)]) + body
def worker(args):
    start, n = args
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    session = None
    ok = reused = 0
    for i in range(start, start + n):
        raw = socket.create_connection(("127.0.0.1", port))
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=session if mode == "resumed" else None)
        s.sendall(connect_packet(pile(i)))
        ack = s.recv(4)
        if ack[:2] == b"\x20\x02" and ack[3] == 0: ok += 1
        reused += s.session_reused
        s.sendall(b"\xe0\x00")
        if mode == "resumed": session = s.session
        s.close()
    return ok, reused
procs = 4
with multiprocessing.Pool(procs) as p:
    r = p.map(worker, [(k * (total // procs), total // procs) for k in range(procs)])
print(f"    accepted {sum(x[0] for x in r)} of {total}, sessions resumed {sum(x[1] for x in r)}")
PY
  c1=$(cpu)
  python3 -c "t=($c1-$c0)/$hz; print(f'  $key {\"$mode\"}: gateway CPU {t:.2f} s for $TLS_CONNECTS -> {$TLS_CONNECTS/t:.0f} TLS CONNECT+auth per CPU-second')"
done
stop
done
fi

if want 3; then
echo "== 3. ACL + rate rules per PUBLISH: $PUBLISHERS authenticated publishers, QoS 0 fan-in, ${SECS}s (bridge off)"
for round in 1 2; do
  for variant in off on; do
    if [ $variant = off ]; then extra="[redis]
enabled = false
[acl]
enabled = false"; else extra="[redis]
enabled = false
[rate]
messages_per_second = 1000000
burst = 1000000
bytes_per_second = 1000000000
burst_bytes = 1000000000
daily_quota_bytes = 1000000000000000"; fi
    start "fanin-$variant-$round" "$extra"
    timeout 300 .build/release/pileload --target 127.0.0.1:$PORT --profile fanin --connections "$PUBLISHERS" \
      --password pile-secret --duration "$SECS" --broker-pid "$PID" --json "$out/fanin-$variant-$round.json" \
      >"$out/fanin-$variant-$round.txt" || true
    stop
    echo "  round $round, ACL+rules $variant: delivered $(field "$out/fanin-$variant-$round.json" received_per_s) msgs/s," \
         "$(field "$out/fanin-$variant-$round.json" broker_cpu_s_per_million_delivered) CPU s per million"
  done
done
fi

if want 4; then
echo "== 4. reconnect storm: $STORM authenticated piles (bridge on)"
start storm ""
for run in cold warm; do
  timeout 600 .build/release/pileload --target 127.0.0.1:$PORT --connections "$STORM" --password pile-secret \
    --connect-rate 1000000 --max-pending 8000 --sources 64 --duration 5 --connect-timeout 300 --broker-pid "$PID" \
    --json "$out/storm-$run.json" >"$out/storm-$run.txt" || true
  c0=$(cpu); sleep 15; c1=$(cpu)   # the gateway closes every connection the exiting pileload dropped
  echo "  $run: connected $(field "$out/storm-$run.json" connected) in $(field "$out/storm-$run.json" connect_seconds) s," \
       "gateway CPU $(field "$out/storm-$run.json" broker_cpu_connect_seconds) s connecting" \
       "($(field "$out/storm-$run.json" connects_per_broker_cpu_second)/CPU-s), $(python3 -c "print(f'{($c1-$c0)/$hz:.2f}')") s closing;" \
       "RSS $(field "$out/storm-$run.json" broker_rss_connected_kib) KiB connected"
done
stop
fi
echo "results in $out"
