//! The pipe without sockets: bytes in from one side, frames and events out.

use alloc::vec;

use petrel_codec::{Properties, SubscriptionOptions, UnsubAck};
use proptest::prelude::*;

use super::*;
use crate::broker::{AllowAll, PeerIdentity};
use crate::proxy::BuiltinHooks;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn bytes(packet: Packet<'_>, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    packet.encode_to_bytes(version, &mut out).unwrap();
    out
}

fn connect<'a>(
    version: ProtocolVersion,
    client_id: &'a str,
    username: Option<&'a str>,
) -> Connect<'a> {
    Connect {
        protocol_version: version,
        clean_start: true,
        keep_alive: 30,
        properties: Properties {
            topic_alias_maximum: version.is_v5().then_some(10),
            ..Properties::default()
        },
        client_id,
        will: None,
        username,
        password: None,
    }
}

fn publish<'a>(topic: &'a str, qos: QoS, packet_id: u16, payload: &'a [u8]) -> Publish<'a> {
    Publish {
        qos,
        topic,
        packet_id: (qos != QoS::AtMostOnce).then(|| id(packet_id)),
        payload,
        ..Publish::default()
    }
}

/// A pipe and the frames and events it produced, decoded for the assertions.
struct Harness {
    pipe: Pipe,
    hooks: alloc::boxed::Box<dyn Hooks>,
    version: ProtocolVersion,
    now: Instant,
}

impl Harness {
    fn new(hooks: impl Hooks + 'static, trace: &[&str]) -> Self {
        let config = PipeConfig {
            max_packet_size: 0,
            trace_clients: trace.iter().map(|s| String::from(*s)).collect(),
        };
        Harness {
            pipe: Pipe::new(7, config, Some(String::from("127.0.0.1:5000"))),
            hooks: alloc::boxed::Box::new(hooks),
            version: V5,
            now: Instant::ZERO,
        }
    }

    /// Connects `client_id` and answers with a successful CONNACK; the frames are drained.
    fn connected(
        hooks: impl Hooks + 'static,
        version: ProtocolVersion,
        username: Option<&str>,
    ) -> Self {
        let mut h = Harness::new(hooks, &[]);
        h.version = version;
        h.client(Packet::Connect(connect(version, "dev", username)));
        assert!(matches!(
            h.pipe.poll_event(),
            Some(PipeEvent::OpenUpstream { .. })
        ));
        h.upstream(Packet::ConnAck(ConnAck::default()));
        h.drain(Side::Upstream);
        h.drain(Side::Client);
        h
    }

    fn client(&mut self, packet: Packet<'_>) {
        let buf = bytes(packet, self.version);
        self.pipe.handle_client(self.now, buf, &mut *self.hooks);
    }

    fn upstream(&mut self, packet: Packet<'_>) {
        let buf = bytes(packet, self.version);
        self.pipe.handle_upstream(self.now, buf, &mut *self.hooks);
    }

    fn drain(&mut self, side: Side) -> Vec<Bytes> {
        core::iter::from_fn(|| self.pipe.poll_transmit(side)).collect()
    }

    fn events(&mut self) -> Vec<PipeEvent> {
        core::iter::from_fn(|| self.pipe.poll_event()).collect()
    }

