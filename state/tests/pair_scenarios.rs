//! Scenario tests of a client session and a server connection talking to each other through
//! the in-memory [`Pair`] harness (virtual clock, latency, chunking, connection loss and
//! resume). Each test names the normative statement it checks.

mod pair;

use pair::{
    granted_code, AppMessage, ChunkMode, ClientLog, Offered, Pair, PairConfig, ServerLog, Side,
    Stage, WireEvent, WirePacket,
};
use petrel_codec::{ProtocolVersion, QoS, ReasonCode, SubscribeFilter, SubscriptionOptions};
use petrel_state::client::{ClientError, ConnectionState};
use petrel_state::server::CloseInitiator;
use petrel_state::Duration;

use ProtocolVersion::{V311, V5};

const VERSIONS: [ProtocolVersion; 2] = [V311, V5];
const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How many times `payload` reached the client application.
fn client_got(pair: &Pair, payload: &[u8]) -> usize {
    pair.client_messages()
        .iter()
        .filter(|m| m.payload == payload)
        .count()
}

/// How many times `payload` reached the server application.
fn server_got(pair: &Pair, payload: &[u8]) -> usize {
    pair.app
        .received
        .iter()
        .filter(|m| m.payload == payload)
        .count()
}

/// The PUBLISH packets `from` a side at a stage on one connection: (dup, packet id, payload).
fn publishes(
    pair: &Pair,
    from: Side,
    stage: Stage,
    connection: u32,
) -> Vec<(bool, Option<u16>, Vec<u8>)> {
    pair.wire
        .iter()
        .filter(|e| e.from == from && e.stage == stage && e.connection == connection)
        .filter_map(|e| match &e.packet {
            WirePacket::Publish {
                dup,
                packet_id,
                payload,
                ..
            } => Some((*dup, *packet_id, payload.clone())),
            _ => None,
        })
        .collect()
}

