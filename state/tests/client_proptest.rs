//! Property tests for the client session: arbitrary input never panics, and arbitrary
//! sequences of commands, server behaviour, timeouts and reconnects keep the client within
//! its limits and the server's [MQTT-3.3.4-7], with packet identifiers never reused while in
//! use [MQTT-2.2.1-3] and no PUBLISH resent after its PUBREL [MQTT-4.3.3-6].

use std::collections::{BTreeMap, BTreeSet};

use petrel_codec::List;
use petrel_codec::{
    ConnAck, Decoded, Decoder, Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish,
    QoS, ReasonCode, SubAck, SubscribeFilter, SubscriptionOptions, UnsubAck,
};
use petrel_state::client::{Client, ClientError, ClientEvent, ClientOptions, ConnectionState};
use petrel_state::{Duration, Instant};
use proptest::prelude::*;

const INFLIGHT: usize = 6;
/// The client's buffer: stored publishes and queued packets.
const BUF: usize = 1112;
type TestClient = Client<'static, INFLIGHT, BUF>;

fn encode(version: ProtocolVersion, packet: Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0; packet.encoded_len(version).unwrap()];
    packet.encode(version, &mut buf).unwrap();
    buf
}

fn version(v5: bool) -> ProtocolVersion {
    if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    }
}

fn drain(client: &mut TestClient, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 97];
    loop {
        let n = client.poll_transmit(now, &mut buf);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary input

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the server sends, in whatever pieces, the client never panics: it consumes,
    /// waits for more, or fails with an error.
    #[test]
    fn random_bytes_never_panic(
        v5 in any::<bool>(),
        accept_first in any::<bool>(),
        input in proptest::collection::vec(any::<u8>(), 0..400),
        chunk in 1usize..64,
    ) {
        let version = version(v5);
        let mut client = TestClient::new(ClientOptions::new(version, "fuzz"));
        client.connect(Instant::ZERO).unwrap();
        drain(&mut client, Instant::ZERO);
        let mut stream = Vec::new();
        if accept_first {
            stream.extend(encode(version, Packet::ConnAck(ConnAck::default())));
        }
        stream.extend_from_slice(&input);
        let mut buffer: Vec<u8> = Vec::new();
        'outer: for piece in stream.chunks(chunk) {
            buffer.extend_from_slice(piece);
            loop {
                match client.handle_bytes(Instant::ZERO, &buffer) {
                    Ok(received) => {
                        prop_assert!(received.consumed <= buffer.len());
                        if received.needs_more() {
                            break;
                        }
                        buffer.drain(..received.consumed);
                    }
                    Err(ClientError::BufferFull) => {
                        drain(&mut client, Instant::ZERO);
                    }
                    Err(e) => {
                        prop_assert!(e.is_fatal());
                        prop_assert_eq!(client.state(), ConnectionState::Closing);
                        break 'outer;
                    }
                }
            }
            // Whatever was queued decodes as whole packets.
            let out = drain(&mut client, Instant::ZERO);
            let mut rest = &out[..];
            while !rest.is_empty() {
                match Decoder::new(version).decode(rest) {
                    Ok(Decoded::Packet { len, .. }) => rest = &rest[len..],
                    other => prop_assert!(false, "client sent {:?}", other),
                }
            }
        }
    }

    /// Valid server packets with one byte changed: a harder test than pure noise.
    #[test]
    fn mutated_server_packets_never_panic(
        v5 in any::<bool>(),
        which in 0usize..6,
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let version = version(v5);
        let mut client = TestClient::new(ClientOptions::new(version, "fuzz"));
        client.connect(Instant::ZERO).unwrap();
        let connack = encode(version, Packet::ConnAck(ConnAck::default()));
        client.handle_bytes(Instant::ZERO, &connack).unwrap();
        client.publish(Instant::ZERO, "t", b"x", QoS::ExactlyOnce, false).unwrap();
        let id = PacketId::new(1).unwrap();
        let mut bytes = match which {
            0 => encode(version, Packet::PubRec(PubResponse::new(id))),
            1 => encode(version, Packet::PubAck(PubResponse::new(id))),
            2 => encode(version, Packet::Publish(Publish {
                qos: QoS::ExactlyOnce,
                topic: "a/b",
                packet_id: Some(id),
                payload: b"payload",
                ..Publish::default()
            })),
            3 => encode(version, Packet::SubAck(SubAck {
                packet_id: id,
                properties: Properties::default(),
                reason_codes: List::new(&[ReasonCode::GrantedQoS1]),
            })),
            4 => encode(version, Packet::UnsubAck(UnsubAck {
                packet_id: id,
                properties: Properties::default(),
                reason_codes: List::new(&[ReasonCode::Success]),
            })),
            _ => encode(version, Packet::PingResp),
        };
        let i = position.index(bytes.len());
        bytes[i] = value;
        let mut rest = &bytes[..];
        while let Ok(received) = client.handle_bytes(Instant::ZERO, rest) {
            if received.needs_more() || received.consumed == rest.len() {
                break;
            }
            rest = &rest[received.consumed..];
        }
        let _ = drain(&mut client, Instant::ZERO);
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary operation sequences against a model server

#[derive(Debug, Clone)]
enum Op {
    Publish {
        qos: u8,
        len: usize,
    },
    Subscribe,
    Unsubscribe,
    /// The server reads what the client transmitted.
    Deliver,
    /// The server answers one of the things it owes (index taken modulo their number).
    Respond(usize),
    /// The server publishes to the client.
    ServerPublish {
        qos: u8,
    },
    Tick(u64),
    /// The transport fails; the client reconnects and the server grants this receive
    /// maximum, resuming the session or not.
    Reconnect {
        session_present: bool,
        receive_maximum: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0usize..120).prop_map(|(qos, len)| Op::Publish { qos, len }),
        1 => Just(Op::Subscribe),
        1 => Just(Op::Unsubscribe),
        4 => Just(Op::Deliver),
        5 => any::<usize>().prop_map(Op::Respond),
        2 => (0u8..3).prop_map(|qos| Op::ServerPublish { qos }),
        1 => (0u64..40).prop_map(Op::Tick),
        1 => (any::<bool>(), 1u16..5).prop_map(|(session_present, receive_maximum)| {
            Op::Reconnect { session_present, receive_maximum }
        }),
    ]
}