    /// The one frame sent to `side`, decoded with `check`.
    fn one(&mut self, side: Side, check: impl FnOnce(Packet<'_>)) {
        let frames = self.drain(side);
        assert_eq!(frames.len(), 1, "{side:?}: {frames:?}");
        match Decoder::new(self.version).decode(&frames[0]).unwrap() {
            Decoded::Packet { packet, .. } => check(packet),
            Decoded::Incomplete { .. } => panic!("incomplete frame"),
        }
    }
}

fn tenant() -> BuiltinHooks {
    BuiltinHooks {
        allow_anonymous: false,
        tenant_template: Some(Arc::from("t/{username}/")),
    }
}

#[test]
fn connect_goes_upstream_without_topic_aliases() {
    let mut h = Harness::new(AllowAll, &[]);
    h.client(Packet::Connect(connect(V5, "dev", Some("alice"))));
    assert_eq!(
        h.events(),
        vec![PipeEvent::OpenUpstream {
            client_id: String::from("dev")
        }]
    );
    h.one(Side::Upstream, |p| {
        let Packet::Connect(c) = p else {
            panic!("{p:?}")
        };
        assert_eq!((c.client_id, c.username), ("dev", Some("alice")));
        assert_eq!(c.properties.topic_alias_maximum, None);
    });
    assert!(h.drain(Side::Client).is_empty());

    let granted = ConnAck {
        properties: Properties {
            topic_alias_maximum: Some(5),
            ..Properties::default()
        },
        ..ConnAck::default()
    };
    h.upstream(Packet::ConnAck(granted));
    h.one(Side::Client, |p| {
        let Packet::ConnAck(c) = p else {
            panic!("{p:?}")
        };
        assert_eq!(c.reason_code, ReasonCode::Success);
        assert_eq!(c.properties.topic_alias_maximum, None);
    });
}

#[test]
fn unchanged_packets_are_the_original_frames_uncopied() {
    let mut h = Harness::connected(AllowAll, V5, None);
    let mut buf = bytes(
        Packet::Publish(publish("a/b", QoS::AtLeastOnce, 3, b"payload")),
        V5,
    );
    let mut second = bytes(Packet::PingReq, V5);
    let original = buf.clone();
    buf.unsplit(core::mem::take(&mut second));
    let start = buf.as_ptr();
    let both = buf.clone();
    h.pipe.handle_client(h.now, buf, &mut *h.hooks);
    let frames = h.drain(Side::Upstream);
    // Hooks that pass messages: the two packets go on as one slice of the read.
    assert_eq!(frames, vec![both.freeze()]);
    assert_eq!(frames[0].as_ptr(), start, "forwarded without a copy");
    // Hooks that look at every message: each packet is a frame, still the original.
    let mut h = Harness::connected(Inspects, V5, None);
    let mut buf = original.clone();
    buf.unsplit(bytes(Packet::PingReq, V5));
    let start = buf.as_ptr();
    h.pipe.handle_client(h.now, buf, &mut *h.hooks);
    let frames = h.drain(Side::Upstream);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0], original);
    assert_eq!(frames[0].as_ptr(), start, "forwarded without a copy");

    let down = bytes(Packet::Publish(publish("x", QoS::ExactlyOnce, 9, b"p")), V5);
    let buf = down.clone();
    let start = buf.as_ptr();
    h.pipe.handle_upstream(h.now, buf, &mut *h.hooks);
    let frames = h.drain(Side::Client);
    assert_eq!((&frames[0][..], frames[0].as_ptr()), (&down[..], start));

    // A read that ends inside a packet: only that packet's missing bytes are copied, and
    // the packets after it in the next read are still not.
    let first = bytes(
        Packet::Publish(publish("a", QoS::AtMostOnce, 0, &[1; 300])),
        V5,
    );
    let second = bytes(
        Packet::Publish(publish("b", QoS::AtMostOnce, 0, &[2; 300])),
        V5,
    );
    let mut next = BytesMut::from(&first[100..]);
    next.extend_from_slice(&second);
    let second_start = next[first.len() - 100..].as_ptr();
    h.pipe
        .handle_client(h.now, BytesMut::from(&first[..100]), &mut *h.hooks);
    assert!(h.drain(Side::Upstream).is_empty());
    h.pipe.handle_client(h.now, next, &mut *h.hooks);
    let frames = h.drain(Side::Upstream);
    assert_eq!((&frames[0][..], &frames[1][..]), (&first[..], &second[..]));
    assert_eq!(frames[1].as_ptr(), second_start);
}

#[test]
fn a_read_buffer_lives_only_as_long_as_its_frames() {
    let mut h = Harness::connected(AllowAll, V5, None);
    let mut buf = BytesMut::with_capacity(4096);
    buf.extend_from_slice(&bytes(
        Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"p")),
        V5,
    ));
    h.pipe.handle_client(h.now, buf, &mut *h.hooks);
    let frames = h.drain(Side::Upstream);
    // The pipe kept no handle on the buffer: once written, the frame frees it.
    assert!(frames[0].is_unique());
    // Nor room for the events it gave out since the CONNECT.
    assert_eq!(h.pipe.events.capacity(), 0);
}

