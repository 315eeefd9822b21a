//! Property tests over generated well-formed packets of all fifteen types, in both protocol
//! versions: decoding what was encoded gives the packet back, sizes are announced exactly,
//! encodings are canonical, partial input is reported as such, and every output flavour
//! writes the same bytes.

#[path = "common/strategies.rs"]
mod strategies;

use bytes::BytesMut;
use petrel_codec::{
    DecodeError, Decoded, Decoder, EncodeError, Packet, PacketId, PacketType, ProtocolVersion, QoS,
    ReasonCode, SubscriptionOptions,
};
use proptest::prelude::*;
use strategies::*;

use ProtocolVersion::{V311, V5};

/// Larger than any generated packet, so `encode_to_heapless` succeeds but for the one
/// oversized packet of `four_byte_remaining_length`.
const HEAPLESS_CAPACITY: usize = 1 << 15;

/// A PINGREQ: the packet that follows in the stream tests.
const PINGREQ: [u8; 2] = [0xC0, 0x00];

fn fail<E: std::fmt::Debug>(what: &str, err: E) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {err:?}"))
}

fn encode(packet: &Packet<'_>, version: ProtocolVersion) -> Result<Vec<u8>, TestCaseError> {
    let len = packet
        .encoded_len(version)
        .map_err(|e| fail("encoded_len", e))?;
    let mut buf = vec![0u8; len];
    let written = packet
        .encode(version, &mut buf)
        .map_err(|e| fail("encode", e))?;
    prop_assert_eq!(
        written,
        len,
        "encode wrote a different size than encoded_len announced"
    );
    Ok(buf)
}

/// Every property the round-trip promises, for one packet.
fn check_roundtrip(owned: &OwnedPacket, version: ProtocolVersion) -> Result<(), TestCaseError> {
    owned.with(|packet| {
        let buf = encode(&packet, version)?;
        let len = buf.len();

        // A buffer one byte short, or none at all, is refused with the size needed.
        let too_small = Err(EncodeError::BufferTooSmall { required: len });
        let mut short = vec![0u8; len - 1];
        prop_assert_eq!(packet.encode(version, &mut short), too_small);
        prop_assert_eq!(packet.encode(version, &mut []), too_small);

        // decode(encode(p)) == p, taking exactly the packet's bytes.
        let decoder = Decoder::new(version);
        let decoded = match decoder.decode(&buf) {
            Ok(Decoded::Packet {
                packet: d,
                len: used,
            }) => {
                prop_assert_eq!(used, len);
                d
            }
            other => return Err(fail("decoding a whole packet", other)),
        };
        prop_assert_eq!(decoded, packet);

        // A CONNECT states its own version, whatever the decoder was set up with.
        if let Packet::Connect(_) = packet {
            let other = Decoder::new(if version == V5 { V311 } else { V5 });
            prop_assert_eq!(other.decode(&buf), Ok(Decoded::Packet { packet, len }));
        }

        // Canonical: the decoded packet (lists over wire bytes now) re-encodes identically.
        prop_assert_eq!(decoded.encoded_len(version), Ok(len));
        let again = encode(&decoded, version)?;
        prop_assert_eq!(
            &again,
            &buf,
            "re-encoding the decoded packet changed its bytes"
        );

        // Streaming: every strict prefix is incomplete; the count is a lower bound, exact
        // once the fixed header is in.
        let header = decoder
            .header(&buf)
            .map_err(|e| fail("header", e))?
            .ok_or_else(|| TestCaseError::fail("complete header reported incomplete"))?;
        prop_assert_eq!(header.packet_len(), len);
        prop_assert_eq!(header.packet_type, packet.packet_type());
        for cut in 0..len {
            match decoder.decode(&buf[..cut]) {
                Ok(Decoded::Incomplete { needed }) => {
                    let missing = len - cut;
                    prop_assert!(
                        (1..=missing).contains(&needed),
                        "prefix of {} of {} bytes: needed {} but {} are missing",
                        cut,
                        len,
                        needed,
                        missing
                    );
                    if cut >= usize::from(header.header_len) {
                        prop_assert_eq!(needed, missing);
                    }
                }
                other => return Err(fail(&format!("prefix of {cut} of {len} bytes"), other)),
            }
        }

        // With the next packet (or part of it) behind it, the packet still decodes alone.
        for tail in [&PINGREQ[..1], &PINGREQ[..]] {
            let mut stream = buf.clone();
            stream.extend_from_slice(tail);
            prop_assert_eq!(decoder.decode(&stream), Ok(Decoded::Packet { packet, len }));
        }
        let mut stream = buf.clone();
        stream.extend_from_slice(&PINGREQ);
        prop_assert_eq!(
            decoder.decode(&stream[len..]),
            Ok(Decoded::Packet {
                packet: Packet::PingReq,
                len: 2
            })
        );

        // BytesMut: appended after what is already there.
        let mut out = BytesMut::from(&b"earlier"[..]);
        prop_assert_eq!(packet.encode_to_bytes(version, &mut out), Ok(len));
        prop_assert_eq!(&out[..7], b"earlier");
        prop_assert_eq!(&out[7..], &buf[..]);

        // heapless: replaces the contents; a too small capacity is refused with the size.
        let mut vec = heapless::Vec::<u8, HEAPLESS_CAPACITY>::new();
        vec.extend_from_slice(b"stale").expect("fits");
        let result = packet.encode_to_heapless(version, &mut vec);
        if len <= HEAPLESS_CAPACITY {
            prop_assert_eq!(result, Ok(len));
            prop_assert_eq!(&vec[..], &buf[..]);
        } else {
            prop_assert_eq!(result, too_small);
        }
        let mut tiny = heapless::Vec::<u8, 4>::new();
        let result = packet.encode_to_heapless(version, &mut tiny);
        if len <= 4 {
            prop_assert_eq!(result, Ok(len));
            prop_assert_eq!(&tiny[..], &buf[..]);
        } else {
            prop_assert_eq!(result, too_small);
        }
        Ok(())
    })
}

