"""Drives a petrel broker with the paho-mqtt Python client (pip install paho-mqtt).

Usage: python3 paho_client.py PORT. Exits 0 when every check passes; prints what failed.
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PORT = int(sys.argv[1])


def run(protocol, name):
    received = []
    done = threading.Event()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe("paho/#", qos=2)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        users = []
        if message.properties is not None and hasattr(message.properties, "UserProperty"):
            users = list(message.properties.UserProperty)
        received.append((message.topic, message.payload, message.qos, users))
        if len(received) == 3:
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", PORT)
    client.loop_start()
    if not subscribed.wait(5):
        sys.exit(f"{name}: no SUBACK")
    for qos in (0, 1, 2):
        properties = None
        if protocol == mqtt.MQTTv5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [("qos", str(qos))]
        info = client.publish(f"paho/{qos}", f"m{qos}".encode(), qos=qos, properties=properties)
        info.wait_for_publish(5)
    if not done.wait(5):
        sys.exit(f"{name}: got {received}")
    client.disconnect()
    client.loop_stop()
    received.sort()
    expected_users = [[("qos", str(q))] for q in (0, 1, 2)] if protocol == mqtt.MQTTv5 else [[]] * 3
    for (topic, payload, qos, users), q, want_users in zip(received, (0, 1, 2), expected_users):
        if (topic, payload, qos) != (f"paho/{q}", f"m{q}".encode(), q):
            sys.exit(f"{name}: wrong message {topic} {payload} {qos}")
        if users != want_users:
            sys.exit(f"{name}: user properties {users}, expected {want_users}")


run(mqtt.MQTTv311, "paho-v311")
run(mqtt.MQTTv5, "paho-v5")
print("paho: all checks passed")