#[test]
fn frames_are_shown_in_place_and_dropped_as_written() {
    let mut h = Harness::connected(AllowAll, V5, None);
    let a = bytes(Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"1")), V5);
    let b = bytes(Packet::Publish(publish("b", QoS::AtMostOnce, 0, b"22")), V5);
    let mut both = a.clone();
    both.extend_from_slice(&b);
    h.pipe.handle_client(h.now, both, &mut *h.hooks);
    let shown = |pipe: &Pipe| -> Vec<u8> {
        let (first, second) = pipe.frames(Side::Upstream);
        first
            .iter()
            .chain(second)
            .flat_map(|f| f.to_vec())
            .collect()
    };
    let total = a.len() + b.len();
    assert_eq!(h.pipe.queued(Side::Upstream), total);
    // The first frame and part of the second went out: the second's tail stays.
    h.pipe.transmitted(Side::Upstream, a.len() + 2);
    assert_eq!(shown(&h.pipe), b[2..].to_vec());
    assert_eq!(h.pipe.queued(Side::Upstream), b.len() - 2);
    h.pipe.transmitted(Side::Upstream, 0);
    assert_eq!(h.pipe.queued(Side::Upstream), b.len() - 2);
    h.pipe.transmitted(Side::Upstream, total);
    assert_eq!((shown(&h.pipe), h.pipe.queued(Side::Upstream)), (vec![], 0));
    assert!(h.drain(Side::Upstream).is_empty());
}

#[test]
fn tenant_prefix_round_trip() {
    let mut h = Harness::connected(tenant(), V5, Some("alice"));
    h.client(Packet::Publish(publish("a/b", QoS::AtLeastOnce, 1, b"hi")));
    h.one(Side::Upstream, |p| {
        let Packet::Publish(p) = p else {
            panic!("{p:?}")
        };
        assert_eq!(
            (p.topic, p.payload, p.packet_id),
            ("t/alice/a/b", &b"hi"[..], Some(id(1)))
        );
    });

    let filters = [
        SubscribeFilter {
            filter: "a/#",
            options: SubscriptionOptions::qos(QoS::ExactlyOnce),
        },
        SubscribeFilter {
            filter: "$share/g/c",
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        },
    ];
    h.client(Packet::Subscribe(Subscribe {
        packet_id: id(2),
        properties: EMPTY_PROPERTIES,
        filters: List::new(&filters),
    }));
    h.one(Side::Upstream, |p| {
        let Packet::Subscribe(s) = p else {
            panic!("{p:?}")
        };
        let got: Vec<_> = s
            .filters
            .iter()
            .map(|f| (f.filter, f.options.qos))
            .collect();
        assert_eq!(
            got,
            vec![
                ("t/alice/a/#", QoS::ExactlyOnce),
                ("$share/g/t/alice/c", QoS::AtMostOnce)
            ]
        );
    });

    h.upstream(Packet::Publish(publish(
        "t/alice/a/b",
        QoS::ExactlyOnce,
        4,
        b"hi",
    )));
    h.one(Side::Client, |p| {
        let Packet::Publish(p) = p else {
            panic!("{p:?}")
        };
        assert_eq!(
            (p.topic, p.qos, p.packet_id),
            ("a/b", QoS::ExactlyOnce, Some(id(4)))
        );
    });

    h.client(Packet::Unsubscribe(Unsubscribe {
        packet_id: id(5),
        properties: EMPTY_PROPERTIES,
        filters: List::new(&["a/#"]),
    }));
    h.one(Side::Upstream, |p| {
        let Packet::Unsubscribe(u) = p else {
            panic!("{p:?}")
        };
        assert_eq!(u.filters.iter().collect::<Vec<_>>(), vec!["t/alice/a/#"]);
    });
}

#[test]
fn another_tenants_message_is_acknowledged_upstream_and_withheld() {
    let mut h = Harness::connected(tenant(), V311, Some("alice"));
    h.upstream(Packet::Publish(publish(
        "t/bob/x",
        QoS::AtLeastOnce,
        1,
        b"",
    )));
    h.one(Side::Upstream, |p| {
        assert_eq!(p, Packet::PubAck(PubResponse::new(id(1))));
    });
    h.upstream(Packet::Publish(publish(
        "t/bob/x",
        QoS::ExactlyOnce,
        2,
        b"",
    )));
    h.one(Side::Upstream, |p| {
        assert_eq!(p, Packet::PubRec(PubResponse::new(id(2))));
    });
    h.upstream(Packet::PubRel(PubResponse::new(id(2))));
    h.one(Side::Upstream, |p| {
        assert_eq!(p, Packet::PubComp(PubResponse::new(id(2))));
    });
    assert!(h.drain(Side::Client).is_empty());
}

