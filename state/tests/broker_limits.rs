//! The per-client limits of the broker core, without a socket: publish rate (DISCONNECT
//! 0x96), topic levels and length (PUBACK 0x90, SUBACK 0x8F / 0x80), the outbound in-flight
//! window and the queue behind it, and the counters `$SYS` reports for them and for the
//! packet-size and receive-maximum limits.

mod broker_wire;

use bytes::{Bytes, BytesMut};
use petrel_codec::{
    Connect, Decoded, Decoder, List, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use petrel_state::broker::limits::{ClientLimits, Rate};
use petrel_state::broker::{AllowAll, Broker, BrokerConfig, ConnectionId, NoStorage};
use petrel_state::server::{QueueLimits, ServerConfig};
use petrel_state::{Duration, Instant};

use ProtocolVersion::{V311, V5};

struct Client {
    id: ConnectionId,
    version: ProtocolVersion,
    inbox: BytesMut,
    next_id: u16,
}

struct Net {
    broker: Broker,
    now: Instant,
}

impl Net {
    fn new(limits: ClientLimits, server: ServerConfig) -> Net {
        let config = BrokerConfig {
            limits,
            server: std::sync::Arc::new(server),
            ..BrokerConfig::default()
        };
        Net {
            broker: Broker::new(config, Box::new(AllowAll), Box::new(NoStorage)),
            now: Instant::from_secs(1),
        }
    }

    fn send(&mut self, client: &Client, packet: Packet<'_>) {
        broker_wire::send(
            &mut self.broker,
            self.now,
            client.id,
            client.version,
            packet,
        );
    }

    fn frames(&mut self, client: &mut Client) -> Vec<Bytes> {
        broker_wire::frames(
            &mut self.broker,
            self.now,
            client.id,
            client.version,
            &mut client.inbox,
        )
    }

    /// The reasons of the acknowledgements and DISCONNECTs received since the last call.
    fn answers(&mut self, client: &mut Client) -> Vec<(&'static str, ReasonCode)> {
        let version = client.version;
        self.frames(client)
            .iter()
            .filter_map(|frame| match Decoder::new(version).decode(frame).unwrap() {
                Decoded::Packet { packet, .. } => match packet {
                    Packet::ConnAck(c) => Some(("connack", c.reason_code)),
                    Packet::PubAck(a) => Some(("puback", a.reason_code)),
                    Packet::SubAck(s) => Some(("suback", s.reason_codes.iter().next()?)),
                    Packet::Disconnect(d) => Some(("disconnect", d.reason_code)),
                    _ => None,
                },
                Decoded::Incomplete { .. } => None,
            })
            .collect()
    }

    fn connect(&mut self, client_id: &str, version: ProtocolVersion) -> Client {
        self.connect_with(client_id, version, Properties::default())
    }

    fn connect_with(
        &mut self,
        client_id: &str,
        version: ProtocolVersion,
        properties: Properties<'_>,
    ) -> Client {
        let id = self.broker.open(self.now, Some("127.0.0.1:5000"));
        let mut client = Client {
            id,
            version,
            inbox: BytesMut::new(),
            next_id: 1,
        };
        self.send(
            &client,
            Packet::Connect(Connect {
                protocol_version: version,
                clean_start: true,
                keep_alive: 0,
                properties,
                client_id,
                will: None,
                username: None,
                password: None,
            }),
        );
        assert_eq!(
            self.answers(&mut client),
            [("connack", ReasonCode::Success)]
        );
        client
    }

    fn publish(&mut self, client: &mut Client, topic: &str, qos: QoS) {
        let packet_id = (qos != QoS::AtMostOnce).then(|| {
            client.next_id += 1;
            PacketId::new(client.next_id).unwrap()
        });
        self.send(
            client,
            Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic,
                packet_id,
                properties: Properties::default(),
                payload: b"x",
            }),
        );
    }

    fn subscribe(&mut self, client: &mut Client, filter: &str) {
        self.subscribe_at(client, filter, QoS::AtMostOnce);
    }

    fn subscribe_at(&mut self, client: &mut Client, filter: &str, qos: QoS) {
        client.next_id += 1;
        let filters = [SubscribeFilter {
            filter,
            options: SubscriptionOptions::qos(qos),
        }];
        self.send(
            client,
            Packet::Subscribe(Subscribe {
                packet_id: PacketId::new(client.next_id).unwrap(),
                properties: Properties::default(),
                filters: List::new(&filters),
            }),
        );
    }
}

