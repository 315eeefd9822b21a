//! Scenario tests of the broker core, one behaviour each, with clients played by packets
//! encoded with the codec. Each names the normative statement it checks.

mod broker_wire;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use petrel_codec::{
    Connect, Decoded, Decoder, Disconnect, List, Packet, PacketId, PacketType, Properties,
    ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscribeFilter, SubscriptionOptions, Unsubscribe, UserProperty, Will,
};
use petrel_state::broker::{
    Broker, BrokerConfig, ClientInfo, ConnectionId, Durability, Hooks, MemoryStorage, NoStorage,
    SessionView, ShardMessage, Storage, StoredState, Verdict,
};
use petrel_state::message::Message;
use petrel_state::server::{QueueLimits, ServerConfig};
use petrel_state::{Duration, Instant};

use ProtocolVersion::{V311, V5};

/// What a test client received, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    dup: bool,
    packet_id: Option<u16>,
    subscription_ids: Vec<u32>,
    user_properties: Vec<(String, String)>,
}

struct Peer {
    id: ConnectionId,
    version: ProtocolVersion,
    inbox: BytesMut,
    next_id: u16,
}

struct Net {
    broker: Broker,
    now: Instant,
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

impl Net {
    fn new() -> Self {
        Net::with(
            BrokerConfig::default(),
            Box::new(petrel_state::broker::AllowAll),
            Box::new(NoStorage),
        )
    }