/// Allows everything but does not say so: every message goes through the hooks.
struct Inspects;

impl Hooks for Inspects {}

/// The packets of a read in an order that mixes those passed as they came with those the
/// proxy looks into (SUBSCRIBE, an aliased PUBLISH), for the upstream side and then the
/// client side.
fn mixed_reads() -> (BytesMut, BytesMut) {
    let mut up = BytesMut::new();
    for packet in [
        Packet::Publish(publish("a/b", QoS::AtLeastOnce, 1, b"hello")),
        Packet::PubAck(PubResponse::new(id(9))),
        Packet::PingReq,
        Packet::Subscribe(Subscribe {
            packet_id: id(2),
            properties: EMPTY_PROPERTIES,
            filters: List::new(&[SubscribeFilter {
                filter: "x/#",
                options: SubscriptionOptions::default(),
            }]),
        }),
        Packet::Publish(publish("c", QoS::ExactlyOnce, 3, &[7; 100])),
        Packet::PubRel(PubResponse::new(id(8))),
        Packet::PubComp(PubResponse::new(id(7))),
    ] {
        up.unsplit(bytes(packet, V5));
    }
    let mut down = BytesMut::new();
    for packet in [
        Packet::SubAck(SubAck {
            packet_id: id(2),
            properties: EMPTY_PROPERTIES,
            reason_codes: List::new(&[ReasonCode::Success]),
        }),
        Packet::Publish(publish("x/1", QoS::AtMostOnce, 0, b"p")),
        Packet::PubRec(PubResponse::new(id(3))),
        Packet::PubComp(PubResponse::new(id(3))),
        Packet::PingResp,
        Packet::UnsubAck(UnsubAck {
            packet_id: id(4),
            properties: EMPTY_PROPERTIES,
            reason_codes: List::new(&[ReasonCode::Success]),
        }),
        Packet::Publish(publish("x/2", QoS::AtLeastOnce, 5, b"q")),
    ] {
        down.unsplit(bytes(packet, V5));
    }
    (up, down)
}

/// What a pipe sends each side for `reads` (from the client, from the upstream, in turn)
/// after the CONNECT: the bytes, and the events.
fn outcome(
    hooks: impl Hooks + 'static,
    reads: &[(Side, BytesMut)],
) -> (Vec<u8>, Vec<u8>, Vec<PipeEvent>) {
    let mut h = Harness::connected(hooks, V5, None);
    for (side, read) in reads {
        match side {
            Side::Client => h.pipe.handle_client(h.now, read.clone(), &mut *h.hooks),
            Side::Upstream => h.pipe.handle_upstream(h.now, read.clone(), &mut *h.hooks),
        }
    }
    let flat = |frames: Vec<Bytes>| frames.iter().flat_map(|f| f.to_vec()).collect();
    let up = flat(h.drain(Side::Upstream));
    let down = flat(h.drain(Side::Client));
    (up, down, h.events())
}

#[test]
fn passed_packets_keep_their_place_around_those_the_proxy_looks_into() {
    let (up, down) = mixed_reads();
    let mut h = Harness::connected(AllowAll, V5, None);
    let read = up.clone();
    let start = read.as_ptr();
    h.pipe.handle_client(h.now, read, &mut *h.hooks);
    let frames = h.drain(Side::Upstream);
    // PUBLISH, PUBACK and PINGREQ in one slice, SUBSCRIBE, then the last three in one.
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(frames[0].as_ptr(), start);
    let sent: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
    assert_eq!(sent, up.to_vec());
    h.pipe.handle_upstream(h.now, down.clone(), &mut *h.hooks);
    let frames = h.drain(Side::Client);
    assert_eq!(frames.len(), 2, "SUBACK, then the rest: {frames:?}");
    let sent: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
    assert_eq!(sent, down.to_vec());
    assert!(h.events().is_empty());
}