/// What the model server owes the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    PubAck(u16),
    PubRec(u16),
    PubComp(u16),
    SubAck(u16, usize),
    UnsubAck(u16, usize),
    PingResp,
    /// PUBREL for the server's own QoS 2 message.
    PubRel(u16),
}

/// The server's view of the client's QoS 1/2 publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Qos1,
    /// PUBLISH received, PUBREC not yet sent or sent.
    Qos2,
    /// PUBREL received: a PUBLISH with this identifier may not come again.
    Released,
}

struct Server {
    version: ProtocolVersion,
    receive_maximum: u16,
    /// Client publishes by identifier (the server's session).
    publishes: BTreeMap<u16, Stage>,
    /// Publishes received on the current connection and not yet completed.
    this_connection: BTreeSet<u16>,
    owed: Vec<Owed>,
    /// The server's own QoS 1/2 messages to the client, not yet completed.
    outbound: BTreeMap<u16, u8>,
    next_id: u16,
}

impl Server {
    fn read(&mut self, bytes: &[u8]) -> Result<(), TestCaseError> {
        let decoder = Decoder::new(self.version);
        let mut rest = bytes;
        while !rest.is_empty() {
            let Ok(Decoded::Packet { packet, len }) = decoder.decode(rest) else {
                return Err(TestCaseError::fail(
                    "client sent a malformed or partial packet",
                ));
            };
            rest = &rest[len..];
            match packet {
                Packet::Publish(p) => {
                    let Some(id) = p.packet_id.map(PacketId::get) else {
                        continue;
                    };
                    match self.publishes.get(&id) {
                        None => {}
                        Some(Stage::Released) => {
                            return Err(TestCaseError::fail(format!(
                                "PUBLISH {id} resent after its PUBREL [MQTT-4.3.3-6]"
                            )))
                        }
                        Some(_) if !p.dup => {
                            return Err(TestCaseError::fail(format!(
                                "identifier {id} reused while in use [MQTT-2.2.1-3]"
                            )))
                        }
                        Some(_) => {}
                    }
                    let stage = if p.qos == QoS::AtLeastOnce {
                        Stage::Qos1
                    } else {
                        Stage::Qos2
                    };
                    self.publishes.insert(id, stage);
                    self.this_connection.insert(id);
                    prop_assert!(
                        self.this_connection.len() <= usize::from(self.receive_maximum),
                        "more publishes in flight than the Receive Maximum [MQTT-3.3.4-7]"
                    );
                    self.owed.push(if stage == Stage::Qos1 {
                        Owed::PubAck(id)
                    } else {
                        Owed::PubRec(id)
                    });
                }
                Packet::PubRel(r) => {
                    let id = r.packet_id.get();
                    if self.publishes.contains_key(&id) {
                        self.publishes.insert(id, Stage::Released);
                    }
                    self.owed.push(Owed::PubComp(id));
                }
                Packet::Subscribe(s) => self
                    .owed
                    .push(Owed::SubAck(s.packet_id.get(), s.filters.len())),
                Packet::Unsubscribe(u) => self
                    .owed
                    .push(Owed::UnsubAck(u.packet_id.get(), u.filters.len())),
                Packet::PingReq => self.owed.push(Owed::PingResp),
                Packet::PubAck(a) | Packet::PubComp(a) => {
                    self.outbound.remove(&a.packet_id.get());
                }
                Packet::PubRec(r) => self.owed.push(Owed::PubRel(r.packet_id.get())),
                Packet::Connect(_) | Packet::Disconnect(_) => {}
                other => return Err(TestCaseError::fail(format!("client sent {other:?}"))),
            }
        }
        Ok(())
    }

