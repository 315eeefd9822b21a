//! Scenario tests of the server connection, one behaviour each, driven with packets encoded
//! by the codec and read back from `poll_transmit`. Each names the normative statement it
//! checks.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use petrel_codec::{
    Auth, ConnAck, Connect, Decoded, Decoder, Disconnect, List, Packet, PacketId, Properties,
    ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, Subscribe, SubscribeFilter,
    SubscriptionOptions, UserProperty, Will,
};
use petrel_state::message::{Message, MessageProperties};
use petrel_state::server::{
    Accept, CloseInitiator, CommandError, Delivery, DeliveryOutcome, DropReason, ServerConfig,
    ServerConnection, ServerEvent, Session,
};
use petrel_state::{Duration, Instant};

use ProtocolVersion::{V311, V5};

/// One server connection and the client end of its wire.
struct Wire {
    conn: ServerConnection,
    version: ProtocolVersion,
    now: Instant,
    /// Received bytes not yet split into packets.
    inbox: BytesMut,
    /// Frames split off but not yet looked at.
    unread: Vec<Bytes>,
}

impl Wire {
    fn new(config: ServerConfig, version: ProtocolVersion) -> Self {
        Wire {
            conn: ServerConnection::new(Arc::new(config), Instant::ZERO),
            version,
            now: Instant::ZERO,
            inbox: BytesMut::new(),
            unread: Vec::new(),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.conn.handle_timeout(self.now);
    }

    fn send(&mut self, packet: Packet<'_>) {
        let mut buf = BytesMut::new();
        packet.encode_to_bytes(self.version, &mut buf).unwrap();
        self.conn.handle_bytes(self.now, &buf);
    }

    /// Every complete packet the server has sent since the last call, as frames.
    fn frames(&mut self) -> Vec<Bytes> {
        self.conn.poll_transmit(self.now, &mut self.inbox);
        let decoder = Decoder::new(self.version);
        let mut frames = std::mem::take(&mut self.unread);
        while let Ok(Some(header)) = decoder.header(&self.inbox) {
            if header.packet_len() > self.inbox.len() {
                break;
            }
            frames.push(self.inbox.split_to(header.packet_len()).freeze());
        }
        frames
    }

    fn events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// CONNECT, accept with `session`, and return the CONNACK frame.
    fn connect_with(&mut self, connect: Connect<'_>, session: Session, present: bool) -> Bytes {
        self.send(Packet::Connect(connect));
        let events = self.events();
        assert!(
            matches!(events.as_slice(), [ServerEvent::Connect(_)]),
            "{events:?}"
        );
        self.conn
            .accept(
                self.now,
                Accept {
                    session,
                    session_present: present,
                    assigned_client_id: None,
                    authentication_data: None,
                },
            )
            .unwrap();
        let mut frames = self.frames();
        let connack = frames.remove(0);
        self.unread = frames;
        connack
    }

    fn connect(&mut self) -> Bytes {
        let connect = connect(self.version, "client");
        self.connect_with(connect, Session::new("client", 0), false)
    }
}

fn connect(version: ProtocolVersion, client_id: &str) -> Connect<'_> {
    Connect {
        protocol_version: version,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id,
        will: None,
        username: None,
        password: None,
    }
}