#[test]
fn passed_packets_are_still_checked() {
    let valid = bytes(Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"1")), V5);
    let aliased = bytes(
        Packet::Publish(Publish {
            properties: Properties {
                topic_alias: Some(1),
                ..Properties::default()
            },
            ..publish("a", QoS::AtMostOnce, 0, b"")
        }),
        V5,
    );
    // A valid PUBLISH, then a malformed one or one with a topic alias: the first goes
    // upstream, and the pair closes exactly as it does when the hooks see every message.
    for bad in [BytesMut::from(&[0x32, 0x01, 0x00][..]), aliased] {
        let mut read = valid.clone();
        read.unsplit(bad);
        let reads = [(Side::Client, read)];
        let passed = outcome(AllowAll, &reads);
        assert_eq!(passed.0, valid.to_vec());
        assert!(matches!(
            passed.2[..],
            [PipeEvent::Close {
                by: Side::Client,
                ..
            }]
        ));
        assert_eq!(passed, outcome(Inspects, &reads));
    }
}

/// Refuses publishing to `secret/…` and subscribing to `secret/…`.
struct Guard;

impl Hooks for Guard {
    fn authorize_publish(&mut self, _: &ClientInfo<'_>, message: &mut Message) -> Verdict {
        if message.topic.starts_with("secret/") {
            Verdict::Deny(ReasonCode::NotAuthorized)
        } else {
            Verdict::Allow
        }
    }

    fn authorize_subscribe(
        &mut self,
        _: &ClientInfo<'_>,
        filter: &mut String,
        _: &mut SubscriptionOptions,
    ) -> Verdict {
        if filter.starts_with("secret/") {
            Verdict::Deny(ReasonCode::NotAuthorized)
        } else {
            Verdict::Allow
        }
    }
}

#[test]
fn refused_publishes_are_answered_by_the_proxy() {
    let mut h = Harness::connected(Guard, V5, None);
    h.client(Packet::Publish(publish(
        "secret/a",
        QoS::AtLeastOnce,
        1,
        b"",
    )));
    h.one(Side::Client, |p| {
        assert_eq!(
            p,
            Packet::PubAck(response(id(1), ReasonCode::NotAuthorized))
        );
    });
    h.client(Packet::Publish(publish(
        "secret/a",
        QoS::ExactlyOnce,
        2,
        b"",
    )));
    h.one(Side::Client, |p| {
        assert_eq!(
            p,
            Packet::PubRec(response(id(2), ReasonCode::NotAuthorized))
        );
    });
    h.client(Packet::Publish(publish(
        "secret/a",
        QoS::AtMostOnce,
        0,
        b"",
    )));
    assert!(h.drain(Side::Client).is_empty());
    assert!(h.drain(Side::Upstream).is_empty());

    // 3.1.1 cannot say no: acknowledged, dropped, and the QoS 2 flow finished here.
    let mut h = Harness::connected(Guard, V311, None);
    h.client(Packet::Publish(publish(
        "secret/a",
        QoS::ExactlyOnce,
        2,
        b"",
    )));
    h.one(Side::Client, |p| {
        assert_eq!(p, Packet::PubRec(PubResponse::new(id(2))))
    });
    h.client(Packet::PubRel(PubResponse::new(id(2))));
    h.one(Side::Client, |p| {
        assert_eq!(p, Packet::PubComp(PubResponse::new(id(2))))
    });
    assert!(h.drain(Side::Upstream).is_empty());
    // Another identifier's PUBREL is the upstream's.
    h.client(Packet::PubRel(PubResponse::new(id(3))));
    assert_eq!(h.drain(Side::Upstream).len(), 1);
}

