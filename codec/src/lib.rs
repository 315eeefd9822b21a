//! `petrel-codec`: MQTT 3.1.1 and 5.0 control packets, decoded and encoded without
//! allocation and without panics.
//!
//! # Contract
//!
//! - **Decoding never panics and never allocates**, whatever the input. A decoded
//!   [`Packet`] borrows from the input buffer: strings and payloads are slices of it, and
//!   repeated fields ([`List`]) iterate over its validated bytes.
//! - **Every well-formedness rule of both specifications is checked**: UTF-8 strings (no
//!   U+0000, no surrogates), topic names and filters, reserved bits, QoS 3, remaining length,
//!   packet identifiers, property placement and repetition, reason codes per packet. A
//!   violation is a [`DecodeError`] whose [`reason_code`](DecodeError::reason_code) is the
//!   code the receiver must send when it closes the connection.
//! - **Streaming**: [`Decoder::decode`] on a partial buffer says how many more bytes it needs,
//!   and refuses a packet above the maximum size as soon as its fixed header arrives.
//! - **Encoding** writes into a caller's `&mut [u8]`; it never panics either, and a buffer of
//!   [`Packet::encoded_len`] bytes is always large enough. With the `std` feature it can also
//!   append to a `bytes::BytesMut`.
//!
//! # Example
//!
//! ```
//! use petrel_codec::{Decoded, Decoder, Packet, ProtocolVersion, Publish, QoS, PacketId};
//!
//! let publish = Packet::Publish(Publish {
//!     qos: QoS::AtLeastOnce,
//!     topic: "sensors/kitchen/temp",
//!     packet_id: PacketId::new(7),
//!     payload: b"21.5",
//!     ..Publish::default()
//! });
//! let mut buf = [0u8; 64];
//! let len = publish.encode(ProtocolVersion::V5, &mut buf)?;
//!
//! let decoder = Decoder::new(ProtocolVersion::V5);
//! let Decoded::Packet { packet, len: used } = decoder.decode(&buf[..len])? else {
//!     unreachable!("the whole packet is there");
//! };
//! assert_eq!(used, len);
//! assert_eq!(packet, publish);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `std` (default): `std::error::Error` for the errors; turns on `bytes`.
//! - `bytes`: [`Packet::encode_to_bytes`], appending to a `bytes::BytesMut` (needs a heap,
//!   not `std`).
//! - `v5` (default): MQTT 5.0 ([`ProtocolVersion::V5`], properties, reason codes on the
//!   wire). Without it the codec speaks only MQTT 3.1.1: [`Properties`] is empty and takes
//!   no room, and a 3.1.1 client on a microcontroller carries none of the 5.0 code.
//! - `defmt`: `defmt::Format` for packets and errors, for logging on microcontrollers.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "std")]
extern crate std;

mod decode;
mod error;
mod list;
mod packet;
mod properties;
mod reason;
pub mod topic;
mod types;
mod wire;

pub use decode::{Decoded, Decoder, FixedHeader, MAX_PACKET_SIZE};
pub use error::{DecodeError, EncodeError};
pub use list::{Iter, List, ListItem, SubscribeFilter};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResponse, Publish, SubAck, Subscribe, UnsubAck,
    Unsubscribe, Will, EMPTY_PROPERTIES,
};
pub use properties::{Properties, PropertyId, SubscriptionId, UserProperty};
pub use reason::ReasonCode;
pub use types::{PacketId, PacketType, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
pub use wire::{vbi_len, VBI_MAX};

impl Packet<'_> {
    /// Encodes the packet into a fixed-capacity `heapless::Vec`, replacing its contents.
    pub fn encode_to_heapless<const N: usize>(
        &self,
        version: ProtocolVersion,
        out: &mut heapless::Vec<u8, N>,
    ) -> Result<usize, EncodeError> {
        let len = self.encoded_len(version)?;
        out.clear();
        out.resize_default(len)
            .map_err(|_| EncodeError::BufferTooSmall { required: len })?;
        self.encode(version, out)
    }

    /// Appends the encoded packet to `out`, returning the number of bytes appended.
    #[cfg(feature = "bytes")]
    pub fn encode_to_bytes(
        &self,
        version: ProtocolVersion,
        out: &mut bytes::BytesMut,
    ) -> Result<usize, EncodeError> {
        let len = self.encoded_len(version)?;
        let start = out.len();
        out.resize(start + len, 0);
        match self.encode(version, &mut out[start..]) {
            Ok(written) => Ok(written),
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}
