//! The specifications' own byte examples, and one test for each class of malformed input with
//! the reason code the receiver must answer with.

use petrel_codec::{
    ConnAck, Connect, DecodeError, Decoded, Decoder, Disconnect, Packet, PacketId, PacketType,
    Properties, PropertyId, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode,
    SubscribeFilter, SubscriptionOptions, UserProperty, Will,
};

use ProtocolVersion::{V311, V5};

/// Frames a body with its fixed header.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn decode(version: ProtocolVersion, bytes: &[u8]) -> Result<Packet<'_>, DecodeError> {
    match Decoder::new(version).decode(bytes)? {
        Decoded::Packet { packet, len } => {
            assert_eq!(len, bytes.len(), "the whole input is one packet");
            Ok(packet)
        }
        Decoded::Incomplete { needed } => panic!("incomplete, {needed} more bytes needed"),
    }
}

fn encode(version: ProtocolVersion, packet: &Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0; packet.encoded_len(version).unwrap()];
    let n = packet.encode(version, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

/// Asserts that `bytes` is refused with `expected`, which maps to `reason`.
fn refused(version: ProtocolVersion, bytes: &[u8], expected: DecodeError, reason: ReasonCode) {
    let err = decode(version, bytes).expect_err("malformed input was accepted");
    assert_eq!(err, expected, "input {bytes:02x?}");
    assert_eq!(err.reason_code(), reason, "reason code for {err:?}");
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The specifications' examples

/// MQTT 3.1.1 figure 3.6 / 5.0 figure 3-7: the CONNECT variable header example, protocol
/// level, flags 0xCE (user name, password, will QoS 1, clean start), keep alive 10.
#[test]
fn connect_variable_header_example_v311() {
    let body = [
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A, // variable header
        0x00, 0x03, b'c', b'i', b'd', // client id
        0x00, 0x03, b'w', b'/', b't', // will topic
        0x00, 0x02, b'b', b'y', // will payload
        0x00, 0x04, b'u', b's', b'e', b'r', // user name
        0x00, 0x02, 0x01, 0x02, // password
    ];
    let bytes = frame(0x10, &body);
    let packet = decode(V311, &bytes).unwrap();
    let expected = Packet::Connect(Connect {
        protocol_version: V311,
        clean_start: true,
        keep_alive: 10,
        properties: Properties::default(),
        client_id: "cid",
        will: Some(Will {
            topic: "w/t",
            payload: b"by",
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: Some("user"),
        password: Some(&[1, 2]),
    });
    assert_eq!(packet, expected);
    assert_eq!(encode(V311, &packet), bytes);
}

/// MQTT 5.0 figure 3-7: the same header with properties of length 5 holding a session expiry
/// interval of 10.
#[test]
fn connect_variable_header_example_v5() {
    let body = [
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0xC2, 0x00, 0x0A, // header, flags 11000010
        0x05, 0x11, 0x00, 0x00, 0x00, 0x0A, // properties: session expiry 10
        0x00, 0x00, // empty client id
        0x00, 0x01, b'u', // user name
        0x00, 0x01, b'p', // password
    ];
    let bytes = frame(0x10, &body);
    let Packet::Connect(connect) = decode(V5, &bytes).unwrap() else {
        panic!("not a CONNECT");
    };
    assert_eq!(connect.protocol_version, V5);
    assert!(connect.clean_start);
    assert_eq!(connect.keep_alive, 10);
    assert_eq!(connect.properties.session_expiry_interval, Some(10));
    assert_eq!(connect.client_id, "");
    assert_eq!(connect.username, Some("u"));
    assert_eq!(connect.password, Some(&b"p"[..]));
    assert_eq!(encode(V5, &Packet::Connect(connect)), bytes);
}

/// MQTT 3.1.1 figure 3.11 / 5.0 figure 3-9: PUBLISH variable header, topic "a/b", packet
/// identifier 10.
#[test]
fn publish_variable_header_example() {
    let body = [0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i'];
    let bytes = frame(0x32, &body);
    let expected = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "a/b",
        packet_id: Some(pid(10)),
        payload: b"hi",
        ..Publish::default()
    });
    assert_eq!(decode(V311, &bytes).unwrap(), expected);
    assert_eq!(encode(V311, &expected), bytes);
    // In 5.0 the same PUBLISH carries a zero property length after the packet identifier.
    let v5 = frame(
        0x32,
        &[0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x00, b'h', b'i'],
    );
    assert_eq!(decode(V5, &v5).unwrap(), expected);
    assert_eq!(encode(V5, &expected), v5);
}

/// MQTT 3.1.1 figure 3.22: SUBSCRIBE with packet identifier 10, "a/b" at QoS 1 and "c/d" at
/// QoS 2.
#[test]
fn subscribe_payload_example() {
    let body = [
        0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x03, b'c', b'/', b'd', 0x02,
    ];
    let bytes = frame(0x82, &body);
    let Packet::Subscribe(subscribe) = decode(V311, &bytes).unwrap() else {
        panic!("not a SUBSCRIBE");
    };
    assert_eq!(subscribe.packet_id, pid(10));
    let filters: Vec<_> = subscribe.filters.iter().collect();
    assert_eq!(
        filters,
        [
            SubscribeFilter {
                filter: "a/b",
                options: SubscriptionOptions::qos(QoS::AtLeastOnce)
            },
            SubscribeFilter {
                filter: "c/d",
                options: SubscriptionOptions::qos(QoS::ExactlyOnce)
            },
        ]
    );
    assert_eq!(encode(V311, &Packet::Subscribe(subscribe)), bytes);
}

/// MQTT 3.1.1 figure 3.26: SUBACK return codes 0 (QoS 0), 2 (QoS 2) and 0x80 (failure).
#[test]
fn suback_payload_example() {
    let bytes = frame(0x90, &[0x00, 0x0A, 0x00, 0x02, 0x80]);
    let Packet::SubAck(suback) = decode(V311, &bytes).unwrap() else {
        panic!("not a SUBACK");
    };
    let codes: Vec<_> = suback.reason_codes.iter().collect();
    assert_eq!(
        codes,
        [
            ReasonCode::Success,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError
        ]
    );
    assert_eq!(encode(V311, &Packet::SubAck(suback)), bytes);
}

/// MQTT 3.1.1 figure 3.30: UNSUBSCRIBE of "a/b" and "c/d", packet identifier 10.
#[test]
fn unsubscribe_payload_example() {
    let body = [
        0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x03, b'c', b'/', b'd',
    ];
    let bytes = frame(0xA2, &body);
    let Packet::Unsubscribe(unsubscribe) = decode(V311, &bytes).unwrap() else {
        panic!("not an UNSUBSCRIBE");
    };
    assert_eq!(
        unsubscribe.filters.iter().collect::<Vec<_>>(),
        ["a/b", "c/d"]
    );
    assert_eq!(encode(V311, &Packet::Unsubscribe(unsubscribe)), bytes);
}

/// MQTT 5.0 figure 1-1 / 3.1.1 figure 1.1: "A𪛔" is 0x0005 0x41 0xF0 0xAA 0x9B 0x94.
#[test]
fn utf8_string_example() {
    let body = [0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94];
    let bytes = frame(0x30, &body);
    let Packet::Publish(publish) = decode(V311, &bytes).unwrap() else {
        panic!("not a PUBLISH");
    };
    assert_eq!(publish.topic, "A\u{2A6D4}");
}

#[test]
fn fixed_size_packets() {
    for version in [V311, V5] {
        assert_eq!(decode(version, &[0xC0, 0x00]).unwrap(), Packet::PingReq);
        assert_eq!(decode(version, &[0xD0, 0x00]).unwrap(), Packet::PingResp);
        assert_eq!(
            decode(version, &[0xE0, 0x00]).unwrap(),
            Packet::Disconnect(Disconnect::default())
        );
        assert_eq!(
            decode(version, &[0x40, 0x02, 0x12, 0x34]).unwrap(),
            Packet::PubAck(PubResponse::new(pid(0x1234)))
        );
        assert_eq!(encode(version, &Packet::PingReq), [0xC0, 0x00]);
    }
    assert_eq!(
        decode(V311, &[0x20, 0x02, 0x01, 0x00]).unwrap(),
        Packet::ConnAck(ConnAck {
            session_present: true,
            ..ConnAck::default()
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Short forms the 5.0 specification allows

#[test]
fn v5_acknowledgement_short_forms() {
    // Remaining length 2: success, no properties (section 3.4.2.1).
    let short = decode(V5, &[0x50, 0x02, 0x00, 0x07]).unwrap();
    assert_eq!(short, Packet::PubRec(PubResponse::new(pid(7))));
    // Remaining length 3: a reason code and no property length.
    let reason_only = decode(V5, &[0x40, 0x03, 0x00, 0x07, 0x10]).unwrap();
    let Packet::PubAck(ack) = reason_only else {
        panic!("not a PUBACK");
    };
    assert_eq!(ack.reason_code, ReasonCode::NoMatchingSubscribers);
    assert_eq!(
        encode(V5, &reason_only),
        [0x40, 0x03, 0x00, 0x07, 0x10],
        "the encoder writes the shortest form"
    );
    // Full form with a reason string.
    let full = frame(0x62, &[0x00, 0x07, 0x92, 0x04, 0x1F, 0x00, 0x01, b'x']);
    let Packet::PubRel(rel) = decode(V5, &full).unwrap() else {
        panic!("not a PUBREL");
    };
    assert_eq!(rel.reason_code, ReasonCode::PacketIdentifierNotFound);
    assert_eq!(rel.properties.reason_string, Some("x"));
    assert_eq!(encode(V5, &Packet::PubRel(rel)), full);
}

#[test]
fn v5_disconnect_forms() {
    let one = decode(V5, &[0xE0, 0x01, 0x04]).unwrap();
    assert_eq!(
        one,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DisconnectWithWillMessage,
            properties: Properties::default()
        })
    );
    let with_props = frame(0xE0, &[0x8E, 0x05, 0x11, 0x00, 0x00, 0x00, 0x3C]);
    let Packet::Disconnect(d) = decode(V5, &with_props).unwrap() else {
        panic!("not a DISCONNECT");
    };
    assert_eq!(d.reason_code, ReasonCode::SessionTakenOver);
    assert_eq!(d.properties.session_expiry_interval, Some(60));
    // A 3.1.1 DISCONNECT has no body at all.
    refused(
        V311,
        &[0xE0, 0x01, 0x04],
        DecodeError::TrailingBytes,
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn v5_auth_exchange() {
    assert_eq!(
        decode(V5, &[0xF0, 0x00]).unwrap(),
        Packet::Auth(Default::default())
    );
    let body = [
        0x18, 0x0C, 0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', 0x16, 0x00, 0x01, 0xAB,
    ];
    let bytes = frame(0xF0, &body);
    let Packet::Auth(auth) = decode(V5, &bytes).unwrap() else {
        panic!("not AUTH");
    };
    assert_eq!(auth.reason_code, ReasonCode::ContinueAuthentication);
    assert_eq!(auth.properties.authentication_method, Some("SCRAM"));
    assert_eq!(auth.properties.authentication_data, Some(&[0xAB][..]));
    assert_eq!(encode(V5, &Packet::Auth(auth)), bytes);
    // AUTH with a reason code but no property length is not a form 5.0 allows.
    refused(
        V5,
        &[0xF0, 0x01, 0x18],
        DecodeError::UnexpectedEnd,
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn repeated_properties_keep_their_order() {
    // PUBLISH with two user properties and two subscription identifiers.
    let body = [
        0x00, 0x01, b't', // topic
        0x13, // property length 19
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1', // user property a=1
        0x0B, 0x05, // subscription identifier 5
        0x26, 0x00, 0x01, b'b', 0x00, 0x01, b'2', // user property b=2
        0x0B, 0x80, 0x01, // subscription identifier 128
    ];
    let bytes = frame(0x30, &body);
    let Packet::Publish(publish) = decode(V5, &bytes).unwrap() else {
        panic!("not a PUBLISH");
    };
    let users: Vec<_> = publish.properties.user_properties.iter().collect();
    assert_eq!(
        users,
        [
            UserProperty {
                name: "a",
                value: "1"
            },
            UserProperty {
                name: "b",
                value: "2"
            }
        ]
    );
    let ids: Vec<u32> = publish
        .properties
        .subscription_identifiers
        .iter()
        .map(|id| id.0)
        .collect();
    assert_eq!(ids, [5, 128]);
    // Over 3.1.1 the encoder leaves every property out.
    let v311 = encode(V311, &Packet::Publish(publish));
    assert_eq!(v311, frame(0x30, &[0x00, 0x01, b't']));
}

#[test]
fn v5_connack_maps_to_v311_return_codes() {
    let refused_v5 = Packet::ConnAck(ConnAck {
        reason_code: ReasonCode::Banned,
        ..ConnAck::default()
    });
    assert_eq!(encode(V311, &refused_v5), [0x20, 0x02, 0x00, 0x05]);
    let busy = Packet::ConnAck(ConnAck {
        reason_code: ReasonCode::ServerBusy,
        ..ConnAck::default()
    });
    assert_eq!(encode(V311, &busy), [0x20, 0x02, 0x00, 0x03]);
}

// ---------------------------------------------------------------------------------------------
// One test per error class

#[test]
fn reserved_packet_types() {
    refused(
        V311,
        &[0x00, 0x00],
        DecodeError::InvalidPacketType(0),
        ReasonCode::MalformedPacket,
    );
    // AUTH does not exist in 3.1.1.
    refused(
        V311,
        &[0xF0, 0x00],
        DecodeError::InvalidPacketType(15),
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn fixed_header_flags() {
    // [MQTT-2.1.3-1]: SUBSCRIBE, UNSUBSCRIBE and PUBREL carry 0b0010, the others 0.
    for (first, packet_type) in [
        (0x80, PacketType::Subscribe),
        (0xA0, PacketType::Unsubscribe),
        (0x60, PacketType::PubRel),
        (0x12, PacketType::Connect),
        (0xC1, PacketType::PingReq),
    ] {
        refused(
            V5,
            &[first, 0x00],
            DecodeError::InvalidHeaderFlags {
                packet_type,
                flags: first & 0x0F,
            },
            ReasonCode::MalformedPacket,
        );
    }
}

#[test]
fn malformed_remaining_length() {
    refused(
        V5,
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        DecodeError::MalformedVariableByteInteger,
        ReasonCode::MalformedPacket,
    );
    // [MQTT-1.5.5-1]: 0 encoded in two bytes is not the minimum.
    refused(
        V5,
        &[0xC0, 0x80, 0x00],
        DecodeError::MalformedVariableByteInteger,
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn packet_too_large() {
    let decoder = Decoder::new(V5).with_max_packet_size(16);
    let publish = frame(
        0x30,
        &[0x00, 0x01, b't', 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    let err = decoder.decode(&publish).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 17,
            maximum: 16
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
}

#[test]
fn fields_past_the_end() {
    // The mqttrs 0.4.1 crash: an 11-byte PUBLISH whose topic length exceeds the packet.
    refused(
        V311,
        &[
            0x30, 0x09, 0x00, 0xFF, b'a', b'b', b'c', b'd', b'e', b'f', b'g',
        ],
        DecodeError::UnexpectedEnd,
        ReasonCode::MalformedPacket,
    );
    // A property length running past the packet.
    refused(
        V5,
        &frame(0x30, &[0x00, 0x01, b't', 0x09, 0x01]),
        DecodeError::UnexpectedEnd,
        ReasonCode::MalformedPacket,
    );
    // A QoS 1 PUBLISH without room for its packet identifier.
    refused(
        V311,
        &frame(0x32, &[0x00, 0x01, b't', 0x00]),
        DecodeError::UnexpectedEnd,
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn trailing_bytes() {
    refused(
        V5,
        &[0xC0, 0x01, 0x00],
        DecodeError::TrailingBytes,
        ReasonCode::MalformedPacket,
    );
    // A 3.1.1 PUBACK is exactly two bytes long.
    refused(
        V311,
        &[0x40, 0x03, 0x00, 0x01, 0x00],
        DecodeError::TrailingBytes,
        ReasonCode::MalformedPacket,
    );
    refused(
        V311,
        &[0xB0, 0x03, 0x00, 0x01, 0x00],
        DecodeError::TrailingBytes,
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn qos_three_and_dup_on_qos0() {
    refused(
        V311,
        &frame(0x36, &[0x00, 0x01, b't', 0x00, 0x01]),
        DecodeError::InvalidQoS,
        ReasonCode::MalformedPacket,
    );
    // [MQTT-3.3.1-2]
    refused(
        V311,
        &frame(0x38, &[0x00, 0x01, b't']),
        DecodeError::DupWithQoS0,
        ReasonCode::MalformedPacket,
    );
    // Will QoS 3 in CONNECT flags (bits 3-4 = 11, will flag set).
    let connect = frame(
        0x10,
        &[
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x1C, 0x00, 0x00, 0x00, 0x00,
        ],
    );
    refused(
        V311,
        &connect,
        DecodeError::InvalidQoS,
        ReasonCode::MalformedPacket,
    );
    // QoS 3 in subscription options.
    refused(
        V311,
        &frame(0x82, &[0x00, 0x01, 0x00, 0x01, b't', 0x03]),
        DecodeError::InvalidQoS,
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn utf8_rules() {
    // Not UTF-8.
    refused(
        V311,
        &frame(0x30, &[0x00, 0x02, b'a', 0xFF]),
        DecodeError::InvalidUtf8,
        ReasonCode::MalformedPacket,
    );
    // A surrogate code point, U+D800 [MQTT-1.5.4-1].
    refused(
        V5,
        &frame(0x30, &[0x00, 0x03, 0xED, 0xA0, 0x80, 0x00]),
        DecodeError::InvalidUtf8,
        ReasonCode::MalformedPacket,
    );
    // U+0000 [MQTT-1.5.4-2], here in a client identifier.
    let connect = frame(
        0x10,
        &[
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x02, b'a', 0x00,
        ],
    );
    refused(
        V311,
        &connect,
        DecodeError::NullCharacter,
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn protocol_name_and_level() {
    let connect = |name: &[u8], level: u8| {
        let mut body = vec![0x00, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, 0x02, 0x00, 0x00, 0x00, 0x00]);
        frame(0x10, &body)
    };
    refused(
        V5,
        &connect(b"MQTX", 4),
        DecodeError::InvalidProtocolName,
        ReasonCode::UnsupportedProtocolVersion,
    );
    refused(
        V5,
        &connect(b"MQIsdp", 3),
        DecodeError::UnsupportedProtocolVersion(3),
        ReasonCode::UnsupportedProtocolVersion,
    );
    let err = decode(V5, &connect(b"MQTT", 6)).unwrap_err();
    assert_eq!(err, DecodeError::UnsupportedProtocolVersion(6));
    // A 3.1.1 server answers an unacceptable level with return code 1 [MQTT-3.1.2-2].
    assert_eq!(err.v311_connack_code(), Some(1));
    assert_eq!(DecodeError::InvalidUtf8.v311_connack_code(), None);
    // The CONNECT decoder ignores the connection's version: the packet states its own.
    assert!(
        decode(V311, &connect(b"MQTT", 5)).is_err(),
        "5.0 needs properties"
    );
    assert!(decode(V311, &connect(b"MQTT", 4)).is_ok());
}

#[test]
fn reserved_bits() {
    // CONNECT flags bit 0 [MQTT-3.1.2-3].
    let connect = frame(
        0x10,
        &[
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x00, 0x00, 0x00,
        ],
    );
    refused(
        V311,
        &connect,
        DecodeError::ReservedBitSet,
        ReasonCode::MalformedPacket,
    );
    // CONNACK acknowledge flags bits 7-1.
    refused(
        V311,
        &[0x20, 0x02, 0x02, 0x00],
        DecodeError::ReservedBitSet,
        ReasonCode::MalformedPacket,
    );
    // Subscription options: 3.1.1 reserves bits 7-2 [MQTT-3.8.3-4], 5.0 bits 7-6 [MQTT-3.8.3-5].
    refused(
        V311,
        &frame(0x82, &[0x00, 0x01, 0x00, 0x01, b't', 0x04]),
        DecodeError::ReservedBitSet,
        ReasonCode::MalformedPacket,
    );
    refused(
        V5,
        &frame(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x40]),
        DecodeError::ReservedBitSet,
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn will_and_password_flags() {
    // Will QoS 1 without the will flag [MQTT-3.1.2-11].
    let connect = frame(
        0x10,
        &[
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x08, 0x00, 0x00, 0x00, 0x00,
        ],
    );
    refused(
        V311,
        &connect,
        DecodeError::InvalidWillFlags,
        ReasonCode::MalformedPacket,
    );
    // 3.1.1: password without user name [MQTT-3.1.2-22].
    let body = [
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, b'p',
    ];
    refused(
        V311,
        &frame(0x10, &body),
        DecodeError::PasswordWithoutUsername,
        ReasonCode::MalformedPacket,
    );
    // 5.0 allows it.
    let v5_body = [
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        b'p',
    ];
    let v5_bytes = frame(0x10, &v5_body);
    let Packet::Connect(connect) = decode(V5, &v5_bytes).unwrap() else {
        panic!("not a CONNECT");
    };
    assert_eq!(
        (connect.username, connect.password),
        (None, Some(&b"p"[..]))
    );
}

#[test]
fn zero_packet_identifier() {
    // [MQTT-2.2.1-3]
    refused(
        V311,
        &[0x40, 0x02, 0x00, 0x00],
        DecodeError::ZeroPacketIdentifier,
        ReasonCode::ProtocolError,
    );
    refused(
        V311,
        &frame(0x32, &[0x00, 0x01, b't', 0x00, 0x00]),
        DecodeError::ZeroPacketIdentifier,
        ReasonCode::ProtocolError,
    );
}

#[test]
fn topic_names_and_filters() {
    // [MQTT-3.3.2-2]: no wildcards in a topic name.
    refused(
        V311,
        &frame(0x30, &[0x00, 0x03, b'a', b'/', b'+']),
        DecodeError::InvalidTopicName,
        ReasonCode::TopicNameInvalid,
    );
    // [MQTT-4.7.3-1]: a 3.1.1 topic name is at least one character.
    refused(
        V311,
        &frame(0x30, &[0x00, 0x00]),
        DecodeError::InvalidTopicName,
        ReasonCode::TopicNameInvalid,
    );
    // 5.0: an empty topic needs a topic alias.
    refused(
        V5,
        &frame(0x30, &[0x00, 0x00, 0x00]),
        DecodeError::EmptyTopicWithoutAlias,
        ReasonCode::ProtocolError,
    );
    let with_alias = frame(0x30, &[0x00, 0x00, 0x03, 0x23, 0x00, 0x01]);
    let Packet::Publish(p) = decode(V5, &with_alias).unwrap() else {
        panic!("not a PUBLISH");
    };
    assert_eq!((p.topic, p.properties.topic_alias), ("", Some(1)));
    // [MQTT-4.7.1-2]: '#' only as the last level.
    refused(
        V311,
        &frame(
            0x82,
            &[0x00, 0x01, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00],
        ),
        DecodeError::InvalidTopicFilter,
        ReasonCode::TopicFilterInvalid,
    );
    // A shared subscription needs a share name and a filter [MQTT-4.8.2-1].
    refused(
        V5,
        &frame(
            0xA2,
            &[
                0x00, 0x01, 0x00, 0x00, 0x08, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g',
            ],
        ),
        DecodeError::InvalidTopicFilter,
        ReasonCode::TopicFilterInvalid,
    );
    // A response topic is a topic name [MQTT-3.3.2-14].
    refused(
        V5,
        &frame(0x30, &[0x00, 0x01, b't', 0x04, 0x08, 0x00, 0x01, b'#']),
        DecodeError::InvalidTopicName,
        ReasonCode::TopicNameInvalid,
    );
}

#[test]
fn empty_subscribe_and_acknowledgements() {
    // [MQTT-3.8.3-3] and [MQTT-3.10.3-2]
    refused(
        V311,
        &[0x82, 0x02, 0x00, 0x01],
        DecodeError::NoTopicFilters,
        ReasonCode::ProtocolError,
    );
    refused(
        V5,
        &[0xA2, 0x03, 0x00, 0x01, 0x00],
        DecodeError::NoTopicFilters,
        ReasonCode::ProtocolError,
    );
    refused(
        V311,
        &[0x90, 0x02, 0x00, 0x01],
        DecodeError::NoReasonCodes,
        ReasonCode::ProtocolError,
    );
}

#[test]
fn reason_codes_per_packet() {
    // 3.1.1 CONNACK return codes stop at 5.
    refused(
        V311,
        &[0x20, 0x02, 0x00, 0x06],
        DecodeError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code: 6,
        },
        ReasonCode::ProtocolError,
    );
    // 0x04 (disconnect with will) is not a PUBACK reason.
    refused(
        V5,
        &[0x40, 0x03, 0x00, 0x01, 0x04],
        DecodeError::InvalidReasonCode {
            packet_type: PacketType::PubAck,
            code: 4,
        },
        ReasonCode::ProtocolError,
    );
    // 3.1.1 SUBACK allows 0, 1, 2 and 0x80 only.
    refused(
        V311,
        &[0x90, 0x03, 0x00, 0x01, 0x87],
        DecodeError::InvalidReasonCode {
            packet_type: PacketType::SubAck,
            code: 0x87,
        },
        ReasonCode::ProtocolError,
    );
    // A CONNACK refusal with session present [MQTT-3.2.2-6].
    refused(
        V5,
        &[0x20, 0x03, 0x01, 0x80, 0x00],
        DecodeError::SessionPresentOnRefusal,
        ReasonCode::ProtocolError,
    );
}

#[test]
fn subscription_option_rules() {
    // Retain handling 3.
    refused(
        V5,
        &frame(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x30]),
        DecodeError::InvalidRetainHandling,
        ReasonCode::ProtocolError,
    );
    // No Local on a shared subscription [MQTT-3.8.3-4].
    let mut body = vec![0x00, 0x01, 0x00, 0x00, 0x0A];
    body.extend_from_slice(b"$share/g/t");
    body.push(0x04);
    refused(
        V5,
        &frame(0x82, &body),
        DecodeError::NoLocalOnSharedSubscription,
        ReasonCode::ProtocolError,
    );
}

#[test]
fn property_rules() {
    let publish_with = |props: &[u8]| {
        let mut body = vec![0x00, 0x01, b't', props.len() as u8];
        body.extend_from_slice(props);
        frame(0x30, &body)
    };
    refused(
        V5,
        &publish_with(&[0x04, 0x00]),
        DecodeError::UnknownProperty(4),
        ReasonCode::MalformedPacket,
    );
    refused(
        V5,
        &publish_with(&[0x11, 0x00, 0x00, 0x00, 0x01]),
        DecodeError::PropertyNotAllowed {
            property: PropertyId::SessionExpiryInterval,
            packet_type: PacketType::Publish,
        },
        ReasonCode::MalformedPacket,
    );
    refused(
        V5,
        &publish_with(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
        DecodeError::DuplicateProperty(PropertyId::MessageExpiryInterval),
        ReasonCode::ProtocolError,
    );
    refused(
        V5,
        &publish_with(&[0x01, 0x02]),
        DecodeError::InvalidPropertyValue(PropertyId::PayloadFormatIndicator),
        ReasonCode::ProtocolError,
    );
    refused(
        V5,
        &publish_with(&[0x0B, 0x00]),
        DecodeError::InvalidPropertyValue(PropertyId::SubscriptionIdentifier),
        ReasonCode::ProtocolError,
    );
    // A topic alias of 0 [MQTT-3.3.2-8].
    refused(
        V5,
        &publish_with(&[0x23, 0x00, 0x00]),
        DecodeError::ZeroTopicAlias,
        ReasonCode::TopicAliasInvalid,
    );
    // A subscription identifier may repeat in PUBLISH, but not in SUBSCRIBE.
    refused(
        V5,
        &frame(
            0x82,
            &[
                0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b't', 0x00,
            ],
        ),
        DecodeError::DuplicateProperty(PropertyId::SubscriptionIdentifier),
        ReasonCode::ProtocolError,
    );
    let connect_with = |props: &[u8]| {
        let mut body = vec![
            0x00,
            0x04,
            b'M',
            b'Q',
            b'T',
            b'T',
            0x05,
            0x02,
            0x00,
            0x00,
            props.len() as u8,
        ];
        body.extend_from_slice(props);
        body.extend_from_slice(&[0x00, 0x00]);
        frame(0x10, &body)
    };
    refused(
        V5,
        &connect_with(&[0x21, 0x00, 0x00]),
        DecodeError::InvalidPropertyValue(PropertyId::ReceiveMaximum),
        ReasonCode::ProtocolError,
    );
    refused(
        V5,
        &connect_with(&[0x27, 0x00, 0x00, 0x00, 0x00]),
        DecodeError::InvalidPropertyValue(PropertyId::MaximumPacketSize),
        ReasonCode::ProtocolError,
    );
    refused(
        V5,
        &connect_with(&[0x16, 0x00, 0x01, 0xAA]),
        DecodeError::AuthenticationDataWithoutMethod,
        ReasonCode::ProtocolError,
    );
    // Will properties are checked against the will's own table.
    let will_connect = frame(
        0x10,
        &[
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x00, 0x00, // flags: will
            0x00, 0x00, // client id
            0x03, 0x21, 0x00, 0x01, // will properties: receive maximum, not allowed
            0x00, 0x01, b'w', 0x00, 0x00,
        ],
    );
    refused(
        V5,
        &will_connect,
        DecodeError::PropertyNotAllowed {
            property: PropertyId::ReceiveMaximum,
            packet_type: PacketType::Connect,
        },
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn errors_display_a_sentence() {
    let text = DecodeError::PacketTooLarge {
        size: 10,
        maximum: 5,
    }
    .to_string();
    assert_eq!(text, "packet of 10 bytes exceeds the maximum of 5");
}
