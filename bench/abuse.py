#!/usr/bin/env python3
"""Abusive clients for bench/abuse.sh, on loopback only.

  abuse.py dribble PORT N FIRST_SOURCE   N connections from 127.0.0.FIRST_SOURCE.., each
                                        sending one byte of a CONNECT every 2 s; prints
                                        how many the gateway closed and when
  abuse.py retain PORT M                one client publishing M distinct retained topics
"""
import socket, struct, sys, time

port = int(sys.argv[2])


def packet(kind, body):
    n, length = len(body), b""
    while True:
        b = n % 128; n //= 128
        length += bytes([b | (128 if n else 0)])
        if not n: return bytes([kind]) + length + body


def s16(b): return struct.pack(">H", len(b)) + b


connect = packet(0x10, s16(b"MQTT") + bytes([4, 2]) + struct.pack(">H", 30) + s16(b"ABUSER"))
if sys.argv[1] == "dribble":
    n, first = int(sys.argv[3]), int(sys.argv[4])
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind((f"127.0.0.{first + i % 40}", 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    start, open_, sent = time.monotonic(), set(range(n)), 0
    while open_ and time.monotonic() - start < 60:
        for i in list(open_):
            try:
                if sent < len(connect) - 1:
                    socks[i].send(connect[sent:sent + 1])
                if socks[i].recv(1) == b"":
                    open_.discard(i)
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(i)
        sent += 1
        time.sleep(2)
    print(f"dribble: {n - len(open_)} of {n} closed by the gateway within {time.monotonic() - start:.1f} s")
else:
    m = int(sys.argv[3])
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(connect)
    assert s.recv(4)[3] == 0
    start, batch = time.monotonic(), []
    for i in range(m):
        batch.append(packet(0x31, s16(f"/abuse/{i}".encode()) + b"x" * 32))
        if len(batch) == 5000:
            s.sendall(b"".join(batch)); batch = []
    s.sendall(b"".join(batch) + bytes([0xC0, 0]))
    while s.recv(65536)[-2:] != bytes([0xD0, 0]):
        pass
    print(f"retain: {m} distinct retained topics published in {time.monotonic() - start:.1f} s")
