#!/usr/bin/env python3
"""SIGKILL of a Redis Cluster master while piles publish QoS 1 through pilegate
(wait_replicas = 1): when the replica was promoted, when the first PUBACK for a
message sent after the kill came, and whether every acknowledged message is stored.

  bench/cluster_failover.py GATEWAY_PORT CLUSTER_BASE_PORT RESULTS_DIR   (run by bench/cluster.sh)
"""
import os, signal, socket, struct, subprocess, sys, threading, time

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

gw_port, base, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
PILES, PARTITIONS = 16, [f"pilegate:up:{{{i}}}" for i in range(16)]


def packet(kind, body):
    n, length = len(body), b""
    while True:
        b = n % 128; n //= 128
        length += bytes([b | (128 if n else 0)])
        if not n: return bytes([kind]) + length + body


def s16(b): return struct.pack(">H", len(b)) + b


class Pile(threading.Thread):
    def __init__(self, name):
        super().__init__(daemon=True)
        self.name, self.acks, self.stop = name, [], False
        self.sock = socket.create_connection(("127.0.0.1", gw_port))
        self.sock.sendall(packet(0x10, s16(b"MQTT") + bytes([4, 2]) + struct.pack(">H", 60) + s16(name.encode())))
        assert self.sock.recv(4)[3] == 0, "CONNACK refused"

    def run(self):
        seq, topic = 0, f"/xjdy/ops/v1/TCU/{self.name}/msg".encode()
        while not self.stop:
            seq += 1
            pid = seq % 65535 + 1
            payload = f"{self.name}-{seq}".encode()
            sent = time.monotonic()
            self.sock.sendall(packet(0x32, s16(topic) + struct.pack(">H", pid) + payload))
            ack = b""
            while len(ack) < 4:
                chunk = self.sock.recv(4 - len(ack))
                if not chunk: return
                ack += chunk
            self.acks.append((payload.decode(), sent, time.monotonic()))


piles = [Pile(f"FB{i:02d}") for i in range(PILES)]
for p in piles: p.start()
time.sleep(3)
rc = RedisCluster(host="127.0.0.1", port=base)
load = {}
for k in PARTITIONS:
    node = rc.get_node_from_key(k)
    load[node.port] = load.get(node.port, 0) + rc.xlen(k)
victim = max(load, key=load.get)
# The piles whose partition stream lived on the victim (partition = CRC16(client id) mod 16).
on_victim = [p for p in piles if rc.get_node_from_key(PARTITIONS[key_slot(p.name.encode()) % 16]).port == victim]
vdir = os.path.join(out, f"node-{victim - base}")
pid = int(open(os.path.join(vdir, "redis.pid")).read())
killed = time.monotonic()
os.kill(pid, signal.SIGKILL)
promoted = None
while time.monotonic() - killed < 30:
    try:
        rc = RedisCluster(host="127.0.0.1", port=base if victim != base else base + 1)
        if all(rc.get_node_from_key(k).port != victim for k in PARTITIONS):
            promoted = time.monotonic(); break
    except Exception:
        pass
    time.sleep(0.05)
# The old master comes back (as a replica of the promoted one), so WAIT can count a replica again.
subprocess.run(["redis-server", "--port", str(victim), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", vdir, "--daemonize", "yes", "--logfile", os.path.join(vdir, "redis.log"),
                "--pidfile", os.path.join(vdir, "redis.pid"), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0"],
               check=True)
time.sleep(5)
for p in piles: p.stop = True
for p in piles: p.join(10)
acks = [a for p in piles for a in p.acks]
after = [a[2] for a in acks if a[1] > killed]
victim_after = [a[2] for p in on_victim for a in p.acks if a[1] > killed]
gap = max((b[2] - a[2] for p in piles for a, b in zip(p.acks, p.acks[1:]) if b[2] > killed), default=0)
rc = RedisCluster(host="127.0.0.1", port=base if victim != base else base + 1)
stored = set()
for k in PARTITIONS:
    for _, f in rc.xrange(k):
        stored.add(f[b"payload"].decode())
lost = [a[0] for a in acks if a[0] not in stored]
print(f"master 127.0.0.1:{victim} SIGKILLed with {load[victim]} entries; replica promoted after "
      f"{(promoted - killed) if promoted else float('nan'):.2f} s; first PUBACK for a message sent after the kill "
      f"{(min(after) - killed) if after else float('nan'):.2f} s after it; for a pile whose stream was on that master "
      f"{(min(victim_after) - killed) if victim_after else float('nan'):.2f} s ({len(on_victim)} of {PILES} piles); "
      f"longest wait between two PUBACKs of one pile {gap:.2f} s")
print(f"acknowledged {len(acks)}, stored {len(stored)}, acknowledged but not stored {len(lost)}")
