//! The QoS 0 fast paths: what a generated message costs when no session state depends on it.
//!
//! At QoS 0 the client session keeps nothing per message, in either direction: a publish
//! is encoded and queued, a received PUBLISH is decoded and handed back. Both are most of
//! the generator's cost per message (see BENCHMARKS.md, "Generator cost per message"),
//! mostly spent on work whose answer the generator already knows: it encodes the same
//! topic every time, and validates as UTF-8 topics it chose itself.
//!
//! - [`PublishTemplate`]: a publisher's PUBLISH, encoded once by the codec; every message
//!   copies it and overwrites the payload's stamp, the only bytes that change.
//! - [`Qos0Reader`]: frames a subscriber's input by remaining length and takes the QoS 0
//!   PUBLISH packets whose topic is one the generator could have published (the literal
//!   part of the subscription filter, then printable ASCII), reading the payload at its
//!   known offset. Anything else (another packet type, a flag, 5.0 properties, a topic it
//!   does not recognise) goes to the session, which decodes and validates it fully, so the
//!   fast path accepts a subset of what the session accepts and refuses nothing.

use petrel_codec::{Packet, ProtocolVersion, Publish, QoS};

use super::payload::{Stamp, STAMP_LEN};

/// The first byte of a PUBLISH at QoS 0 without DUP or RETAIN.
const PUBLISH_QOS0: u8 = 0x30;

/// A QoS 0 PUBLISH encoded once, to be copied per message with a new stamp.
#[derive(Debug, Clone)]
pub(crate) struct PublishTemplate {
    packet: Vec<u8>,
    /// Where the payload, and so the stamp, starts in `packet`.
    stamp_at: usize,
}

impl PublishTemplate {
    /// The packet the session would send for this topic and payload at QoS 0; `None` if
    /// the codec cannot encode it or the payload cannot carry a stamp.
    pub(crate) fn new(version: ProtocolVersion, topic: &str, payload: &[u8]) -> Option<Self> {
        if payload.len() < STAMP_LEN {
            return None;
        }
        let packet = Packet::Publish(Publish {
            qos: QoS::AtMostOnce,
            topic,
            payload,
            ..Publish::default()
        });
        let mut bytes = vec![0; packet.encoded_len(version).ok()?];
        let len = packet.encode(version, &mut bytes).ok()?;
        bytes.truncate(len);
        let stamp_at = len.checked_sub(payload.len())?;
        Some(PublishTemplate {
            packet: bytes,
            stamp_at,
        })
    }

    /// The size of every packet written.
    pub(crate) fn len(&self) -> usize {
        self.packet.len()
    }

    /// Writes the packet carrying `stamp` at the start of `out`; returns its length, or 0
    /// (nothing written) when `out` is too short.
    pub(crate) fn write(&self, stamp: &Stamp, out: &mut [u8]) -> usize {
        let Some(dst) = out.get_mut(..self.packet.len()) else {
            return 0;
        };
        dst.copy_from_slice(&self.packet);
        if let Some(payload) = dst.get_mut(self.stamp_at..) {
            stamp.write(payload);
        }
        self.packet.len()
    }
}

/// What [`Qos0Reader::read`] found at the start of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framed<'a> {
    /// A QoS 0 PUBLISH of `len` bytes carrying `payload`.
    Message { payload: &'a [u8], len: usize },
    /// The start of a packet the fast path would take, whose end has not arrived.
    Incomplete,
    /// Something for the session to decode.
    Session,
}

/// Recognises the QoS 0 PUBLISH packets of one subscription (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Qos0Reader {
    v5: bool,
    /// The filter up to its first wildcard: every topic it matches starts with it.
    prefix: Vec<u8>,
    /// The largest packet taken here; larger ones go to the session and its size limit.
    max_packet: usize,
}

impl Qos0Reader {
    /// A reader for the messages of `filter`; `None` when the filter's literal part is not
    /// printable ASCII (the fast path then never applies, and the session does it all).
    pub(crate) fn new(version: ProtocolVersion, filter: &str, max_packet: usize) -> Option<Self> {
        let literal = filter.split(['+', '#']).next().unwrap_or_default();
        if !literal.bytes().all(topic_byte) {
            return None;
        }
        Some(Qos0Reader {
            v5: version.is_v5(),
            prefix: literal.as_bytes().to_vec(),
            max_packet,
        })
    }

