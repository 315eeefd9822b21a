//! Limits from real clients: connections in all and per address, connection rate per
//! address, publish rate (DISCONNECT 0x96), topic levels and length, packet size (0x95),
//! the receive maximum (0x93), the outbound in-flight window and the queue behind it, with
//! mosquitto_pub / mosquitto_sub and raw packets, and each limit's `$SYS` counter.

mod common;

use std::process::Command;
use std::time::Duration;

use common::raw::Raw;
use common::{Broker, Sub};
use petrel_codec::{
    Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode,
};

fn start(name: &str, limits: &str) -> Broker {
    let config =
        std::env::temp_dir().join(format!("petrel-limits-{name}-{}.toml", std::process::id()));
    std::fs::write(&config, format!("[sys]\ninterval = 1\n[limits]\n{limits}")).unwrap();
    Broker::start_with(&["--workers", "2", "--config", config.to_str().unwrap()])
}

fn mosquitto_pub(broker: &Broker, args: &[&str]) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port()])
        .args(args)
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)")
        .status
        .success()
}

#[test]
fn connections_per_address_are_capped() {
    let broker = start("per-address", "max_connections_per_address = 3\n");
    let held: Vec<Raw> = (0..3)
        .map(|n| {
            let (raw, code) = Raw::connect(
                &broker,
                ProtocolVersion::V5,
                &format!("held-{n}"),
                None,
                None,
            );
            assert_eq!(code, ReasonCode::Success);
            raw
        })
        .collect();
    assert!(!mosquitto_pub(&broker, &["-t", "t", "-m", "x"]));
    drop(held);
    // Closed connections give their places back.
    let mut ok = false;
    for _ in 0..50 {
        if mosquitto_pub(&broker, &["-t", "t", "-m", "x"]) {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "a place did not come back");
    assert!(sys_count(&broker, "connections per address refused") >= 1);
}

/// The value of `$SYS/broker/limits/{name}` at a tick after now. Read through `$SYS/#`,
/// which fits the tightest topic limits the tests set.
fn sys_count(broker: &Broker, name: &str) -> u64 {
    let topic = format!("$SYS/broker/limits/{name} ");
    let lines = Sub::start(broker, &["-t", "$SYS/#", "-W", "3"]).lines();
    // The retained value first, then each tick's, which counts what came before.
    lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix(&topic))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no count on {topic}: {lines:?}"))
}

#[test]
fn total_connections_are_capped() {
    let broker = start(
        "total",
        "max_connections = 2
",
    );
    let held: Vec<Raw> = (0..2)
        .map(|n| Raw::connect(&broker, ProtocolVersion::V5, &format!("h{n}"), None, None).0)
        .collect();
    assert!(!mosquitto_pub(&broker, &["-t", "t", "-m", "x"]));
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert!(sys_count(&broker, "connections refused") >= 1);
}

#[test]
fn connection_rate_per_address_is_capped() {
    let broker = start(
        "conn-rate",
        "connection_rate_per_address = 1\nconnection_burst_per_address = 1\n",
    );
    assert!(mosquitto_pub(&broker, &["-t", "t", "-m", "x"]));
    assert!(!mosquitto_pub(&broker, &["-t", "t", "-m", "x"]));
    // A second later the address has a token again (for the $SYS subscriber).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(sys_count(&broker, "connection rate refused") >= 1);
}

#[test]
fn packets_over_the_maximum_size_are_disconnected_with_0x95() {
    let broker = start("packet-size", "max_packet_size = 128\n");
    let (mut raw, _) = Raw::connect(&broker, ProtocolVersion::V5, "big", None, None);
    raw.publish_qos0(&"x".repeat(200));
    assert_eq!(raw.disconnect_reason(), Some(ReasonCode::PacketTooLarge));
    assert!(sys_count(&broker, "packet too large") >= 1);
}

#[test]
fn receive_maximum_is_announced_and_exceeding_it_is_disconnected_with_0x93() {
    let broker = start("receive-max", "receive_maximum = 3\n");
    let (mut raw, announced) = Raw::connect_v5(&broker, "eager", None);
    assert_eq!(announced, Some(3));
    // QoS 2 publishes whose flow the client never finishes (no PUBREL) stay in flight.
    let publish = |id: u16| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "t",
            packet_id: PacketId::new(id),
            properties: Properties::default(),
            payload: b"x",
        })
    };
    for id in 1..=3 {
        raw.send(&publish(id));
        let rec = raw.next(|p| matches!(p, Packet::PubRec(r) if r.packet_id.get() == id));
        assert_eq!(rec, Some(true), "PUBREC {id}");
    }
    raw.send(&publish(4));
    assert_eq!(
        raw.disconnect_reason(),
        Some(ReasonCode::ReceiveMaximumExceeded)
    );
    assert!(sys_count(&broker, "receive maximum exceeded") >= 1);
}