#[test]
fn a_refused_filter_gets_its_code_between_the_upstreams() {
    let mut h = Harness::connected(Guard, V5, None);
    let filters = [
        SubscribeFilter {
            filter: "a",
            options: SubscriptionOptions::qos(QoS::AtLeastOnce),
        },
        SubscribeFilter {
            filter: "secret/x",
            options: SubscriptionOptions::qos(QoS::AtLeastOnce),
        },
        SubscribeFilter {
            filter: "b",
            options: SubscriptionOptions::qos(QoS::ExactlyOnce),
        },
    ];
    h.client(Packet::Subscribe(Subscribe {
        packet_id: id(4),
        properties: EMPTY_PROPERTIES,
        filters: List::new(&filters),
    }));
    h.one(Side::Upstream, |p| {
        let Packet::Subscribe(s) = p else {
            panic!("{p:?}")
        };
        assert_eq!(
            s.filters.iter().map(|f| f.filter).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
    });
    let codes = [ReasonCode::GrantedQoS1, ReasonCode::GrantedQoS2];
    h.upstream(Packet::SubAck(SubAck {
        packet_id: id(4),
        properties: EMPTY_PROPERTIES,
        reason_codes: List::new(&codes),
    }));
    h.one(Side::Client, |p| {
        let Packet::SubAck(s) = p else {
            panic!("{p:?}")
        };
        assert_eq!(
            s.reason_codes.iter().collect::<Vec<_>>(),
            vec![
                ReasonCode::GrantedQoS1,
                ReasonCode::NotAuthorized,
                ReasonCode::GrantedQoS2
            ]
        );
    });

    // Every filter refused: the upstream never hears of it.
    h.client(Packet::Subscribe(Subscribe {
        packet_id: id(5),
        properties: EMPTY_PROPERTIES,
        filters: List::new(&filters[1..2]),
    }));
    assert!(h.drain(Side::Upstream).is_empty());
    h.one(Side::Client, |p| {
        let Packet::SubAck(s) = p else {
            panic!("{p:?}")
        };
        assert_eq!(
            s.reason_codes.iter().collect::<Vec<_>>(),
            vec![ReasonCode::NotAuthorized]
        );
    });
}

#[test]
fn a_refused_connect_never_reaches_upstream() {
    for (version, expected) in [
        (V5, ReasonCode::NotAuthorized),
        (V311, ReasonCode::NotAuthorized),
    ] {
        let mut h = Harness::new(tenant(), &[]);
        h.version = version;
        h.client(Packet::Connect(connect(version, "dev", None)));
        assert_eq!(
            h.events(),
            vec![PipeEvent::Close {
                by: Side::Client,
                reason: expected
            }]
        );
        assert!(h.drain(Side::Upstream).is_empty());
        h.one(Side::Client, |p| {
            let Packet::ConnAck(c) = p else {
                panic!("{p:?}")
            };
            // Over 3.1.1 it travels as return code 5, "not authorized".
            assert!(c.reason_code.is_error());
        });
        assert!(h.pipe.is_closed());
    }
}

#[test]
fn a_refused_upstream_connack_closes_the_pair() {
    let mut h = Harness::new(AllowAll, &[]);
    h.client(Packet::Connect(connect(V5, "dev", None)));
    h.events();
    h.upstream(Packet::ConnAck(ConnAck {
        reason_code: ReasonCode::BadUserNameOrPassword,
        ..ConnAck::default()
    }));
    h.one(Side::Client, |p| {
        let Packet::ConnAck(c) = p else {
            panic!("{p:?}")
        };
        assert_eq!(c.reason_code, ReasonCode::BadUserNameOrPassword);
    });
    assert_eq!(
        h.events(),
        vec![PipeEvent::Close {
            by: Side::Upstream,
            reason: ReasonCode::BadUserNameOrPassword
        }]
    );
}

#[test]
fn bad_client_input_closes_with_its_reason_code() {
    let mut h = Harness::connected(AllowAll, V5, None);
    // PUBLISH with QoS 1 and no packet identifier room: a malformed body.
    let buf = BytesMut::from(&[0x32, 0x01, 0x00][..]);
    h.pipe.handle_client(h.now, buf, &mut *h.hooks);
    h.one(Side::Client, |p| {
        let Packet::Disconnect(d) = p else {
            panic!("{p:?}")
        };
        assert_eq!(d.reason_code, ReasonCode::MalformedPacket);
    });
    assert!(
        h.drain(Side::Upstream).is_empty(),
        "the upstream is just closed: the will goes"
    );
    assert_eq!(
        h.events(),
        vec![PipeEvent::Close {
            by: Side::Client,
            reason: ReasonCode::MalformedPacket
        }]
    );
    // Nothing more is read once closed.
    let buf = bytes(Packet::PingReq, V5);
    h.pipe.handle_client(h.now, buf, &mut *h.hooks);
    assert!(h.drain(Side::Upstream).is_empty());
}

#[test]
fn bad_upstream_input_tells_both_sides() {
    let mut h = Harness::connected(AllowAll, V5, None);
    h.upstream(Packet::Subscribe(Subscribe {
        packet_id: id(1),
        properties: EMPTY_PROPERTIES,
        filters: List::new(&[SubscribeFilter {
            filter: "a",
            options: SubscriptionOptions::default(),
        }]),
    }));
    h.one(Side::Upstream, |p| {
        let Packet::Disconnect(d) = p else {
            panic!("{p:?}")
        };
        assert_eq!(d.reason_code, ReasonCode::ProtocolError);
    });
    h.one(Side::Client, |p| {
        let Packet::Disconnect(d) = p else {
            panic!("{p:?}")
        };
        assert_eq!(d.reason_code, ReasonCode::UnspecifiedError);
    });
    assert_eq!(
        h.events(),
        vec![PipeEvent::Close {
            by: Side::Upstream,
            reason: ReasonCode::ProtocolError
        }]
    );
}

#[test]
fn a_topic_alias_is_refused_since_none_were_granted() {
    let mut h = Harness::connected(AllowAll, V5, None);
    let aliased = Publish {
        properties: Properties {
            topic_alias: Some(1),
            ..Properties::default()
        },
        ..publish("a", QoS::AtMostOnce, 0, b"")
    };
    h.client(Packet::Publish(aliased));
    h.one(Side::Client, |p| {
        let Packet::Disconnect(d) = p else {
            panic!("{p:?}")
        };
        assert_eq!(d.reason_code, ReasonCode::TopicAliasInvalid);
    });
}

#[test]
fn the_upstream_going_away_is_told_to_the_client() {
    let mut h = Harness::new(AllowAll, &[]);
    h.client(Packet::Connect(connect(V5, "dev", None)));
    h.events();
    h.drain(Side::Upstream);
    h.pipe.upstream_lost();
    h.one(Side::Client, |p| {
        let Packet::ConnAck(c) = p else {
            panic!("{p:?}")
        };
        assert_eq!(c.reason_code, ReasonCode::ServerUnavailable);
    });

    let mut h = Harness::new(AllowAll, &[]);
    h.client(Packet::Connect(connect(V311, "dev", None)));
    h.drain(Side::Upstream);
    h.version = V311;
    h.pipe.shut(ReasonCode::AdministrativeAction);
    h.one(Side::Client, |p| {
        let Packet::ConnAck(c) = p else {
            panic!("{p:?}")
        };
        assert!(c.reason_code.is_error(), "{c:?}");
    });

    let mut h = Harness::connected(AllowAll, V5, None);
    h.pipe.shut(ReasonCode::ServerShuttingDown);
    h.one(Side::Client, |p| {
        let Packet::Disconnect(d) = p else {
            panic!("{p:?}")
        };
        assert_eq!(d.reason_code, ReasonCode::ServerShuttingDown);
    });
    assert!(h.pipe.is_closed());
}

#[test]
fn a_certificate_names_the_tenant() {
    let mut h = Harness::new(tenant(), &[]);
    h.pipe = Pipe::new(1, PipeConfig::default(), None).with_identity(Some(PeerIdentity {
        subject: String::from("CN=carol"),
        username: Some(String::from("carol")),
    }));
    // Anonymous as far as the CONNECT goes: the certificate is the name.
    h.client(Packet::Connect(connect(V5, "dev", None)));
    assert_eq!(h.pipe.username(), Some("carol"));
    h.upstream(Packet::ConnAck(ConnAck::default()));
    h.drain(Side::Upstream);
    h.client(Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"")));
    h.one(Side::Upstream, |p| {
        let Packet::Publish(p) = p else {
            panic!("{p:?}")
        };
        assert_eq!(p.topic, "t/carol/a");
    });
}