fn decode(version: ProtocolVersion, frame: &Bytes) -> Packet<'_> {
    match Decoder::new(version).decode(frame).unwrap() {
        Decoded::Packet { packet, .. } => packet,
        Decoded::Incomplete { .. } => panic!("a frame is a whole packet"),
    }
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn publish(topic: &str, qos: QoS, id: Option<u16>, payload: &'static [u8]) -> Packet<'static> {
    let topic: &'static str = Box::leak(topic.to_owned().into_boxed_str());
    Packet::Publish(Publish {
        qos,
        topic,
        packet_id: id.map(pid),
        payload,
        ..Publish::default()
    })
}

fn delivery(topic: &str, qos: QoS, payload: &'static [u8]) -> Delivery {
    let mut message = Message::new(topic, Bytes::from_static(payload));
    message.qos = qos;
    Delivery::new(Arc::new(message))
}

fn closed(events: &[ServerEvent]) -> Option<&petrel_state::server::CloseInfo> {
    events.iter().find_map(|e| match e {
        ServerEvent::Closed(info) => Some(info),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// CONNECT and CONNACK

#[test]
fn v311_connect_is_answered_with_connack_mqtt_3_2_0_1() {
    let mut wire = Wire::new(ServerConfig::default(), V311);
    let connack = wire.connect();
    assert_eq!(&connack[..], &[0x20, 0x02, 0x00, 0x00]);
    assert!(wire.conn.is_connected());
}

#[test]
fn v5_connack_announces_the_server_limits() {
    let config = ServerConfig {
        receive_maximum: 10,
        maximum_qos: QoS::AtLeastOnce,
        shared_subscription_available: false,
        ..ServerConfig::default()
    };
    let mut wire = Wire::new(config, V5);
    let frame = wire.connect();
    let Packet::ConnAck(connack) = decode(V5, &frame) else {
        panic!("not a CONNACK");
    };
    assert_eq!(connack.reason_code, ReasonCode::Success);
    let p = connack.properties;
    assert_eq!(p.receive_maximum, Some(10));
    assert_eq!(p.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(p.maximum_packet_size, Some(1024 * 1024));
    assert_eq!(p.topic_alias_maximum, Some(64));
    assert_eq!(p.shared_subscription_available, Some(false));
    assert_eq!(p.session_expiry_interval, Some(0));
}

#[test]
fn first_packet_must_be_connect_mqtt_3_1_0_1() {
    let mut wire = Wire::new(ServerConfig::default(), V311);
    wire.send(Packet::PingReq);
    assert!(wire.frames().is_empty(), "no CONNACK");
    let events = wire.events();
    let info = closed(&events).expect("closed");
    assert_eq!(info.reason, ReasonCode::ProtocolError);
    assert!(!info.publish_will);
}

#[test]
fn second_connect_is_a_protocol_error_mqtt_3_1_0_2() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.connect();
    wire.send(Packet::Connect(connect(V5, "client")));
    let frames = wire.frames();
    let Packet::Disconnect(d) = decode(V5, &frames[0]) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::ProtocolError);
    assert!(wire.conn.is_closed());
}

#[test]
fn unsupported_protocol_level_mqtt_3_1_2_2() {
    // A 3.1 client (MQIsdp, level 3) gets the 3.1.1 return code 1.
    let mut wire = Wire::new(ServerConfig::default(), V311);
    let mut body = vec![0x00, 0x06];
    body.extend_from_slice(b"MQIsdp");
    body.extend_from_slice(&[0x03, 0x02, 0x00, 0x3C, 0x00, 0x01, b'c']);
    let mut bytes = vec![0x10, body.len() as u8];
    bytes.extend_from_slice(&body);
    wire.conn.handle_bytes(wire.now, &bytes);
    let frames = wire.frames();
    assert_eq!(&frames[0][..], &[0x20, 0x02, 0x00, 0x01]);
    assert!(wire.conn.is_closed());
    // A level-6 client gets the 5.0 code 0x84.
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.conn.handle_bytes(
        wire.now,
        &[
            0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x00,
            0x00,
        ],
    );
    let frames = wire.frames();
    assert_eq!(&frames[0][..], &[0x20, 0x03, 0x00, 0x84, 0x00]);
}

#[test]
fn empty_client_id_needs_clean_session_in_v311_mqtt_3_1_3_8() {
    let mut wire = Wire::new(ServerConfig::default(), V311);
    let mut c = connect(V311, "");
    c.clean_start = false;
    wire.send(Packet::Connect(c));
    let frames = wire.frames();
    assert_eq!(&frames[0][..], &[0x20, 0x02, 0x00, 0x02]);
    assert!(wire.conn.is_closed());
}

#[test]
fn assigned_client_identifier_is_returned_mqtt_3_2_2_16() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.send(Packet::Connect(connect(V5, "")));
    let events = wire.events();
    let [ServerEvent::Connect(request)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(request.client_id, "");
    wire.conn
        .accept(
            wire.now,
            Accept {
                assigned_client_id: Some("auto-1".into()),
                ..Accept::new_session(Session::new("", 0))
            },
        )
        .unwrap();
    let frames = wire.frames();
    let Packet::ConnAck(connack) = decode(V5, &frames[0]) else {
        panic!("not a CONNACK");
    };
    assert_eq!(
        connack.properties.assigned_client_identifier,
        Some("auto-1")
    );
    assert_eq!(wire.conn.session().unwrap().client_id, "auto-1");
}

#[test]
fn rejection_uses_the_clients_protocol() {
    let mut wire = Wire::new(ServerConfig::default(), V311);
    wire.send(Packet::Connect(connect(V311, "c")));
    wire.events();
    wire.conn
        .reject(wire.now, ReasonCode::BadUserNameOrPassword)
        .unwrap();
    assert_eq!(&wire.frames()[0][..], &[0x20, 0x02, 0x00, 0x04]);
    let events = wire.events();
    assert!(!closed(&events).unwrap().publish_will);
    assert_eq!(
        wire.conn
            .accept(wire.now, Accept::new_session(Session::new("c", 0))),
        Err(CommandError::InvalidState)
    );
}

#[test]
fn packets_pipelined_behind_connect_wait_for_the_accept_mqtt_3_1_4_5() {
    let mut wire = Wire::new(ServerConfig::default(), V311);
    let mut bytes = BytesMut::new();
    Packet::Connect(connect(V311, "c"))
        .encode_to_bytes(V311, &mut bytes)
        .unwrap();
    Packet::PingReq.encode_to_bytes(V311, &mut bytes).unwrap();
    wire.conn.handle_bytes(wire.now, &bytes);
    assert_eq!(wire.events().len(), 1);
    assert!(
        wire.frames().is_empty(),
        "nothing before the broker answers"
    );
    wire.conn
        .accept(wire.now, Accept::new_session(Session::new("c", 0)))
        .unwrap();
    let frames = wire.frames();
    assert_eq!(frames.len(), 2);
    assert_eq!(&frames[0][..], &[0x20, 0x02, 0x00, 0x00]);
    assert_eq!(&frames[1][..], &[0xD0, 0x00], "then PINGRESP");
}

// ---------------------------------------------------------------------------------------------
// Keep-alive

#[test]
fn keep_alive_timeout_after_one_and_a_half_periods_mqtt_3_1_2_24() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    let mut c = connect(V5, "c");
    c.keep_alive = 10;
    wire.connect_with(c, Session::new("c", 0), false);
    assert_eq!(wire.conn.poll_timeout(), Some(Instant::from_secs(15)));
    wire.advance(Duration::from_secs(14));
    wire.send(Packet::PingReq);
    assert_eq!(&wire.frames()[0][..], &[0xD0, 0x00]);
    assert_eq!(wire.conn.poll_timeout(), Some(Instant::from_secs(29)));
    wire.advance(Duration::from_secs(15));
    let frames = wire.frames();
    let Packet::Disconnect(d) = decode(V5, &frames[0]) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::KeepAliveTimeout);
    let events = wire.events();
    let info = closed(&events).unwrap();
    assert!(info.publish_will, "a keep-alive timeout publishes the will");
    assert_eq!(info.initiator, CloseInitiator::Server);
}

#[test]
fn server_keep_alive_caps_a_v5_client_mqtt_3_2_2_21() {
    let config = ServerConfig {
        max_keep_alive: 30,
        ..ServerConfig::default()
    };
    let mut wire = Wire::new(config, V5);
    let mut c = connect(V5, "c");
    c.keep_alive = 0;
    let frame = wire.connect_with(c, Session::new("c", 0), false);
    let Packet::ConnAck(connack) = decode(V5, &frame) else {
        panic!("not a CONNACK");
    };
    assert_eq!(connack.properties.server_keep_alive, Some(30));
    assert_eq!(wire.conn.keep_alive(), 30);
}

#[test]
fn connect_must_arrive_in_time() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    assert_eq!(wire.conn.poll_timeout(), Some(Instant::from_secs(10)));
    wire.advance(Duration::from_secs(10));
    assert!(wire.conn.is_closed());
    assert!(wire.frames().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Inbound PUBLISH

#[test]
fn qos1_is_acknowledged_only_once_the_broker_completes_it_mqtt_4_3_2_2() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.connect();
    wire.send(publish("a/b", QoS::AtLeastOnce, Some(7), b"hello"));
    let events = wire.events();
    let [ServerEvent::Publish(p)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(p.packet_id, Some(pid(7)));
    assert_eq!(&*p.message.topic, "a/b");
    assert_eq!(&p.message.payload[..], b"hello");
    assert!(
        wire.frames().is_empty(),
        "no PUBACK before the store has it"
    );
    wire.conn
        .complete_publish(wire.now, pid(7), ReasonCode::Success)
        .unwrap();
    assert_eq!(&wire.frames()[0][..], &[0x40, 0x02, 0x00, 0x07]);
    assert_eq!(
        wire.conn
            .complete_publish(wire.now, pid(7), ReasonCode::Success),
        Err(CommandError::UnknownPacketId)
    );
}

#[test]
fn qos2_is_delivered_exactly_once_mqtt_4_3_3_10() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.connect();
    wire.send(publish("t", QoS::ExactlyOnce, Some(3), b"once"));
    assert_eq!(wire.events().len(), 1);
    wire.conn
        .complete_publish(wire.now, pid(3), ReasonCode::Success)
        .unwrap();
    assert_eq!(&wire.frames()[0][..], &[0x50, 0x02, 0x00, 0x03]);
    // The client re-sends before PUBREL: acknowledged again, not delivered again.
    let Packet::Publish(mut again) = publish("t", QoS::ExactlyOnce, Some(3), b"once") else {
        unreachable!()
    };
    again.dup = true;
    wire.send(Packet::Publish(again));
    assert!(wire.events().is_empty());
    assert_eq!(&wire.frames()[0][..], &[0x50, 0x02, 0x00, 0x03]);
    // PUBREL releases the identifier [MQTT-4.3.3-11].
    wire.send(Packet::PubRel(PubResponse::new(pid(3))));
    assert_eq!(&wire.frames()[0][..], &[0x70, 0x02, 0x00, 0x03]);
    // The identifier may now carry a new message.
    wire.send(publish("t", QoS::ExactlyOnce, Some(3), b"new"));
    assert_eq!(wire.events().len(), 1);
}

#[test]
fn pubrel_for_an_unknown_identifier_gets_pubcomp_0x92() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.connect();
    wire.send(Packet::PubRel(PubResponse::new(pid(9))));
    let frames = wire.frames();
    let Packet::PubComp(comp) = decode(V5, &frames[0]) else {
        panic!("not a PUBCOMP");
    };
    assert_eq!(comp.reason_code, ReasonCode::PacketIdentifierNotFound);
}

