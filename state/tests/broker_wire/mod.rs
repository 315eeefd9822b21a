//! The wire side of the broker tests: encode a packet into a connection, and take the
//! frames the broker has for it. Shared by the `broker_*` test files.

use bytes::{Bytes, BytesMut};
use petrel_codec::{Decoder, Packet, ProtocolVersion};
use petrel_state::broker::{Broker, ConnectionId};
use petrel_state::Instant;

/// Encodes `packet` for `version` and hands the bytes to the broker as connection `id`'s.
pub(crate) fn send(
    broker: &mut Broker,
    now: Instant,
    id: ConnectionId,
    version: ProtocolVersion,
    packet: Packet<'_>,
) {
    let mut buf = BytesMut::new();
    packet.encode_to_bytes(version, &mut buf).unwrap();
    broker.handle_bytes(now, id, &buf);
}

/// Every whole frame the broker has sent connection `id` since the last call; a partial
/// frame stays in `inbox` for the next.
pub(crate) fn frames(
    broker: &mut Broker,
    now: Instant,
    id: ConnectionId,
    version: ProtocolVersion,
    inbox: &mut BytesMut,
) -> Vec<Bytes> {
    while broker.poll_transmit(now, id, inbox) > 0 {}
    let decoder = Decoder::new(version);
    let mut frames = Vec::new();
    while let Ok(Some(h)) = decoder.header(inbox) {
        if h.packet_len() > inbox.len() {
            break;
        }
        frames.push(inbox.split_to(h.packet_len()).freeze());
    }
    frames
}