#[test]
fn a_traced_client_has_every_packet_logged() {
    let mut h = Harness::new(tenant(), &["dev"]);
    h.client(Packet::Connect(connect(V5, "dev", Some("alice"))));
    h.upstream(Packet::ConnAck(ConnAck::default()));
    h.client(Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"xyz")));
    let lines: Vec<(Side, String)> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            PipeEvent::Trace { to, line, .. } => Some((to, line)),
            _ => None,
        })
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].1.starts_with("CONNECT v5 client_id=\"dev\""));
    assert_eq!(lines[2].0, Side::Client);
    assert!(lines[2].1.starts_with("CONNACK"));
    assert_eq!(
        lines[3],
        (
            Side::Upstream,
            String::from(
                "PUBLISH topic=\"t/alice/a\" qos=0 retain=false dup=false id=None payload=3B (rewritten)"
            )
        )
    );
    // Untraced clients produce no trace.
    let mut h = Harness::connected(AllowAll, V5, None);
    h.client(Packet::PingReq);
    assert!(h.events().is_empty());
}

proptest! {
    /// However the bytes are cut into reads, the same frames come out.
    #[test]
    fn reads_may_be_cut_anywhere(cuts in proptest::collection::vec(0usize..200, 0..8)) {
        let mut stream = bytes(Packet::Connect(connect(V5, "dev", Some("alice"))), V5);
        stream.unsplit(bytes(Packet::Publish(publish("a/b", QoS::AtLeastOnce, 1, b"hello")), V5));
        stream.unsplit(bytes(Packet::PingReq, V5));
        stream.unsplit(bytes(Packet::Publish(publish("c", QoS::ExactlyOnce, 2, &[7; 100])), V5));
        let mut whole = Harness::new(tenant(), &[]);
        whole.pipe.handle_client(Instant::ZERO, stream.clone(), &mut *whole.hooks);
        let expected = whole.drain(Side::Upstream);
        prop_assert_eq!(expected.len(), 4);

        let mut cut = Harness::new(tenant(), &[]);
        let mut rest = stream;
        let mut cuts = cuts;
        cuts.sort_unstable();
        let total = rest.len();
        let mut at = 0;
        for c in cuts.into_iter().chain([total]) {
            let c = c.min(total);
            if c > at {
                cut.pipe.handle_client(Instant::ZERO, rest.split_to(c - at), &mut *cut.hooks);
                at = c;
            }
        }
        prop_assert_eq!(cut.drain(Side::Upstream), expected);
    }

    /// Passing messages through is only a saving: however the reads are cut, and whatever
    /// garbage follows them, both sides get the same bytes and the runtime the same
    /// events as when the hooks see every message.
    #[test]
    fn passing_through_changes_nothing_but_the_cost(
        cuts in proptest::collection::vec(0usize..400, 0..6),
        garbage in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let (mut up, down) = mixed_reads();
        up.extend_from_slice(&garbage);
        let mut reads = vec![(Side::Upstream, down)];
        let mut cuts = cuts;
        cuts.sort_unstable();
        let total = up.len();
        let mut at = 0;
        for c in cuts.into_iter().chain([total]) {
            let c = c.min(total);
            if c > at {
                reads.push((Side::Client, up.split_to(c - at)));
                at = c;
            }
        }
        prop_assert_eq!(outcome(AllowAll, &reads), outcome(Inspects, &reads));
    }

    /// Arbitrary bytes from either side close the pair at worst, never panic.
    #[test]
    fn garbage_never_panics(client in proptest::collection::vec(any::<u8>(), 0..300),
                            upstream in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut h = Harness::connected(tenant(), V5, Some("alice"));
        let c = BytesMut::from(&client[..]);
        let u = BytesMut::from(&upstream[..]);
        h.pipe.handle_client(h.now, c, &mut *h.hooks);
        h.pipe.handle_upstream(h.now, u, &mut *h.hooks);
        h.drain(Side::Client);
        h.drain(Side::Upstream);
        h.events();
        let mut h = Harness::connected(AllowAll, V5, None);
        let c = BytesMut::from(&client[..]);
        let u = BytesMut::from(&upstream[..]);
        h.pipe.handle_client(h.now, c, &mut *h.hooks);
        h.pipe.handle_upstream(h.now, u, &mut *h.hooks);
        h.drain(Side::Client);
        h.drain(Side::Upstream);
        h.events();
    }
}