#[test]
fn receive_maximum_exceeded_closes_with_0x93_mqtt_3_3_4_7() {
    let config = ServerConfig {
        receive_maximum: 2,
        ..ServerConfig::default()
    };
    let mut wire = Wire::new(config, V5);
    wire.connect();
    for id in 1..=3 {
        wire.send(publish("t", QoS::AtLeastOnce, Some(id), b"x"));
    }
    let frames = wire.frames();
    let Packet::Disconnect(d) = decode(V5, &frames[0]) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::ReceiveMaximumExceeded);
    assert_eq!(wire.events().len(), 3, "two publishes, then closed");
}

#[test]
fn inbound_topic_aliases_mqtt_3_3_2_12() {
    let config = ServerConfig {
        topic_alias_maximum: 2,
        ..ServerConfig::default()
    };
    let mut wire = Wire::new(config, V5);
    wire.connect();
    let with_alias = |topic: &'static str, alias: u16| {
        Packet::Publish(Publish {
            topic,
            properties: Properties {
                topic_alias: Some(alias),
                ..Properties::default()
            },
            payload: b"p",
            ..Publish::default()
        })
    };
    wire.send(with_alias("long/topic/name", 1));
    wire.send(with_alias("", 1));
    let topics: Vec<String> = wire
        .events()
        .into_iter()
        .map(|e| match e {
            ServerEvent::Publish(p) => p.message.topic.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(topics, ["long/topic/name", "long/topic/name"]);
    // An alias never set is a protocol error.
    wire.send(with_alias("", 2));
    let frame = wire.frames().remove(0);
    let Packet::Disconnect(d) = decode(V5, &frame) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::ProtocolError);

    // An alias above the maximum is 0x94 [MQTT-3.3.2-9].
    let mut wire = Wire::new(
        ServerConfig {
            topic_alias_maximum: 2,
            ..ServerConfig::default()
        },
        V5,
    );
    wire.connect();
    wire.send(with_alias("t", 3));
    let frame = wire.frames().remove(0);
    let Packet::Disconnect(d) = decode(V5, &frame) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::TopicAliasInvalid);
}