    fn with(config: BrokerConfig, hooks: Box<dyn Hooks>, storage: Box<dyn Storage>) -> Self {
        Net {
            broker: Broker::new(config, hooks, storage),
            now: Instant::ZERO,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.broker.handle_timeout(self.now);
    }

    fn send(&mut self, peer: &Peer, packet: Packet<'_>) {
        broker_wire::send(&mut self.broker, self.now, peer.id, peer.version, packet);
    }

    /// Every frame the broker sent this peer since the last call.
    fn frames(&mut self, peer: &mut Peer) -> Vec<Bytes> {
        broker_wire::frames(
            &mut self.broker,
            self.now,
            peer.id,
            peer.version,
            &mut peer.inbox,
        )
    }

    /// The PUBLISH packets a peer received, acknowledging each as a client would.
    fn received(&mut self, peer: &mut Peer) -> Vec<Got> {
        let mut got = Vec::new();
        let mut acks = Vec::new();
        for frame in self.frames(peer) {
            let Packet::Publish(p) = decode(peer.version, &frame) else {
                continue;
            };
            got.push(Got {
                topic: p.topic.to_string(),
                payload: p.payload.to_vec(),
                qos: p.qos,
                retain: p.retain,
                dup: p.dup,
                packet_id: p.packet_id.map(|id| id.get()),
                subscription_ids: p
                    .properties
                    .subscription_identifiers
                    .iter()
                    .map(|id| id.0)
                    .collect(),
                user_properties: p
                    .properties
                    .user_properties
                    .iter()
                    .map(|u| (u.name.to_string(), u.value.to_string()))
                    .collect(),
            });
            match (p.qos, p.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => acks.push(Packet::PubAck(PubResponse::new(id))),
                (QoS::ExactlyOnce, Some(id)) => acks.push(Packet::PubRec(PubResponse::new(id))),
                _ => {}
            }
        }
        for ack in acks {
            let is_rec = matches!(ack, Packet::PubRec(_));
            let id = match &ack {
                Packet::PubAck(r) | Packet::PubRec(r) => r.packet_id,
                _ => unreachable!(),
            };
            self.send(peer, ack);
            if is_rec {
                self.frames(peer);
                self.send(peer, Packet::PubComp(PubResponse::new(id)));
            }
        }
        got
    }

    fn connect(&mut self, client_id: &str, version: ProtocolVersion) -> Peer {
        self.connect_with(client_id, version, |_| {}).0
    }

    /// Opens a connection and sends CONNECT; returns the peer and its CONNACK frame.
    fn connect_with(
        &mut self,
        client_id: &str,
        version: ProtocolVersion,
        edit: impl FnOnce(&mut Connect<'_>),
    ) -> (Peer, Bytes) {
        let id = self.broker.open(self.now, Some("127.0.0.1:5000"));
        let mut peer = Peer {
            id,
            version,
            inbox: BytesMut::new(),
            next_id: 1,
        };
        let mut connect = Connect {
            protocol_version: version,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id,
            will: None,
            username: None,
            password: None,
        };
        edit(&mut connect);
        self.send(&peer, Packet::Connect(connect));
        let mut frames = self.frames(&mut peer);
        assert!(!frames.is_empty(), "no CONNACK");
        let connack = frames.remove(0);
        assert_eq!(decode(version, &connack).packet_type(), PacketType::ConnAck);
        // Anything after CONNACK (re-sends of a resumed session) stays for the test.
        let mut rest = BytesMut::new();
        for f in frames {
            rest.extend_from_slice(&f);
        }
        rest.extend_from_slice(&peer.inbox);
        peer.inbox = rest;
        (peer, connack)
    }

    fn subscribe(
        &mut self,
        peer: &mut Peer,
        filter: &str,
        options: SubscriptionOptions,
    ) -> ReasonCode {
        self.subscribe_with(
            peer,
            &[SubscribeFilter { filter, options }],
            Properties::default(),
        )[0]
    }

    fn subscribe_with(
        &mut self,
        peer: &mut Peer,
        filters: &[SubscribeFilter<'_>],
        properties: Properties<'_>,
    ) -> Vec<ReasonCode> {
        let id = pid(peer.next_id);
        peer.next_id += 1;
        self.send(
            peer,
            Packet::Subscribe(Subscribe {
                packet_id: id,
                properties,
                filters: List::new(filters),
            }),
        );
        let frames = self.frames(peer);
        let mut codes = None;
        let mut rest = BytesMut::new();
        for frame in frames {
            match decode(peer.version, &frame) {
                Packet::SubAck(ack) if ack.packet_id == id => {
                    codes = Some(ack.reason_codes.iter().collect())
                }
                _ => rest.extend_from_slice(&frame),
            }
        }
        rest.extend_from_slice(&peer.inbox);
        peer.inbox = rest;
        codes.expect("SUBACK")
    }

    fn publish(
        &mut self,
        peer: &mut Peer,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Option<ReasonCode> {
        self.publish_with(peer, topic, payload, qos, retain, Properties::default())
    }

    /// Publishes; for QoS 1 returns the PUBACK reason, for QoS 2 the PUBREC reason (after
    /// completing the flow).
    fn publish_with(
        &mut self,
        peer: &mut Peer,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        properties: Properties<'_>,
    ) -> Option<ReasonCode> {
        let packet_id = (qos != QoS::AtMostOnce).then(|| {
            let id = pid(peer.next_id);
            peer.next_id += 1;
            id
        });
        self.send(
            peer,
            Packet::Publish(Publish {
                dup: false,
                qos,
                retain,
                topic,
                packet_id,
                properties,
                payload,
            }),
        );
        let id = packet_id?;
        let mut reason = None;
        let mut rest = BytesMut::new();
        for frame in self.frames(peer) {
            match decode(peer.version, &frame) {
                Packet::PubAck(r) if r.packet_id == id => reason = Some(r.reason_code),
                Packet::PubRec(r) if r.packet_id == id => reason = Some(r.reason_code),
                _ => rest.extend_from_slice(&frame),
            }
        }
        rest.extend_from_slice(&peer.inbox);
        peer.inbox = rest;
        if qos == QoS::ExactlyOnce && reason.is_some_and(|r| !r.is_error()) {
            self.send(peer, Packet::PubRel(PubResponse::new(id)));
            let comp = self.frames(peer);
            assert!(comp
                .iter()
                .any(|f| matches!(decode(peer.version, f), Packet::PubComp(_))));
        }
        reason
    }

    fn disconnect(&mut self, peer: &mut Peer, reason: ReasonCode) {
        self.send(
            peer,
            Packet::Disconnect(Disconnect {
                reason_code: reason,
                properties: Properties::default(),
            }),
        );
        self.close(peer);
    }

    /// What a runtime does with a connection the broker is done with.
    fn close(&mut self, peer: &mut Peer) {
        self.frames(peer);
        while let Some(id) = self.broker.poll_closed() {
            self.broker.release(id);
        }
    }

    fn drop_connection(&mut self, peer: &mut Peer) {
        self.broker.connection_lost(self.now, peer.id);
        self.close(peer);
    }
}

fn decode(version: ProtocolVersion, frame: &Bytes) -> Packet<'_> {
    match Decoder::new(version).decode(frame).unwrap() {
        Decoded::Packet { packet, .. } => packet,
        Decoded::Incomplete { .. } => panic!("a frame is a whole packet"),
    }
}

fn qos(q: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(q)
}

fn topics(got: &[Got]) -> Vec<&str> {
    got.iter().map(|g| g.topic.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------
// Routing

#[test]
fn wildcards_route_and_qos_is_downgraded_never_skipped_mqtt_3_8_4_8() {
    let mut net = Net::new();
    let mut sub = net.connect("sub", V5);
    let mut publisher = net.connect("pub", V5);
    assert_eq!(
        net.subscribe(&mut sub, "sensors/+/temp", qos(QoS::AtMostOnce)),
        ReasonCode::Success
    );
    assert_eq!(
        net.publish(
            &mut publisher,
            "sensors/kitchen/temp",
            b"21",
            QoS::ExactlyOnce,
            false
        ),
        Some(ReasonCode::Success)
    );
    net.publish(
        &mut publisher,
        "sensors/kitchen/humidity",
        b"40",
        QoS::AtMostOnce,
        false,
    );
    let got = net.received(&mut sub);
    assert_eq!(topics(&got), ["sensors/kitchen/temp"]);
    assert_eq!(got[0].qos, QoS::AtMostOnce, "downgraded to the granted QoS");
}

#[test]
fn no_subscribers_is_reported_in_v5_acknowledgements() {
    let mut net = Net::new();
    let mut publisher = net.connect("pub", V5);
    assert_eq!(
        net.publish(
            &mut publisher,
            "nobody/listens",
            b"x",
            QoS::AtLeastOnce,
            false
        ),
        Some(ReasonCode::NoMatchingSubscribers)
    );
}

#[test]
fn overlapping_subscriptions_give_one_copy_with_every_identifier_mqtt_3_3_4_3() {
    let mut net = Net::new();
    let mut sub = net.connect("sub", V5);
    let mut publisher = net.connect("pub", V5);
    for (filter, id, q) in [("a/#", 1, QoS::AtMostOnce), ("a/+", 2, QoS::AtLeastOnce)] {
        let filters = [SubscribeFilter {
            filter,
            options: qos(q),
        }];
        let ids = [petrel_codec::SubscriptionId(id)];
        let properties = Properties {
            subscription_identifiers: List::new(&ids),
            ..Properties::default()
        };
        net.subscribe_with(&mut sub, &filters, properties);
    }
    net.publish(&mut publisher, "a/b", b"m", QoS::ExactlyOnce, false);
    let got = net.received(&mut sub);
    assert_eq!(got.len(), 1, "one copy [MQTT-3.3.4-2 choice]");
    assert_eq!(got[0].qos, QoS::AtLeastOnce, "the highest granted QoS");
    let mut ids = got[0].subscription_ids.clone();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn no_local_skips_the_publishers_own_subscription_mqtt_3_8_3_3() {
    let mut net = Net::new();
    let mut client = net.connect("me", V5);
    let options = SubscriptionOptions {
        no_local: true,
        ..qos(QoS::AtMostOnce)
    };
    net.subscribe(&mut client, "chat", options);
    let mut other = net.connect("other", V5);
    net.subscribe(&mut other, "chat", qos(QoS::AtMostOnce));
    net.publish(&mut client, "chat", b"hi", QoS::AtMostOnce, false);
    assert!(net.received(&mut client).is_empty());
    assert_eq!(net.received(&mut other).len(), 1);
}

#[test]
fn dollar_topics_need_an_explicit_filter_mqtt_4_7_2_1() {
    let mut net = Net::new();
    let mut all = net.connect("all", V5);
    let mut sys = net.connect("sys", V5);
    net.subscribe(&mut all, "#", qos(QoS::AtMostOnce));
    net.subscribe(&mut sys, "$SYS/#", qos(QoS::AtMostOnce));
    net.broker
        .publish(net.now, Message::new("$SYS/broker/uptime", &b"1"[..]));
    net.broker.publish(net.now, Message::new("é/x", &b"2"[..]));
    assert_eq!(topics(&net.received(&mut all)), ["é/x"]);
    assert_eq!(topics(&net.received(&mut sys)), ["$SYS/broker/uptime"]);
}

#[test]
fn v5_properties_reach_v5_subscribers_and_v311_subscribers_get_the_message() {
    let mut net = Net::new();
    let mut v5 = net.connect("five", V5);
    let mut v3 = net.connect("three", V311);
    net.subscribe(&mut v5, "t", qos(QoS::AtLeastOnce));
    net.subscribe(&mut v3, "t", qos(QoS::AtLeastOnce));
    let mut publisher = net.connect("pub", V5);
    let users = [UserProperty {
        name: "trace",
        value: "42",
    }];
    net.publish_with(
        &mut publisher,
        "t",
        b"m",
        QoS::AtLeastOnce,
        false,
        Properties {
            user_properties: List::new(&users),
            ..Properties::default()
        },
    );
    // [MQTT-3.3.2-17]: user properties are forwarded unaltered.
    assert_eq!(
        net.received(&mut v5)[0].user_properties,
        [("trace".to_string(), "42".to_string())]
    );
    let got = net.received(&mut v3);
    assert_eq!(got[0].payload, b"m");
    assert!(got[0].user_properties.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Retained messages

#[test]
fn retained_set_replace_and_clear_mqtt_3_3_1_5_to_7() {
    let mut net = Net::new();
    let mut publisher = net.connect("pub", V5);
    net.publish(&mut publisher, "status", b"one", QoS::AtLeastOnce, true);
    net.publish(&mut publisher, "status", b"two", QoS::AtLeastOnce, true);
    let mut sub = net.connect("sub", V5);
    net.subscribe(&mut sub, "status", qos(QoS::AtLeastOnce));
    let got = net.received(&mut sub);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"two", "replaced");
    assert!(
        got[0].retain,
        "sent because of a new subscription [MQTT-3.3.1-9]"
    );
    // Empty payload clears it [MQTT-3.3.1-6].
    net.publish(&mut publisher, "status", b"", QoS::AtMostOnce, true);
    let live = net.received(&mut sub);
    assert_eq!(live.len(), 1);
    assert!(
        !live[0].retain,
        "an established subscription gets RETAIN 0 [MQTT-3.3.1-12]"
    );
    let mut late = net.connect("late", V5);
    net.subscribe(&mut late, "status", qos(QoS::AtMostOnce));
    assert!(net.received(&mut late).is_empty());
    assert_eq!(net.broker.retained_count(), 0);
}

#[test]
fn retain_handling_options_mqtt_3_3_1_10() {
    let mut net = Net::new();
    net.broker.publish(net.now, {
        let mut m = Message::new("r/1", &b"x"[..]);
        m.retain = true;
        m
    });
    let mut sub = net.connect("sub", V5);
    let with = |handling| SubscriptionOptions {
        retain_handling: handling,
        ..qos(QoS::AtMostOnce)
    };
    net.subscribe(&mut sub, "r/+", with(RetainHandling::DoNotSend));
    assert!(net.received(&mut sub).is_empty(), "2: never");
    net.subscribe(&mut sub, "r/+", with(RetainHandling::SendIfNew));
    assert!(
        net.received(&mut sub).is_empty(),
        "1: the subscription existed"
    );
    net.subscribe(&mut sub, "r/#", with(RetainHandling::SendIfNew));
    assert_eq!(net.received(&mut sub).len(), 1, "1: a new subscription");
    net.subscribe(&mut sub, "r/#", with(RetainHandling::SendOnSubscribe));
    assert_eq!(net.received(&mut sub).len(), 1, "0: always");
}

#[test]
fn retain_as_published_keeps_the_flag_mqtt_3_3_1_12() {
    let mut net = Net::new();
    let mut sub = net.connect("sub", V5);
    let options = SubscriptionOptions {
        retain_as_published: true,
        ..qos(QoS::AtMostOnce)
    };
    net.subscribe(&mut sub, "t", options);
    let mut publisher = net.connect("pub", V5);
    net.publish(&mut publisher, "t", b"m", QoS::AtMostOnce, true);
    assert!(net.received(&mut sub)[0].retain);
}

#[test]
fn retained_messages_expire_mqtt_3_3_2_5() {
    let mut net = Net::new();
    let mut publisher = net.connect("pub", V5);
    net.publish_with(
        &mut publisher,
        "short/lived",
        b"x",
        QoS::AtMostOnce,
        true,
        Properties {
            message_expiry_interval: Some(5),
            ..Properties::default()
        },
    );
    net.advance(Duration::from_secs(6));
    let mut sub = net.connect("sub", V5);
    net.subscribe(&mut sub, "short/#", qos(QoS::AtMostOnce));
    assert!(net.received(&mut sub).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Wills

fn with_will(delay: u32, expiry: u32) -> impl FnOnce(&mut Connect<'_>) {
    move |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(expiry);
        c.will = Some(Will {
            topic: "wills/c",
            payload: b"gone",
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(delay),
                ..Properties::default()
            },
        });
    }
}

#[test]
fn will_on_abnormal_close_not_after_normal_disconnect_mqtt_3_1_2_8_and_3_14_4_3() {
    let mut net = Net::new();
    let mut watcher = net.connect("watcher", V5);
    net.subscribe(&mut watcher, "wills/#", qos(QoS::AtLeastOnce));

    let (mut c, _) = net.connect_with("c", V5, with_will(0, 0));
    net.disconnect(&mut c, ReasonCode::Success);
    assert!(
        net.received(&mut watcher).is_empty(),
        "normal DISCONNECT discards the will"
    );

    let (mut c, _) = net.connect_with("c", V5, with_will(0, 0));
    net.drop_connection(&mut c);
    assert_eq!(topics(&net.received(&mut watcher)), ["wills/c"]);

    let (mut c, _) = net.connect_with("c", V5, with_will(0, 0));
    net.disconnect(&mut c, ReasonCode::DisconnectWithWillMessage);
    assert_eq!(
        topics(&net.received(&mut watcher)),
        ["wills/c"],
        "0x04 asks for it"
    );
    assert_eq!(net.broker.stats().wills_published, 2);
}

#[test]
fn will_delay_is_suppressed_when_the_session_resumes_mqtt_3_1_3_9() {
    let mut net = Net::new();
    let mut watcher = net.connect("watcher", V5);
    net.subscribe(&mut watcher, "wills/#", qos(QoS::AtLeastOnce));
    let (mut c, _) = net.connect_with("c", V5, with_will(30, 300));
    net.drop_connection(&mut c);
    net.advance(Duration::from_secs(10));
    assert!(
        net.received(&mut watcher).is_empty(),
        "still within the delay"
    );
    let (_c, _) = net.connect_with("c", V5, with_will(30, 300));
    net.advance(Duration::from_secs(60));
    assert!(
        net.received(&mut watcher).is_empty(),
        "the reconnect cancelled it"
    );
}

#[test]
fn delayed_will_goes_after_its_delay_or_at_session_end_mqtt_3_1_3_9() {
    let mut net = Net::new();
    let mut watcher = net.connect("watcher", V5);
    net.subscribe(&mut watcher, "wills/#", qos(QoS::AtLeastOnce));
    let (mut c, _) = net.connect_with("c", V5, with_will(30, 300));
    net.drop_connection(&mut c);
    net.advance(Duration::from_secs(31));
    assert_eq!(net.received(&mut watcher).len(), 1, "after the delay");

    // The session ends (expiry 10 s) before the will delay (30 s).
    let (mut c, _) = net.connect_with("d", V5, |conn| {
        with_will(30, 10)(conn);
        conn.client_id = "d";
    });
    net.drop_connection(&mut c);
    net.advance(Duration::from_secs(11));
    assert_eq!(net.received(&mut watcher).len(), 1, "at session end");
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[test]
fn takeover_closes_the_old_connection_with_0x8e_mqtt_3_1_4_3() {
    let mut net = Net::new();
    let (mut first, _) = net.connect_with("same", V5, |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
    });
    net.subscribe(&mut first, "t", qos(QoS::AtLeastOnce));
    let (mut second, connack) = net.connect_with("same", V5, |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
    });
    let Packet::ConnAck(ack) = decode(V5, &connack) else {
        panic!("not a CONNACK");
    };
    assert!(
        ack.session_present,
        "the session moved to the new connection"
    );
    let frames = net.frames(&mut first);
    let Packet::Disconnect(d) = decode(V5, &frames[0]) else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::SessionTakenOver);
    // The subscription came along.
    net.broker.publish(net.now, Message::new("t", &b"m"[..]));
    assert_eq!(net.received(&mut second).len(), 1);
    assert_eq!(net.broker.session_count(), 1);
}

#[test]
fn persistent_session_queues_while_offline_and_expires_mqtt_4_1_0_1() {
    let mut net = Net::new();
    let persistent = |c: &mut Connect<'_>| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(100);
    };
    let (mut sub, _) = net.connect_with("sub", V5, persistent);
    net.subscribe(&mut sub, "q", qos(QoS::AtLeastOnce));
    net.drop_connection(&mut sub);
    let mut publisher = net.connect("pub", V5);
    net.publish(&mut publisher, "q", b"1", QoS::AtLeastOnce, false);
    net.publish(&mut publisher, "q", b"0", QoS::AtMostOnce, false);
    net.publish(&mut publisher, "q", b"2", QoS::AtLeastOnce, false);
    let (mut sub, connack) = net.connect_with("sub", V5, persistent);
    let Packet::ConnAck(ack) = decode(V5, &connack) else {
        panic!("not a CONNACK");
    };
    assert!(ack.session_present);
    let got = net.received(&mut sub);
    let payloads: Vec<&[u8]> = got.iter().map(|g| g.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        [&b"1"[..], b"2"],
        "QoS 1 queued in order; QoS 0 not by default"
    );
    net.drop_connection(&mut sub);
    net.advance(Duration::from_secs(101));
    assert_eq!(net.broker.session_count(), 1, "only the publisher's");
    let (_sub, connack) = net.connect_with("sub", V5, persistent);
    let Packet::ConnAck(ack) = decode(V5, &connack) else {
        panic!("not a CONNACK");
    };
    assert!(!ack.session_present, "expired");
}

#[test]
fn offline_queue_is_bounded_and_counts_drops() {
    let server = ServerConfig {
        queue: QueueLimits {
            max_messages: 3,
            ..QueueLimits::default()
        },
        ..ServerConfig::default()
    };
    let config = BrokerConfig {
        server: Arc::new(server),
        ..BrokerConfig::default()
    };
    let mut net = Net::with(
        config,
        Box::new(petrel_state::broker::AllowAll),
        Box::new(NoStorage),
    );
    let (mut sub, _) = net.connect_with("sub", V5, |c| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(100);
    });
    net.subscribe(&mut sub, "q", qos(QoS::AtLeastOnce));
    net.drop_connection(&mut sub);
    for n in 0..5u8 {
        net.broker.publish(net.now, {
            let mut m = Message::new("q", vec![n]);
            m.qos = QoS::AtLeastOnce;
            m
        });
    }
    assert_eq!(net.broker.stats().deliveries_dropped, 2);
    let record = net.broker.session_record("sub").unwrap();
    assert_eq!(record.session.queue.len(), 3);
    assert_eq!(record.session.dropped.queue_full, 2);
}

#[test]
fn v311_clean_session_ends_with_the_connection_mqtt_3_1_2_6() {
    let mut net = Net::new();
    let mut c = net.connect("c", V311);
    net.subscribe(&mut c, "t", qos(QoS::AtLeastOnce));
    net.drop_connection(&mut c);
    assert_eq!(net.broker.session_count(), 0);
    assert_eq!(net.broker.subscription_count(), 0);
}

#[test]
fn unsubscribe_stops_delivery_mqtt_3_10_4_1() {
    let mut net = Net::new();
    let mut c = net.connect("c", V5);
    net.subscribe(&mut c, "t", qos(QoS::AtMostOnce));
    net.send(
        &c,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(50),
            properties: Properties::default(),
            filters: List::new(&["t", "never"]),
        }),
    );
    let frames = net.frames(&mut c);
    let Packet::UnsubAck(ack) = decode(V5, &frames[0]) else {
        panic!("not an UNSUBACK");
    };
    let codes: Vec<_> = ack.reason_codes.iter().collect();
    assert_eq!(
        codes,
        [ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
    );
    net.broker.publish(net.now, Message::new("t", &b"m"[..]));
    assert!(net.received(&mut c).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Shared subscriptions

#[test]
fn shared_group_gives_each_message_to_one_member_mqtt_4_8_2_2() {
    let mut net = Net::new();
    let mut a = net.connect("a", V5);
    let mut b = net.connect("b", V5);
    net.subscribe(&mut a, "$share/workers/jobs/#", qos(QoS::AtLeastOnce));
    net.subscribe(&mut b, "$share/workers/jobs/#", qos(QoS::AtLeastOnce));
    for n in 0..10u8 {
        net.broker.publish(net.now, {
            let mut m = Message::new("jobs/x", vec![n]);
            m.qos = QoS::AtLeastOnce;
            m
        });
    }
    let got_a = net.received(&mut a);
    let got_b = net.received(&mut b);
    assert_eq!(got_a.len() + got_b.len(), 10, "each message once");
    assert_eq!(got_a.len(), 5, "round robin");
}

#[test]
fn a_leaving_members_unacknowledged_qos1_goes_to_another_mqtt_4_8_2_5() {
    let mut net = Net::new();
    let mut a = net.connect("a", V5);
    let mut b = net.connect("b", V5);
    net.subscribe(&mut a, "$share/g/jobs", qos(QoS::AtLeastOnce));
    net.subscribe(&mut b, "$share/g/jobs", qos(QoS::AtLeastOnce));
    net.broker.publish(net.now, {
        let mut m = Message::new("jobs", &b"job-1"[..]);
        m.qos = QoS::AtLeastOnce;
        m
    });
    // Whoever got it leaves without acknowledging.
    let a_frames = net.frames(&mut a);
    let (mut leaver, mut stayer) = if a_frames.is_empty() { (b, a) } else { (a, b) };
    net.frames(&mut leaver);
    net.drop_connection(&mut leaver);
    let got = net.received(&mut stayer);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"job-1");
}

// ---------------------------------------------------------------------------------------------
// Hooks

/// Denies publishing under `secret/`, rewrites `in/…` to `out/…`, denies subscribing to
/// `admin/#`, and records what it observed.
#[derive(Default)]
struct TestHooks {
    seen: Rc<RefCell<Vec<String>>>,
}

impl Hooks for TestHooks {
    fn authorize_publish(&mut self, client: &ClientInfo<'_>, message: &mut Message) -> Verdict {
        self.seen
            .borrow_mut()
            .push(format!("publish {} {}", client.client_id, message.topic));
        if message.topic.starts_with("secret/") {
            return Verdict::Deny(ReasonCode::NotAuthorized);
        }
        if let Some(rest) = message.topic.strip_prefix("in/") {
            message.topic = Arc::from(format!("out/{rest}").as_str());
        }
        Verdict::Allow
    }

    fn authorize_subscribe(
        &mut self,
        _client: &ClientInfo<'_>,
        filter: &mut String,
        _options: &mut SubscriptionOptions,
    ) -> Verdict {
        if filter.starts_with("admin/") {
            Verdict::Deny(ReasonCode::NotAuthorized)
        } else {
            Verdict::Allow
        }
    }

    fn on_disconnected(
        &mut self,
        client: &ClientInfo<'_>,
        _info: &petrel_state::server::CloseInfo,
    ) {
        self.seen
            .borrow_mut()
            .push(format!("disconnected {}", client.client_id));
    }
}

#[test]
fn hooks_authorize_and_rewrite() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let hooks = TestHooks { seen: seen.clone() };
    let mut net = Net::with(
        BrokerConfig::default(),
        Box::new(hooks),
        Box::new(NoStorage),
    );
    let mut sub = net.connect("sub", V5);
    net.subscribe(&mut sub, "out/#", qos(QoS::AtMostOnce));
    assert_eq!(
        net.subscribe(&mut sub, "admin/#", qos(QoS::AtMostOnce)),
        ReasonCode::NotAuthorized
    );
    let mut v5 = net.connect("v5", V5);
    assert_eq!(
        net.publish(&mut v5, "secret/x", b"no", QoS::AtLeastOnce, false),
        Some(ReasonCode::NotAuthorized)
    );
    // 3.1.1 cannot say no: acknowledged and dropped.
    let mut v3 = net.connect("v3", V311);
    assert_eq!(
        net.publish(&mut v3, "secret/x", b"no", QoS::AtLeastOnce, false),
        Some(ReasonCode::Success)
    );
    net.publish(&mut v5, "in/data", b"yes", QoS::AtMostOnce, false);
    assert_eq!(topics(&net.received(&mut sub)), ["out/data"]);
    net.drop_connection(&mut v3);
    let seen = seen.borrow();
    assert!(seen.contains(&"publish v5 secret/x".to_string()));
    assert!(seen.contains(&"disconnected v3".to_string()));
}

// ---------------------------------------------------------------------------------------------
// Storage

#[test]
fn a_restart_from_the_store_keeps_sessions_subscriptions_queues_and_retained() {
    let store = Rc::new(RefCell::new(MemoryStorage::new()));
    let mut net = Net::with(
        BrokerConfig::default(),
        Box::new(petrel_state::broker::AllowAll),
        Box::new(SharedStore(store.clone())),
    );
    let persistent = |c: &mut Connect<'_>| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
    };
    let (mut sub, _) = net.connect_with("sub", V5, persistent);
    net.subscribe(&mut sub, "q/#", qos(QoS::ExactlyOnce));
    net.drop_connection(&mut sub);
    let mut publisher = net.connect("pub", V5);
    net.publish(&mut publisher, "q/1", b"kept", QoS::ExactlyOnce, false);
    net.publish(&mut publisher, "q/retained", b"r", QoS::AtLeastOnce, true);

    // Restart.
    let state: StoredState = store.borrow().load();
    assert_eq!(state.sessions.len(), 1);
    let mut net = Net::with(
        BrokerConfig::default(),
        Box::new(petrel_state::broker::AllowAll),
        Box::new(SharedStore(store.clone())),
    );
    net.broker.restore(net.now, state);
    let (mut sub, connack) = net.connect_with("sub", V5, persistent);
    let Packet::ConnAck(ack) = decode(V5, &connack) else {
        panic!("not a CONNACK");
    };
    assert!(ack.session_present);
    let got = net.received(&mut sub);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].payload, b"kept");
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    assert_eq!(net.broker.retained_count(), 1);
}