/// Subscribes `subscriber` to `topic` at QoS 1, has mosquitto_pub send it `sent`
/// messages at QoS 1, and returns how many arrive before any is acknowledged, and in all
/// once each is acknowledged as it comes (never more than `window` unacknowledged).
fn deliver_through_the_window(
    broker: &Broker,
    subscriber: &mut Raw,
    topic: &str,
    sent: usize,
    window: usize,
) -> (usize, usize) {
    assert_eq!(subscriber.subscribe(topic), ReasonCode::GrantedQoS1);
    let count = sent.to_string();
    assert!(mosquitto_pub(
        broker,
        &["-q", "1", "-t", topic, "-m", "m", "--repeat", &count]
    ));
    let quiet = Duration::from_millis(500);
    let mut outstanding = subscriber.publishes_until_quiet(quiet);
    let first = outstanding.len();
    let mut total = first;
    loop {
        let more = match outstanding.pop() {
            Some(packet_id) => {
                subscriber.send(&Packet::PubAck(PubResponse::new(packet_id)));
                subscriber.publishes_until_quiet(Duration::from_millis(200))
            }
            // Nothing unacknowledged: a last, longer look for a message a loaded machine
            // was slow to send.
            None => match subscriber.publishes_until_quiet(Duration::from_secs(1)) {
                late if late.is_empty() => break,
                late => late,
            },
        };
        total += more.len();
        outstanding.extend(more);
        assert!(outstanding.len() <= window, "{outstanding:?}");
    }
    (first, total)
}

#[test]
fn outbound_in_flight_is_capped_and_the_rest_queued_within_the_limit() {
    let broker = start(
        "inflight",
        "max_inflight_messages = 2\nmax_queued_messages = 3\n",
    );
    // A 5.0 client that could take 10 at once gets the server's 2; one that announces 1
    // gets 1 [MQTT-4.9.0-2]. Past the window, 3 wait in the queue and the rest are dropped.
    let (mut wide, _) = Raw::connect_v5(&broker, "wide", Some(10));
    assert_eq!(
        deliver_through_the_window(&broker, &mut wide, "w/t", 8, 2),
        (2, 5)
    );
    let (mut narrow, _) = Raw::connect_v5(&broker, "narrow", Some(1));
    assert_eq!(
        deliver_through_the_window(&broker, &mut narrow, "n/t", 8, 1),
        (1, 4)
    );
    // A 3.1.1 client cannot announce a limit: it gets the server's.
    let (mut old, _) = Raw::connect(&broker, ProtocolVersion::V311, "old", None, None);
    assert_eq!(
        deliver_through_the_window(&broker, &mut old, "o/t", 8, 2),
        (2, 5)
    );
    assert!(sys_count(&broker, "queue full") >= 3 + 4 + 3);
}

#[test]
fn publishing_too_fast_is_disconnected_with_0x96() {
    let broker = start("rate", "publish_rate = 5\npublish_burst = 5\n");
    // Within the rate: mosquitto_pub sending one message.
    assert!(mosquitto_pub(
        &broker,
        &["-V", "mqttv5", "-t", "t", "-m", "x"]
    ));
    let (mut raw, _) = Raw::connect(&broker, ProtocolVersion::V5, "fast", None, None);
    for _ in 0..20 {
        raw.publish_qos0("t");
    }
    assert_eq!(
        raw.disconnect_reason(),
        Some(ReasonCode::MessageRateTooHigh)
    );
    // 3.1.1: closed without a word.
    let (mut old, _) = Raw::connect(&broker, ProtocolVersion::V311, "fast-old", None, None);
    for _ in 0..20 {
        old.publish_qos0("t");
    }
    assert_eq!(old.disconnect_reason(), None);
    assert!(sys_count(&broker, "publish rate exceeded") >= 2);
}

#[test]
fn topics_over_the_limits_are_refused() {
    let broker = start("topics", "max_topic_levels = 3\nmax_topic_length = 32\n");
    let (mut v5, _) = Raw::connect(&broker, ProtocolVersion::V5, "v5", None, None);
    assert_eq!(v5.publish_qos1("a/b/c/d", 1), ReasonCode::TopicNameInvalid);
    assert_eq!(
        v5.publish_qos1(&"x".repeat(33), 2),
        ReasonCode::TopicNameInvalid
    );
    assert_eq!(v5.subscribe("a/+/c/#"), ReasonCode::TopicFilterInvalid);
    assert_eq!(v5.subscribe("a/+/#"), ReasonCode::GrantedQoS1);
    // mosquitto_sub cannot subscribe too deep; what mosquitto_pub sends there never arrives.
    let sub = Sub::start(&broker, &["-t", "#", "-W", "2"]);
    assert!(mosquitto_pub(
        &broker,
        &["-q", "1", "-t", "a/b/c/d", "-m", "deep"]
    ));
    assert!(mosquitto_pub(
        &broker,
        &["-q", "1", "-t", "a/b/c", "-m", "ok"]
    ));
    assert_eq!(sub.lines(), ["a/b/c ok"]);
    // Two PUBLISHes and one SUBSCRIBE from the raw client, mosquitto_pub's one PUBLISH.
    assert!(sys_count(&broker, "topic too large") >= 4);
}
