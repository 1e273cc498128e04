#!/usr/bin/env python3
"""An independent connect client for measuring what a connect costs a broker:
plain sockets on epoll (no io_uring, nothing shared with pileload). N piles connect
with at most INFLIGHT handshakes in flight: TCP connect, CONNECT (clean session,
keepalive 120), wait for CONNACK, optionally SUBSCRIBE to the pile's command topic and
wait for SUBACK; each pile then stays connected until all are done, the client
prints one JSON line (connected, failed, seconds), and closes everything and exits
when its standard input ends (so the caller can sample the broker first).

    epoll_connect.py HOST PORT N [INFLIGHT=100] [--subscribe]
"""
import errno
import json
import select
import socket
import struct
import sys
import time


def utf8(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def remaining_length(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + remaining_length(len(body)) + body


def connect_packet(cid):
    return packet(0x10, utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 120) + utf8(cid))


def subscribe_packet(cid):
    return packet(0x82, struct.pack("!H", 1) + utf8(f"/xjdy/ops/v1/TCU/{cid}/cmd") + bytes([1]))


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    inflight = int(sys.argv[4]) if len(sys.argv) > 4 and not sys.argv[4].startswith("--") else 100
    subscribe = "--subscribe" in sys.argv
    ep = select.epoll()
    pending = {}          # fd -> [socket, client id, stage, bytes read]
    done = []
    failed = 0
    next_id = 0
    t0 = time.monotonic()

    def start():
        nonlocal next_id
        cid = f"E{next_id:07d}"
        next_id += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            return False
        pending[s.fileno()] = [s, cid, "connecting", b""]
        ep.register(s.fileno(), select.EPOLLOUT)
        return True

    def fail(fd):
        nonlocal failed
        s = pending.pop(fd)[0]
        ep.unregister(fd)
        s.close()
        failed += 1

    while len(done) + failed < n:
        while len(pending) < inflight and next_id < n:
            if not start():
                failed += 1
        for fd, ev in ep.poll(5):
            entry = pending.get(fd)
            if entry is None:
                continue
            s, cid, stage, buf = entry
            if stage == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    fail(fd)
                    continue
                s.send(connect_packet(cid))
                entry[2] = "connack"
                ep.modify(fd, select.EPOLLIN)
                continue
            try:
                data = s.recv(64)
            except OSError:
                fail(fd)
                continue
            if not data:
                fail(fd)
                continue
            buf += data
            want = 4 if entry[2] == "connack" else 5
            if len(buf) < want:
                entry[3] = buf
                continue
            if entry[2] == "connack":
                if buf[0] != 0x20 or buf[3] != 0:
                    fail(fd)
                    continue
                if subscribe:
                    s.send(subscribe_packet(cid))
                    entry[2], entry[3] = "suback", buf[4:]
                    continue
            elif buf[0] != 0x90:
                fail(fd)
                continue
            ep.unregister(fd)
            done.append(pending.pop(fd)[0])
    seconds = time.monotonic() - t0
    print(json.dumps({"connected": len(done), "failed": failed, "seconds": round(seconds, 3),
                      "subscribe": subscribe, "inflight": inflight}))
    sys.stdout.flush()
    sys.stdin.read()
    for s in done:
        s.close()


if __name__ == "__main__":
    main()