/// A store shared with the test, so it outlives a broker.
struct SharedStore(Rc<RefCell<MemoryStorage>>);

impl Storage for SharedStore {
    fn save_session(&mut self, session: SessionView<'_>) {
        self.0.borrow_mut().save_session(session)
    }
    fn delete_session(&mut self, client_id: &str) {
        self.0.borrow_mut().delete_session(client_id)
    }
    fn set_retained(&mut self, topic: &str, message: Option<&Arc<Message>>) {
        self.0.borrow_mut().set_retained(topic, message)
    }
    fn commit(&mut self) -> Durability {
        self.0.borrow_mut().commit()
    }
}

/// A store that makes every batch durable only when the test says so; `issued` is the last
/// token it handed out.
#[derive(Default)]
struct SlowStore {
    issued: Rc<Cell<u64>>,
}

impl Storage for SlowStore {
    fn save_session(&mut self, _session: SessionView<'_>) {}
    fn delete_session(&mut self, _client_id: &str) {}
    fn set_retained(&mut self, _topic: &str, _message: Option<&Arc<Message>>) {}
    fn commit(&mut self) -> Durability {
        self.issued.set(self.issued.get() + 1);
        Durability::Pending(self.issued.get())
    }
}

/// A broker over a [`SlowStore`] whose connections get `max_inflight` messages in flight,
/// and the store's last token.
fn slow_net(max_inflight: u16) -> (Net, Rc<Cell<u64>>) {
    slow_net_with(ServerConfig {
        max_inflight,
        ..ServerConfig::default()
    })
}

fn slow_net_with(server: ServerConfig) -> (Net, Rc<Cell<u64>>) {
    let store = SlowStore::default();
    let issued = store.issued.clone();
    let config = BrokerConfig {
        server: Arc::new(server),
        ..BrokerConfig::default()
    };
    let net = Net::with(
        config,
        Box::new(petrel_state::broker::AllowAll),
        Box::new(store),
    );
    (net, issued)
}

impl Net {
    /// Every batch the store has handed out so far is durable.
    fn commit_all(&mut self, issued: &Cell<u64>) {
        for token in 1..=issued.get() {
            self.broker.storage_committed(self.now, token);
        }
    }