#[test]
fn unsupported_qos_and_retain_are_refused_mqtt_3_2_2_11_and_14() {
    let config = ServerConfig {
        maximum_qos: QoS::AtLeastOnce,
        ..ServerConfig::default()
    };
    let mut wire = Wire::new(config, V5);
    wire.connect();
    wire.send(publish("t", QoS::ExactlyOnce, Some(1), b"x"));
    let frame = wire.frames().remove(0);
    let Packet::Disconnect(d) = decode(V5, &frame) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::QoSNotSupported);

    let config = ServerConfig {
        retain_available: false,
        ..ServerConfig::default()
    };
    let mut wire = Wire::new(config, V5);
    wire.connect();
    wire.send(Packet::Publish(Publish {
        retain: true,
        topic: "t",
        ..Publish::default()
    }));
    let frame = wire.frames().remove(0);
    let Packet::Disconnect(d) = decode(V5, &frame) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::RetainNotSupported);
}

#[test]
fn malformed_and_oversized_packets_close_with_their_reason_code() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.connect();
    // PUBLISH with a wildcard in its topic: 0x90 [MQTT-3.3.2-2].
    wire.conn
        .handle_bytes(wire.now, &[0x30, 0x04, 0x00, 0x01, b'#', 0x00]);
    let frame = wire.frames().remove(0);
    let Packet::Disconnect(d) = decode(V5, &frame) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::TopicNameInvalid);

    let config = ServerConfig {
        max_packet_size: 64,
        ..ServerConfig::default()
    };
    let mut wire = Wire::new(config, V5);
    wire.connect();
    // Only the header of a 200-byte packet: refused before its body arrives.
    wire.conn.handle_bytes(wire.now, &[0x30, 0xC5, 0x01]);
    let frame = wire.frames().remove(0);
    let Packet::Disconnect(d) = decode(V5, &frame) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::PacketTooLarge);
    assert!(!wire.conn.wants_read());
}