macro_rules! roundtrip_tests {
    ($($name:ident: $version:expr => $strategy:expr;)*) => {
        proptest! {
            #![proptest_config(config())]
            $(
                #[test]
                fn $name(packet in $strategy) {
                    check_roundtrip(&packet, $version)?;
                }
            )*
        }
    };
}

roundtrip_tests! {
    connect_v5: V5 => connect(V5);
    connack_v5: V5 => connack(V5);
    publish_v5: V5 => publish(V5);
    puback_v5: V5 => pub_response(V5, PacketType::PubAck);
    pubrec_v5: V5 => pub_response(V5, PacketType::PubRec);
    pubrel_v5: V5 => pub_response(V5, PacketType::PubRel);
    pubcomp_v5: V5 => pub_response(V5, PacketType::PubComp);
    subscribe_v5: V5 => subscribe(V5);
    suback_v5: V5 => suback(V5);
    unsubscribe_v5: V5 => unsubscribe(V5);
    unsuback_v5: V5 => unsuback(V5);
    pingreq_v5: V5 => Just(OwnedPacket::PingReq);
    pingresp_v5: V5 => Just(OwnedPacket::PingResp);
    disconnect_v5: V5 => disconnect(V5);
    auth_v5: V5 => auth();

    connect_v311: V311 => connect(V311);
    connack_v311: V311 => connack(V311);
    publish_v311: V311 => publish(V311);
    puback_v311: V311 => pub_response(V311, PacketType::PubAck);
    pubrec_v311: V311 => pub_response(V311, PacketType::PubRec);
    pubrel_v311: V311 => pub_response(V311, PacketType::PubRel);
    pubcomp_v311: V311 => pub_response(V311, PacketType::PubComp);
    subscribe_v311: V311 => subscribe(V311);
    suback_v311: V311 => suback(V311);
    unsubscribe_v311: V311 => unsubscribe(V311);
    unsuback_v311: V311 => unsuback(V311);
    pingreq_v311: V311 => Just(OwnedPacket::PingReq);
    pingresp_v311: V311 => Just(OwnedPacket::PingResp);
    disconnect_v311: V311 => disconnect(V311);
}

/// A four-byte remaining length needs a packet of 2 MiB, too big to generate by the hundred:
/// one such PUBLISH goes through every check once, in each version.
#[test]
fn four_byte_remaining_length() {
    let publish = OwnedPacket::Publish(OwnedPublish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "big/é".into(),
        packet_id: PacketId::new(0xBEEF),
        properties: OwnedProps::default(),
        payload: vec![0xA5; 2_097_152],
    });
    for version in [V311, V5] {
        check_roundtrip(&publish, version).unwrap();
    }
}

/// Two packets back to back, the second possibly cut short: each decodes in turn.
fn check_stream(
    first: &OwnedPacket,
    second: &OwnedPacket,
    version: ProtocolVersion,
) -> Result<(), TestCaseError> {
    first.with(|a| {
        second.with(|b| {
            let a_bytes = encode(&a, version)?;
            let b_bytes = encode(&b, version)?;
            let mut stream = a_bytes.clone();
            stream.extend_from_slice(&b_bytes);
            let decoder = Decoder::new(version);
            let a_len = a_bytes.len();
            let b_len = b_bytes.len();
            for cut in [a_len, a_len + 1, a_len + b_len / 2, stream.len()] {
                prop_assert_eq!(
                    decoder.decode(&stream[..cut]),
                    Ok(Decoded::Packet {
                        packet: a,
                        len: a_len
                    })
                );
            }
            prop_assert_eq!(
                decoder.decode(&stream[a_len..]),
                Ok(Decoded::Packet {
                    packet: b,
                    len: b_len
                })
            );
            Ok(())
        })
    })
}