    /// A connected peer, its CONNACK released by the store and taken.
    fn connect_durably(&mut self, client_id: &str, issued: &Cell<u64>) -> Peer {
        self.resume_durably(client_id, issued).0
    }

    /// [`Net::connect_durably`], with the frames that came after the CONNACK.
    fn resume_durably(&mut self, client_id: &str, issued: &Cell<u64>) -> (Peer, Vec<Bytes>) {
        let id = self.broker.open(self.now, None);
        let mut peer = Peer {
            id,
            version: V311,
            inbox: BytesMut::new(),
            next_id: 1,
        };
        self.send(
            &peer,
            Packet::Connect(Connect {
                protocol_version: V311,
                clean_start: false,
                keep_alive: 0,
                properties: Properties::default(),
                client_id,
                will: None,
                username: None,
                password: None,
            }),
        );
        self.commit_all(issued);
        let mut frames = self.frames(&mut peer);
        assert!(matches!(
            decode(V311, &frames.remove(0)),
            Packet::ConnAck(_)
        ));
        (peer, frames)
    }

    /// Subscribes `peer` to `filter`, the SUBACK released by the store and taken.
    fn subscribe_durably(&mut self, peer: &mut Peer, filter: &str, q: QoS, issued: &Cell<u64>) {
        let filters = [SubscribeFilter {
            filter,
            options: qos(q),
        }];
        self.send(
            peer,
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties: Properties::default(),
                filters: List::new(&filters),
            }),
        );
        self.commit_all(issued);
        let frames = self.frames(peer);
        assert!(matches!(decode(V311, &frames[0]), Packet::SubAck(_)));
    }

    /// Sends a PUBLISH from `peer` with packet identifier `id`.
    fn send_publish(&mut self, peer: &Peer, id: u16, payload: &[u8], q: QoS) {
        self.send(
            peer,
            Packet::Publish(Publish {
                qos: q,
                topic: "t",
                packet_id: (q != QoS::AtMostOnce).then(|| pid(id)),
                payload,
                ..Publish::default()
            }),
        );
    }
}

