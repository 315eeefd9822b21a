//! Writes the seed corpus in `fuzz/seeds/<target>/`: one valid packet of every type and
//! shape in each protocol version, plus a stream of several packets, so that fuzzing starts
//! from inputs that reach every decoder instead of discovering the packet layouts itself.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//! ```
//!
//! Every seed is encoded by the codec and checked against the same invariants as the
//! `roundtrip` target before it is written, so a seed can never be a crash input.

use std::fs;
use std::path::Path;

use petrel_codec::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResponse,
    Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionId,
    SubscriptionOptions, UnsubAck, Unsubscribe, UserProperty, Will, EMPTY_PROPERTIES,
};

#[path = "../../codec/tests/common/invariants.rs"]
mod invariants;

const USER_PROPERTIES: &[UserProperty<'static>] = &[
    UserProperty {
        name: "region",
        value: "eu-west",
    },
    UserProperty {
        name: "trace",
        value: "3f2a",
    },
];

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("seed packet identifiers are non-zero")
}

fn reason_only(reason_string: &'static str) -> Properties<'static> {
    Properties {
        reason_string: Some(reason_string),
        user_properties: petrel_codec::List::new(USER_PROPERTIES),
        ..EMPTY_PROPERTIES
    }
}

/// The seed packets for one version, each with a file-name stem. Properties are set
/// regardless of version: the 3.1.1 encoder leaves them out.
fn packets(version: ProtocolVersion) -> Vec<(&'static str, Packet<'static>)> {
    static SUB_IDS: &[SubscriptionId] = &[SubscriptionId(1), SubscriptionId(268_435_455)];
    static ONE_SUB_ID: &[SubscriptionId] = &[SubscriptionId(42)];
    static FILTERS: &[SubscribeFilter<'static>] = &[
        SubscribeFilter {
            filter: "sensors/+/temp",
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        },
        SubscribeFilter {
            filter: "alerts/#",
            options: SubscriptionOptions::qos(QoS::ExactlyOnce),
        },
    ];
    static V5_FILTERS: &[SubscribeFilter<'static>] = &[
        SubscribeFilter {
            filter: "$share/workers/jobs/+",
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        },
        SubscribeFilter {
            filter: "chat/#",
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: false,
                retain_handling: RetainHandling::SendIfNew,
            },
        },
    ];
    static UNSUB_FILTERS: &[&str] = &["sensors/+/temp", "$share/workers/jobs/+", "#"];
    static V311_SUBACK: &[ReasonCode] = &[
        ReasonCode::Success,
        ReasonCode::GrantedQoS1,
        ReasonCode::GrantedQoS2,
        ReasonCode::UnspecifiedError,
    ];
    static V5_SUBACK: &[ReasonCode] = &[
        ReasonCode::GrantedQoS1,
        ReasonCode::NotAuthorized,
        ReasonCode::SharedSubscriptionsNotSupported,
    ];
    static V5_UNSUBACK: &[ReasonCode] = &[ReasonCode::Success, ReasonCode::NoSubscriptionExisted];

    let v5 = version.is_v5();
    let user_properties = petrel_codec::List::new(USER_PROPERTIES);

    let mut out = vec![
        (
            "connect-minimal",
            Packet::Connect(Connect {
                protocol_version: version,
                clean_start: true,
                keep_alive: 60,
                properties: EMPTY_PROPERTIES,
                client_id: "c",
                will: None,
                username: None,
                password: None,
            }),
        ),
        (
            "connect-full",
            Packet::Connect(Connect {
                protocol_version: version,
                clean_start: false,
                keep_alive: 65_535,
                properties: Properties {
                    session_expiry_interval: Some(3600),
                    receive_maximum: Some(20),
                    maximum_packet_size: Some(1 << 20),
                    topic_alias_maximum: Some(10),
                    request_response_information: Some(true),
                    request_problem_information: Some(false),
                    authentication_method: Some("SCRAM-SHA-256"),
                    authentication_data: Some(b"n,,n=user,r=nonce"),
                    user_properties,
                    ..EMPTY_PROPERTIES
                },
                client_id: "petrel-client-\u{e9}",
                will: Some(Will {
                    topic: "clients/petrel/status",
                    payload: b"offline",
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: Properties {
                        will_delay_interval: Some(30),
                        payload_format_indicator: Some(true),
                        message_expiry_interval: Some(600),
                        content_type: Some("text/plain"),
                        response_topic: Some("clients/petrel/reply"),
                        correlation_data: Some(&[0xde, 0xad, 0xbe, 0xef]),
                        user_properties,
                        ..EMPTY_PROPERTIES
                    },
                }),
                username: Some("user"),
                password: Some(&[0x00, 0xff, 0x7f]),
            }),
        ),
        (
            "connack-accepted",
            Packet::ConnAck(ConnAck {
                session_present: true,
                ..ConnAck::default()
            }),
        ),
        (
            "connack-refused",
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::NotAuthorized,
                properties: if v5 {
                    reason_only("no")
                } else {
                    EMPTY_PROPERTIES
                },
            }),
        ),
        (
            "publish-qos0",
            Packet::Publish(Publish {
                topic: "sensors/kitchen/temp",
                payload: b"21.5",
                ..Publish::default()
            }),
        ),
        (
            "publish-qos1-dup-retain",
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: "a/b",
                packet_id: Some(id(1)),
                payload: &[],
                ..Publish::default()
            }),
        ),
        (
            "publish-qos2-properties",
            Packet::Publish(Publish {
                qos: QoS::ExactlyOnce,
                topic: "\u{65e5}\u{672c}/\u{1f600}",
                packet_id: Some(id(65_535)),
                properties: Properties {
                    payload_format_indicator: Some(false),
                    message_expiry_interval: Some(0),
                    content_type: Some("application/octet-stream"),
                    response_topic: Some("replies/1"),
                    correlation_data: Some(b"corr"),
                    subscription_identifiers: petrel_codec::List::new(SUB_IDS),
                    topic_alias: Some(7),
                    user_properties,
                    ..EMPTY_PROPERTIES
                },
                payload: &[0u8, 1, 2, 3, 0xff],
                ..Publish::default()
            }),
        ),
        ("puback", Packet::PubAck(PubResponse::new(id(2)))),
        ("pubrec", Packet::PubRec(PubResponse::new(id(3)))),
        ("pubrel", Packet::PubRel(PubResponse::new(id(4)))),
        ("pubcomp", Packet::PubComp(PubResponse::new(id(5)))),
        (
            "subscribe",
            Packet::Subscribe(Subscribe {
                packet_id: id(10),
                properties: EMPTY_PROPERTIES,
                filters: petrel_codec::List::new(FILTERS),
            }),
        ),
        (
            "suback",
            Packet::SubAck(SubAck {
                packet_id: id(10),
                properties: EMPTY_PROPERTIES,
                reason_codes: petrel_codec::List::new(V311_SUBACK),
            }),
        ),
        (
            "unsubscribe",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id(11),
                properties: EMPTY_PROPERTIES,
                filters: petrel_codec::List::new(UNSUB_FILTERS),
            }),
        ),
        (
            "unsuback",
            Packet::UnsubAck(UnsubAck {
                packet_id: id(11),
                properties: EMPTY_PROPERTIES,
                reason_codes: if v5 {
                    petrel_codec::List::new(V5_UNSUBACK)
                } else {
                    petrel_codec::List::empty()
                },
            }),
        ),
        ("pingreq", Packet::PingReq),
        ("pingresp", Packet::PingResp),
        ("disconnect", Packet::Disconnect(Disconnect::default())),
    ];

    if v5 {
        out.extend([
            (
                "connack-properties",
                Packet::ConnAck(ConnAck {
                    session_present: false,
                    reason_code: ReasonCode::Success,
                    properties: Properties {
                        session_expiry_interval: Some(0),
                        receive_maximum: Some(100),
                        maximum_qos: Some(QoS::AtLeastOnce),
                        retain_available: Some(false),
                        maximum_packet_size: Some(65_536),
                        assigned_client_identifier: Some("auto-7f3a"),
                        topic_alias_maximum: Some(0),
                        reason_string: Some("welcome"),
                        user_properties,
                        wildcard_subscription_available: Some(true),
                        subscription_identifier_available: Some(false),
                        shared_subscription_available: Some(true),
                        server_keep_alive: Some(30),
                        response_information: Some("responses/"),
                        server_reference: Some("other.example:1883"),
                        authentication_method: Some("SCRAM-SHA-256"),
                        authentication_data: Some(b"v=proof"),
                        ..EMPTY_PROPERTIES
                    },
                }),
            ),
            (
                "publish-topic-alias",
                Packet::Publish(Publish {
                    qos: QoS::AtLeastOnce,
                    topic: "",
                    packet_id: Some(id(9)),
                    properties: Properties {
                        topic_alias: Some(1),
                        ..EMPTY_PROPERTIES
                    },
                    payload: b"aliased",
                    ..Publish::default()
                }),
            ),
            (
                "puback-reason",
                Packet::PubAck(PubResponse {
                    reason_code: ReasonCode::NoMatchingSubscribers,
                    ..PubResponse::new(id(6))
                }),
            ),
            (
                "pubrec-properties",
                Packet::PubRec(PubResponse {
                    reason_code: ReasonCode::QuotaExceeded,
                    properties: reason_only("quota"),
                    ..PubResponse::new(id(7))
                }),
            ),
            (
                "pubrel-not-found",
                Packet::PubRel(PubResponse {
                    reason_code: ReasonCode::PacketIdentifierNotFound,
                    ..PubResponse::new(id(8))
                }),
            ),
            (
                "pubcomp-properties",
                Packet::PubComp(PubResponse {
                    reason_code: ReasonCode::Success,
                    properties: reason_only("done"),
                    ..PubResponse::new(id(8))
                }),
            ),
            (
                "subscribe-options",
                Packet::Subscribe(Subscribe {
                    packet_id: id(12),
                    properties: Properties {
                        subscription_identifiers: petrel_codec::List::new(ONE_SUB_ID),
                        user_properties,
                        ..EMPTY_PROPERTIES
                    },
                    filters: petrel_codec::List::new(V5_FILTERS),
                }),
            ),
            (
                "suback-reasons",
                Packet::SubAck(SubAck {
                    packet_id: id(12),
                    properties: reason_only("partial"),
                    reason_codes: petrel_codec::List::new(V5_SUBACK),
                }),
            ),
            (
                "unsubscribe-properties",
                Packet::Unsubscribe(Unsubscribe {
                    packet_id: id(13),
                    properties: Properties {
                        user_properties,
                        ..EMPTY_PROPERTIES
                    },
                    filters: petrel_codec::List::new(UNSUB_FILTERS),
                }),
            ),
            (
                "unsuback-properties",
                Packet::UnsubAck(UnsubAck {
                    packet_id: id(13),
                    properties: reason_only("gone"),
                    reason_codes: petrel_codec::List::new(V5_UNSUBACK),
                }),
            ),
            (
                "disconnect-reason",
                Packet::Disconnect(Disconnect {
                    reason_code: ReasonCode::DisconnectWithWillMessage,
                    properties: EMPTY_PROPERTIES,
                }),
            ),
            (
                "disconnect-properties",
                Packet::Disconnect(Disconnect {
                    reason_code: ReasonCode::UseAnotherServer,
                    properties: Properties {
                        session_expiry_interval: Some(120),
                        server_reference: Some("backup.example:1883"),
                        ..reason_only("moving")
                    },
                }),
            ),
            ("auth-empty", Packet::Auth(Auth::default())),
            (
                "auth-continue",
                Packet::Auth(Auth {
                    reason_code: ReasonCode::ContinueAuthentication,
                    properties: Properties {
                        authentication_method: Some("SCRAM-SHA-256"),
                        authentication_data: Some(b"c=biws,r=nonce"),
                        reason_string: Some("step 2"),
                        ..EMPTY_PROPERTIES
                    },
                }),
            ),
        ]);
    }
    out
}