#[test]
fn publishing_faster_than_the_rate_disconnects_with_0x96() {
    let limits = ClientLimits {
        publish_rate: Some(Rate {
            per_second: 10,
            burst: 5,
        }),
        ..ClientLimits::default()
    };
    let mut net = Net::new(limits, ServerConfig::default());
    let mut steady = net.connect("steady", V5);
    // Ten a second for three seconds is within the rate.
    for _ in 0..30 {
        net.publish(&mut steady, "t", QoS::AtLeastOnce);
        net.now = net.now + Duration::from_millis(100);
    }
    let answers = net.answers(&mut steady);
    assert_eq!(answers.len(), 30);
    assert!(answers.iter().all(|&(kind, _)| kind == "puback"));

    let mut burst = net.connect("burst", V5);
    for _ in 0..6 {
        net.publish(&mut burst, "t", QoS::AtLeastOnce);
    }
    let answers = net.answers(&mut burst);
    assert_eq!(answers.len(), 6, "{answers:?}");
    assert_eq!(answers[5], ("disconnect", ReasonCode::MessageRateTooHigh));
    assert_eq!(net.broker.stats().publish_rate_exceeded, 1);

    // 3.1.1 has no DISCONNECT from the server: the connection just ends.
    let mut old = net.connect("old", V311);
    for _ in 0..6 {
        net.publish(&mut old, "t", QoS::AtMostOnce);
    }
    assert!(net.answers(&mut old).is_empty());
    let mut closed = Vec::new();
    while let Some(id) = net.broker.poll_closed() {
        closed.push(id);
    }
    assert!(closed.contains(&old.id) && closed.contains(&burst.id));
    assert_eq!(net.broker.stats().publish_rate_exceeded, 2);
}

#[test]
fn topics_over_the_level_and_length_limits_are_refused() {
    let limits = ClientLimits {
        publish_rate: None,
        max_topic_levels: 3,
        max_topic_length: 16,
    };
    let mut net = Net::new(limits, ServerConfig::default());
    let mut v5 = net.connect("v5", V5);
    net.publish(&mut v5, "a/b/c", QoS::AtLeastOnce);
    net.publish(&mut v5, "a/b/c/d", QoS::AtLeastOnce);
    net.publish(&mut v5, "a-very-long-topic-name", QoS::AtLeastOnce);
    net.subscribe(&mut v5, "a/+/#");
    net.subscribe(&mut v5, "a/+/c/#");
    assert_eq!(
        net.answers(&mut v5),
        [
            ("puback", ReasonCode::NoMatchingSubscribers),
            ("puback", ReasonCode::TopicNameInvalid),
            ("puback", ReasonCode::TopicNameInvalid),
            ("suback", ReasonCode::Success),
            ("suback", ReasonCode::TopicFilterInvalid),
        ]
    );
    // 3.1.1: the message is acknowledged and dropped; the subscription gets 0x80.
    let mut v3 = net.connect("v3", V311);
    net.publish(&mut v3, "a/b/c/d", QoS::AtLeastOnce);
    net.subscribe(&mut v3, "a/+/c/#");
    assert_eq!(
        net.answers(&mut v3),
        [
            ("puback", ReasonCode::Success),
            ("suback", ReasonCode::UnspecifiedError),
        ]
    );
    // Nothing over the limit was routed.
    let mut everything = net.connect("all", V5);
    net.subscribe(&mut everything, "#");
    net.answers(&mut everything);
    net.publish(&mut v3, "x/y/z/w", QoS::AtMostOnce);
    assert!(net.answers(&mut everything).is_empty());
    assert_eq!(net.broker.stats().topic_too_large, 6);
}

