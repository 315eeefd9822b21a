"""Crash test: kill -9 the real petrel binary in the middle of QoS 1 and QoS 2 load and
count what arrives after it restarts from its store (pip install paho-mqtt).

Usage: python3 crash.py PETREL_BINARY [--seeds 1,2,3 | --seeds 1..50] [--kills 2]
                        [--messages 3000] [--workers 2] [--qos 1|2] [--config FILE]
                        [--stop kill|term] [--shared]

For each seed: a broker on a free loopback port with a fresh data directory; ten retained
messages; a persistent-session subscriber (3.1.1, clean session off) that subscribes once,
to `crash/q1` at QoS 1 and `crash/q2` at QoS 2, and never again; a persistent-session
publisher that sends the messages as fast as paho lets it. At random points (drawn from
the seed) the broker is killed with SIGKILL and restarted on the same port and data
directory; paho reconnects both clients and resumes their sessions. With `--stop term` the
broker is stopped gracefully (SIGTERM, waited for) instead: the same counts must hold. With
`--shared` (three workers or more) the subscriber subscribes through a shared group, and the
client identifiers and the group name are chosen so that the publisher, the subscriber and
the group's owner live on three different shards. At the end:

- every QoS 1 message the publisher saw acknowledged arrived at least once;
- every QoS 2 message the publisher saw acknowledged arrived, and no QoS 2 message arrived
  twice;
- nothing arrived that was never published;
- the retained messages are all there for a new subscriber.

Exits 0 when every check of every seed passes; prints each seed's counts.
"""
import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

RETAINED = 10


def owner_shard(key, shards):
    """The shard of a client identifier or a shared filter (FNV-1a, as the broker's)."""
    h = 0xcbf29ce484222325
    for byte in key.encode():
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h % shards