/// The PUBLISH payloads among `frames`, with their packet identifiers.
fn publishes(frames: &[Bytes]) -> Vec<(Vec<u8>, u16)> {
    frames
        .iter()
        .filter_map(|f| match decode(V311, f) {
            Packet::Publish(p) => Some((p.payload.to_vec(), p.packet_id.map_or(0, |i| i.get()))),
            _ => None,
        })
        .collect()
}

#[test]
fn a_qos1_delivery_and_the_window_refill_leave_before_the_store_has_them() {
    let (mut net, issued) = slow_net(1);
    let mut sub = net.connect_durably("sub", &issued);
    net.subscribe_durably(&mut sub, "t", QoS::AtLeastOnce, &issued);
    let mut publisher = net.connect_durably("pub", &issued);
    net.send_publish(&publisher, 1, b"one", QoS::AtLeastOnce);
    net.send_publish(&publisher, 2, b"two", QoS::AtLeastOnce);
    let got = net.frames(&mut sub);
    assert_eq!(
        publishes(&got),
        [(b"one".to_vec(), 1)],
        "a QoS 1 delivery does not wait for the batch that stores it; the second waits \
         behind the window of one"
    );
    assert!(
        net.frames(&mut publisher).is_empty(),
        "the publisher's PUBACKs wait for the store"
    );
    net.send(&sub, Packet::PubAck(PubResponse::new(pid(1))));
    assert_eq!(
        publishes(&net.frames(&mut sub)),
        [(b"two".to_vec(), 2)],
        "the PUBACK refills the window at once, not after its batch commits"
    );
    net.commit_all(&issued);
    let acks = net.frames(&mut publisher);
    assert_eq!(acks.len(), 2);
    assert!(acks
        .iter()
        .all(|f| matches!(decode(V311, f), Packet::PubAck(_))));
}

#[test]
fn a_qos0_message_taken_from_the_queue_waits_until_the_store_no_longer_holds_it_there() {
    let (mut net, issued) = slow_net_with(ServerConfig {
        max_inflight: 1,
        queue: QueueLimits {
            queue_qos0_offline: true,
            ..QueueLimits::default()
        },
        ..ServerConfig::default()
    });
    let mut sub = net.connect_durably("sub", &issued);
    net.subscribe_durably(&mut sub, "t", QoS::AtLeastOnce, &issued);
    net.drop_connection(&mut sub);
    let publisher = net.connect_durably("pub", &issued);
    net.send_publish(&publisher, 1, b"a", QoS::AtLeastOnce);
    net.send_publish(&publisher, 2, b"b", QoS::AtLeastOnce);
    net.send_publish(&publisher, 0, b"z", QoS::AtMostOnce);
    net.commit_all(&issued);
    let (mut sub, after_connack) = net.resume_durably("sub", &issued);
    let a = publishes(&after_connack);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, b"a");
    net.send(&sub, Packet::PubAck(PubResponse::new(pid(a[0].1))));
    let b = publishes(&net.frames(&mut sub));
    assert_eq!(b.len(), 1, "a QoS 1 refill goes at once");
    assert_eq!(b[0].0, b"b");
    net.send(&sub, Packet::PubAck(PubResponse::new(pid(b[0].1))));
    assert!(
        net.frames(&mut sub).is_empty(),
        "a QoS 0 message the store still holds as queued is not sent yet"
    );
    net.commit_all(&issued);
    assert_eq!(publishes(&net.frames(&mut sub)), [(b"z".to_vec(), 0)]);
}

#[test]
fn a_qos2_delivery_and_its_pubrel_wait_for_the_store() {
    let (mut net, issued) = slow_net(100);
    let mut sub = net.connect_durably("sub", &issued);
    net.subscribe_durably(&mut sub, "t", QoS::ExactlyOnce, &issued);
    let mut publisher = net.connect_durably("pub", &issued);
    net.send_publish(&publisher, 1, b"once", QoS::ExactlyOnce);
    assert!(
        net.frames(&mut sub).is_empty(),
        "a QoS 2 PUBLISH waits until the store knows its packet identifier"
    );
    assert!(
        net.frames(&mut publisher).is_empty(),
        "and so does the PUBREC"
    );
    net.commit_all(&issued);
    assert_eq!(publishes(&net.frames(&mut sub)), [(b"once".to_vec(), 1)]);
    assert!(matches!(
        decode(V311, &net.frames(&mut publisher)[0]),
        Packet::PubRec(_)
    ));
    net.send(&sub, Packet::PubRec(PubResponse::new(pid(1))));
    assert!(
        net.frames(&mut sub).is_empty(),
        "PUBREL waits until the store knows the PUBREC came"
    );
    net.commit_all(&issued);
    assert!(matches!(
        decode(V311, &net.frames(&mut sub)[0]),
        Packet::PubRel(_)
    ));
}

