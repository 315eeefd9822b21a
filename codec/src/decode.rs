//! Streaming decoding: the fixed header first, then the body once it has all arrived.

use crate::error::DecodeError;
use crate::packet::{decode_body, decode_server_body, Packet};
use crate::types::{PacketType, ProtocolVersion};
use crate::wire::{self, read_vbi, VbiRead};

/// The largest packet MQTT can express: a 5-byte fixed header and the largest remaining
/// length.
pub const MAX_PACKET_SIZE: u32 = 1 + 4 + wire::VBI_MAX;

/// A packet's fixed header (section 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FixedHeader {
    /// The packet type.
    pub packet_type: PacketType,
    /// The low nibble of the first byte (PUBLISH's DUP, QoS and RETAIN).
    pub flags: u8,
    /// The size of the packet after the fixed header.
    pub remaining_length: u32,
    /// The size of the fixed header itself: 2 to 5 bytes.
    pub header_len: u8,
}

impl FixedHeader {
    /// The packet's total size.
    pub const fn packet_len(&self) -> usize {
        self.header_len as usize + self.remaining_length as usize
    }
}

/// The outcome of a decode attempt on a buffer that may hold part of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // see `Packet`: no allocation on the decode path
pub enum Decoded<'a> {
    /// A whole packet: it borrows from the buffer, and its first `len` bytes can be
    /// discarded once the packet is no longer needed.
    Packet {
        /// The packet.
        packet: Packet<'a>,
        /// How many bytes of the buffer it took.
        len: usize,
    },
    /// The buffer ends inside a packet. `needed` more bytes at least are required: the exact
    /// number once the fixed header is complete, one while the header itself is incomplete.
    Incomplete {
        /// The lower bound on the bytes still missing.
        needed: usize,
    },
}

/// Decodes packets for one connection: the protocol version it speaks and the largest packet
/// it accepts.
///
/// ```
/// use petrel_codec::{Decoder, Decoded, Packet, ProtocolVersion};
///
/// let decoder = Decoder::new(ProtocolVersion::V311).with_max_packet_size(1024);
/// // PINGREQ, followed by the first byte of the next packet.
/// let buf = [0xC0, 0x00, 0x30];
/// match decoder.decode(&buf)? {
///     Decoded::Packet { packet, len } => {
///         assert_eq!(packet, Packet::PingReq);
///         assert_eq!(len, 2);
///     }
///     Decoded::Incomplete { .. } => unreachable!(),
/// }
/// assert_eq!(decoder.decode(&buf[2..])?, Decoded::Incomplete { needed: 1 });
/// # Ok::<(), petrel_codec::DecodeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Decoder {
    /// The protocol version of every packet but CONNECT, which states its own. A server that
    /// has not yet seen CONNECT may use [`ProtocolVersion::V5`], the superset.
    pub version: ProtocolVersion,
    /// The largest packet accepted, fixed header included; larger ones are refused as soon as
    /// their header arrives, before their body is read.
    pub max_packet_size: u32,
}

impl Decoder {
    /// A decoder for `version` accepting packets up to [`MAX_PACKET_SIZE`].
    pub const fn new(version: ProtocolVersion) -> Self {
        Decoder {
            version,
            max_packet_size: MAX_PACKET_SIZE,
        }
    }

    /// The same decoder with a different maximum packet size.
    pub const fn with_max_packet_size(self, max_packet_size: u32) -> Self {
        Decoder {
            max_packet_size,
            ..self
        }
    }

    /// Reads and checks the fixed header at the start of `buf`: `Ok(None)` if it has not all
    /// arrived. Refuses a reserved packet type, wrong flags and a packet larger than the
    /// maximum, without needing the body.
    pub fn header(&self, buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let nibble = first >> 4;
        let flags = first & 0x0F;
        let packet_type = match PacketType::from_nibble(nibble) {
            Some(PacketType::Auth) if !self.version.is_v5() => {
                return Err(DecodeError::InvalidPacketType(nibble))
            }
            Some(t) => t,
            None => return Err(DecodeError::InvalidPacketType(nibble)),
        };
        if packet_type == PacketType::Publish {
            // QoS 3 is refused here already, so a stream can be closed before the body.
            if (flags >> 1) & 0b11 == 3 {
                return Err(DecodeError::InvalidQoS);
            }
        } else if flags != packet_type.required_flags() {
            return Err(DecodeError::InvalidHeaderFlags { packet_type, flags });
        }
        let (remaining_length, vbi_len) = match read_vbi(&buf[1..])? {
            VbiRead::Value(value, len) => (value, len),
            VbiRead::Incomplete => return Ok(None),
        };
        let header = FixedHeader {
            packet_type,
            flags,
            remaining_length,
            header_len: 1 + vbi_len as u8,
        };
        let size = header.packet_len();
        if size > self.max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size,
                maximum: self.max_packet_size,
            });
        }
        Ok(Some(header))
    }

    /// Decodes the packet at the start of `buf`, borrowing from it.
    ///
    /// Never panics and never allocates, whatever `buf` holds. An error means the stream is
    /// not MQTT: close the connection with [`DecodeError::reason_code`].
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        let Some(header) = self.header(buf)? else {
            return Ok(Decoded::Incomplete { needed: 1 });
        };
        match body(&header, buf) {
            Ok(body) => decode_body(
                header.packet_type,
                header.flags,
                body,
                self.version,
                header.packet_len(),
            ),
            Err(needed) => Ok(Decoded::Incomplete { needed }),
        }
    }

    /// Decodes one packet as a client receives it: [`Decoder::decode`] for the packets a
    /// server sends, while those only a client sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE,
    /// PINGREQ) are refused with [`DecodeError::InvalidPacketType`] once their fixed header
    /// is complete, without reading their body. A client that decodes only through this
    /// method leaves their decoders out of its image (about 2.5 KB of flash on a Cortex-M4).
    pub fn decode_from_server<'a>(&self, buf: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        let Some(header) = self.header(buf)? else {
            return Ok(Decoded::Incomplete { needed: 1 });
        };
        use PacketType as T;
        if matches!(
            header.packet_type,
            T::Connect | T::Subscribe | T::Unsubscribe | T::PingReq
        ) {
            return Err(DecodeError::InvalidPacketType(header.packet_type as u8));
        }
        match body(&header, buf) {
            Ok(body) => decode_server_body(
                header.packet_type,
                header.flags,
                body,
                self.version,
                header.packet_len(),
            ),
            Err(needed) => Ok(Decoded::Incomplete { needed }),
        }
    }
}