    /// Looks at the packet at the start of `input`.
    pub(crate) fn read<'a>(&self, input: &'a [u8]) -> Framed<'a> {
        if input.first() != Some(&PUBLISH_QOS0) {
            return Framed::Session;
        }
        // The remaining length: at most 4 bytes, each but the last with its top bit set,
        // and minimal (the codec refuses a trailing zero byte [MQTT-1.5.5-1]).
        let mut remaining = 0usize;
        let mut header = 1;
        loop {
            let Some(&b) = input.get(header) else {
                return Framed::Incomplete;
            };
            remaining |= usize::from(b & 0x7F) << (7 * (header - 1));
            header += 1;
            if b & 0x80 == 0 {
                if b == 0 && header > 2 {
                    return Framed::Session;
                }
                break;
            }
            if header == 5 {
                return Framed::Session;
            }
        }
        let len = header + remaining;
        if len > self.max_packet {
            return Framed::Session;
        }
        let Some(body) = input.get(header..len) else {
            return Framed::Incomplete;
        };
        let Some((&[hi, lo], rest)) = body.split_first_chunk::<2>() else {
            return Framed::Session;
        };
        let topic_len = usize::from(u16::from_be_bytes([hi, lo]));
        let Some((topic, rest)) = rest.split_at_checked(topic_len) else {
            return Framed::Session;
        };
        let Some(tail) = topic.strip_prefix(self.prefix.as_slice()) else {
            return Framed::Session;
        };
        if topic.is_empty() || !tail.iter().copied().all(topic_byte) {
            return Framed::Session;
        }
        let payload = if self.v5 {
            // No properties at all (a property length of zero): a topic alias, a payload
            // format or anything else needs the session.
            match rest.split_first() {
                Some((0, payload)) => payload,
                _ => return Framed::Session,
            }
        } else {
            rest
        };
        Framed::Message { payload, len }
    }
}