// ---------------------------------------------------------------------------------------------
// Outbound PUBLISH

#[test]
fn outbound_window_honours_the_clients_receive_maximum_mqtt_4_9_0_2() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    let mut c = connect(V5, "c");
    c.properties.receive_maximum = Some(2);
    wire.connect_with(c, Session::new("c", 0), false);
    for n in 0..3 {
        let outcome = wire
            .conn
            .deliver(wire.now, delivery("t", QoS::AtLeastOnce, b"m"));
        let expected = if n < 2 {
            DeliveryOutcome::Sent
        } else {
            DeliveryOutcome::Queued
        };
        assert_eq!(outcome, expected);
    }
    let frames = wire.frames();
    assert_eq!(frames.len(), 2);
    let Packet::Publish(first) = decode(V5, &frames[0]) else {
        panic!("not a PUBLISH");
    };
    wire.send(Packet::PubAck(PubResponse::new(first.packet_id.unwrap())));
    assert!(matches!(
        wire.events().as_slice(),
        [ServerEvent::Delivered { .. }]
    ));
    let frames = wire.frames();
    assert_eq!(
        frames.len(),
        1,
        "the queued message goes once there is room"
    );
}

#[test]
fn outbound_window_is_capped_by_max_inflight_for_both_versions() {
    for (version, announced) in [(V5, Some(50)), (V5, None), (V311, None)] {
        let config = ServerConfig {
            max_inflight: 3,
            ..ServerConfig::default()
        };
        let mut wire = Wire::new(config, version);
        let mut c = connect(version, "c");
        c.properties.receive_maximum = announced;
        wire.connect_with(c, Session::new("c", 0), false);
        let outcomes: Vec<DeliveryOutcome> = (0..5)
            .map(|_| {
                wire.conn
                    .deliver(wire.now, delivery("t", QoS::AtLeastOnce, b"m"))
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                DeliveryOutcome::Sent,
                DeliveryOutcome::Sent,
                DeliveryOutcome::Sent,
                DeliveryOutcome::Queued,
                DeliveryOutcome::Queued,
            ],
            "{version:?} announcing {announced:?}"
        );
        assert_eq!(wire.frames().len(), 3);
        assert_eq!(wire.conn.session().unwrap().queue.len(), 2);
    }
}

#[test]
fn packet_trace_reports_each_decoded_frame_ahead_of_its_event() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.connect();
    wire.send(Packet::PingReq);
    assert!(wire.events().is_empty(), "no trace until it is turned on");
    wire.conn.set_packet_trace(true);
    wire.send(Packet::PingReq);
    wire.send(publish("t", QoS::AtLeastOnce, Some(1), b"x"));
    let events = wire.events();
    let [ServerEvent::Received(ping), ServerEvent::Received(frame), ServerEvent::Publish(p)] =
        events.as_slice()
    else {
        panic!("{events:?}");
    };
    assert_eq!(&ping[..], &[0xC0, 0x00]);
    assert!(matches!(decode(V5, frame), Packet::Publish(_)));
    assert_eq!(p.packet_id, Some(pid(1)));
}

#[test]
fn outbound_qos2_flow_mqtt_4_3_3() {
    let mut wire = Wire::new(ServerConfig::default(), V311);
    wire.connect();
    wire.conn
        .deliver(wire.now, delivery("t", QoS::ExactlyOnce, b"m"));
    let frames = wire.frames();
    let Packet::Publish(p) = decode(V311, &frames[0]) else {
        panic!("not a PUBLISH");
    };
    let id = p.packet_id.unwrap();
    wire.send(Packet::PubRec(PubResponse::new(id)));
    let frames = wire.frames();
    assert_eq!(
        decode(V311, &frames[0]),
        Packet::PubRel(PubResponse::new(id))
    );
    assert!(wire.events().is_empty(), "not delivered before PUBCOMP");
    wire.send(Packet::PubComp(PubResponse::new(id)));
    assert_eq!(wire.events(), [ServerEvent::Delivered { packet_id: id }]);
    assert_eq!(wire.conn.session().unwrap().inflight(), 0);
}