#[test]
fn oversized_packets_and_receive_maximum_are_counted() {
    let server = ServerConfig {
        max_packet_size: 64,
        receive_maximum: 1,
        ..ServerConfig::default()
    };
    let mut net = Net::new(ClientLimits::default(), server);
    let mut big = net.connect("big", V5);
    net.publish(&mut big, &"x".repeat(100), QoS::AtMostOnce);
    assert_eq!(
        net.answers(&mut big),
        [("disconnect", ReasonCode::PacketTooLarge)]
    );
    assert_eq!(net.broker.stats().packet_too_large, 1);
    let mut eager = net.connect("eager", V5);
    // Two QoS 2 publishes without PUBREL: the second exceeds a receive maximum of 1.
    net.publish(&mut eager, "t", QoS::ExactlyOnce);
    net.publish(&mut eager, "t", QoS::ExactlyOnce);
    let answers = net.answers(&mut eager);
    assert!(
        answers.contains(&("disconnect", ReasonCode::ReceiveMaximumExceeded)),
        "{answers:?}"
    );
    assert_eq!(net.broker.stats().receive_maximum_exceeded, 1);
}

/// The packet identifiers of the PUBLISH packets among `frames`.
fn publish_ids(version: ProtocolVersion, frames: &[Bytes]) -> Vec<PacketId> {
    frames
        .iter()
        .filter_map(|frame| match Decoder::new(version).decode(frame).unwrap() {
            Decoded::Packet {
                packet: Packet::Publish(p),
                ..
            } => p.packet_id,
            _ => None,
        })
        .collect()
}

#[test]
fn outbound_in_flight_is_the_lower_of_both_limits_and_the_rest_waits_in_the_queue() {
    const QUEUE: usize = 3;
    const SENT: usize = 8;
    let server = ServerConfig {
        max_inflight: 2,
        queue: QueueLimits {
            max_messages: QUEUE,
            ..QueueLimits::default()
        },
        ..ServerConfig::default()
    };
    let mut net = Net::new(ClientLimits::default(), server);
    let mut dropped = 0;
    // The subscriber, its version, the Receive Maximum it announces, the window it gets:
    // a 5.0 client never gets more than it announced [MQTT-4.9.0-2] nor more than the
    // server's cap, and a 3.1.1 client, which cannot announce one, gets the cap.
    for (name, version, announced, window) in [
        ("wide", V5, Some(10), 2),
        ("narrow", V5, Some(1), 1),
        ("silent", V5, None, 2),
        ("old", V311, None, 2),
    ] {
        let properties = Properties {
            receive_maximum: announced,
            ..Properties::default()
        };
        let mut subscriber = net.connect_with(name, version, properties);
        let topic = format!("{name}/t");
        net.subscribe_at(&mut subscriber, &topic, QoS::AtLeastOnce);
        net.frames(&mut subscriber);
        let mut publisher = net.connect(&format!("{name}-publisher"), V5);
        for _ in 0..SENT {
            net.publish(&mut publisher, &topic, QoS::AtLeastOnce);
        }
        let mut outstanding = publish_ids(version, &net.frames(&mut subscriber));
        assert_eq!(outstanding.len(), window, "{name}");
        let mut delivered = outstanding.len();
        // Each acknowledgement lets one queued message out, never more than the window.
        while let Some(packet_id) = outstanding.pop() {
            net.send(
                &subscriber,
                Packet::PubAck(petrel_codec::PubResponse::new(packet_id)),
            );
            let more = publish_ids(version, &net.frames(&mut subscriber));
            delivered += more.len();
            outstanding.extend(more);
            assert!(outstanding.len() <= window, "{name}: {outstanding:?}");
        }
        assert_eq!(delivered, window + QUEUE, "{name}");
        dropped += SENT - window - QUEUE;
        assert_eq!(
            net.broker.stats().dropped.queue_full,
            dropped as u64,
            "{name}"
        );
    }
}
