//! The packets the benchmarks compare petrel-codec and mqttbytes on, and the measured
//! routines, shared by the criterion benchmarks (`benches/codec.rs`) and the instruction
//! counter (`examples/instructions.rs`) so both measure exactly the same code.
//!
//! Each [`Case`] is one packet as both codecs represent it. [`Case::checked_wire`] checks
//! that each codec decodes the other's bytes into that same packet, so both sides do the
//! same work.
//!
//! Fairness rules:
//! - Decoding: both sides read from a fresh `BytesMut` holding the same bytes, made outside
//!   the measured section (mqttbytes consumes its input, so each iteration needs a new one).
//!   Both sides then touch what they decoded: topic and payload of a PUBLISH, every filter
//!   of a SUBSCRIBE, every user property of a CONNECT. petrel's repeated fields are walked
//!   over the wire bytes on demand, so this walk is real work for petrel that mqttbytes has
//!   already done while decoding. mqttbytes' decoded packet is dropped inside the measured
//!   section: freeing what its decode allocated is part of the cost of each decoded packet
//!   (petrel's borrows have nothing to free).
//! - Encoding: both sides write into a buffer reused across iterations, large enough that it
//!   never grows: a `&mut [u8]` for petrel, a cleared `BytesMut` for mqttbytes (and for
//!   petrel's `encode_to_bytes`, shown as `petrel_bytesmut`).

use std::hint::black_box;

pub mod load;
pub mod routing;

use bytes::BytesMut;
use petrel_codec::{
    Connect, Decoded, Decoder, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
    RetainHandling, Subscribe, SubscribeFilter, SubscriptionId, SubscriptionOptions, UserProperty,
    Will, EMPTY_PROPERTIES,
};

/// mqttbytes' packet size limit: larger than any packet here, so it never refuses one.
pub const MQTTBYTES_MAX: usize = 1 << 20;

/// The topic of the 64-byte PUBLISH.
const TOPIC_64: &str = "sensors/building-7/floor-3/temp";
/// Its payload over 3.1.1: 2 (fixed header) + 2 + 31 (topic) + 2 (packet id) + 27 = 64 bytes.
const PAYLOAD_64_V311: &[u8] = br#"{"t":21.50,"ts":1700000000}"#;
/// Over 5.0 the empty property block takes one byte, so the payload is one byte shorter.
const PAYLOAD_64_V5: &[u8] = br#"{"t":21.5,"ts":1700000000}"#;

const TOPIC_1K: &str = "telemetry/vehicle-42/can-frames";

static PAYLOAD_1K: [u8; 1024] = {
    let mut payload = [0u8; 1024];
    let mut i = 0;
    while i < payload.len() {
        payload[i] = (i % 251) as u8;
        i += 1;
    }
    payload
};

/// (filter, QoS) of the 10-filter SUBSCRIBE: plain, wildcard, `$SYS` and shared filters.
const FILTERS: [(&str, QoS); 10] = [
    ("sensors/+/temperature", QoS::AtLeastOnce),
    ("sensors/+/humidity", QoS::AtLeastOnce),
    ("home/livingroom/#", QoS::AtMostOnce),
    ("home/kitchen/light/state", QoS::ExactlyOnce),
    ("$SYS/broker/clients/connected", QoS::AtMostOnce),
    ("devices/abc123/commands/+", QoS::ExactlyOnce),
    ("alerts/#", QoS::AtLeastOnce),
    ("fleet/truck-42/gps", QoS::AtMostOnce),
    ("$share/workers/jobs/+/queued", QoS::AtLeastOnce),
    ("logs/+/error", QoS::AtLeastOnce),
];

static CONNECT_USER_PROPERTIES: [UserProperty<'static>; 2] = [
    UserProperty {
        name: "client-kind",
        value: "petrel-bench",
    },
    UserProperty {
        name: "region",
        value: "eu-west-1",
    },
];

static WILL_USER_PROPERTIES: [UserProperty<'static>; 1] = [UserProperty {
    name: "reason",
    value: "unexpected-disconnect",
}];

static SUBSCRIPTION_ID: [SubscriptionId; 1] = [SubscriptionId(42)];

/// The same packet as each codec represents it.
pub struct Case {
    /// The benchmark name: packet, size or content, protocol version.
    pub name: &'static str,
    /// The size on the wire the case is meant to have, when its name states one.
    pub size: Option<usize>,
    /// The protocol version both codecs speak.
    pub version: ProtocolVersion,
    /// The packet as petrel-codec represents it.
    pub ours: Packet<'static>,
    /// The packet as mqttbytes represents it.
    pub theirs: Theirs,
}