/// A byte the fast path accepts in a topic: printable ASCII other than the wildcards, so
/// that a topic made of them is valid UTF-8 without U+0000 and a valid topic name.
fn topic_byte(b: u8) -> bool {
    (b' '..=b'~').contains(&b) && b != b'+' && b != b'#'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::payload;
    use crate::load::session::{options, SubClient, MAX_PACKET};
    use petrel_codec::{ConnAck, Properties};
    use petrel_state::client::{Client, ClientEvent};
    use petrel_state::Instant;

    const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

    fn encode(version: ProtocolVersion, packet: &Packet<'_>) -> Vec<u8> {
        let mut buf = vec![0; packet.encoded_len(version).unwrap()];
        let n = packet.encode(version, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn stamp(seq: u32) -> Stamp {
        Stamp {
            sent_ns: 0x0102_0304_0506_0708 + u64::from(seq),
            publisher: 3,
            seq,
        }
    }

    #[test]
    fn the_template_writes_what_the_session_sends() {
        for version in VERSIONS {
            for size in [16, 64, 300] {
                let topic = "petrel-bench/0000abcd/07";
                let now = Instant::from_micros(0);
                // The publishers' session, with capacities small enough for a test's stack.
                let mut client: Client<'_, 4, 8192> =
                    Client::new(options(version, "p", 0, None, None));
                client.connect(now).unwrap();
                let mut scratch = vec![0; 1024];
                while client.poll_transmit(now, &mut scratch) > 0 {}
                let connack = encode(version, &Packet::ConnAck(ConnAck::default()));
                client.handle_bytes(now, &connack).unwrap();
                let mut body = payload::buffer(size);
                let template = PublishTemplate::new(version, topic, &body).unwrap();
                let mut out = vec![0; 1024];
                for seq in [0, 1, 70_000] {
                    stamp(seq).write(&mut body);
                    client
                        .publish(now, topic, &body, QoS::AtMostOnce, false)
                        .unwrap();
                    let n = client.poll_transmit(now, &mut scratch);
                    assert_eq!(template.write(&stamp(seq), &mut out), template.len());
                    assert_eq!(out[..template.len()], scratch[..n], "{version:?} {size}");
                }
                assert_eq!(template.write(&stamp(0), &mut out[..template.len() - 1]), 0);
            }
        }
        assert!(PublishTemplate::new(ProtocolVersion::V311, "t", &[0; 15]).is_none());
    }

    /// Every packet the reader takes, the session decodes to the same payload.
    fn agrees_with_session(version: ProtocolVersion, reader: &Qos0Reader, wire: &[u8]) {
        let now = Instant::from_micros(0);
        let mut client = Box::new(SubClient::new(options(version, "s", 0, None, None)));
        client.connect(now).unwrap();
        let mut scratch = vec![0; 1024];
        while client.poll_transmit(now, &mut scratch) > 0 {}
        let connack = encode(version, &Packet::ConnAck(ConnAck::default()));
        client.handle_bytes(now, &connack).unwrap();
        if let Framed::Message { payload, len } = reader.read(wire) {
            let got = client.handle_bytes(now, wire).unwrap();
            assert_eq!(got.consumed, len);
            match got.event {
                Some(ClientEvent::Message(p)) => assert_eq!(p.payload, payload),
                other => panic!("the session saw {other:?}"),
            }
        }
    }

    #[test]
    fn the_reader_takes_generated_messages_and_leaves_the_rest_to_the_session() {
        for version in VERSIONS {
            let reader = Qos0Reader::new(version, "pb/run/+", MAX_PACKET).unwrap();
            let mut body = payload::buffer(200);
            stamp(9).write(&mut body);
            let publish = |topic, qos, retain, properties| {
                Packet::Publish(Publish {
                    qos,
                    retain,
                    topic,
                    packet_id: (qos != QoS::AtMostOnce)
                        .then(|| petrel_codec::PacketId::new(1))
                        .flatten(),
                    payload: &body,
                    properties,
                    ..Publish::default()
                })
            };
            let plain = encode(
                version,
                &publish("pb/run/07", QoS::AtMostOnce, false, Properties::default()),
            );
            // 200 bytes of payload: a two-byte remaining length.
            assert_eq!(
                reader.read(&plain),
                Framed::Message {
                    payload: &body,
                    len: plain.len()
                }
            );
            agrees_with_session(version, &reader, &plain);
            for cut in [1, 2, 3, plain.len() - 1] {
                assert_eq!(reader.read(&plain[..cut]), Framed::Incomplete, "{cut}");
            }
            assert_eq!(reader.read(&[]), Framed::Session);
            let mut two = plain.clone();
            two.extend_from_slice(&plain);
            assert!(matches!(reader.read(&two), Framed::Message { len, .. } if len == plain.len()));

            let session = [
                encode(
                    version,
                    &publish("pb/run/07", QoS::AtLeastOnce, false, Properties::default()),
                ),
                encode(
                    version,
                    &publish("pb/run/07", QoS::AtMostOnce, true, Properties::default()),
                ),
                encode(
                    version,
                    &publish("pb/other/07", QoS::AtMostOnce, false, Properties::default()),
                ),
                encode(
                    version,
                    &publish("pb/run/é", QoS::AtMostOnce, false, Properties::default()),
                ),
                encode(
                    version,
                    &publish("pb/ru", QoS::AtMostOnce, false, Properties::default()),
                ),
                encode(version, &Packet::PingResp),
            ];
            for wire in &session {
                assert_eq!(reader.read(wire), Framed::Session, "{wire:?}");
            }
            if version.is_v5() {
                let properties = Properties {
                    message_expiry_interval: Some(5),
                    ..Properties::default()
                };
                let with = encode(
                    version,
                    &publish("pb/run/07", QoS::AtMostOnce, false, properties),
                );
                assert_eq!(reader.read(&with), Framed::Session);
            }
        }
    }

    #[test]
    fn the_reader_refuses_what_the_codec_would() {
        let reader = Qos0Reader::new(ProtocolVersion::V311, "a/#", MAX_PACKET).unwrap();
        let ok = [0x30, 0x05, 0x00, 0x03, b'a', b'/', b'b'];
        assert!(matches!(
            reader.read(&ok),
            Framed::Message {
                payload: &[],
                len: 7
            }
        ));
        // A non-minimal remaining length, a topic longer than the packet, a wildcard, a
        // control character, bytes that are not UTF-8, an empty topic: all the session's.
        let bad: [&[u8]; 6] = [
            &[0x30, 0x85, 0x00, 0x00, 0x03, b'a', b'/', b'b'],
            &[0x30, 0x05, 0x00, 0x09, b'a', b'/', b'b'],
            &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
            &[0x30, 0x05, 0x00, 0x03, b'a', b'/', 0x00],
            &[0x30, 0x05, 0x00, 0x03, b'a', b'/', 0xFF],
            &[0x30, 0x02, 0x00, 0x00],
        ];
        for wire in bad {
            assert_eq!(reader.read(wire), Framed::Session, "{wire:?}");
        }
        let any = Qos0Reader::new(ProtocolVersion::V311, "#", MAX_PACKET).unwrap();
        assert_eq!(any.read(&[0x30, 0x02, 0x00, 0x00]), Framed::Session);
        // A packet over the limit goes to the session even when it is all there.
        let small = Qos0Reader::new(ProtocolVersion::V311, "a/#", 6).unwrap();
        assert_eq!(small.read(&ok), Framed::Session);
        assert!(Qos0Reader::new(ProtocolVersion::V311, "é/+", MAX_PACKET).is_none());
    }
}
