"""paho-mqtt against pilegate: QoS 0/1/2 both ways, retained, will, persistent
session with queued messages, takeover. Exits non-zero on the first failed check."""
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

HOST, PORT = sys.argv[1], int(sys.argv[2])


def client(cid, clean=True, userdata=None):
    try:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=clean,
                        protocol=mqtt.MQTTv311, userdata=userdata)
    except AttributeError:  # paho-mqtt 1.x
        c = mqtt.Client(client_id=cid, clean_session=clean, protocol=mqtt.MQTTv311, userdata=userdata)
    return c


class Inbox:
    def __init__(self):
        self.msgs = []
        self.cv = threading.Condition()

    def on_message(self, c, u, m):
        with self.cv:
            self.msgs.append((m.topic, m.payload, m.qos, m.retain))
            self.cv.notify_all()

    def wait(self, n, timeout=5.0):
        end = time.time() + timeout
        with self.cv:
            while len(self.msgs) < n and time.time() < end:
                self.cv.wait(end - time.time())
            return list(self.msgs)


def connect(c, keepalive=30):
    flags = {}
    done = threading.Event()

    def on_connect(cl, u, f, rc, props=None):
        flags["sp"] = f["session present"] if isinstance(f, dict) else f.session_present
        flags["rc"] = rc
        done.set()
    c.on_connect = on_connect
    c.connect(HOST, PORT, keepalive)
    c.loop_start()
    assert done.wait(5), "no CONNACK"
    return flags


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)
    print("ok:", what)


def subscribe(c, topic, qos):
    done = threading.Event()
    c.on_subscribe = lambda *a, **k: done.set()
    c.subscribe(topic, qos)
    check(done.wait(5), f"SUBACK for {topic}")


tag = uuid.uuid4().hex[:8]

# QoS 0/1/2 both directions, byte-exact payloads (including invalid UTF-8)
box = Inbox()
sub = client(f"sub-{tag}")
sub.on_message = box.on_message
connect(sub)
subscribe(sub, f"t/{tag}/#", 2)
pub = client(f"pub-{tag}")
connect(pub)
payloads = [b"plain", "运行数据".encode(), bytes([0xC3, 0x28, 0xFF, 0x00, 0x7B])]
for q in (0, 1, 2):
    for p in payloads:
        info = pub.publish(f"t/{tag}/q{q}", p, qos=q)
        info.wait_for_publish(5)
        check(info.is_published(), f"publish QoS {q} acknowledged")
got = box.wait(9)
check(len(got) == 9, f"9 messages delivered, got {len(got)}")
check(sorted((t, p, q) for t, p, q, _ in got) == sorted((f"t/{tag}/q{q}", p, q) for q in (0, 1, 2) for p in payloads),
      "payloads and QoS exact")

# Retained: a late subscriber gets it with the retain flag
pub.publish(f"r/{tag}", b"kept", qos=1, retain=True).wait_for_publish(5)
box2 = Inbox()
late = client(f"late-{tag}")
late.on_message = box2.on_message
connect(late)
subscribe(late, f"r/{tag}", 1)
got = box2.wait(1)
check(got and got[0][1] == b"kept" and got[0][3], "retained message with retain flag")
late.disconnect()
late.loop_stop()

# Will: published when the client vanishes without DISCONNECT
box3 = Inbox()
watcher = client(f"watch-{tag}")
watcher.on_message = box3.on_message
connect(watcher)
subscribe(watcher, f"will/{tag}", 1)
doomed = client(f"doomed-{tag}")
doomed.will_set(f"will/{tag}", b"gone", qos=1)
connect(doomed)
doomed.loop_stop()
doomed.socket().close()  # no DISCONNECT
got = box3.wait(1)
check(got and got[0][1] == b"gone", "will message on abnormal close")

# Persistent session: subscribe, leave, messages queue, come back to them
pid = f"persist-{tag}"
p1 = client(pid, clean=False)
flags = connect(p1)
check(flags["sp"] == 0, "first persistent connect: no session present")
subscribe(p1, f"q/{tag}", 1)
p1.disconnect()
p1.loop_stop()
time.sleep(0.2)
for i in range(3):
    pub.publish(f"q/{tag}", f"m{i}".encode(), qos=1).wait_for_publish(5)
box4 = Inbox()
p2 = client(pid, clean=False)
p2.on_message = box4.on_message
flags = connect(p2)
check(flags["sp"] == 1, "reconnect: session present")
got = box4.wait(3)
check([m[1] for m in got] == [b"m0", b"m1", b"m2"], f"queued QoS 1 messages delivered in order: {got}")
p2.disconnect()
p2.loop_stop()
clean = client(pid, clean=True)
flags = connect(clean)
check(flags["sp"] == 0, "clean session discards the stored session")
clean.disconnect()
clean.loop_stop()

# Takeover: a second client with the same id disconnects the first
gone = threading.Event()
first = client(f"same-{tag}")
first.on_disconnect = lambda *a, **k: gone.set()
connect(first)
second = client(f"same-{tag}")
second.reconnect_delay_set(60, 60)
connect(second)
check(gone.wait(5), "first connection closed on takeover")
first.loop_stop()
second.disconnect()
second.loop_stop()

for c in (sub, pub, watcher):
    c.disconnect()
    c.loop_stop()
print("paho suite: all checks passed")
