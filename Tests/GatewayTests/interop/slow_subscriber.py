"""An operator's paho subscriber that reads slowly: QoS 1 on /xjdy/ops/v1/TCU/+/#,
DELAY seconds of work per message. Prints "ready" once subscribed, then, once no
message has come for IDLE seconds (or after LIMIT seconds), the number received."""
import sys
import threading
import time

import paho.mqtt.client as mqtt

HOST, PORT, DELAY, IDLE, LIMIT = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
count = 0
last = time.time()
subscribed = threading.Event()


def on_message(c, u, m):
    global count, last
    time.sleep(DELAY)
    count += 1
    last = time.time()


def on_subscribe(c, u, mid, *rest):
    subscribed.set()


try:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="slow-operator", protocol=mqtt.MQTTv311)
except AttributeError:  # paho-mqtt 1.x
    c = mqtt.Client(client_id="slow-operator", protocol=mqtt.MQTTv311)
c.on_message = on_message
c.on_subscribe = on_subscribe
c.connect(HOST, PORT, keepalive=60)
c.subscribe("/xjdy/ops/v1/TCU/+/#", qos=1)
c.loop_start()
if not subscribed.wait(10):
    print("not subscribed", flush=True)
    sys.exit(1)
print("ready", flush=True)
start = time.time()
while time.time() - start < LIMIT:
    time.sleep(0.1)
    if count > 0 and time.time() - last > IDLE:
        break
c.loop_stop()
print(count, flush=True)