/// A packet as mqttbytes represents it, in the module of its protocol version.
// Not boxed: a box would add an allocation to mqttbytes' timed decode.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Theirs {
    /// MQTT 3.1.1.
    V4(mqttbytes::v4::Packet),
    /// MQTT 5.0.
    V5(mqttbytes::v5::Packet),
}

impl Theirs {
    /// Decodes one packet with mqttbytes, consuming it from `input`.
    pub fn read(
        version: ProtocolVersion,
        input: &mut BytesMut,
    ) -> Result<Theirs, mqttbytes::Error> {
        Ok(match version {
            ProtocolVersion::V311 => Theirs::V4(mqttbytes::v4::read(input, MQTTBYTES_MAX)?),
            ProtocolVersion::V5 => Theirs::V5(mqttbytes::v5::read(input, MQTTBYTES_MAX)?),
        })
    }

    /// Encodes with mqttbytes, which has no `Packet::write`; this covers the packet types
    /// benchmarked here.
    pub fn write(&self, out: &mut BytesMut) -> Result<usize, mqttbytes::Error> {
        use mqttbytes::{v4, v5};
        match self {
            Theirs::V4(v4::Packet::Publish(p)) => p.write(out),
            Theirs::V4(v4::Packet::Subscribe(s)) => s.write(out),
            Theirs::V5(v5::Packet::Publish(p)) => p.write(out),
            Theirs::V5(v5::Packet::Subscribe(s)) => s.write(out),
            Theirs::V5(v5::Packet::Connect(c)) => c.write(out),
            other => unimplemented!("no benchmark encodes {other:?}"),
        }
    }
}

fn our_publish(topic: &'static str, payload: &'static [u8]) -> Packet<'static> {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic,
        packet_id: PacketId::new(1234),
        payload,
        ..Publish::default()
    })
}

fn their_qos(qos: QoS) -> mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqttbytes::QoS::ExactlyOnce,
    }
}

fn publish_case(
    name: &'static str,
    size: Option<usize>,
    version: ProtocolVersion,
    topic: &'static str,
    payload: &'static [u8],
) -> Case {
    let theirs = match version {
        ProtocolVersion::V311 => {
            let mut p = mqttbytes::v4::Publish::new(topic, mqttbytes::QoS::AtLeastOnce, payload);
            p.pkid = 1234;
            Theirs::V4(mqttbytes::v4::Packet::Publish(p))
        }
        ProtocolVersion::V5 => {
            let mut p = mqttbytes::v5::Publish::new(topic, mqttbytes::QoS::AtLeastOnce, payload);
            p.pkid = 1234;
            Theirs::V5(mqttbytes::v5::Packet::Publish(p))
        }
    };
    Case {
        name,
        size,
        version,
        ours: our_publish(topic, payload),
        theirs,
    }
}

fn connect_case() -> Case {
    let ours = Packet::Connect(Connect {
        protocol_version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        properties: Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(100),
            maximum_packet_size: Some(65_536),
            topic_alias_maximum: Some(16),
            user_properties: petrel_codec::List::new(&CONNECT_USER_PROPERTIES),
            authentication_method: Some("SCRAM-SHA-256"),
            ..EMPTY_PROPERTIES
        },
        client_id: "bench-client-0001",
        will: Some(Will {
            topic: "clients/bench-client-0001/status",
            payload: b"offline",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties {
                will_delay_interval: Some(30),
                payload_format_indicator: Some(true),
                message_expiry_interval: Some(600),
                content_type: Some("text/plain"),
                user_properties: petrel_codec::List::new(&WILL_USER_PROPERTIES),
                ..EMPTY_PROPERTIES
            },
        }),
        username: Some("bench-user"),
        password: Some(b"correct-horse-battery-staple"),
    });

    use mqttbytes::v5;
    let pairs = |props: &[UserProperty<'_>]| -> Vec<(String, String)> {
        props
            .iter()
            .map(|p| (p.name.to_owned(), p.value.to_owned()))
            .collect()
    };
    let theirs = v5::Connect {
        protocol: mqttbytes::Protocol::V5,
        keep_alive: 60,
        client_id: "bench-client-0001".to_owned(),
        clean_session: true,
        last_will: Some(v5::LastWill {
            topic: "clients/bench-client-0001/status".to_owned(),
            message: bytes::Bytes::from_static(b"offline"),
            qos: mqttbytes::QoS::AtLeastOnce,
            retain: true,
            properties: Some(v5::WillProperties {
                delay_interval: Some(30),
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(600),
                content_type: Some("text/plain".to_owned()),
                response_topic: None,
                correlation_data: None,
                user_properties: pairs(&WILL_USER_PROPERTIES),
            }),
        }),
        login: Some(v5::Login::new("bench-user", "correct-horse-battery-staple")),
        properties: Some(v5::ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(100),
            max_packet_size: Some(65_536),
            topic_alias_max: Some(16),
            request_response_info: None,
            request_problem_info: None,
            user_properties: pairs(&CONNECT_USER_PROPERTIES),
            authentication_method: Some("SCRAM-SHA-256".to_owned()),
            authentication_data: None,
        }),
    };
    Case {
        name: "connect_props_v5",
        size: None,
        version: ProtocolVersion::V5,
        ours,
        theirs: Theirs::V5(v5::Packet::Connect(theirs)),
    }
}

