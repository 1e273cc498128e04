#!/usr/bin/env python3
"""Fleet latencies on a running fleet (bench/fleet.sh starts one): raw MQTT sockets
straight to two nodes (with the PROXY v2 header the balancer would send), so the
balancer adds nothing.

    fleet_latency.py NODE1_PORT NODE2_PORT NODE1_PID

Prints, p50/p99 in ms over each run:
  takeover     CONNECT of a client id on node 2 -> its old connection on node 1 closed
  command      PUBLISH (QoS 1) to a pile's command topic on node 1 -> the pile on node 2 has it
  feed         PUBLISH (QoS 1) by a pile on node 2 -> a wildcard subscriber on node 1 has it
  feed CPU     node 1's CPU per message it passes on to its wildcard subscriber
"""
import os
import socket
import struct
import sys
import threading
import time

p1, p2, pid1 = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def remaining(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(x):
    x = x.encode()
    return struct.pack(">H", len(x)) + x


def packet(kind, body):
    return bytes([kind]) + remaining(len(body)) + body


def connect(port, cid, clean=True):
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # The fleet's nodes expect a PROXY v2 header (HAProxy's send-proxy-v2): ours.
    here = c.getsockname()
    c.sendall(b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack(">H", 12)
              + socket.inet_aton(here[0]) + socket.inet_aton("127.0.0.1") + struct.pack(">HH", here[1], port))
    c.sendall(packet(0x10, s("MQTT") + bytes([4, 2 if clean else 0]) + struct.pack(">H", 60) + s(cid)))
    assert read(c)[0] == 0x20
    return c


def read(c):
    h = c.recv(1)
    if not h:
        return None
    n, mult = 0, 1
    while True:
        b = c.recv(1)[0]
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    body = b""
    while len(body) < n:
        body += c.recv(n - len(body))
    return h[0], body


def publish(c, topic, payload, pid):
    c.sendall(packet(0x32, s(topic) + struct.pack(">H", pid) + payload))


def subscribe(c, topic):
    c.sendall(packet(0x82, struct.pack(">H", 1) + s(topic) + bytes([1])))
    assert read(c)[0] == 0x90


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def show(name, xs):
    print("%-9s n=%d p50=%.2f ms p99=%.2f ms" % (name, len(xs), pct(xs, 0.5) * 1000, pct(xs, 0.99) * 1000), flush=True)


# Takeover across nodes.
lat = []
for i in range(200):
    old = connect(p1, "TAKE%04d" % i)
    time.sleep(0.02)   # node 1's presence write lands first
    t = time.perf_counter()
    new = connect(p2, "TAKE%04d" % i)
    old.settimeout(5)
    while read(old) is not None:
        pass
    lat.append(time.perf_counter() - t)
    old.close()
    new.close()
show("takeover", lat)

# A command published on node 1 to a pile on node 2.
pile = connect(p2, "CMDPILE1")
subscribe(pile, "/xjdy/ops/v1/TCU/CMDPILE1/cmd")
time.sleep(0.2)
op = connect(p1, "operator-cmd")
lat = []
for i in range(300):
    t = time.perf_counter()
    publish(op, "/xjdy/ops/v1/TCU/CMDPILE1/cmd", b"cmd %d" % i, i + 1)
    while True:
        k, body = read(pile)
        if k & 0xF0 == 0x30:
            tl = struct.unpack(">H", body[:2])[0]
            pid = struct.unpack(">H", body[2 + tl:4 + tl])[0]
            pile.sendall(packet(0x40, struct.pack(">H", pid)))
            break
    lat.append(time.perf_counter() - t)
    time.sleep(0.01)
show("command", lat)


def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


# The fleet feed: delay at a paced rate, then node 1's CPU per message with and
# without a wildcard subscriber, for the same uplink on node 2.
def flood(n, rate, cid, port=p2):
    c = connect(port, cid)
    stop = threading.Event()

    def acks():
        c.settimeout(2)
        try:
            while not stop.is_set() and read(c) is not None:
                pass
        except OSError:
            pass
    threading.Thread(target=acks, daemon=True).start()
    start = time.perf_counter()
    for i in range(n):
        publish(c, "/xjdy/ops/v1/TCU/%s/msg" % cid, struct.pack(">d", time.time()) + b"x" * 292, i % 65535 + 1)
        ahead = start + (i + 1) / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    time.sleep(1)
    stop.set()
    c.close()


sub = connect(p1, "operator-feed")
subscribe(sub, "/xjdy/ops/v1/TCU/+/msg")
time.sleep(1.5)   # the feed's first read
got = []


def receive():
    sub.settimeout(3)
    try:
        while True:
            k, body = read(sub)
            if k & 0xF0 == 0x30:
                tl = struct.unpack(">H", body[:2])[0]
                at = body[4 + tl:12 + tl] if k & 0x06 else body[2 + tl:10 + tl]
                got.append(time.time() - struct.unpack(">d", at)[0])
                if k & 0x06:
                    sub.sendall(packet(0x40, body[2 + tl:4 + tl]))
    except (OSError, TypeError):
        pass


r = threading.Thread(target=receive)
r.start()
c0 = cpu(pid1)
flood(10000, 1000, "FEEDPILE")
c1 = cpu(pid1)
r.join()
show("feed", got)
sub.close()
time.sleep(2)   # no wildcard subscriber: the feed stops reading
c2 = cpu(pid1)
flood(10000, 1000, "FEEDPIL2")
c3 = cpu(pid1)
# The same subscriber and rate, the pile on node 1 itself: what a local message costs
# node 1 (receive, XADD, PUBACK, delivery), for comparison.
got = []
sub = connect(p1, "operator-local")
subscribe(sub, "/xjdy/ops/v1/TCU/+/msg")
r = threading.Thread(target=receive)
r.start()
c4 = cpu(pid1)
flood(10000, 1000, "LOCALPIL", port=p1)
c5 = cpu(pid1)
r.join()
print("feed CPU node 1: %.1f us per message from another node to its wildcard subscriber (%d delivered), "
      "%.1f us with no wildcard subscriber, %.1f us per message from a pile on node 1 itself to the same subscriber"
      % ((c1 - c0) / 10000 * 1e6, 10000, (c3 - c2) / 10000 * 1e6, (c5 - c4) / 10000 * 1e6), flush=True)
