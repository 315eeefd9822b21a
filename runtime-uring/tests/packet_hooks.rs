//! The packet hook (`Hooks::on_packet`) seen from real clients: registered through the
//! library API, it gets every packet both ways with the client's id, acknowledgements and
//! pings included, from mosquitto_pub (QoS 1 and 2, MQTT 3.1.1 and 5.0) and from a paho
//! client that stays idle past its keep-alive.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use petrel::persistence::StoreKind;
use petrel::{describe_packet, ClientInfo, Config, Hooks, PacketDirection, Server};
use petrel_codec::Packet;

/// Writes one line per packet, as the `log_hooks` example prints them.
struct PacketLog {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Hooks for PacketLog {
    fn observes_packets(&self) -> bool {
        true
    }

    fn on_packet(
        &mut self,
        client: &ClientInfo<'_>,
        direction: PacketDirection,
        packet: &Packet<'_>,
        frame: &[u8],
    ) {
        let arrow = direction.arrow();
        assert!(!frame.is_empty());
        self.lines.lock().unwrap().push(format!(
            "{} {arrow} {}",
            client.client_id,
            describe_packet(packet)
        ));
    }
}

fn start(lines: &Arc<Mutex<Vec<String>>>) -> petrel::RunningServer {
    let mut config = Config::default();
    config.listeners[0].bind = Some("127.0.0.1:0".parse().unwrap());
    config.workers = 2;
    config.sys.interval = 0;
    config.store.kind = StoreKind::Memory;
    let lines = lines.clone();
    Server::new(config)
        .with_hooks(move || {
            Box::new(PacketLog {
                lines: lines.clone(),
            })
        })
        .start()
        .expect("start the broker")
}

/// The lines of `client_id`, once `last` is among them (the hook runs on the broker's
/// thread, a moment after the client has what it waited for).
fn lines_of(lines: &Arc<Mutex<Vec<String>>>, client_id: &str, last: &str) -> Vec<String> {
    let prefix = format!("{client_id} ");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mine: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| l[prefix.len()..].to_string())
            .collect();
        if mine.iter().any(|l| l.starts_with(last)) || Instant::now() > deadline {
            return mine;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mosquitto_pub(port: u16, args: &[&str]) {
    let output = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The first two words of each line: the direction and the packet type.
fn kinds(seen: &[String]) -> Vec<String> {
    seen.iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn every_packet_of_mosquitto_pub_reaches_the_hook() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let server = start(&lines);
    let port = server.local_addrs()[0].port();

    mosquitto_pub(port, &["-i", "pub-q1", "-q", "1", "-t", "a/b", "-m", "hi"]);
    let seen = lines_of(&lines, "pub-q1", "<- DISCONNECT");
    assert_eq!(
        kinds(&seen),
        [
            "<- CONNECT",
            "-> CONNACK",
            "<- PUBLISH",
            "-> PUBACK",
            "<- DISCONNECT"
        ],
        "{seen:?}"
    );
    assert!(
        seen[0].starts_with("<- CONNECT v4 client_id=\"pub-q1\""),
        "{seen:?}"
    );
    assert!(
        seen[2].starts_with("<- PUBLISH topic=\"a/b\" qos=1"),
        "{seen:?}"
    );
    assert!(seen[3].ends_with("Success"), "{seen:?}");

    // QoS 2 over 5.0: the four-packet flow, each packet the way it went.
    mosquitto_pub(
        port,
        &[
            "-V", "mqttv5", "-i", "pub-q2", "-q", "2", "-t", "a/b", "-m", "hi",
        ],
    );
    let seen = lines_of(&lines, "pub-q2", "<- DISCONNECT");
    assert_eq!(
        kinds(&seen),
        [
            "<- CONNECT",
            "-> CONNACK",
            "<- PUBLISH",
            "-> PUBREC",
            "<- PUBREL",
            "-> PUBCOMP",
            "<- DISCONNECT"
        ],
        "{seen:?}"
    );
    server.shutdown();
}

/// A paho 5.0 client subscribes, stays idle past its one-second keep-alive (so it pings),
/// then publishes at QoS 1 to its own subscription and acknowledges the delivery.
const PAHO: &str = r#"
import sys, threading, time
import paho.mqtt.client as mqtt
subscribed, got = threading.Event(), threading.Event()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-idle", protocol=mqtt.MQTTv5)
c.on_subscribe = lambda *args: subscribed.set()
c.on_message = lambda *args: got.set()
c.connect("127.0.0.1", int(sys.argv[1]), keepalive=1)
c.loop_start()
c.subscribe("ping/#", qos=1)
if not subscribed.wait(5):
    sys.exit("no SUBACK")
time.sleep(2.5)
c.publish("ping/x", b"m", qos=1).wait_for_publish(5)
if not got.wait(5):
    sys.exit("no message")
time.sleep(0.2)
c.disconnect()
c.loop_stop()
"#;

#[test]
fn pings_and_acknowledgements_of_paho_reach_the_hook() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let server = start(&lines);
    let port = server.local_addrs()[0].port();
    let output = Command::new("python3")
        .args(["-c", PAHO, &port.to_string()])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "paho: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen = lines_of(&lines, "paho-idle", "<- DISCONNECT");
    let kinds = kinds(&seen);
    for expected in [
        "<- CONNECT",
        "-> CONNACK",
        "<- SUBSCRIBE",
        "-> SUBACK",
        "<- PINGREQ",
        "-> PINGRESP",
        "<- PUBLISH",
        "-> PUBACK",
        "-> PUBLISH",
        "<- PUBACK",
        "<- DISCONNECT",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "no {expected}: {seen:?}"
        );
    }
    let ping = kinds.iter().position(|k| k == "<- PINGREQ");
    let pong = kinds.iter().position(|k| k == "-> PINGRESP");
    assert!(ping < pong, "{seen:?}");
    server.shutdown();
}