/// The 5.0 options of filter `i`: a few carry the options 3.1.1 lacks.
fn v5_options(i: usize, qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        retain_as_published: i % 3 == 0,
        retain_handling: if i % 4 == 1 {
            RetainHandling::SendIfNew
        } else {
            RetainHandling::SendOnSubscribe
        },
        ..SubscriptionOptions::qos(qos)
    }
}

fn subscribe_case(version: ProtocolVersion) -> Case {
    // List::new borrows its elements for as long as the packet lives: 'static here.
    let filters: &'static [SubscribeFilter<'static>] = Box::leak(
        FILTERS
            .iter()
            .enumerate()
            .map(|(i, &(filter, qos))| SubscribeFilter {
                filter,
                options: match version {
                    ProtocolVersion::V311 => SubscriptionOptions::qos(qos),
                    ProtocolVersion::V5 => v5_options(i, qos),
                },
            })
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let properties = match version {
        ProtocolVersion::V311 => EMPTY_PROPERTIES,
        ProtocolVersion::V5 => Properties {
            subscription_identifiers: petrel_codec::List::new(&SUBSCRIPTION_ID),
            ..EMPTY_PROPERTIES
        },
    };
    let ours = Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(77).expect("non-zero"),
        properties,
        filters: petrel_codec::List::new(filters),
    });

    let (name, theirs) = match version {
        ProtocolVersion::V311 => {
            use mqttbytes::v4;
            let mut s = v4::Subscribe::new_many(
                FILTERS
                    .iter()
                    .map(|&(f, q)| v4::SubscribeFilter::new(f.to_owned(), their_qos(q))),
            );
            s.pkid = 77;
            ("subscribe_10_v311", Theirs::V4(v4::Packet::Subscribe(s)))
        }
        ProtocolVersion::V5 => {
            use mqttbytes::v5;
            let mut s = v5::Subscribe::new_many(filters.iter().map(|f| {
                let mut theirs =
                    v5::SubscribeFilter::new(f.filter.to_owned(), their_qos(f.options.qos));
                theirs
                    .set_nolocal(f.options.no_local)
                    .set_preserve_retain(f.options.retain_as_published)
                    .set_retain_forward_rule(match f.options.retain_handling {
                        RetainHandling::SendOnSubscribe => v5::RetainForwardRule::OnEverySubscribe,
                        RetainHandling::SendIfNew => v5::RetainForwardRule::OnNewSubscribe,
                        RetainHandling::DoNotSend => v5::RetainForwardRule::Never,
                    });
                theirs
            }));
            s.pkid = 77;
            s.properties = Some(v5::SubscribeProperties {
                id: Some(42),
                user_properties: Vec::new(),
            });
            ("subscribe_10_v5", Theirs::V5(v5::Packet::Subscribe(s)))
        }
    };
    Case {
        name,
        size: None,
        version,
        ours,
        theirs,
    }
}

/// Every benchmarked packet.
pub fn cases() -> Vec<Case> {
    vec![
        publish_case(
            "publish_64b_qos1_v311",
            Some(64),
            ProtocolVersion::V311,
            TOPIC_64,
            PAYLOAD_64_V311,
        ),
        publish_case(
            "publish_64b_qos1_v5",
            Some(64),
            ProtocolVersion::V5,
            TOPIC_64,
            PAYLOAD_64_V5,
        ),
        publish_case(
            "publish_1kib_qos1_v311",
            None,
            ProtocolVersion::V311,
            TOPIC_1K,
            &PAYLOAD_1K,
        ),
        publish_case(
            "publish_1kib_qos1_v5",
            None,
            ProtocolVersion::V5,
            TOPIC_1K,
            &PAYLOAD_1K,
        ),
        connect_case(),
        subscribe_case(ProtocolVersion::V311),
        subscribe_case(ProtocolVersion::V5),
    ]
}

/// Decodes a whole packet with petrel, returning it and its size.
pub fn decode_ours<'a>(decoder: &Decoder, bytes: &'a [u8]) -> (Packet<'a>, usize) {
    match decoder.decode(bytes) {
        Ok(Decoded::Packet { packet, len }) => (packet, len),
        other => panic!("petrel could not decode a whole packet: {other:?}"),
    }
}