/// Asserts that nothing went wrong on the protocol level: no client error, and every server
/// close was a transport loss or one the test asked for.
fn assert_clean(pair: &Pair) {
    assert_eq!(pair.client_errors(), vec![], "{:#?}", pair.client_log);
    for info in pair.server_closes() {
        assert!(
            info.initiator == CloseInitiator::Transport,
            "unexpected close {info:?}\n{:#?}",
            pair.wire
        );
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

/// Publishes one message from `sender` to the other side.
fn publish_from(pair: &mut Pair, sender: Side, payload: &[u8], qos: QoS) {
    match sender {
        Side::Client => {
            pair.client_publish("pair/test", payload, qos)
                .expect("client publish");
        }
        Side::Server => {
            let offered = pair.server_publish("pair/test", payload, qos);
            assert_eq!(offered, Offered::Sent);
        }
    }
}

/// How many times the receiver opposite `sender` got `payload`.
fn received_by_peer_of(pair: &Pair, sender: Side, payload: &[u8]) -> usize {
    match sender {
        Side::Client => server_got(pair, payload),
        Side::Server => client_got(pair, payload),
    }
}

/// How many QoS 1/2 completions the sender saw (client: Published; server: Delivered).
fn sender_completions(pair: &Pair, sender: Side) -> usize {
    match sender {
        Side::Client => pair.client_published().len(),
        Side::Server => pair.server_delivered().len(),
    }
}

// ---------------------------------------------------------------------------------------------
// CONNECT / CONNACK

/// [MQTT-3.2.0-1]: the first packet the server sends is CONNACK, and the client reports the
/// connection; a new session is not "present".
#[test]
fn connect_is_answered_with_connack_mqtt_3_2_0_1() {
    for version in VERSIONS {
        let pair = Pair::connected(PairConfig::new(version));
        let from_server = pair.packets(Side::Server, Stage::Delivered);
        assert_eq!(
            from_server.first(),
            Some(&&WirePacket::ConnAck {
                session_present: false,
                reason: ReasonCode::Success
            }),
            "{version:?}"
        );
        assert_eq!(
            pair.client_log,
            vec![ClientLog::Connected {
                session_present: false
            }]
        );
        assert!(pair.server.is_connected());
        assert_eq!(
            pair.app.log,
            vec![ServerLog::Accepted {
                clean_start: version == V5,
                session_present: false
            }]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The three QoS flows, both directions

/// [MQTT-4.3.1-1]: QoS 0 goes as one PUBLISH with QoS 0 and DUP 0, no identifier, and
/// nothing answers it.
#[test]
fn qos0_both_directions_mqtt_4_3_1_1() {
    for version in VERSIONS {
        let mut pair = Pair::connected(PairConfig::new(version).with_latency(ms(5)));
        publish_from(&mut pair, Side::Client, b"up", QoS::AtMostOnce);
        publish_from(&mut pair, Side::Server, b"down", QoS::AtMostOnce);
        pair.drive();
        assert_eq!(server_got(&pair, b"up"), 1);
        assert_eq!(client_got(&pair, b"down"), 1);
        for side in [Side::Client, Side::Server] {
            assert_eq!(
                publishes(&pair, side, Stage::Delivered, 1),
                vec![(
                    false,
                    None,
                    if side == Side::Client {
                        &b"up"[..]
                    } else {
                        &b"down"[..]
                    }
                    .to_vec()
                )]
            );
        }
        // After CONNECT / CONNACK, only the two PUBLISH packets crossed.
        assert_eq!(
            pair.wire.iter().filter(|e| e.stage == Stage::Sent).count(),
            4
        );
        assert_clean(&pair);
    }
}

/// The packets of one flow on the wire, sender's and receiver's interleaved as delivered.
fn flow(pair: &Pair) -> Vec<(Side, WirePacket)> {
    pair.wire
        .iter()
        .filter(|e| e.stage == Stage::Delivered && e.connection == 1)
        .filter(|e| {
            !matches!(
                e.packet,
                WirePacket::Connect { .. } | WirePacket::ConnAck { .. }
            )
        })
        .map(|e| {
            let packet = match &e.packet {
                // The payload and topic were checked elsewhere; keep the handshake visible.
                WirePacket::Publish { qos, dup, .. } => WirePacket::Publish {
                    topic: String::new(),
                    payload: Vec::new(),
                    qos: *qos,
                    dup: *dup,
                    packet_id: Some(1),
                    topic_alias: None,
                },
                other => other.clone(),
            };
            (e.from, packet)
        })
        .collect()
}

fn bare_publish(qos: QoS) -> WirePacket {
    WirePacket::Publish {
        topic: String::new(),
        payload: Vec::new(),
        qos,
        dup: false,
        packet_id: Some(1),
        topic_alias: None,
    }
}

/// [MQTT-4.3.2-1]: QoS 1 is PUBLISH (with a packet identifier, DUP 0) answered by PUBACK;
/// the sender learns of the completion (client: Published; server: Delivered).
#[test]
fn qos1_both_directions_mqtt_4_3_2_1() {
    for version in VERSIONS {
        for sender in [Side::Client, Side::Server] {
            let mut pair = Pair::connected(PairConfig::new(version).with_latency(ms(5)));
            publish_from(&mut pair, sender, b"once-or-more", QoS::AtLeastOnce);
            pair.drive();
            assert_eq!(received_by_peer_of(&pair, sender, b"once-or-more"), 1);
            assert_eq!(
                flow(&pair),
                vec![
                    (sender, bare_publish(QoS::AtLeastOnce)),
                    (other(sender), WirePacket::PubAck(1)),
                ],
                "{version:?} from {sender:?}"
            );
            assert_eq!(sender_completions(&pair, sender), 1);
            assert_eq!(pair.client.inflight(), 0);
            assert_clean(&pair);
        }
    }
}

/// [MQTT-4.3.3-1]: QoS 2 is PUBLISH, PUBREC, PUBREL, PUBCOMP, with one packet identifier.
#[test]
fn qos2_both_directions_mqtt_4_3_3_1() {
    for version in VERSIONS {
        for sender in [Side::Client, Side::Server] {
            let mut pair = Pair::connected(PairConfig::new(version).with_latency(ms(5)));
            publish_from(&mut pair, sender, b"exactly-once", QoS::ExactlyOnce);
            pair.drive();
            assert_eq!(received_by_peer_of(&pair, sender, b"exactly-once"), 1);
            let receiver = other(sender);
            assert_eq!(
                flow(&pair),
                vec![
                    (sender, bare_publish(QoS::ExactlyOnce)),
                    (receiver, WirePacket::PubRec(1)),
                    (sender, WirePacket::PubRel(1)),
                    (receiver, WirePacket::PubComp(1)),
                ],
                "{version:?} from {sender:?}"
            );
            assert_eq!(sender_completions(&pair, sender), 1);
            assert_eq!(pair.client.inflight(), 0);
            assert_eq!(pair.client.incoming_qos2(), 0);
            let session = pair.server.session().expect("attached session");
            assert!(session.inbound_qos2.is_empty() && session.outbound.is_empty());
            assert_clean(&pair);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection loss and resume

/// A point in a QoS 1/2 handshake: the packet, who sends it, and whether it is lost on the
/// way (`Sent`) or arrived and only the answer is lost (`Delivered`).
#[derive(Debug, Clone, Copy)]
struct LossPoint {
    /// The packet's sender: the message's sender for PUBLISH / PUBREL, its receiver for
    /// PUBACK / PUBREC / PUBCOMP.
    by_sender: bool,
    stage: Stage,
    kind: fn(&WirePacket) -> bool,
    name: &'static str,
    /// What the message's sender re-sends after the resume.
    resend: Resend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// The PUBLISH, with DUP 1.
    Publish,
    /// The PUBREL.
    PubRel,
    /// Nothing: the flow had completed.
    Nothing,
}

fn is_publish(p: &WirePacket) -> bool {
    matches!(p, WirePacket::Publish { .. })
}
fn is_puback(p: &WirePacket) -> bool {
    matches!(p, WirePacket::PubAck(_))
}
fn is_pubrec(p: &WirePacket) -> bool {
    matches!(p, WirePacket::PubRec(_))
}
fn is_pubrel(p: &WirePacket) -> bool {
    matches!(p, WirePacket::PubRel(_))
}
fn is_pubcomp(p: &WirePacket) -> bool {
    matches!(p, WirePacket::PubComp(_))
}

const QOS2_LOSS_POINTS: [LossPoint; 8] = [
    LossPoint {
        by_sender: true,
        stage: Stage::Sent,
        kind: is_publish,
        name: "PUBLISH lost on the way",
        resend: Resend::Publish,
    },
    LossPoint {
        by_sender: true,
        stage: Stage::Delivered,
        kind: is_publish,
        name: "after PUBLISH, PUBREC unsent",
        resend: Resend::Publish,
    },
    LossPoint {
        by_sender: false,
        stage: Stage::Sent,
        kind: is_pubrec,
        name: "PUBREC lost on the way",
        resend: Resend::Publish,
    },
    LossPoint {
        by_sender: false,
        stage: Stage::Delivered,
        kind: is_pubrec,
        name: "after PUBREC, PUBREL unsent",
        resend: Resend::PubRel,
    },
    LossPoint {
        by_sender: true,
        stage: Stage::Sent,
        kind: is_pubrel,
        name: "PUBREL lost on the way",
        resend: Resend::PubRel,
    },
    LossPoint {
        by_sender: true,
        stage: Stage::Delivered,
        kind: is_pubrel,
        name: "after PUBREL, PUBCOMP unsent",
        resend: Resend::PubRel,
    },
    LossPoint {
        by_sender: false,
        stage: Stage::Sent,
        kind: is_pubcomp,
        name: "before PUBCOMP arrives",
        resend: Resend::PubRel,
    },
    LossPoint {
        by_sender: false,
        stage: Stage::Delivered,
        kind: is_pubcomp,
        name: "after PUBCOMP",
        resend: Resend::Nothing,
    },
];

const QOS1_LOSS_POINTS: [LossPoint; 3] = [
    LossPoint {
        by_sender: true,
        stage: Stage::Sent,
        kind: is_publish,
        name: "PUBLISH lost on the way",
        resend: Resend::Publish,
    },
    LossPoint {
        by_sender: true,
        stage: Stage::Delivered,
        kind: is_publish,
        name: "after PUBLISH, PUBACK lost",
        resend: Resend::Publish,
    },
    LossPoint {
        by_sender: false,
        stage: Stage::Delivered,
        kind: is_puback,
        name: "after PUBACK",
        resend: Resend::Nothing,
    },
];

/// Publishes one message from `sender`, loses the connection at `point`, resumes, and
/// returns the pair after everything settled.
fn lose_at(version: ProtocolVersion, sender: Side, qos: QoS, point: LossPoint) -> Pair {
    // Latency, so that "lost on the way" means bytes in flight.
    let mut pair = Pair::connected(PairConfig::new(version).with_latency(ms(20)));
    publish_from(&mut pair, sender, b"the-message", qos);
    let packet_from = if point.by_sender {
        sender
    } else {
        other(sender)
    };
    let hit = pair.drive_until(|e: &WireEvent| {
        e.from == packet_from && e.stage == point.stage && (point.kind)(&e.packet)
    });
    assert!(
        hit,
        "{version:?} {sender:?}: never reached '{}'",
        point.name
    );
    pair.lose_connection();
    pair.reconnect();
    pair.drive();
    pair
}

/// [MQTT-4.3.3-2] (DUP 0 on first send), [MQTT-4.3.3-9] / [MQTT-4.3.3-10] (a re-sent
/// PUBLISH is acknowledged again, not delivered again), [MQTT-4.3.3-11] (PUBREL answered by
/// PUBCOMP), [MQTT-4.4.0-1] (unacknowledged PUBLISH and PUBREL re-sent on resume), in both
/// directions: a QoS 2 message reaches its receiver exactly once wherever in the handshake
/// the connection is lost, and its sender sees exactly one completion.
#[test]
fn qos2_exactly_once_across_a_loss_at_every_step_mqtt_4_3_3_x_mqtt_4_4_0_1() {
    for version in VERSIONS {
        for sender in [Side::Client, Side::Server] {
            for point in QOS2_LOSS_POINTS {
                let what = format!("{version:?}, from {sender:?}, {}", point.name);
                let pair = lose_at(version, sender, QoS::ExactlyOnce, point);
                assert_eq!(pair.client.state(), ConnectionState::Connected, "{what}");
                assert_eq!(
                    pair.client_log
                        .iter()
                        .rev()
                        .find(|e| matches!(e, ClientLog::Connected { .. })),
                    Some(&ClientLog::Connected {
                        session_present: true
                    }),
                    "{what}: the session resumes"
                );
                assert_eq!(
                    received_by_peer_of(&pair, sender, b"the-message"),
                    1,
                    "{what}: delivered exactly once\n{:#?}",
                    pair.wire
                );
                assert_eq!(sender_completions(&pair, sender), 1, "{what}");
                // What the sender re-sent on the resumed connection.
                let resent_publish = publishes(&pair, sender, Stage::Sent, 2);
                let resent_pubrel = pair
                    .wire
                    .iter()
                    .filter(|e| e.connection == 2 && e.from == sender)
                    .any(|e| is_pubrel(&e.packet));
                match point.resend {
                    Resend::Publish => {
                        assert_eq!(
                            resent_publish,
                            vec![(true, Some(1), b"the-message".to_vec())],
                            "{what}: re-sent with DUP 1 and its identifier"
                        );
                        assert!(resent_pubrel, "{what}: the flow goes on");
                    }
                    Resend::PubRel => {
                        assert!(resent_publish.is_empty(), "{what}: [MQTT-4.3.3-6]");
                        assert!(resent_pubrel, "{what}: PUBREL re-sent");
                    }
                    Resend::Nothing => {
                        assert!(resent_publish.is_empty() && !resent_pubrel, "{what}");
                    }
                }
                // Nothing is left in flight on either side.
                assert_eq!(pair.client.inflight(), 0, "{what}");
                assert_eq!(pair.client.incoming_qos2(), 0, "{what}");
                let session = pair.server.session().expect("attached session");
                assert!(session.outbound.is_empty(), "{what}");
                assert!(session.inbound_qos2.is_empty(), "{what}");
                assert_clean(&pair);
            }
        }
    }
}

/// [MQTT-3.3.1-1], [MQTT-4.4.0-1]: an unacknowledged QoS 1 PUBLISH is re-sent with DUP 1 on
/// the resumed session, so the message arrives at least once (twice when only the PUBACK
/// was lost), both directions.
#[test]
fn qos1_at_least_once_across_a_loss_with_dup_mqtt_3_3_1_1() {
    for version in VERSIONS {
        for sender in [Side::Client, Side::Server] {
            for point in QOS1_LOSS_POINTS {
                let what = format!("{version:?}, from {sender:?}, {}", point.name);
                let pair = lose_at(version, sender, QoS::AtLeastOnce, point);
                let got = received_by_peer_of(&pair, sender, b"the-message");
                let resent = publishes(&pair, sender, Stage::Sent, 2);
                match point.resend {
                    Resend::Publish => {
                        assert_eq!(
                            resent,
                            vec![(true, Some(1), b"the-message".to_vec())],
                            "{what}"
                        );
                        // Lost on the way: once; arrived before the loss: again.
                        let expected = if point.stage == Stage::Sent { 1 } else { 2 };
                        assert_eq!(got, expected, "{what}");
                    }
                    Resend::PubRel => unreachable!("QoS 1 has no PUBREL"),
                    Resend::Nothing => {
                        assert!(resent.is_empty(), "{what}");
                        assert_eq!(got, 1, "{what}");
                    }
                }
                if sender == Side::Server && got == 2 {
                    // The client application sees the DUP flag of the re-sent copy.
                    let dups: Vec<bool> = pair.client_messages().iter().map(|m| m.dup).collect();
                    assert_eq!(dups, vec![false, true], "{what}");
                }
                assert_eq!(sender_completions(&pair, sender), 1, "{what}");
                assert_clean(&pair);
            }
        }
    }
}

/// [MQTT-4.3.2-4], [MQTT-4.3.3-8]: the acknowledgement waits until the receiver has made
/// the message safe: with a server application that takes 300 ms (a store commit), PUBACK
/// and PUBREC go out 300 ms after the PUBLISH arrived. [MQTT-4.3.3-9]: a connection lost
/// meanwhile does not make the QoS 2 message go onward twice when the client re-sends it.
#[test]
fn acknowledgements_wait_for_ownership_mqtt_4_3_2_4_mqtt_4_3_3_8() {
    for version in VERSIONS {
        let mut config = PairConfig::new(version).with_latency(ms(10));
        config.complete_delay = ms(300);
        let mut pair = Pair::connected(config.clone());
        let start = pair.now;
        pair.client_publish("t", b"one", QoS::AtLeastOnce).unwrap();
        pair.client_publish("t", b"two", QoS::ExactlyOnce).unwrap();
        pair.drive();
        let ack_times: Vec<Duration> = pair
            .wire
            .iter()
            .filter(|e| e.from == Side::Server && e.stage == Stage::Sent)
            .filter(|e| matches!(e.packet, WirePacket::PubAck(_) | WirePacket::PubRec(_)))
            .map(|e| e.at - start)
            .collect();
        // 10 ms to arrive, 300 ms to be made safe.
        assert_eq!(ack_times, vec![ms(310), ms(310)], "{version:?}");
        assert_eq!(pair.client_published().len(), 2);

        // Lost while the server application holds the acknowledgement back: the message
        // already went onward, so the client's re-send must not go again.
        let mut pair = Pair::connected(config);
        pair.client_publish("t", b"held", QoS::ExactlyOnce).unwrap();
        pair.advance(ms(100));
        assert_eq!(pair.app.pending_completions(), 1);
        pair.lose_connection();
        pair.reconnect();
        pair.drive();
        assert_eq!(server_got(&pair, b"held"), 1, "{version:?}");
        assert_eq!(pair.client_published().len(), 1);
        assert_clean(&pair);
    }
}

// ---------------------------------------------------------------------------------------------
// Receive Maximum

/// [MQTT-3.3.4-7]: the client never has more QoS 1/2 publishes unacknowledged than the
/// server's Receive Maximum; a publish beyond it is refused (InflightFull) until an
/// acknowledgement frees the window, and the server never has to close with 0x93. (5.0
/// only: a 3.1.1 server cannot announce a Receive Maximum.)
#[test]
fn server_receive_maximum_limits_the_client_window_mqtt_3_3_4_7() {
    let mut config = PairConfig::new(V5).with_latency(ms(20));
    config.server.receive_maximum = 2;
    let mut pair = Pair::connected(config);
    assert_eq!(pair.client.server_limits().receive_maximum, 2);
    let mut sent = Vec::new();
    let mut refused = 0;
    for n in 0..12u8 {
        let payload = [b'm', n];
        let qos = if n % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        loop {
            match pair.client_publish("window", &payload, qos) {
                Ok(_) => break,
                Err(ClientError::InflightFull) => {
                    refused += 1;
                    pair.drive();
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        sent.push(payload.to_vec());
    }
    pair.drive();
    assert!(refused > 0, "the window filled");
    assert_eq!(pair.stats.max_client_inflight, 2);
    let got: Vec<Vec<u8>> = pair
        .app
        .received
        .iter()
        .map(|m| m.payload.clone())
        .collect();
    assert_eq!(got, sent, "all delivered, in order");
    assert_clean(&pair);
}

/// [MQTT-3.3.4-9]: the server never has more QoS 1/2 deliveries unacknowledged than the
/// client's Receive Maximum; the rest wait in the session queue, and go in order.
#[test]
fn client_receive_maximum_limits_the_server_window_mqtt_3_3_4_9() {
    let mut config = PairConfig::new(V5).with_latency(ms(20));
    config.client_receive_maximum = 2;
    let mut pair = Pair::connected(config);
    let mut outcomes = Vec::new();
    let mut sent = Vec::new();
    for n in 0..8u8 {
        let qos = if n % 2 == 0 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        outcomes.push(pair.server_publish("window", &[b'm', n], qos));
        sent.push(vec![b'm', n]);
    }
    assert_eq!(&outcomes[..2], &[Offered::Sent, Offered::Sent]);
    assert!(
        outcomes[2..].iter().all(|&o| o == Offered::Queued),
        "{outcomes:?}"
    );
    pair.drive();
    assert_eq!(pair.stats.max_server_inflight, 2);
    let got: Vec<Vec<u8>> = pair
        .client_messages()
        .iter()
        .map(|m| m.payload.clone())
        .collect();
    assert_eq!(got, sent);
    assert_eq!(pair.server_delivered().len(), 8);
    assert_clean(&pair);
}

// ---------------------------------------------------------------------------------------------
// Keep-alive

/// [MQTT-3.1.2-23] (3.1.1) / [MQTT-3.1.2-20] (5.0): an idle client sends PINGREQ once per
/// keep-alive period, the server answers, and the connection stays up.
#[test]
fn idle_client_pings_every_keep_alive_mqtt_3_1_2_23() {
    for version in VERSIONS {
        let mut config = PairConfig::new(version).with_latency(ms(50));
        config.keep_alive = 10;
        let mut pair = Pair::connected(config);
        pair.advance(Duration::from_secs(45));
        let ping_times: Vec<u64> = pair
            .wire
            .iter()
            .filter(|e| e.stage == Stage::Sent && e.packet == WirePacket::PingReq)
            .map(|e| e.at.as_micros() / 1000)
            .collect();
        // CONNECT left at 0; every ping 10 s after the client's last transmission.
        assert_eq!(
            ping_times,
            vec![10_000, 20_000, 30_000, 40_000],
            "{version:?}"
        );
        let pongs = pair
            .client_log
            .iter()
            .filter(|e| **e == ClientLog::Pong)
            .count();
        assert_eq!(pongs, 4);
        assert!(pair.server.is_connected());
        assert_clean(&pair);
    }
}

/// [MQTT-3.2.2-21]: a 5.0 client follows the Server Keep Alive its server imposes: asked
/// for 60 s and told 5 s, it pings every 5 s, and the server, which checks 1.5 x 5 s, keeps
/// the connection.
#[test]
fn v5_client_pings_at_the_server_keep_alive_mqtt_3_2_2_21() {
    let mut config = PairConfig::new(V5).with_latency(ms(50));
    config.keep_alive = 60;
    config.server.max_keep_alive = 5;
    let mut pair = Pair::connected(config);
    assert_eq!(pair.client.keep_alive(), 5);
    assert_eq!(pair.server.keep_alive(), 5);
    pair.advance(Duration::from_secs(21));
    let pings = pair
        .wire
        .iter()
        .filter(|e| e.stage == Stage::Sent && e.packet == WirePacket::PingReq)
        .count();
    assert_eq!(pings, 4);
    assert!(pair.server.is_connected());
    assert_clean(&pair);
}

/// [MQTT-3.1.2-24] (3.1.1) / [MQTT-3.1.2-22] (5.0): a client silent for one and a half
/// keep-alive periods is disconnected by the server (a 5.0 client is told 0x8D first).
#[test]
fn server_closes_a_silent_client_after_one_and_a_half_keep_alive_mqtt_3_1_2_24() {
    for version in VERSIONS {
        let mut config = PairConfig::new(version);
        config.keep_alive = 10;
        let mut pair = Pair::connected(config);
        // The client application stops calling handle_timeout: no PINGREQ goes out.
        pair.client_timers = false;
        pair.advance(ms(14_999));
        assert!(pair.server.is_connected(), "{version:?}: not yet");
        pair.advance(ms(1));
        assert!(!pair.is_up(), "{version:?}: closed at 15 s");
        let closes = pair.server_closes();
        assert_eq!(closes.len(), 1);
        assert_eq!(closes[0].reason, ReasonCode::KeepAliveTimeout);
        assert_eq!(closes[0].initiator, CloseInitiator::Server);
        assert!(closes[0].publish_will);
        let tail: Vec<&ClientLog> = pair.client_log.iter().skip(1).collect();
        if version == V5 {
            assert_eq!(
                tail,
                vec![
                    &ClientLog::Disconnected(ReasonCode::KeepAliveTimeout),
                    &ClientLog::TransportClosed
                ]
            );
        } else {
            // 3.1.1 has no server DISCONNECT: the transport just closes.
            assert_eq!(tail, vec![&ClientLog::TransportClosed]);
        }
        assert_eq!(pair.client.state(), ConnectionState::Disconnected);
    }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

/// [MQTT-3.8.4-1], [MQTT-3.8.4-2]: SUBSCRIBE is answered by a SUBACK with the same packet
/// identifier and one code per filter (the granted QoS); [MQTT-3.10.4-4], [MQTT-3.10.4-5]:
/// UNSUBSCRIBE by an UNSUBACK with the same identifier (5.0: one code per filter).
#[test]
fn subscribe_and_unsubscribe_round_trip_mqtt_3_8_4_1_mqtt_3_10_4_4() {
    for version in VERSIONS {
        let mut pair = Pair::connected(PairConfig::new(version).with_latency(ms(5)));
        let filters = [
            SubscribeFilter {
                filter: "sensors/+/temp",
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            },
            SubscribeFilter {
                filter: "alerts/#",
                options: SubscriptionOptions::qos(QoS::ExactlyOnce),
            },
            SubscribeFilter {
                filter: "status",
                options: SubscriptionOptions::qos(QoS::AtMostOnce),
            },
        ];
        let now = pair.now;
        let sub_id = pair.client.subscribe(now, &filters).unwrap().get();
        pair.drive();
        assert_eq!(
            pair.client_log.last(),
            Some(&ClientLog::Subscribed {
                packet_id: sub_id,
                reason_codes: filters
                    .iter()
                    .map(|f| granted_code(f.options.qos))
                    .collect()
            }),
            "{version:?}"
        );
        assert_eq!(pair.app.subscriptions.len(), 3);
        assert_eq!(pair.app.subscriptions["alerts/#"], QoS::ExactlyOnce);

        let now = pair.now;
        let unsub_id = pair
            .client
            .unsubscribe(now, &["alerts/#", "never/subscribed"])
            .unwrap()
            .get();
        pair.drive();
        let expected_codes = if version == V5 {
            vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
        } else {
            // 3.1.1's UNSUBACK carries no codes.
            vec![]
        };
        assert_eq!(
            pair.client_log.last(),
            Some(&ClientLog::Unsubscribed {
                packet_id: unsub_id,
                reason_codes: expected_codes
            })
        );
        assert!(!pair.app.subscriptions.contains_key("alerts/#"));
        assert_eq!(pair.app.subscriptions.len(), 2);
        let acks: Vec<&WirePacket> = pair
            .packets(Side::Server, Stage::Delivered)
            .into_iter()
            .filter(|p| matches!(p, WirePacket::SubAck(_) | WirePacket::UnsubAck(_)))
            .collect();
        assert_eq!(
            acks,
            vec![&WirePacket::SubAck(sub_id), &WirePacket::UnsubAck(unsub_id)]
        );
        assert_clean(&pair);
    }
}

// ---------------------------------------------------------------------------------------------
// Topic aliases

/// [MQTT-3.1.2-27]: the client announces no Topic Alias Maximum, so the server sends no
/// topic alias, even with outbound aliases enabled; every PUBLISH carries its topic.
///
/// The positive case (a client that accepts aliases receives them, the first with the
/// topic, later ones with an empty topic) cannot be run through this harness: the Petrel
/// client never announces a Topic Alias Maximum (it would treat an alias as a protocol
/// error). The server side of it is covered in server_scenarios.rs.
#[test]
fn no_topic_alias_to_a_client_that_allows_none_mqtt_3_1_2_27() {
    let mut config = PairConfig::new(V5);
    config.server.outbound_topic_aliases = true;
    config.server.topic_alias_maximum = 10;
    let mut pair = Pair::connected(config);
    for n in 0..5u8 {
        pair.server_publish("same/topic/every/time", &[n], QoS::AtLeastOnce);
    }
    pair.drive();
    let server_publishes: Vec<(String, Option<u16>)> = pair
        .packets(Side::Server, Stage::Delivered)
        .into_iter()
        .filter_map(|p| match p {
            WirePacket::Publish {
                topic, topic_alias, ..
            } => Some((topic.clone(), *topic_alias)),
            _ => None,
        })
        .collect();
    assert_eq!(
        server_publishes,
        vec![("same/topic/every/time".to_owned(), None); 5]
    );
    assert_eq!(pair.client_messages().len(), 5);
    assert_clean(&pair);
}

// ---------------------------------------------------------------------------------------------
// The transport does not matter

/// One fixed conversation: publishes both ways at every QoS, a subscribe, and some time.
fn conversation(config: PairConfig) -> Pair {
    let mut pair = Pair::connected(config);
    let now = pair.now;
    pair.client
        .subscribe(
            now,
            &[SubscribeFilter {
                filter: "down/#",
                options: SubscriptionOptions::qos(QoS::ExactlyOnce),
            }],
        )
        .unwrap();
    for round in 0..4u8 {
        for qos in QOS {
            let payload = [b'c', round, qos as u8];
            pair.client_publish("up", &payload, qos).unwrap();
            let payload = [b's', round, qos as u8];
            assert!(pair.server_publish("down/x", &payload, qos).accepted());
        }
        pair.advance(ms(7));
    }
    pair.drive();
    pair
}

/// What the applications saw, stream by stream, without timing: the messages the client
/// received, the client's other events, what the server application received, and the
/// server's delivery confirmations.
///
/// Two orders legitimately depend on timing and are normalised: how the directions
/// interleave in the client's log (separate streams here), and the order of completions
/// across QoS levels (a QoS 2 flow takes two round trips, QoS 1 one), so completions are
/// compared sorted.
type Observed = (
    Vec<AppMessage>,
    Vec<ClientLog>,
    Vec<u16>,
    Vec<AppMessage>,
    Vec<u16>,
);

fn observable(pair: &Pair) -> Observed {
    let others = pair
        .client_log
        .iter()
        .filter(|e| !matches!(e, ClientLog::Message(_) | ClientLog::Published(_)));
    let mut published = pair.client_published();
    published.sort_unstable();
    let mut delivered = pair.server_delivered();
    delivered.sort_unstable();
    (
        pair.client_messages().into_iter().cloned().collect(),
        others.cloned().collect(),
        published,
        pair.app.received.clone(),
        delivered,
    )
}

/// Section 4.2: MQTT needs an ordered, lossless byte stream, and nothing more: one byte at
/// a time, random pieces, bursts and any latency give the applications the same messages,
/// acknowledgements and events, in the same order.
#[test]
fn chunking_and_latency_do_not_change_what_the_applications_see() {
    for version in VERSIONS {
        let reference = observable(&conversation(PairConfig::new(version)));
        assert_eq!(reference.0.len(), 12, "every server message arrived");
        assert_eq!(reference.3.len(), 12, "every client message arrived");
        assert_eq!(
            reference.2.len(),
            8,
            "every client QoS 1/2 publish completed"
        );
        assert_eq!(
            reference.4.len(),
            8,
            "every server QoS 1/2 delivery completed"
        );
        let variations = [
            (ChunkMode::OneByte, ms(0), ms(0)),
            (ChunkMode::OneByte, ms(3), ms(3)),
            (ChunkMode::Random(1), ms(1), ms(9)),
            (ChunkMode::Random(0xdead_beef), ms(40), ms(2)),
            (ChunkMode::Whole, ms(25), ms(25)),
        ];
        for (chunk, to_server, to_client) in variations {
            let mut config = PairConfig::new(version).with_chunk(chunk);
            config.latency_to_server = to_server;
            config.latency_to_client = to_client;
            let pair = conversation(config);
            assert_eq!(
                observable(&pair),
                reference,
                "{version:?} {chunk:?} {to_server:?}/{to_client:?}"
            );
            assert_clean(&pair);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clean start

/// [MQTT-3.1.2-4]: a connection with clean start discards the session on both sides: the
/// client's unacknowledged publish is reported lost and never delivered, the server's queued
/// message for the client is gone, and CONNACK says no session is present [MQTT-3.2.2-2].
#[test]
fn clean_start_discards_the_session_mqtt_3_1_2_4() {
    for version in VERSIONS {
        let mut pair = Pair::connected(PairConfig::new(version).with_latency(ms(20)));
        let id = pair
            .client_publish("t", b"never-arrives", QoS::AtLeastOnce)
            .unwrap()
            .unwrap()
            .get();
        // Lost on the way: the client keeps it for a resume.
        pair.lose_connection();
        assert_eq!(pair.client.inflight(), 1);
        // The server keeps a message for the absent client.
        assert_eq!(
            pair.server_publish("t", b"queued-for-you", QoS::AtLeastOnce),
            Offered::QueuedOffline
        );
        pair.connect(true);
        pair.drive();
        assert!(
            pair.client_log.contains(&ClientLog::SessionLost(id)),
            "{version:?}"
        );
        assert!(pair.client_log.contains(&ClientLog::Connected {
            session_present: false
        }));
        assert_eq!(
            pair.app
                .log
                .iter()
                .rev()
                .find(|e| matches!(e, ServerLog::Accepted { .. })),
            Some(&ServerLog::Accepted {
                clean_start: true,
                session_present: false
            })
        );
        assert_eq!(server_got(&pair, b"never-arrives"), 0);
        assert_eq!(client_got(&pair, b"queued-for-you"), 0);
        assert_eq!(pair.client.inflight(), 0);
        assert_eq!(pair.client.stored_bytes(), 0);
        assert!(pair.client_published().is_empty());
        assert_clean(&pair);
    }
}

// ---------------------------------------------------------------------------------------------
// Server-initiated DISCONNECT

/// [MQTT-3.1.4-3] with section 4.13: when the server ends the connection (here a takeover,
/// 0x8E), a 5.0 client receives DISCONNECT with the reason as an event before the transport
/// closes; a 3.1.1 client, which has no server DISCONNECT, only sees the transport close.
#[test]
fn server_disconnect_reaches_a_v5_client_as_an_event_mqtt_3_1_4_3() {
    for version in VERSIONS {
        let mut pair = Pair::connected(PairConfig::new(version).with_latency(ms(5)));
        pair.server_close(ReasonCode::SessionTakenOver);
        pair.drive();
        let tail: Vec<&ClientLog> = pair.client_log.iter().skip(1).collect();
        if version == V5 {
            assert_eq!(
                tail,
                vec![
                    &ClientLog::Disconnected(ReasonCode::SessionTakenOver),
                    &ClientLog::TransportClosed
                ]
            );
        } else {
            assert_eq!(tail, vec![&ClientLog::TransportClosed]);
        }
        let closes = pair.server_closes();
        assert_eq!(closes.len(), 1);
        assert_eq!(closes[0].reason, ReasonCode::SessionTakenOver);
        assert_eq!(closes[0].initiator, CloseInitiator::Server);
        assert_eq!(pair.client.state(), ConnectionState::Disconnected);
        // The session survives the takeover and the client can resume it.
        pair.reconnect();
        pair.drive();
        assert_eq!(
            pair.client_log.last(),
            Some(&ClientLog::Connected {
                session_present: true
            })
        );
    }
}

/// [MQTT-3.3.4-9] binds a server only to a Receive Maximum it was told, which 3.1.1 cannot
/// do: a 3.1.1 client configured with a small `receive_maximum` still takes every QoS 2
/// message the server sends, up to its own capacity (it used to close the connection with
/// 0x93 at the second one).
#[test]
fn v311_client_does_not_enforce_an_unannounced_receive_maximum_mqtt_3_3_4_9() {
    let mut config = PairConfig::new(V311).with_latency(ms(20));
    config.client_receive_maximum = 1;
    let mut pair = Pair::connected(config);
    for n in 0..4u8 {
        assert_eq!(
            pair.server_publish("t", &[n], QoS::ExactlyOnce),
            Offered::Sent
        );
    }
    pair.drive();
    assert_eq!(pair.client_messages().len(), 4);
    assert_eq!(pair.server_delivered().len(), 4);
    assert_clean(&pair);
}

/// [MQTT-4.3.3-9]: a QoS 2 PUBLISH followed at once by DISCONNECT reaches the server in one
/// read; the message goes onward but the PUBREC cannot go out any more. After the resume,
/// the client's re-sent PUBLISH (DUP 1) is acknowledged, not delivered a second time.
#[test]
fn qos2_publish_then_disconnect_in_one_read_goes_onward_once_mqtt_4_3_3_9() {
    for version in VERSIONS {
        let mut pair = Pair::connected(PairConfig::new(version));
        pair.client_publish("t", b"last-words", QoS::ExactlyOnce)
            .unwrap();
        let now = pair.now;
        pair.client.disconnect(now).unwrap();
        pair.drive();
        assert!(!pair.is_up());
        assert_eq!(server_got(&pair, b"last-words"), 1, "{version:?}");
        assert_eq!(
            pair.client.inflight(),
            1,
            "unacknowledged, kept for the resume"
        );
        pair.reconnect();
        pair.drive();
        assert_eq!(
            publishes(&pair, Side::Client, Stage::Sent, 2),
            vec![(true, Some(1), b"last-words".to_vec())]
        );
        assert_eq!(
            server_got(&pair, b"last-words"),
            1,
            "{version:?}: not again"
        );
        assert_eq!(pair.client_published().len(), 1);
        assert_eq!(pair.client.inflight(), 0);
        let session = pair.server.session().expect("attached session");
        assert!(
            session.inbound_qos2.is_empty(),
            "the marker is released by PUBREL"
        );
    }
}