/// What a 5.0 packet becomes when encoded for a 3.1.1 connection: properties are dropped
/// and reason codes translated. `None` for a packet 3.1.1 cannot express at all.
fn project_to_v311(packet: &OwnedPacket) -> Option<OwnedPacket> {
    let none = OwnedProps::default;
    Some(match packet.clone() {
        OwnedPacket::Auth(_) => return None,
        OwnedPacket::Publish(p) if p.topic.is_empty() => return None,
        // A CONNECT is always encoded in its own protocol version.
        connect @ OwnedPacket::Connect(_) => connect,
        OwnedPacket::ConnAck(mut c) => {
            c.reason_code = ReasonCode::from_v311_connack(c.reason_code.to_v311_connack())?;
            c.properties = none();
            OwnedPacket::ConnAck(c)
        }
        OwnedPacket::Publish(mut p) => {
            p.properties = none();
            OwnedPacket::Publish(p)
        }
        OwnedPacket::PubAck(mut r)
        | OwnedPacket::PubRec(mut r)
        | OwnedPacket::PubRel(mut r)
        | OwnedPacket::PubComp(mut r) => {
            r.reason_code = ReasonCode::Success;
            r.properties = none();
            match packet {
                OwnedPacket::PubAck(_) => OwnedPacket::PubAck(r),
                OwnedPacket::PubRec(_) => OwnedPacket::PubRec(r),
                OwnedPacket::PubRel(_) => OwnedPacket::PubRel(r),
                _ => OwnedPacket::PubComp(r),
            }
        }
        OwnedPacket::Subscribe(mut s) => {
            s.properties = none();
            for (_, options) in &mut s.filters {
                *options = SubscriptionOptions::qos(options.qos);
            }
            OwnedPacket::Subscribe(s)
        }
        OwnedPacket::SubAck(mut s) => {
            s.properties = none();
            for code in &mut s.reason_codes {
                *code = ReasonCode::from_v311_suback(code.to_v311_suback())?;
            }
            OwnedPacket::SubAck(s)
        }
        OwnedPacket::Unsubscribe(mut u) => {
            u.properties = none();
            OwnedPacket::Unsubscribe(u)
        }
        OwnedPacket::UnsubAck(mut u) => {
            u.properties = none();
            u.reason_codes.clear();
            OwnedPacket::UnsubAck(u)
        }
        OwnedPacket::Disconnect(_) => OwnedPacket::Disconnect(OwnedReasoned {
            reason_code: ReasonCode::Success,
            properties: none(),
        }),
        ping @ (OwnedPacket::PingReq | OwnedPacket::PingResp) => ping,
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn two_packets_in_a_stream_v5(a in any_packet(V5), b in any_packet(V5)) {
        check_stream(&a, &b, V5)?;
    }

    #[test]
    fn two_packets_in_a_stream_v311(a in any_packet(V311), b in any_packet(V311)) {
        check_stream(&a, &b, V311)?;
    }

    /// A client's decoder reads every packet a server sends exactly as the full decoder does,
    /// and refuses the packets only clients send from their fixed header.
    #[test]
    fn decode_from_server_agrees_with_decode(packet in any_packet(V5), v311 in any::<bool>()) {
        let version = if v311 { V311 } else { V5 };
        packet.with(|p| {
            if v311 && p.packet_type() == PacketType::Auth {
                return Ok(());
            }
            let bytes = encode(&p, version)?;
            let decoder = Decoder::new(version);
            let client_only = matches!(
                p.packet_type(),
                PacketType::Connect
                    | PacketType::Subscribe
                    | PacketType::Unsubscribe
                    | PacketType::PingReq
            );
            for cut in [bytes.len(), bytes.len() - 1] {
                let expected = if client_only && cut >= 2 {
                    Err(DecodeError::InvalidPacketType(p.packet_type() as u8))
                } else {
                    decoder.decode(&bytes[..cut])
                };
                prop_assert_eq!(decoder.decode_from_server(&bytes[..cut]), expected);
            }
            Ok(())
        })?;
    }

    /// A 5.0 packet sent to a 3.1.1 peer is written exactly as its 3.1.1 projection, and a
    /// 3.1.1 decoder reads that projection back.
    #[test]
    fn v5_packets_over_v311_keep_what_v311_can_carry(packet in any_packet(V5)) {
        packet.with(|p| {
            match project_to_v311(&packet) {
                Some(projection) => projection.with(|expected| {
                    let bytes = encode(&p, V311)?;
                    prop_assert_eq!(&bytes, &encode(&expected, V311)?);
                    prop_assert_eq!(
                        Decoder::new(V311).decode(&bytes),
                        Ok(Decoded::Packet { packet: expected, len: bytes.len() })
                    );
                    Ok(())
                }),
                None if p.packet_type() == PacketType::Auth => {
                    let refused = Err(EncodeError::NotInVersion(PacketType::Auth));
                    prop_assert_eq!(p.encoded_len(V311), refused);
                    prop_assert_eq!(p.encode(V311, &mut [0u8; 512]), refused);
                    Ok(())
                }
                None => {
                    // An aliased PUBLISH has an empty topic, which 3.1.1 does not allow; the
                    // encoder leaves content rules to the caller, the decoder enforces them.
                    let bytes = encode(&p, V311)?;
                    prop_assert_eq!(
                        Decoder::new(V311).decode(&bytes),
                        Err(DecodeError::InvalidTopicName)
                    );
                    Ok(())
                }
            }
        })?;
    }
}