#[test]
fn messages_larger_than_the_client_accepts_are_dropped_mqtt_3_1_2_25() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    let mut c = connect(V5, "c");
    c.properties.maximum_packet_size = Some(32);
    wire.connect_with(c, Session::new("c", 0), false);
    let outcome = wire
        .conn
        .deliver(wire.now, delivery("t", QoS::AtLeastOnce, &[0u8; 64]));
    assert_eq!(outcome, DeliveryOutcome::Dropped(DropReason::TooLarge));
    assert!(wire.frames().is_empty());
    let session = wire.conn.session().unwrap();
    assert_eq!(session.dropped.too_large, 1);
    assert_eq!(session.inflight(), 0, "no packet identifier is held");
}

#[test]
fn outbound_topic_aliases_when_the_client_allows_them() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    let mut c = connect(V5, "c");
    c.properties.topic_alias_maximum = Some(1);
    wire.connect_with(c, Session::new("c", 0), false);
    for topic in ["sensors/a", "sensors/a", "sensors/b"] {
        wire.conn
            .deliver(wire.now, delivery(topic, QoS::AtMostOnce, b"m"));
    }
    let frames = wire.frames();
    let seen: Vec<(String, Option<u16>)> = frames
        .iter()
        .map(|f| match decode(V5, f) {
            Packet::Publish(p) => (p.topic.to_string(), p.properties.topic_alias),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("sensors/a".to_string(), Some(1)),
            (String::new(), Some(1)),
            ("sensors/b".to_string(), None),
        ]
    );
}

#[test]
fn message_expiry_counts_down_and_expired_messages_are_dropped_mqtt_3_3_2_6() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.connect();
    let mut message = Message::new("t", Bytes::from_static(b"m"));
    message.properties = MessageProperties {
        expires_at: Some(Instant::from_secs(10)),
        ..MessageProperties::default()
    };
    let message = Arc::new(message);
    wire.now = Instant::from_secs(3);
    wire.conn.deliver(wire.now, Delivery::new(message.clone()));
    let frame = wire.frames().remove(0);
    let Packet::Publish(p) = decode(V5, &frame) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(p.properties.message_expiry_interval, Some(7));
    wire.now = Instant::from_secs(10);
    assert_eq!(
        wire.conn.deliver(wire.now, Delivery::new(message)),
        DeliveryOutcome::Dropped(DropReason::Expired)
    );
}