/// Encodes with petrel and checks each codec decodes the other's bytes into this same
/// packet; returns petrel's bytes, the input of both decode benchmarks.
pub fn checked_wire(case: &Case) -> Vec<u8> {
    let mut ours = vec![0u8; case.ours.encoded_len(case.version).expect("encodable")];
    let len = case.ours.encode(case.version, &mut ours).expect("encodes");
    assert_eq!(len, ours.len());
    if let Some(size) = case.size {
        assert_eq!(len, size, "{} is not {size} bytes on the wire", case.name);
    }
    let decoder = Decoder::new(case.version);
    assert_eq!(
        decode_ours(&decoder, &ours),
        (case.ours, len),
        "{}",
        case.name
    );

    let mut input = BytesMut::from(&ours[..]);
    let theirs = Theirs::read(case.version, &mut input).expect("mqttbytes decodes petrel's bytes");
    assert_eq!(theirs, case.theirs, "{}", case.name);
    assert!(input.is_empty(), "mqttbytes left bytes over");

    let mut their_bytes = BytesMut::new();
    case.theirs
        .write(&mut their_bytes)
        .expect("mqttbytes encodes");
    // Same size; the bytes differ only where the order of properties is free.
    assert_eq!(their_bytes.len(), ours.len(), "{}", case.name);
    assert_eq!(
        decode_ours(&decoder, &their_bytes),
        (case.ours, len),
        "{}",
        case.name
    );
    ours
}

/// Reads what a user of the decoded packet would read.
pub fn touch_ours(packet: &Packet<'_>) {
    match packet {
        Packet::Publish(p) => {
            black_box(p.topic);
            black_box(p.payload);
        }
        Packet::Subscribe(s) => {
            for filter in s.filters.iter() {
                black_box(filter);
            }
        }
        Packet::Connect(c) => {
            for property in c.properties.user_properties.iter() {
                black_box(property);
            }
            if let Some(will) = &c.will {
                for property in will.properties.user_properties.iter() {
                    black_box(property);
                }
            }
        }
        _ => {}
    }
    black_box(packet);
}

/// Reads what a user of the decoded packet would read: the same as [`touch_ours`].
pub fn touch_theirs(packet: &Theirs) {
    use mqttbytes::{v4, v5};
    match packet {
        Theirs::V4(v4::Packet::Publish(p)) => {
            black_box(p.topic.as_str());
            black_box(&p.payload[..]);
        }
        Theirs::V5(v5::Packet::Publish(p)) => {
            black_box(p.topic.as_str());
            black_box(&p.payload[..]);
        }
        Theirs::V4(v4::Packet::Subscribe(s)) => {
            for filter in &s.filters {
                black_box(filter);
            }
        }
        Theirs::V5(v5::Packet::Subscribe(s)) => {
            for filter in &s.filters {
                black_box(filter);
            }
        }
        Theirs::V5(v5::Packet::Connect(c)) => {
            for property in c.properties.iter().flat_map(|p| &p.user_properties) {
                black_box(property);
            }
            let will_properties = c.last_will.iter().flat_map(|w| &w.properties);
            for property in will_properties.flat_map(|p| &p.user_properties) {
                black_box(property);
            }
        }
        _ => {}
    }
    black_box(packet);
}

/// One measured petrel decode: decode, touch, and the size taken.
pub fn petrel_decode(decoder: &Decoder, input: &BytesMut) -> usize {
    // Matched in place, as a caller would: moving the packet out first would add a copy of
    // the whole (large) `Packet` that is the harness's, not the decoder's.
    match decoder.decode(input) {
        Ok(Decoded::Packet { ref packet, len }) => {
            touch_ours(packet);
            len
        }
        other => panic!("petrel could not decode a whole packet: {other:?}"),
    }
}

/// One measured mqttbytes decode: decode, touch, and free what the decode allocated.
pub fn mqttbytes_decode(version: ProtocolVersion, input: &mut BytesMut) {
    let packet = Theirs::read(version, input).expect("decodes");
    touch_theirs(&packet);
    drop(packet);
}

/// One measured petrel encode into a slice.
pub fn petrel_encode(case: &Case, buf: &mut [u8]) -> usize {
    black_box(&case.ours)
        .encode(case.version, black_box(buf))
        .expect("encodes")
}

/// One measured petrel encode into a `BytesMut` whose capacity is already there.
pub fn petrel_encode_bytesmut(case: &Case, out: &mut BytesMut) -> usize {
    out.clear();
    black_box(&case.ours)
        .encode_to_bytes(case.version, black_box(out))
        .expect("encodes")
}

/// One measured mqttbytes encode into a `BytesMut` whose capacity is already there.
pub fn mqttbytes_encode(case: &Case, out: &mut BytesMut) -> usize {
    out.clear();
    black_box(&case.theirs)
        .write(black_box(out))
        .expect("encodes")
}