    fn respond(&mut self, index: usize) -> Option<Vec<u8>> {
        if self.owed.is_empty() {
            return None;
        }
        let owed = self.owed.remove(index % self.owed.len());
        let v = self.version;
        let id = |n: u16| PacketId::new(n).unwrap();
        Some(match owed {
            Owed::PubAck(n) => {
                self.publishes.remove(&n);
                self.this_connection.remove(&n);
                encode(v, Packet::PubAck(PubResponse::new(id(n))))
            }
            Owed::PubRec(n) => encode(v, Packet::PubRec(PubResponse::new(id(n)))),
            Owed::PubComp(n) => {
                self.publishes.remove(&n);
                self.this_connection.remove(&n);
                encode(v, Packet::PubComp(PubResponse::new(id(n))))
            }
            Owed::SubAck(n, count) => {
                let codes = vec![ReasonCode::GrantedQoS1; count];
                encode(
                    v,
                    Packet::SubAck(SubAck {
                        packet_id: id(n),
                        properties: Properties::default(),
                        reason_codes: List::new(&codes),
                    }),
                )
            }
            Owed::UnsubAck(n, count) => {
                let codes = vec![ReasonCode::Success; count];
                encode(
                    v,
                    Packet::UnsubAck(UnsubAck {
                        packet_id: id(n),
                        properties: Properties::default(),
                        reason_codes: List::new(&codes),
                    }),
                )
            }
            Owed::PingResp => encode(v, Packet::PingResp),
            Owed::PubRel(n) => encode(v, Packet::PubRel(PubResponse::new(id(n)))),
        })
    }
}

/// Feeds the server's bytes to the client, checking each event against what the client
/// has outstanding.
fn feed(
    client: &mut TestClient,
    server: &mut Server,
    now: Instant,
    bytes: &[u8],
    outstanding: &mut BTreeSet<u16>,
) -> Result<(), TestCaseError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match client.handle_bytes(now, rest) {
            Ok(received) => {
                prop_assert!(!received.needs_more(), "the server sends whole packets");
                rest = &rest[received.consumed..];
                match received.event {
                    Some(ClientEvent::Published { packet_id })
                    | Some(ClientEvent::Subscribed { packet_id, .. })
                    | Some(ClientEvent::Unsubscribed { packet_id, .. })
                    | Some(ClientEvent::PublishFailed { packet_id, .. }) => {
                        prop_assert!(
                            outstanding.remove(&packet_id.get()),
                            "completion for {} which is not outstanding",
                            packet_id
                        );
                    }
                    _ => {}
                }
            }
            Err(ClientError::BufferFull) => {
                let out = drain(client, now);
                server.read(&out)?;
            }
            Err(e) => return Err(TestCaseError::fail(format!("client failed: {e}"))),
        }
    }
    collect_lost(client, outstanding)
}

fn collect_lost(
    client: &mut TestClient,
    outstanding: &mut BTreeSet<u16>,
) -> Result<(), TestCaseError> {
    while let Some(event) = client.poll_event() {
        let ClientEvent::SessionLost { packet_id } = event else {
            return Err(TestCaseError::fail(format!("unexpected {event:?}")));
        };
        prop_assert!(outstanding.remove(&packet_id.get()));
    }
    Ok(())
}