#[test]
fn a_slow_reader_loses_qos0_not_memory() {
    let config = ServerConfig {
        max_outbound_buffer: 100,
        ..ServerConfig::default()
    };
    let mut wire = Wire::new(config, V5);
    wire.connect();
    let mut sent = 0;
    let mut dropped = 0;
    for _ in 0..50 {
        match wire
            .conn
            .deliver(wire.now, delivery("t", QoS::AtMostOnce, &[0u8; 20]))
        {
            DeliveryOutcome::Sent => sent += 1,
            DeliveryOutcome::Dropped(DropReason::BufferFull) => dropped += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(sent > 0 && dropped > 0);
    assert!(wire.conn.pending_transmit() < 100 + 40);
    assert_eq!(
        wire.conn.session().unwrap().dropped.qos0_buffer_full,
        dropped
    );
    // QoS 1 waits in the queue instead.
    assert_eq!(
        wire.conn
            .deliver(wire.now, delivery("t", QoS::AtLeastOnce, b"m")),
        DeliveryOutcome::Queued
    );
    assert_eq!(wire.frames().len(), sent as usize, "the buffer drains");
    assert_eq!(wire.frames().len(), 1, "then the queued message follows");
}

// ---------------------------------------------------------------------------------------------
// Session resume

#[test]
fn resumed_session_resends_in_order_with_dup_then_pubrel_mqtt_4_4_0_1() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    let mut c = connect(V5, "c");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    wire.connect_with(c, Session::new("c", 300), false);
    wire.conn
        .deliver(wire.now, delivery("t", QoS::AtLeastOnce, b"one"));
    wire.conn
        .deliver(wire.now, delivery("t", QoS::ExactlyOnce, b"two"));
    let frames = wire.frames();
    let ids: Vec<PacketId> = frames
        .iter()
        .map(|f| match decode(V5, f) {
            Packet::Publish(p) => p.packet_id.unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    // The QoS 2 one got as far as PUBREC; an inbound QoS 2 got PUBREC too.
    wire.send(Packet::PubRec(PubResponse::new(ids[1])));
    wire.send(publish("in", QoS::ExactlyOnce, Some(40), b"in"));
    wire.conn
        .complete_publish(wire.now, pid(40), ReasonCode::Success)
        .unwrap();
    wire.frames();
    wire.conn.connection_lost(wire.now);
    let events = wire.events();
    assert!(closed(&events).unwrap().publish_will);
    let session = wire.conn.take_session().unwrap();
    assert_eq!(session.inflight(), 2);

    let mut wire2 = Wire::new(ServerConfig::default(), V5);
    let mut c = connect(V5, "c");
    c.clean_start = false;
    let connack = wire2.connect_with(c, session, true);
    let Packet::ConnAck(connack) = decode(V5, &connack) else {
        panic!("not a CONNACK");
    };
    assert!(connack.session_present);
    let frames = wire2.frames();
    assert_eq!(frames.len(), 2);
    let Packet::Publish(again) = decode(V5, &frames[0]) else {
        panic!("not a PUBLISH");
    };
    assert!(again.dup, "re-sent with DUP [MQTT-3.3.1-1]");
    assert_eq!(again.packet_id, Some(ids[0]));
    assert_eq!(again.payload, b"one");
    assert_eq!(
        decode(V5, &frames[1]),
        Packet::PubRel(PubResponse::new(ids[1]))
    );
    // The exactly-once marker survived: the client's re-sent PUBLISH is not delivered again.
    let Packet::Publish(mut dup) = publish("in", QoS::ExactlyOnce, Some(40), b"in") else {
        unreachable!()
    };
    dup.dup = true;
    wire2.send(Packet::Publish(dup));
    assert!(wire2.events().is_empty());
    assert_eq!(&wire2.frames()[0][..], &[0x50, 0x02, 0x00, 40]);
}

#[test]
fn clean_start_never_reports_a_session_mqtt_3_2_2_2() {
    let mut wire = Wire::new(ServerConfig::default(), V311);
    let connack = wire.connect_with(connect(V311, "c"), Session::new("c", 0), true);
    assert_eq!(&connack[..], &[0x20, 0x02, 0x00, 0x00]);
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE, DISCONNECT, AUTH

#[test]
fn subscribe_is_answered_with_the_brokers_codes_mqtt_3_8_4_1() {
    let config = ServerConfig {
        shared_subscription_available: false,
        ..ServerConfig::default()
    };
    let mut wire = Wire::new(config, V311);
    wire.connect();
    let filters = [
        SubscribeFilter {
            filter: "a/+",
            options: SubscriptionOptions::qos(QoS::ExactlyOnce),
        },
        SubscribeFilter {
            filter: "$share/g/b",
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        },
    ];
    wire.send(Packet::Subscribe(Subscribe {
        packet_id: pid(5),
        properties: Properties::default(),
        filters: List::new(&filters),
    }));
    let events = wire.events();
    let [ServerEvent::Subscribe(request)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(request.filters[0].filter, "a/+");
    assert_eq!(request.filters[0].refusal, None);
    assert_eq!(
        request.filters[1].refusal,
        Some(ReasonCode::SharedSubscriptionsNotSupported)
    );
    assert_eq!(
        wire.conn
            .complete_subscribe(wire.now, pid(5), &[ReasonCode::GrantedQoS1]),
        Err(CommandError::ReasonCodeCount)
    );
    wire.conn
        .complete_subscribe(
            wire.now,
            pid(5),
            &[
                ReasonCode::GrantedQoS1,
                ReasonCode::SharedSubscriptionsNotSupported,
            ],
        )
        .unwrap();
    // 3.1.1: granted QoS 1, then the failure code 0x80.
    assert_eq!(&wire.frames()[0][..], &[0x90, 0x04, 0x00, 0x05, 0x01, 0x80]);
}

#[test]
fn disconnect_decides_the_will_mqtt_3_14_4_3() {
    for (reason, will) in [
        (ReasonCode::Success, false),
        (ReasonCode::DisconnectWithWillMessage, true),
    ] {
        let mut wire = Wire::new(ServerConfig::default(), V5);
        wire.connect();
        wire.send(Packet::Disconnect(Disconnect {
            reason_code: reason,
            properties: Properties::default(),
        }));
        let events = wire.events();
        let info = closed(&events).unwrap();
        assert_eq!(info.initiator, CloseInitiator::Client);
        assert_eq!(info.publish_will, will, "{reason:?}");
    }
}

#[test]
fn disconnect_cannot_extend_a_session_that_ends_with_the_connection_mqtt_3_14_2_2() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.connect();
    wire.send(Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::Success,
        properties: Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        },
    }));
    let frame = wire.frames().remove(0);
    let Packet::Disconnect(d) = decode(V5, &frame) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::ProtocolError);
}