/// The body of the packet `header` starts, or how many more bytes it needs.
fn body<'a>(header: &FixedHeader, buf: &'a [u8]) -> Result<&'a [u8], usize> {
    let len = header.packet_len();
    buf.get(usize::from(header.header_len)..len)
        .ok_or(len.saturating_sub(buf.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_from_server_refuses_what_only_clients_send() {
        use crate::packet::{Connect, PubResponse};
        use crate::{ConnAck, Properties};
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let d = Decoder::new(version);
            let mut buf = [0u8; 64];
            let connect = Packet::Connect(Connect {
                protocol_version: version,
                clean_start: true,
                keep_alive: 10,
                properties: Properties::default(),
                client_id: "c",
                will: None,
                username: None,
                password: None,
            });
            let n = connect.encode(version, &mut buf).unwrap();
            assert!(matches!(d.decode(&buf[..n]), Ok(Decoded::Packet { .. })));
            assert_eq!(
                d.decode_from_server(&buf[..n]),
                Err(DecodeError::InvalidPacketType(1))
            );
            // Refused from the fixed header alone, before the body arrives.
            assert_eq!(
                d.decode_from_server(&buf[..2]),
                Err(DecodeError::InvalidPacketType(1))
            );
            assert_eq!(
                d.decode_from_server(&[0xC0, 0x00]),
                Err(DecodeError::InvalidPacketType(12))
            );
            let id = crate::PacketId::new(7).unwrap();
            for packet in [
                Packet::ConnAck(ConnAck::default()),
                Packet::PubAck(PubResponse::new(id)),
                Packet::PingResp,
            ] {
                let n = packet.encode(version, &mut buf).unwrap();
                assert_eq!(d.decode_from_server(&buf[..n]), d.decode(&buf[..n]));
                assert_eq!(d.decode_from_server(&buf[..n - 1]), d.decode(&buf[..n - 1]));
            }
        }
    }

    #[test]
    fn incomplete_reports_what_is_missing() {
        let d = Decoder::new(ProtocolVersion::V5);
        assert_eq!(d.decode(&[]), Ok(Decoded::Incomplete { needed: 1 }));
        assert_eq!(d.decode(&[0x30]), Ok(Decoded::Incomplete { needed: 1 }));
        assert_eq!(
            d.decode(&[0x30, 0x80]),
            Ok(Decoded::Incomplete { needed: 1 })
        );
        assert_eq!(
            d.decode(&[0x30, 0x0A, 0x00]),
            Ok(Decoded::Incomplete { needed: 9 })
        );
    }

    #[test]
    fn max_packet_size_is_enforced_before_the_body() {
        let d = Decoder::new(ProtocolVersion::V5).with_max_packet_size(100);
        // Header says 200 remaining bytes; only the header has arrived.
        assert_eq!(
            d.decode(&[0x30, 0xC8, 0x01]),
            Err(DecodeError::PacketTooLarge {
                size: 203,
                maximum: 100
            })
        );
        assert_eq!(
            DecodeError::PacketTooLarge {
                size: 203,
                maximum: 100
            }
            .reason_code(),
            crate::ReasonCode::PacketTooLarge
        );
    }

    #[test]
    fn header_checks_type_and_flags_first() {
        let v3 = Decoder::new(ProtocolVersion::V311);
        let v5 = Decoder::new(ProtocolVersion::V5);
        assert_eq!(v3.decode(&[0x00]), Err(DecodeError::InvalidPacketType(0)));
        assert_eq!(v3.decode(&[0xF0]), Err(DecodeError::InvalidPacketType(15)));
        assert!(matches!(v5.decode(&[0xF0]), Ok(Decoded::Incomplete { .. })));
        assert_eq!(v5.decode(&[0x36]), Err(DecodeError::InvalidQoS));
        assert_eq!(
            v5.decode(&[0x80]),
            Err(DecodeError::InvalidHeaderFlags {
                packet_type: PacketType::Subscribe,
                flags: 0
            })
        );
        assert_eq!(
            v5.decode(&[0x61]),
            Err(DecodeError::InvalidHeaderFlags {
                packet_type: PacketType::PubRel,
                flags: 1
            })
        );
    }
}