fn check_limits(client: &TestClient) -> Result<(), TestCaseError> {
    prop_assert!(client.inflight() <= INFLIGHT);
    prop_assert!(client.packet_ids_in_use() <= INFLIGHT);
    prop_assert!(client.stored_bytes() <= BUF);
    prop_assert!(client.incoming_qos2() <= usize::from(client.receive_maximum()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_keep_every_limit(
        v5 in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let version = version(v5);
        let options = ClientOptions {
            clean_start: false,
            keep_alive: 20,
            response_timeout: Duration::from_secs(5),
            ..ClientOptions::new(version, "model")
        };
        let mut client = TestClient::new(options);
        let mut server = Server {
            version,
            receive_maximum: 3,
            publishes: BTreeMap::new(),
            this_connection: BTreeSet::new(),
            owed: Vec::new(),
            outbound: BTreeMap::new(),
            next_id: 1,
        };
        let mut outstanding = BTreeSet::new();
        let mut now = Instant::ZERO;
        let mut payload = [0u8; 128];
        for (i, b) in payload.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut reconnect = Some((false, 3u16));

        for op in ops {
            if let Some((session_present, receive_maximum)) = reconnect.take() {
                client.connection_lost(now);
                collect_lost(&mut client, &mut outstanding)?;
                client.connect(now).unwrap();
                let out = drain(&mut client, now);
                server.read(&out)?;
                server.owed.clear();
                server.this_connection.clear();
                // 3.1.1 has no Receive Maximum: the client's own capacity is the limit.
                server.receive_maximum = if v5 { receive_maximum } else { INFLIGHT as u16 };
                let session_present = session_present && !client.options().clean_start;
                if !session_present {
                    server.publishes.clear();
                    server.outbound.clear();
                }
                let properties = Properties {
                    receive_maximum: Some(receive_maximum),
                    ..Properties::default()
                };
                let connack = encode(version, Packet::ConnAck(ConnAck {
                    session_present,
                    properties,
                    ..ConnAck::default()
                }));
                feed(&mut client, &mut server, now, &connack, &mut outstanding)?;
                prop_assert_eq!(client.state(), ConnectionState::Connected);
            }
            match op {
                Op::Publish { qos, len } => {
                    let qos = QoS::from_bits(qos).unwrap();
                    match client.publish(now, "model/t", &payload[..len], qos, false) {
                        Ok(Some(id)) => {
                            prop_assert!(outstanding.insert(id.get()), "id {} handed out twice", id);
                        }
                        Ok(None) => prop_assert_eq!(qos, QoS::AtMostOnce),
                        Err(ClientError::InflightFull) => {
                            prop_assert!(
                                client.inflight() >= client.inflight_limit()
                                    || client.packet_ids_in_use() == INFLIGHT
                            );
                        }
                        Err(ClientError::StoreFull | ClientError::BufferFull) => {}
                        Err(e) => prop_assert!(false, "publish failed: {}", e),
                    }
                }
                Op::Subscribe => {
                    let filters = [
                        SubscribeFilter { filter: "a/+", options: SubscriptionOptions::qos(QoS::ExactlyOnce) },
                        SubscribeFilter { filter: "b/#", options: SubscriptionOptions::default() },
                    ];
                    match client.subscribe(now, &filters) {
                        Ok(id) => prop_assert!(outstanding.insert(id.get())),
                        Err(ClientError::InflightFull | ClientError::BufferFull) => {}
                        Err(e) => prop_assert!(false, "subscribe failed: {}", e),
                    }
                }
                Op::Unsubscribe => match client.unsubscribe(now, &["a/+"]) {
                    Ok(id) => prop_assert!(outstanding.insert(id.get())),
                    Err(ClientError::InflightFull | ClientError::BufferFull) => {}
                    Err(e) => prop_assert!(false, "unsubscribe failed: {}", e),
                },
                Op::Deliver => {
                    let out = drain(&mut client, now);
                    server.read(&out)?;
                }
                Op::Respond(index) => {
                    if let Some(bytes) = server.respond(index) {
                        feed(&mut client, &mut server, now, &bytes, &mut outstanding)?;
                    }
                }
                Op::ServerPublish { qos } => {
                    let qos = QoS::from_bits(qos).unwrap();
                    let in_flight = server.outbound.len();
                    if qos != QoS::AtMostOnce && in_flight >= usize::from(client.receive_maximum()) {
                        continue;
                    }
                    let packet_id = if qos == QoS::AtMostOnce {
                        None
                    } else {
                        while server.outbound.contains_key(&server.next_id) {
                            server.next_id = server.next_id % 1000 + 1;
                        }
                        let n = server.next_id;
                        server.next_id = n % 1000 + 1;
                        server.outbound.insert(n, qos as u8);
                        PacketId::new(n)
                    };
                    let bytes = encode(version, Packet::Publish(Publish {
                        qos,
                        topic: "a/x",
                        packet_id,
                        payload: b"down",
                        ..Publish::default()
                    }));
                    feed(&mut client, &mut server, now, &bytes, &mut outstanding)?;
                }
                Op::Tick(secs) => {
                    now = now + Duration::from_secs(secs);
                    match client.handle_timeout(now) {
                        Ok(()) | Err(ClientError::BufferFull) => {}
                        Err(ClientError::Timeout) => {
                            prop_assert_eq!(client.state(), ConnectionState::Closing);
                            reconnect = Some((true, server.receive_maximum));
                        }
                        Err(e) => prop_assert!(false, "timeout failed: {}", e),
                    }
                    if let Some(deadline) = client.poll_timeout() {
                        prop_assert!(deadline > now || client.pending_transmit() > 0);
                    }
                }
                Op::Reconnect { session_present, receive_maximum } => {
                    reconnect = Some((session_present, receive_maximum));
                }
            }
            check_limits(&client)?;
        }
    }
}
