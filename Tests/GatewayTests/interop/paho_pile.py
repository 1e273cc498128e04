"""A pile on paho-mqtt: subscribes to its command topic at QOS (clean session),
prints "ready", then each command payload as it arrives (paho sends PUBACK, or
PUBREC/PUBCOMP, by itself), and exits after COUNT commands or LIMIT seconds."""
import sys
import threading

import paho.mqtt.client as mqtt

HOST, PORT, CLIENT, QOS, COUNT, LIMIT = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
got = []
done = threading.Event()
subscribed = threading.Event()


def on_message(c, u, m):
    got.append(m.payload)
    print(m.payload.decode("utf-8", "replace"), flush=True)
    if len(got) >= COUNT:
        done.set()


def on_subscribe(c, u, mid, *rest):
    subscribed.set()


try:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=CLIENT, protocol=mqtt.MQTTv311)
except AttributeError:  # paho-mqtt 1.x
    c = mqtt.Client(client_id=CLIENT, protocol=mqtt.MQTTv311)
c.on_message = on_message
c.on_subscribe = on_subscribe
c.connect(HOST, PORT, keepalive=60)
c.subscribe(f"/xjdy/ops/v1/TCU/{CLIENT}/cmd", qos=QOS)
c.loop_start()
if not subscribed.wait(10):
    print("not subscribed", flush=True)
    sys.exit(1)
print("ready", flush=True)
done.wait(LIMIT)
c.loop_stop()
c.disconnect()