#[test]
fn takeover_tells_the_old_client_0x8e_mqtt_3_1_4_3() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    wire.connect();
    wire.conn.close(wire.now, ReasonCode::SessionTakenOver);
    let frame = wire.frames().remove(0);
    let Packet::Disconnect(d) = decode(V5, &frame) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::SessionTakenOver);
    assert!(wire.conn.is_closed());
}

#[test]
fn will_is_handed_to_the_broker_with_its_properties() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    let users = [UserProperty {
        name: "k",
        value: "v",
    }];
    let mut c = connect(V5, "c");
    c.will = Some(Will {
        topic: "status/c",
        payload: b"offline",
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties {
            will_delay_interval: Some(5),
            user_properties: List::new(&users),
            ..Properties::default()
        },
    });
    wire.send(Packet::Connect(c));
    let events = wire.events();
    let [ServerEvent::Connect(request)] = events.as_slice() else {
        panic!("{events:?}");
    };
    let will = request.will.as_ref().unwrap();
    assert_eq!(&*will.message.topic, "status/c");
    assert_eq!(&will.message.payload[..], b"offline");
    assert!(will.message.retain);
    assert_eq!(will.delay_interval, 5);
    assert_eq!(
        will.message.properties.user_properties,
        [("k".to_string(), "v".to_string())]
    );
}

#[test]
fn enhanced_authentication_exchange_section_4_12() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    let mut c = connect(V5, "c");
    c.properties.authentication_method = Some("SCRAM-SHA-256");
    c.properties.authentication_data = Some(b"client-first");
    wire.send(Packet::Connect(c));
    let events = wire.events();
    let [ServerEvent::Connect(request)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(
        request.authentication_method.as_deref(),
        Some("SCRAM-SHA-256")
    );
    wire.conn.auth_continue(wire.now, b"server-first").unwrap();
    let frame = wire.frames().remove(0);
    let Packet::Auth(challenge) = decode(V5, &frame) else {
        panic!("not AUTH");
    };
    assert_eq!(challenge.reason_code, ReasonCode::ContinueAuthentication);
    assert_eq!(
        challenge.properties.authentication_data,
        Some(&b"server-first"[..])
    );
    wire.send(Packet::Auth(Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: Properties {
            authentication_method: Some("SCRAM-SHA-256"),
            authentication_data: Some(b"client-final"),
            ..Properties::default()
        },
    }));
    let events = wire.events();
    let [ServerEvent::Auth(step)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(step.data.as_deref(), Some(&b"client-final"[..]));
    assert!(!step.reauthenticate);
    wire.conn
        .accept(
            wire.now,
            Accept {
                authentication_data: Some(Bytes::from_static(b"server-final")),
                ..Accept::new_session(Session::new("c", 0))
            },
        )
        .unwrap();
    let frame = wire.frames().remove(0);
    let Packet::ConnAck(connack) = decode(V5, &frame) else {
        panic!("not a CONNACK");
    };
    assert_eq!(
        connack.properties.authentication_method,
        Some("SCRAM-SHA-256")
    );
    assert_eq!(
        connack.properties.authentication_data,
        Some(&b"server-final"[..])
    );
    // A different method on re-authentication is a protocol error (section 4.12.1).
    wire.send(Packet::Auth(Auth {
        reason_code: ReasonCode::ReAuthenticate,
        properties: Properties {
            authentication_method: Some("PLAIN"),
            ..Properties::default()
        },
    }));
    let frame = wire.frames().remove(0);
    let Packet::Disconnect(d) = decode(V5, &frame) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::ProtocolError);
}

#[test]
fn bytes_arriving_one_at_a_time() {
    let mut wire = Wire::new(ServerConfig::default(), V5);
    let mut bytes = BytesMut::new();
    Packet::Connect(connect(V5, "slow"))
        .encode_to_bytes(V5, &mut bytes)
        .unwrap();
    for byte in bytes.iter() {
        wire.conn.handle_bytes(wire.now, &[*byte]);
    }
    assert!(matches!(
        wire.events().as_slice(),
        [ServerEvent::Connect(c)] if c.client_id == "slow"
    ));
}

#[test]
fn connack_packet_type_is_well_formed() {
    // A sanity check of the harness itself: the server's CONNACK decodes as 3.1.1 too.
    let mut wire = Wire::new(ServerConfig::default(), V311);
    let frame = wire.connect();
    assert_eq!(decode(V311, &frame), Packet::ConnAck(ConnAck::default()));
}
