//! Limits from real clients: connections per address, publish rate (DISCONNECT 0x96),
//! topic levels and length, with mosquitto_pub / mosquitto_sub and raw packets, and their
//! `$SYS` counters.

mod common;

use std::process::Command;
use std::time::Duration;

use common::raw::Raw;
use common::{Broker, Sub};
use petrel_codec::{ProtocolVersion, ReasonCode};

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
    let lines = Sub::start(
        &broker,
        &[
            "-t",
            "$SYS/broker/limits/connections per address refused",
            "-C",
            "2",
            "-W",
            "5",
        ],
    )
    .lines();
    // The retained value first, then the next tick's, which counts the refusals.
    let last = lines.last().map(String::as_str).unwrap_or_default();
    let count = last.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok());
    assert!(count.is_some_and(|n| n >= 1), "{lines:?}");
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
}