#[test]
fn acknowledgements_wait_for_the_store() {
    let mut net = Net::with(
        BrokerConfig::default(),
        Box::new(petrel_state::broker::AllowAll),
        Box::new(SlowStore::default()),
    );
    let id = net.broker.open(net.now, None);
    let mut peer = Peer {
        id,
        version: V5,
        inbox: BytesMut::new(),
        next_id: 1,
    };
    net.send(
        &peer,
        Packet::Connect(Connect {
            protocol_version: V5,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id: "c",
            will: None,
            username: None,
            password: None,
        }),
    );
    assert!(
        net.frames(&mut peer).is_empty(),
        "CONNACK waits for batch 1"
    );
    net.broker.storage_committed(net.now, 1);
    assert_eq!(net.frames(&mut peer).len(), 1);
    net.send(
        &peer,
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "t",
            packet_id: Some(pid(1)),
            payload: b"m",
            ..Publish::default()
        }),
    );
    assert!(
        net.frames(&mut peer).is_empty(),
        "no PUBACK before the store has it"
    );
    net.broker.storage_committed(net.now, 2);
    let frames = net.frames(&mut peer);
    assert!(matches!(decode(V5, &frames[0]), Packet::PubAck(_)));
}

// ---------------------------------------------------------------------------------------------
// Shards

#[test]
fn two_shards_route_between_each_other() {
    let shard = |index| {
        Broker::new(
            BrokerConfig {
                shard_index: index,
                shard_count: 2,
                ..BrokerConfig::default()
            },
            Box::new(petrel_state::broker::AllowAll),
            Box::new(NoStorage),
        )
    };
    // Client ids that hash to each shard.
    let on = |s: u16| {
        (0..)
            .map(|n| format!("client-{n}"))
            .find(|id| petrel_state::broker::owner_shard(id, 2) == s)
            .unwrap()
    };
    let mut nets = [
        Net {
            broker: shard(0),
            now: Instant::ZERO,
        },
        Net {
            broker: shard(1),
            now: Instant::ZERO,
        },
    ];
    let pump = |nets: &mut [Net; 2]| loop {
        let mut moved: Vec<(u16, ShardMessage)> = Vec::new();
        for net in nets.iter_mut() {
            while let Some(m) = net.broker.poll_shard_message() {
                moved.push(m);
            }
        }
        if moved.is_empty() {
            break;
        }
        for (target, message) in moved {
            let net = &mut nets[usize::from(target)];
            net.broker.handle_shard_message(net.now, message);
        }
    };
    let sub_id = on(1);
    let pub_id = on(0);
    let mut sub = nets[1].connect(&sub_id, V5);
    nets[1].subscribe(&mut sub, "x/#", qos(QoS::AtLeastOnce));
    let mut member = nets[1].connect(&on(1).replace("client", "member"), V5);
    let _ = &mut member;
    pump(&mut nets);
    let mut publisher = nets[0].connect(&pub_id, V5);
    assert_eq!(
        nets[0].publish(&mut publisher, "x/y", b"across", QoS::AtLeastOnce, true),
        Some(ReasonCode::Success),
        "another shard is interested"
    );
    pump(&mut nets);
    let got = nets[1].received(&mut sub);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"across");
    assert_eq!(nets[1].broker.retained_count(), 1, "retained replicated");
}

#[test]
fn a_shard_takes_a_batch_of_handovers_as_one_input() {
    let shard = |index| Net {
        broker: Broker::new(
            BrokerConfig {
                shard_index: index,
                shard_count: 2,
                ..BrokerConfig::default()
            },
            Box::new(petrel_state::broker::AllowAll),
            Box::new(NoStorage),
        ),
        now: Instant::ZERO,
    };
    let on = |s: u16, prefix: &str| {
        (0..)
            .map(|n| format!("{prefix}-{n}"))
            .find(|id| petrel_state::broker::owner_shard(id, 2) == s)
            .unwrap()
    };
    let mut nets = [shard(0), shard(1)];
    // Subscribers of both versions and every QoS on shard 1; each one's messages are encoded
    // once per distinct encoding and shared.
    let mut subs = Vec::new();
    for (n, (version, granted)) in [
        (V311, QoS::AtMostOnce),
        (V5, QoS::AtMostOnce),
        (V311, QoS::AtLeastOnce),
        (V5, QoS::ExactlyOnce),
        (V5, QoS::ExactlyOnce),
    ]
    .into_iter()
    .enumerate()
    {
        let mut sub = nets[1].connect(&on(1, &format!("sub{n}")), version);
        nets[1].subscribe(&mut sub, "batch/#", qos(granted));
        subs.push((sub, granted));
    }
    let interest: Vec<_> = std::iter::from_fn(|| nets[1].broker.poll_shard_message()).collect();
    nets[0]
        .broker
        .handle_shard_messages(Instant::ZERO, interest.into_iter().map(|(_, m)| m));
    let mut publisher = nets[0].connect(&on(0, "pub"), V5);
    for n in 0..5u8 {
        nets[0].publish(&mut publisher, "batch/x", &[n], QoS::ExactlyOnce, false);
    }
    let batch: Vec<ShardMessage> = std::iter::from_fn(|| nets[0].broker.poll_shard_message())
        .map(|(target, message)| {
            assert_eq!(target, 1);
            message
        })
        .collect();
    assert_eq!(batch.len(), 5);
    // What connecting and subscribing made ready was taken directly; forget it.
    while nets[1].broker.poll_ready().is_some() {}
    nets[1].broker.handle_shard_messages(Instant::ZERO, batch);
    // One input: every subscriber is ready once, with all five messages.
    let mut ready = Vec::new();
    while let Some(id) = nets[1].broker.poll_ready() {
        ready.push(id);
    }
    assert_eq!(ready.len(), subs.len());
    for (sub, granted) in &mut subs {
        let got = nets[1].received(sub);
        let payloads: Vec<_> = got.iter().map(|g| g.payload.clone()).collect();
        assert_eq!(payloads, [[0], [1], [2], [3], [4]]);
        assert!(got
            .iter()
            .all(|g| g.qos == *granted && g.topic == "batch/x"));
        let ids: Vec<_> = got.iter().map(|g| g.packet_id).collect();
        if *granted == QoS::AtMostOnce {
            assert!(ids.iter().all(Option::is_none));
        } else {
            // Each delivery has its own identifier, though the bytes around it are shared.
            let mut distinct = ids.clone();
            distinct.dedup();
            assert_eq!(distinct.len(), 5, "{ids:?}");
        }
    }
}

/// Records, per input, the shards its acknowledgements waited for.
#[derive(Default)]
struct ForwardLog(Rc<RefCell<Vec<Vec<u16>>>>);

impl Storage for ForwardLog {
    fn save_session(&mut self, _session: SessionView<'_>) {}
    fn delete_session(&mut self, _client_id: &str) {}
    fn set_retained(&mut self, _topic: &str, _message: Option<&Arc<Message>>) {}
    fn commit(&mut self) -> Durability {
        self.commit_forwarding(&[])
    }
    fn commit_forwarding(&mut self, forwarded: &[u16]) -> Durability {
        self.0.borrow_mut().push(forwarded.to_vec());
        Durability::Durable
    }
}

/// A QoS 1/2 message forwarded to another shard makes the publisher's acknowledgement wait
/// for that shard's store only when a session its store keeps (or a shared group) matches
/// there: a shard whose matching subscribers keep no session stores nothing of it.
#[test]
fn a_forwarded_publish_waits_only_for_a_shard_that_may_store_it() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let shard = |index, storage: Box<dyn Storage>| Net {
        broker: Broker::new(
            BrokerConfig {
                shard_index: index,
                shard_count: 2,
                ..BrokerConfig::default()
            },
            Box::new(petrel_state::broker::AllowAll),
            storage,
        ),
        now: Instant::ZERO,
    };
    let on = |s: u16, prefix: &str| {
        (0..)
            .map(|n| format!("{prefix}-{n}"))
            .find(|id| petrel_state::broker::owner_shard(id, 2) == s)
            .unwrap()
    };
    let mut nets = [
        shard(0, Box::new(ForwardLog(log.clone()))),
        shard(1, Box::new(MemoryStorage::new())),
    ];
    let pump = |nets: &mut [Net; 2]| loop {
        let moved: Vec<(u16, ShardMessage)> = nets
            .iter_mut()
            .flat_map(|net| {
                std::iter::from_fn(|| net.broker.poll_shard_message()).collect::<Vec<_>>()
            })
            .collect();
        if moved.is_empty() {
            break;
        }
        for (target, message) in moved {
            let net = &mut nets[usize::from(target)];
            net.broker.handle_shard_message(net.now, message);
        }
    };
    let mut publisher = nets[0].connect(&on(0, "pub"), V311);
    // Publishes a QoS 1 message on shard 0 and hands what it forwarded to shard 1: which
    // shards the acknowledgement waited for.
    let publish = |nets: &mut [Net; 2], publisher: &mut Peer, topic: &str| {
        log.borrow_mut().clear();
        let reason = nets[0].publish(publisher, topic, b"m", QoS::AtLeastOnce, false);
        assert_eq!(reason, Some(ReasonCode::Success));
        let forwarded: Vec<(u16, ShardMessage)> =
            std::iter::from_fn(|| nets[0].broker.poll_shard_message()).collect();
        let awaited: Vec<u16> = forwarded
            .iter()
            .filter(|(_, m)| m.awaits_durability())
            .map(|&(target, _)| target)
            .collect();
        assert_eq!(log.borrow().last().cloned().unwrap_or_default(), awaited);
        for (_, message) in forwarded {
            nets[1].broker.handle_shard_message(nets[1].now, message);
        }
        awaited
    };