def pick_names(seed, workers, shared):
    """Client identifiers of publisher and subscriber on different shards, and with
    `shared` a group whose filters are owned by a third one."""
    pub = f"crash-pub-{seed}"
    n = 0
    while workers > 1 and owner_shard(f"crash-sub-{seed}-{n}", workers) == owner_shard(pub, workers):
        n += 1
    sub = f"crash-sub-{seed}-{n}"
    if not shared:
        return pub, sub, ["crash/q1", "crash/q2"]
    taken = {owner_shard(pub, workers), owner_shard(sub, workers)}
    for g in range(1000):
        filters = [f"$share/g{g}/crash/q1", f"$share/g{g}/crash/q2"]
        owners = {owner_shard(f, workers) for f in filters}
        if len(owners) == 1 and not owners & taken:
            return pub, sub, filters
    raise RuntimeError("no group name puts the owner on a third shard")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, port, data_dir, workers, config):
        self.args = [binary, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
                     "--workers", str(workers), "--log-level", "warn"]
        if config:
            self.args += ["--config", config]
        self.proc = None
        self.log = tempfile.TemporaryFile()

    def start(self):
        started = time.monotonic()
        for attempt in range(50):
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.log)
            line = self.proc.stdout.readline().decode()
            if line.startswith("listening on"):
                return time.monotonic() - started
            self.proc.wait()
            self.log.seek(0)
            log = self.log.read().decode(errors="replace")
            # While the broker is down, a client's reconnect attempt to its port can take
            # that very port as its own (a TCP self-connect) until it gives up on it.
            if "Address already in use" not in log.rstrip().rsplit("\n", 1)[-1]:
                break
            time.sleep(0.1)
        raise RuntimeError(f"petrel did not start: {line!r} {log}")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def terminate(self):
        self.proc.terminate()
        self.proc.wait(30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Client(mqtt.Client):
    """paho-mqtt (2.2.0, the latest) with its QoS 2 re-send across failed reconnects fixed.

    Every reconnect attempt resets the state of each outgoing message. A QoS 2 message that
    waits for PUBCOMP becomes "re-send PUBREL", done after the next CONNACK. While the broker
    is still down the attempt fails, and the next attempt's reset does not know that state:
    it makes the message a plain PUBLISH again (DUP clear). The broker has already had its
    PUBREL and forgotten the packet identifier, so by the protocol that is a new message
    [MQTT-4.3.3], delivered once more. A client must re-send PUBREL there [MQTT-4.4.0-1]:
    this keeps the message at "re-send PUBREL", and counts how often that was needed.
    """

    kept_pubrel = 0

    def _messages_reconnect_reset_out(self):
        with self._out_message_mutex:
            for m in self._out_messages.values():
                if m.qos == 2 and m.state == mqtt.mqtt_ms_resend_pubrel:
                    m.state = mqtt.mqtt_ms_wait_for_pubcomp
                    self.kept_pubrel += 1
            super()._messages_reconnect_reset_out()


def client(client_id, port, on_message=None, on_publish=None):
    c = Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
               protocol=mqtt.MQTTv311, clean_session=False)
    c.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
    c.max_inflight_messages_set(50)
    c.max_queued_messages_set(0)
    if on_message:
        c.on_message = on_message
    if on_publish:
        c.on_publish = on_publish
    return c


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def run_seed(args, seed):
    rng = random.Random(seed)
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix=f"petrel-crash-{seed}-")
    config = args.config
    if config is None:
        # The subscriber falls behind during each restart: a queue limit would drop
        # messages by design, which is not what this test counts.
        config = os.path.join(data_dir, "petrel.toml")
        with open(config, "w") as f:
            f.write("[limits]\nmax_queued_messages = 1000000\n"
                    "max_queued_bytes = 1000000000\n[sys]\ninterval = 0\n")
    broker = Broker(args.petrel, port, data_dir, args.workers, config)
    failures = []
    try:
        broker.start()
        lock = threading.Lock()
        received = {}  # payload -> times
        acked_mids = set()
        mids = {}  # mid -> payload
        subscribed = threading.Event()

        history = {}  # payload -> [(mid, dup, kills so far)], for the failure report
        restarts = []

        def on_message(c, userdata, message):
            with lock:
                received[message.payload] = received.get(message.payload, 0) + 1
                history.setdefault(message.payload, []).append(
                    (message.mid, message.dup, len(restarts)))

        def on_subscribe(c, userdata, mid, reason_codes, properties):
            subscribed.set()

        # Called with paho's own lock held: taking ours here while the main thread holds
        # ours and waits for paho's in publish() would deadlock, so acks are kept by mid.
        acked_after = {}  # mid -> kills before its acknowledgement, for the failure report

        def on_publish(c, userdata, mid, reason_code, properties):
            with lock:
                acked_mids.add(mid)
                acked_after.setdefault(mid, len(restarts))

        def acked():
            with lock:
                return {mids[m] for m in acked_mids if m in mids}

        pub_id, sub_id, filters = pick_names(seed, args.workers, args.shared)
        sub = client(sub_id, port, on_message=on_message)
        sub.on_subscribe = on_subscribe
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        sub.subscribe([(filters[0], 1), (filters[1], 2)])
        if not subscribed.wait(10):
            raise RuntimeError("no SUBACK")

        pub = client(pub_id, port, on_publish=on_publish)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        for k in range(RETAINED):
            pub.publish(f"crash/retained/{k}", f"r{k}", qos=1, retain=True).wait_for_publish(10)

        # Kill points: fractions of the load, drawn from the seed.
        kill_at = sorted(rng.randrange(args.messages // 10, args.messages)
                         for _ in range(args.kills))
        for i in range(args.messages):
            qos = args.qos if args.qos else (1 if rng.random() < 0.5 else 2)
            payload = f"{seed}:{i}:q{qos}".encode()
            info = pub.publish(f"crash/q{qos}", payload, qos=qos)
            with lock:
                mids[info.mid] = payload
            if kill_at and i == kill_at[0]:
                kill_at.pop(0)
                # Let some of what was just handed to paho reach the broker mid-flight.
                time.sleep(rng.uniform(0.0, 0.05))
                if args.stop == "term":
                    broker.terminate()
                else:
                    broker.kill9()
                time.sleep(rng.uniform(0.05, 0.3))
                restarts.append(broker.start())
            elif i % 200 == 0:
                time.sleep(0.01)

        if not wait_for(lambda: len(acked()) == args.messages, 60):
            failures.append(f"only {len(acked())} of {args.messages} publishes acknowledged")
        acked = acked()

        def all_delivered():
            with lock:
                return all(p in received for p in acked)

        wait_for(all_delivered, 30)
        time.sleep(0.3)
        with lock:
            lost = [p for p in acked if p not in received]
            doubled = [p for p, n in received.items() if n > 1 and p.endswith(b"q2")]
            unknown = [p for p in received if p not in set(mids.values())]
            q1_dups = sum(n - 1 for p, n in received.items() if p.endswith(b"q1"))
        if lost:
            failures.append(f"{len(lost)} acknowledged messages never arrived, e.g. {sorted(lost)[:5]}")
        if doubled:
            failures.append(f"{len(doubled)} QoS 2 messages arrived twice, e.g. "
                            + ", ".join(f"{p} as (mid, dup, after kill) {history[p]}, acknowledged "
                                        f"after kill {[acked_after.get(m) for m, q in mids.items() if q == p]}"
                                        for p in sorted(doubled)[:5]))
        if unknown:
            failures.append(f"{len(unknown)} messages arrived that were never published")

        got_retained = set()
        fresh = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"crash-check-{seed}",
                            protocol=mqtt.MQTTv311, clean_session=True)
        fresh.on_message = lambda c, u, m: got_retained.add(m.topic) if m.retain else None
        fresh.connect("127.0.0.1", port)
        fresh.loop_start()
        fresh.subscribe("crash/retained/#", 1)
        wait_for(lambda: len(got_retained) == RETAINED, 5)
        fresh.loop_stop()
        fresh.disconnect()
        if len(got_retained) != RETAINED:
            failures.append(f"retained: {len(got_retained)} of {RETAINED} after the restarts")

        pub.loop_stop()
        sub.loop_stop()
        print(f"seed {seed}: {args.messages} published, {len(acked)} acknowledged, "
              f"{len(received)} distinct received, {q1_dups} QoS 1 duplicates, "
              f"{pub.kept_pubrel} PUBRELs kept across failed reconnects, "
              f"{len(restarts)} {'stops' if args.stop == 'term' else 'kills'}, restarts took "
              + ", ".join(f"{t * 1000:.0f} ms" for t in restarts)
              + (" — OK" if not failures else " — FAILED"))
    finally:
        broker.stop()
        broker.log.seek(0)
        log = broker.log.read().decode(errors="replace")
        # The broker warns when a commit waits over a second for links or for the disk, and
        # when a worker's acknowledgements wait two seconds on one batch: shown even when
        # the seed passes.
        stalls = [line for line in log.splitlines()
                  if "waits for other shards' links" in line
                  or "acknowledgements wait for a store batch" in line
                  or "store commit was slow" in line]
        if stalls:
            kinds = {}
            for line in stalls:
                kinds.setdefault(line.split("WARN", 1)[-1][:60], []).append(line)
            print(f"seed {seed}: {len(stalls)} store stall warnings, e.g.\n  "
                  + "\n  ".join(line for lines in kinds.values() for line in lines[:3]))
        if failures:
            failures.append(f"broker log (last run):\n{log[-3000:]}")
        shutil.rmtree(data_dir, ignore_errors=True)
    return failures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("petrel")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", default=None)
    parser.add_argument("--qos", type=int, choices=[1, 2], default=None,
                        help="publish only at this QoS (default: both, drawn per message)")
    parser.add_argument("--stop", choices=["kill", "term"], default="kill",
                        help="kill -9 (default) or stop gracefully with SIGTERM")
    parser.add_argument("--shared", action="store_true",
                        help="subscribe through a shared group owned by a third shard")
    args = parser.parse_args()
    if args.shared and args.workers < 3:
        parser.error("--shared: three workers or more")
    if args.messages >= 65000:
        parser.error("--messages: below 65000 (paho's message ids must not wrap)")
    seeds = [int(s) for s in args.seeds.split(",")] if "," in args.seeds or args.seeds.isdigit() \
        else list(range(*map(int, args.seeds.split(".."))))
    failed = False
    for seed in seeds:
        for failure in run_seed(args, seed):
            failed = True
            print(f"seed {seed}: {failure}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
