//! The real `petrel` binary against the real mosquitto command-line clients (Debian's
//! `mosquitto-clients`), over MQTT 3.1.1 and 5.0.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{publish, Broker, RawClient, Sub};
use petrel_codec::{
    List, Packet, PacketId, PacketType, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe,
    SubscribeFilter, SubscriptionOptions,
};

#[test]
fn qos_0_1_2_both_ways_in_both_versions() {
    let broker = Broker::start();
    for version in ["mqttv311", "mqttv5"] {
        let sub = Sub::start(
            &broker,
            &["-V", version, "-q", "2", "-t", "q/#", "-C", "3", "-W", "10"],
        );
        for qos in ["0", "1", "2"] {
            let topic = format!("q/{qos}");
            let payload = format!("{version} at {qos}");
            publish(
                &broker,
                &["-V", version, "-q", qos, "-t", &topic, "-m", &payload],
            );
        }
        let lines = sub.lines();
        assert_eq!(
            lines,
            [
                format!("q/0 {version} at 0"),
                format!("q/1 {version} at 1"),
                format!("q/2 {version} at 2"),
            ]
        );
    }
}

#[test]
fn retained_messages_are_kept_replaced_and_cleared() {
    let broker = Broker::start();
    publish(&broker, &["-t", "r/state", "-m", "on", "-r", "-q", "1"]);
    // -C 1 ends it as soon as the message is there; -W only bounds a failure.
    let lines = Sub::start(&broker, &["-t", "r/#", "-C", "1", "-W", "10"]).lines();
    assert_eq!(lines, ["r/state on"]);
    // An empty retained message clears it. At QoS 1, mosquitto_pub ends only after the
    // PUBACK, so the broker has stored the clear before the next client connects (a QoS 0
    // one could still be in flight then).
    publish(&broker, &["-t", "r/state", "-n", "-r", "-q", "1"]);
    // Retained messages come right after the SUBACK, which `Sub::start` waited for.
    let sub = Sub::start(&broker, &["-t", "r/#", "-W", "3"]);
    assert!(sub.subscribed(), "an empty result would prove nothing");
    let lines = sub.lines();
    assert!(lines.is_empty(), "{lines:?}");
}

#[test]
fn a_crashed_clients_will_is_published_and_a_clean_ones_is_not() {
    let broker = Broker::start();
    let watcher = Sub::start(&broker, &["-t", "wills/#", "-C", "1", "-W", "10"]);
    let clean = Sub::start(
        &broker,
        &[
            "-t",
            "x",
            "--will-topic",
            "wills/clean",
            "--will-payload",
            "no",
            "-W",
            "1",
        ],
    );
    // -W makes it disconnect normally after a second: no will.
    clean.lines();
    let crashing = Sub::start(
        &broker,
        &[
            "-t",
            "x",
            "--will-topic",
            "wills/crash",
            "--will-payload",
            "bye",
        ],
    );
    crashing.kill();
    assert_eq!(watcher.lines(), ["wills/crash bye"]);
}

#[test]
fn a_persistent_session_gets_what_was_published_while_it_was_away() {
    let broker = Broker::start();
    // Subscribe with a persistent session, then leave (-E: exit once subscribed).
    Sub::start(
        &broker,
        &["-c", "-i", "keeper", "-q", "1", "-t", "p/#", "-E"],
    )
    .lines();
    publish(&broker, &["-q", "1", "-t", "p/1", "-m", "while away"]);
    let lines = Sub::start(
        &broker,
        &[
            "-c", "-i", "keeper", "-q", "1", "-t", "p/#", "-C", "1", "-W", "5",
        ],
    )
    .lines();
    assert_eq!(lines, ["p/1 while away"]);
}

#[test]
fn a_shared_subscription_splits_messages_between_members() {
    let broker = Broker::start();
    let args = ["-V", "mqttv5", "-t", "$share/workers/jobs/#", "-W", "3"];
    let a = Sub::start(&broker, &args);
    let b = Sub::start(&broker, &args);
    for n in 0..10 {
        publish(
            &broker,
            &["-V", "mqttv5", "-t", "jobs/x", "-m", &n.to_string()],
        );
    }
    let (a, b) = (a.lines(), b.lines());
    assert_eq!(a.len() + b.len(), 10, "each message once: {a:?} {b:?}");
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both members served: {a:?} {b:?}"
    );
}