    // A subscriber that keeps no session: nothing is stored on shard 1.
    let mut volatile = nets[1].connect(&on(1, "volatile"), V311);
    nets[1].subscribe(&mut volatile, "f/#", qos(QoS::AtLeastOnce));
    pump(&mut nets);
    assert_eq!(publish(&mut nets, &mut publisher, "f/x"), Vec::<u16>::new());
    assert_eq!(
        nets[1].received(&mut volatile).len(),
        1,
        "delivered all the same"
    );

    // A session the store keeps subscribes to an overlapping filter: from now on shard 1
    // may store the message, and the acknowledgement waits for it.
    let kept_id = on(1, "kept");
    let keep = |c: &mut Connect<'_>| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(300);
    };
    let (mut kept, _) = nets[1].connect_with(&kept_id, V5, keep);
    nets[1].subscribe(&mut kept, "f/x", qos(QoS::AtLeastOnce));
    pump(&mut nets);
    assert_eq!(publish(&mut nets, &mut publisher, "f/x"), vec![1]);
    assert_eq!(
        publish(&mut nets, &mut publisher, "f/y"),
        Vec::<u16>::new(),
        "only the volatile subscriber's filter matches f/y"
    );
    // Offline, the session still keeps what comes.
    nets[1].disconnect(&mut kept, ReasonCode::Success);
    assert_eq!(publish(&mut nets, &mut publisher, "f/x"), vec![1]);
    // Resumed with expiry 0, it ends with its connection: nothing kept any more.
    let (mut resumed, _) = nets[1].connect_with(&kept_id, V5, |c| c.clean_start = false);
    pump(&mut nets);
    assert_eq!(publish(&mut nets, &mut publisher, "f/x"), Vec::<u16>::new());
    assert_eq!(
        nets[1].received(&mut resumed).len(),
        3,
        "the one in flight at the disconnect, the one queued, the new one"
    );

    // A shared group's owner hands messages to members anywhere: always waited for.
    let mut member = nets[1].connect(&on(1, "member"), V311);
    nets[1].subscribe(&mut member, "$share/g/s/#", qos(QoS::AtLeastOnce));
    pump(&mut nets);
    assert_eq!(publish(&mut nets, &mut publisher, "s/1"), vec![1]);
    pump(&mut nets);
    assert_eq!(nets[1].received(&mut member).len(), 1);
}

/// Two shards, each with a store of its own (as the runtime's per-shard batches), and a
/// pump that carries what they send each other until both are quiet.
fn two_shards_with_stores() -> ([Net; 2], [Rc<RefCell<MemoryStorage>>; 2]) {
    let stores = [
        Rc::new(RefCell::new(MemoryStorage::new())),
        Rc::new(RefCell::new(MemoryStorage::new())),
    ];
    let shard = |index: u16| Net {
        broker: Broker::new(
            BrokerConfig {
                shard_index: index,
                shard_count: 2,
                ..BrokerConfig::default()
            },
            Box::new(petrel_state::broker::AllowAll),
            Box::new(SharedStore(stores[usize::from(index)].clone())),
        ),
        now: Instant::ZERO,
    };
    ([shard(0), shard(1)], stores)
}

fn pump(nets: &mut [Net; 2]) -> Vec<(u16, ShardMessage)> {
    let mut carried = Vec::new();
    loop {
        let mut moved: Vec<(u16, ShardMessage)> = Vec::new();
        for net in nets.iter_mut() {
            while let Some(m) = net.broker.poll_shard_message() {
                moved.push(m);
            }
        }
        if moved.is_empty() {
            return carried;
        }
        for (target, message) in moved {
            let net = &mut nets[usize::from(target)];
            net.broker.handle_shard_message(net.now, message.clone());
            carried.push((target, message));
        }
    }
}

/// A client identifier (with `prefix`) whose session lives on shard `s` of two.
fn on_shard(s: u16, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| petrel_state::broker::owner_shard(id, 2) == s)
        .unwrap()
}

/// The retained message a new subscriber on `net` gets for `topic`.
fn retained_on(net: &mut Net, topic: &str) -> Vec<Vec<u8>> {
    let mut peer = net.connect(&format!("look-{}", net.broker.connection_count()), V5);
    net.subscribe(&mut peer, topic, qos(QoS::AtMostOnce));
    net.received(&mut peer)
        .into_iter()
        .map(|g| g.payload)
        .collect()
}

