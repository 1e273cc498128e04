"""A TLS subscriber that stops reading: connects with a tiny receive buffer,
subscribes to flood/# at QoS 0, prints "ready", then sleeps SECONDS without reading."""
import socket
import ssl
import sys
import time

HOST, PORT, CA, SECONDS = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])


def packet(first, body):
    n, length = len(body), b""
    while True:
        b = n % 128
        n //= 128
        length += bytes([b | (0x80 if n else 0)])
        if not n:
            return bytes([first]) + length + body


def s(text):
    return len(text).to_bytes(2, "big") + text.encode()


raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
ctx = ssl.create_default_context(cafile=CA)
conn = ctx.wrap_socket(raw, server_hostname="localhost")
conn.connect((HOST, PORT))
conn.sendall(packet(0x10, s("MQTT") + bytes([4, 2]) + (60).to_bytes(2, "big") + s("stalled")))
conn.recv(4)                                                       # CONNACK
conn.sendall(packet(0x82, (1).to_bytes(2, "big") + s("flood/#") + bytes([0])))
conn.recv(5)                                                       # SUBACK
print("ready", flush=True)
time.sleep(SECONDS)