#[test]
fn an_expired_message_is_not_delivered() {
    let broker = Broker::start();
    publish(
        &broker,
        &[
            "-V",
            "mqttv5",
            "-t",
            "e/x",
            "-m",
            "stale",
            "-r",
            "-D",
            "publish",
            "message-expiry-interval",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(2100));
    let lines = Sub::start(&broker, &["-V", "mqttv5", "-t", "e/#", "-W", "1"]).lines();
    assert!(lines.is_empty(), "{lines:?}");
}

#[test]
fn a_second_connection_with_the_same_id_takes_the_session_over() {
    let broker = Broker::start();
    let mut first = RawClient::connect(&broker, ProtocolVersion::V5, "twin");
    let _second = RawClient::connect(&broker, ProtocolVersion::V5, "twin");
    assert_eq!(
        first.next_packet(),
        Some((PacketType::Disconnect, Some(ReasonCode::SessionTakenOver)))
    );
    assert_eq!(first.next_packet(), None, "and the connection is closed");
}

#[test]
fn garbage_closes_that_connection_and_nothing_else() {
    let mut broker = Broker::start();
    let watcher = Sub::start(&broker, &["-t", "still/#", "-C", "1", "-W", "10"]);
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x00, 0x00],
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        &[0x10, 0x05, 0x00, 0x04, b'M', b'Q', b'T'],
    ] {
        let mut stream = std::net::TcpStream::connect(broker.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(12)))
            .unwrap();
        let _ = stream.write_all(garbage);
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
    }
    assert!(broker.alive());
    publish(&broker, &["-t", "still/here", "-m", "yes"]);
    assert_eq!(watcher.lines(), ["still/here yes"]);
}

#[test]
fn a_stalled_subscriber_does_not_slow_the_others() {
    let broker = Broker::start();
    // A subscriber that never reads its socket.
    let mut stalled = RawClient::connect(&broker, ProtocolVersion::V311, "stalled");
    let filters = [SubscribeFilter {
        filter: "load/#",
        options: SubscriptionOptions::qos(QoS::AtMostOnce),
    }];
    stalled.send(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::default(),
        filters: List::new(&filters),
    }));
    assert_eq!(stalled.next_packet_type(), Some(PacketType::SubAck));
    let count = 2000;
    // QoS 1 end to end for the fast one: at QoS 0 a busy machine may rightly drop for it
    // too once its socket falls 1 MiB behind, and the test would measure the machine.
    let fast = Sub::start(
        &broker,
        &[
            "-t",
            "load/#",
            "-q",
            "1",
            "-C",
            &count.to_string(),
            "-W",
            "20",
        ],
    );
    let payload = "x".repeat(4096);
    // One mosquitto_pub sends many messages from a file of lines (-l).
    let lines: String = (0..count).map(|_| format!("{payload}\n")).collect();
    let mut child = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port(),
            "-t",
            "load/x",
            "-q",
            "1",
            "-l",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let received = fast.lines();
    assert_eq!(received.len(), count, "the fast subscriber got everything");
    // The stalled one is still connected; the broker just dropped QoS 0 for it.
    drop(stalled);
}

#[test]
fn sigterm_tells_v5_clients_the_server_is_shutting_down() {
    let mut broker = Broker::start();
    let mut client = RawClient::connect(&broker, ProtocolVersion::V5, "leaving");
    let status = broker.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        client.next_packet(),
        Some((PacketType::Disconnect, Some(ReasonCode::ServerShuttingDown)))
    );
    assert!(broker.log().contains("shutting down"));
}

#[test]
fn a_thousand_clients_connect_and_receive() {
    let broker = Broker::start();
    let mut clients: Vec<RawClient> = (0..1000)
        .map(|n| RawClient::connect(&broker, ProtocolVersion::V5, &format!("many-{n}")))
        .collect();
    let filters = [SubscribeFilter {
        filter: "all/#",
        options: SubscriptionOptions::qos(QoS::AtMostOnce),
    }];
    for client in clients.iter_mut() {
        client.send(&Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Properties::default(),
            filters: List::new(&filters),
        }));
        assert_eq!(client.next_packet_type(), Some(PacketType::SubAck));
    }
    publish(&broker, &["-t", "all/hello", "-m", "everyone"]);
    for client in clients.iter_mut() {
        assert_eq!(client.next_packet_type(), Some(PacketType::Publish));
    }
}

#[test]
fn a_silent_connection_is_closed_after_the_connect_timeout() {
    let config = std::env::temp_dir().join(format!("petrel-silent-{}.toml", std::process::id()));
    std::fs::write(&config, "[limits]\nconnect_timeout = 1\n").unwrap();
    let broker = Broker::start_with(&["--workers", "2", "--config", config.to_str().unwrap()]);
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(broker.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let closed = std::io::Read::read_to_end(&mut stream, &mut rest).is_ok();
    let _ = std::fs::remove_file(&config);
    assert!(closed && rest.is_empty(), "closed without a word");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_bad_config_file_names_the_line() {
    let config = std::env::temp_dir().join(format!("petrel-bad-{}.toml", std::process::id()));
    std::fs::write(&config, "workers = 1\n[limits]\nmaximum_qos = \"two\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 3"), "{stderr}");
}