fn encode(packet: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let len = packet.encoded_len(version).expect("seed packets encode");
    let mut buf = vec![0u8; len];
    packet
        .encode(version, &mut buf)
        .expect("seed packets encode");
    buf
}

/// Empties `dir` of files (keeping the directory) so that renamed seeds do not linger.
fn reset(dir: &Path) {
    fs::create_dir_all(dir).expect("create seed directory");
    for entry in fs::read_dir(dir).expect("read seed directory") {
        let path = entry.expect("read seed directory").path();
        if path.is_file() {
            fs::remove_file(&path).expect("remove old seed");
        }
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let decode_v311 = root.join("decode_v311");
    let decode_v5 = root.join("decode_v5");
    let roundtrip = root.join("roundtrip");
    for dir in [&decode_v311, &decode_v5, &roundtrip] {
        reset(dir);
    }

    let mut written = 0;
    for (version, tag, selector, decode_dir) in [
        (ProtocolVersion::V311, "v311", 0u8, &decode_v311),
        (ProtocolVersion::V5, "v5", 1u8, &decode_v5),
    ] {
        let mut stream = Vec::new();
        for (stem, packet) in packets(version) {
            let bytes = encode(&packet, version);
            stream.extend_from_slice(&bytes);
            write(decode_dir, &format!("{tag}-{stem}"), &bytes);

            let mut input = vec![selector];
            input.extend_from_slice(&bytes);
            assert_eq!(
                invariants::check_stream(petrel_codec::Decoder::new(version), &bytes),
                1,
                "seed {tag}-{stem} does not decode"
            );
            invariants::check_roundtrip_input(&input);
            invariants::check_decode_input(version, &bytes);
            write(&roundtrip, &format!("{tag}-{stem}"), &input);
            written += 2;
        }
        // A stream of every packet back to back, ending inside a last PUBLISH: the decoder
        // loop, the prefix checks and the incomplete tail all get exercised from one seed.
        stream.extend_from_slice(&[0x30, 0x0a, 0x00, 0x03, b'a', b'/', b'b']);
        write(decode_dir, &format!("{tag}-stream"), &stream);
        let mut input = vec![selector];
        input.extend_from_slice(&stream);
        invariants::check_roundtrip_input(&input);
        write(&roundtrip, &format!("{tag}-stream"), &input);
        written += 2;
    }
    println!("wrote {written} seeds under {}", root.display());
}