#[test]
fn a_topic_set_on_two_shards_at_once_ends_the_same_everywhere_and_in_the_store() {
    for topic in ["race/a", "race/b", "race/c", "race/d"] {
        let (mut nets, stores) = two_shards_with_stores();
        let mut one = nets[0].connect(&on_shard(0, "one"), V5);
        let mut two = nets[1].connect(&on_shard(1, "two"), V5);
        // Both shards take a retained publish for the topic before either hears of the
        // other's: the two copies cross between the shards.
        nets[0].publish(&mut one, topic, b"from 0", QoS::AtLeastOnce, true);
        nets[1].publish(&mut two, topic, b"from 1", QoS::AtLeastOnce, true);
        pump(&mut nets);
        let seen: Vec<_> = nets.iter_mut().map(|n| retained_on(n, topic)).collect();
        assert_eq!(seen[0].len(), 1, "{topic}: {seen:?}");
        assert_eq!(seen[0], seen[1], "{topic}: the shards disagree");
        // Only the topic's owner writes it, so the store holds the order the shards saw.
        let owner = usize::from(petrel_state::broker::owner_shard(topic, 2));
        let stored: Vec<_> = stores
            .iter()
            .map(|s| {
                s.borrow()
                    .load()
                    .retained
                    .iter()
                    .map(|m| m.payload.to_vec())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(stored[owner], seen[0], "{topic}: the store disagrees");
        assert!(stored[1 - owner].is_empty(), "{topic}: {stored:?}");
    }
}

#[test]
fn a_retained_message_of_an_acknowledged_publish_is_awaited_on_every_shard() {
    let (mut nets, _) = two_shards_with_stores();
    // A topic the other shard owns: the message goes there, and its copy comes back.
    let topic = (0..)
        .map(|n| format!("owned/{n}"))
        .find(|t| petrel_state::broker::owner_shard(t, 2) == 1)
        .unwrap();
    let mut publisher = nets[0].connect(&on_shard(0, "pub"), V5);
    nets[0].publish(&mut publisher, &topic, b"v", QoS::AtLeastOnce, true);
    assert_eq!(
        retained_on(&mut nets[0], &topic),
        Vec::<Vec<u8>>::new(),
        "not set here before its owner has it"
    );
    let retained = |carried: Vec<(u16, ShardMessage)>| -> Vec<(u16, bool)> {
        carried
            .into_iter()
            .filter(|(_, m)| {
                matches!(
                    m,
                    ShardMessage::SetRetained { .. } | ShardMessage::Retained { .. }
                )
            })
            .map(|(target, m)| (target, m.awaits_durability()))
            .collect()
    };
    // To the owner and back; the runtime holds the PUBACK until each shard has it.
    assert_eq!(retained(pump(&mut nets)), [(1, true), (0, true)]);
    assert_eq!(retained_on(&mut nets[0], &topic), [b"v".to_vec()]);
    // QoS 0: nothing waits.
    nets[0].publish(&mut publisher, &topic, b"w", QoS::AtMostOnce, true);
    assert_eq!(retained(pump(&mut nets)), [(1, false), (0, false)]);
    assert_eq!(retained_on(&mut nets[1], &topic), [b"w".to_vec()]);
}

/// The certificate subject and the user name a hook saw.
type Seen = (Option<String>, Option<String>);

/// Records what `on_connect` and `on_connected` were told about the client.
struct IdentityHooks {
    seen: Rc<RefCell<Vec<Seen>>>,
}

impl Hooks for IdentityHooks {
    fn on_connect(
        &mut self,
        client: &ClientInfo<'_>,
        request: &petrel_state::server::ConnectRequest,
    ) -> petrel_state::broker::AuthDecision {
        self.seen
            .borrow_mut()
            .push((client.identity.map(String::from), request.username.clone()));
        petrel_state::broker::AuthDecision::Accept(None)
    }

    fn on_connected(&mut self, client: &ClientInfo<'_>, _session_present: bool) {
        self.seen.borrow_mut().push((
            client.identity.map(String::from),
            client.username.map(String::from),
        ));
    }
}

#[test]
fn a_certificate_identity_reaches_hooks_and_can_replace_the_user_name() {
    use petrel_state::broker::PeerIdentity;
    let seen = Rc::new(RefCell::new(Vec::new()));
    let hooks = IdentityHooks { seen: seen.clone() };
    let mut net = Net::with(
        BrokerConfig::default(),
        Box::new(hooks),
        Box::new(NoStorage),
    );
    let connect_as = |net: &mut Net, identity: Option<PeerIdentity>| {
        let id = net
            .broker
            .open_with_identity(net.now, Some("127.0.0.1:5000"), identity);
        let peer = Peer {
            id,
            version: V5,
            inbox: BytesMut::new(),
            next_id: 1,
        };
        net.send(
            &peer,
            Packet::Connect(Connect {
                protocol_version: V5,
                clean_start: true,
                keep_alive: 0,
                properties: Properties::default(),
                client_id: "c",
                will: None,
                username: Some("claimed"),
                password: None,
            }),
        );
    };
    connect_as(&mut net, None);
    connect_as(
        &mut net,
        Some(PeerIdentity {
            subject: String::from("CN=alice,O=Petrel"),
            username: None,
        }),
    );
    connect_as(
        &mut net,
        Some(PeerIdentity {
            subject: String::from("CN=alice,O=Petrel"),
            username: Some(String::from("alice")),
        }),
    );
    let subject = Some(String::from("CN=alice,O=Petrel"));
    let claimed = Some(String::from("claimed"));
    let alice = Some(String::from("alice"));
    assert_eq!(
        *seen.borrow(),
        vec![
            (None, claimed.clone()),
            (None, claimed.clone()),
            (subject.clone(), claimed.clone()),
            (subject.clone(), claimed),
            (subject.clone(), alice.clone()),
            (subject, alice),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Operator commands (what the HTTP management API asks of a shard)

#[test]
fn operators_list_clients_and_subscriptions_and_kick_with_0x98() {
    let mut net = Net::new();
    let persistent = |c: &mut Connect<'_>| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(100);
    };
    let (mut sub, _) = net.connect_with("sub", V5, persistent);
    net.subscribe(&mut sub, "a/+", qos(QoS::AtLeastOnce));
    let _other = net.connect("other", V311);
    let clients = net.broker.clients();
    assert_eq!(
        clients
            .iter()
            .map(|c| c.client_id.as_str())
            .collect::<Vec<_>>(),
        ["other", "sub"]
    );
    let summary = net.broker.client("sub").unwrap();
    assert!(summary.connected);
    assert_eq!(summary.subscriptions, 1);
    assert_eq!(summary.expiry_interval, 100);
    let subscriptions = net.broker.subscription_list();
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(subscriptions[0].filter, "a/+");
    assert_eq!(subscriptions[0].qos, QoS::AtLeastOnce);

    let now = net.now;
    assert!(net.broker.disconnect_client(now, "sub"));
    let frames = net.frames(&mut sub);
    let Packet::Disconnect(disconnect) = decode(V5, frames.last().unwrap()) else {
        panic!("no DISCONNECT");
    };
    assert_eq!(disconnect.reason_code, ReasonCode::AdministrativeAction);
    assert!(net.broker.poll_closed().is_some());
    assert!(!net.broker.disconnect_client(now, "nobody"));
}

#[test]
fn operators_subscribe_for_a_session_and_publish_with_a_report() {
    let mut net = Net::new();
    let persistent = |c: &mut Connect<'_>| {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(100);
    };
    let (mut online, _) = net.connect_with("online", V5, persistent);
    let (mut away, _) = net.connect_with("away", V5, persistent);
    let now = net.now;
    assert!(net
        .broker
        .subscribe_for(now, "online", "t/#", QoS::AtLeastOnce));
    assert!(net
        .broker
        .subscribe_for(now, "away", "t/x", QoS::AtLeastOnce));
    assert!(net
        .broker
        .subscribe_for(now, "away", "t/+", QoS::AtMostOnce));
    assert!(!net
        .broker
        .subscribe_for(now, "online", "bad/#/x", QoS::AtMostOnce));
    assert!(!net
        .broker
        .subscribe_for(now, "nobody", "t", QoS::AtMostOnce));
    net.drop_connection(&mut away);

    let mut message = Message::new("t/x", &b"hi"[..]);
    message.qos = QoS::ExactlyOnce;
    let report = net.broker.publish_here(now, message, true);
    assert_eq!((report.delivered, report.queued), (1, 1));
    let got = net.received(&mut online);
    assert_eq!(topics(&got), ["t/x"]);
    assert_eq!(
        got[0].qos,
        QoS::AtLeastOnce,
        "downgraded to the granted QoS"
    );
    let stats = net.broker.stats();
    assert_eq!(stats.messages_received_by_qos, [0, 0, 1]);
    assert_eq!(stats.deliveries_by_qos, [0, 2, 0]);
    assert_eq!(stats.bytes_delivered_by_qos, [0, 4, 0]);

    assert!(net.broker.unsubscribe_for(now, "online", "t/#"));
    assert!(!net.broker.unsubscribe_for(now, "online", "t/#"));
    let report = net
        .broker
        .publish_here(now, Message::new("t/x", &b"2"[..]), true);
    assert_eq!(
        (report.delivered, report.queued),
        (0, 0),
        "QoS 0 is not queued offline"
    );
    assert!(net.received(&mut online).is_empty());
}

#[test]
fn operators_list_and_delete_retained_messages_on_every_shard() {
    let config = |shard_index| BrokerConfig {
        shard_index,
        shard_count: 2,
        ..BrokerConfig::default()
    };
    let mut net = Net::with(
        config(0),
        Box::new(petrel_state::broker::AllowAll),
        Box::new(NoStorage),
    );
    let mut other = Broker::new(
        config(1),
        Box::new(petrel_state::broker::AllowAll),
        Box::new(NoStorage),
    );
    let now = net.now;
    // A topic shard 1 owns: set on shard 0, it goes there and comes back.
    let topic = (0..)
        .map(|n| format!("keep/{n}"))
        .find(|t| petrel_state::broker::owner_shard(t, 2) == 1)
        .unwrap();
    let mut message = Message::new(&topic, &b"v"[..]);
    message.retain = true;
    net.broker.publish_here(now, message, true);
    let forward = |from: &mut Broker, to: &mut Broker| {
        while let Some((_, message)) = from.poll_shard_message() {
            to.handle_shard_message(now, message);
        }
    };
    forward(&mut net.broker, &mut other);
    assert_eq!(other.retained_messages().len(), 1);
    forward(&mut other, &mut net.broker);
    assert_eq!(&*net.broker.retained_messages()[0].topic, topic);
    // Deleted on its owner, gone there at once and on the other shard once told.
    assert!(other.delete_retained(now, &topic));
    assert!(!other.delete_retained(now, &topic));
    forward(&mut other, &mut net.broker);
    assert!(net.broker.retained_messages().is_empty());
}
