"""Drives a petrel listener with the paho-mqtt Python client over TLS, WebSocket or
secure WebSocket (pip install paho-mqtt).

Usage: python3 paho_transports.py tls|tls12|ws|wss PORT [CAFILE] [PATH]; tls12 holds the
client to TLS 1.2 and checks that 1.2 is what was negotiated. For each of MQTT 3.1.1
and 5.0 and several client identifiers (so that connections move between the broker's
workers), subscribes, publishes at QoS 0, 1 and 2 and expects every message back. Exits 0
when every check passes; prints what failed.
"""
import ssl
import sys
import threading

import paho.mqtt.client as mqtt

MODE, PORT = sys.argv[1], int(sys.argv[2])
CAFILE = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
PATH = sys.argv[4] if len(sys.argv) > 4 else "/mqtt"


def run(protocol, name):
    received = []
    done = threading.Event()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            sys.exit(f"{name}: CONNACK {reason_code}")
        client.subscribe(f"{name}/#", qos=2)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        received.append((message.topic, message.payload, message.qos))
        if len(received) == 3:
            done.set()

    transport = "websockets" if MODE in ("ws", "wss") else "tcp"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol, transport=transport
    )
    if transport == "websockets":
        client.ws_set_options(path=PATH)
    if MODE in ("tls", "wss"):
        client.tls_set(ca_certs=CAFILE, cert_reqs=ssl.CERT_REQUIRED)
    if MODE == "tls12":
        context = ssl.create_default_context(cafile=CAFILE)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        client.tls_set_context(context)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", PORT)
    client.loop_start()
    if not subscribed.wait(10):
        sys.exit(f"{name}: no SUBACK")
    if MODE == "tls12" and client.socket().version() != "TLSv1.2":
        sys.exit(f"{name}: negotiated {client.socket().version()}")
    # Large enough for several WebSocket frame and TLS record sizes.
    payloads = [b"q0", b"q1" * 100, b"q2" * 150000]
    for qos, payload in enumerate(payloads):
        client.publish(f"{name}/{qos}", payload, qos=qos).wait_for_publish(10)
    if not done.wait(10):
        sys.exit(f"{name}: got {[(t, len(p), q) for t, p, q in received]}")
    client.disconnect()
    client.loop_stop()
    received.sort()
    for (topic, payload, qos), q in zip(received, (0, 1, 2)):
        if (topic, payload, qos) != (f"{name}/{q}", payloads[q], q):
            sys.exit(f"{name}: wrong message {topic} ({len(payload)} bytes) QoS {qos}")


for i in range(3):
    run(mqtt.MQTTv311, f"paho-{MODE}-311-{i}")
    run(mqtt.MQTTv5, f"paho-{MODE}-5-{i}")
print("ok")
