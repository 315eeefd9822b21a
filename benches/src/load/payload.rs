//! What every generated message carries, so that the receiving side can tell who sent it,
//! in what order, and when.
//!
//! Layout (little-endian), then padding up to the requested payload size:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | send time, wall-anchored monotonic nanoseconds ([`Clock::stamp_ns`](super::clock::Clock::stamp_ns)) |
//! | 8..12 | publisher id |
//! | 12..16 | sequence number, from 0, per publisher |

/// The size of the stamp; the smallest payload the generator sends.
pub const STAMP_LEN: usize = 16;

/// The byte the padding is filled with: not zero, so that a compressing transport could not
/// make large payloads artificially cheap.
const PAD: u8 = 0xA5;

/// The header of a generated payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// When the publisher handed the message to its session.
    pub sent_ns: u64,
    /// Which publisher sent it (dense, from 0, within a run).
    pub publisher: u32,
    /// Its sequence number within that publisher's stream.
    pub seq: u32,
}

impl Stamp {
    /// Writes the stamp at the start of `buf` (at least [`STAMP_LEN`] bytes).
    pub fn write(&self, buf: &mut [u8]) {
        if let Some(head) = buf.get_mut(..STAMP_LEN) {
            head[..8].copy_from_slice(&self.sent_ns.to_le_bytes());
            head[8..12].copy_from_slice(&self.publisher.to_le_bytes());
            head[12..16].copy_from_slice(&self.seq.to_le_bytes());
        }
    }

    /// Reads the stamp of a payload; `None` for a payload too short to carry one.
    pub fn read(buf: &[u8]) -> Option<Stamp> {
        let head = buf.get(..STAMP_LEN)?;
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&head[..8]);
        let mut publisher = [0u8; 4];
        publisher.copy_from_slice(&head[8..12]);
        let mut seq = [0u8; 4];
        seq.copy_from_slice(&head[12..16]);
        Some(Stamp {
            sent_ns: u64::from_le_bytes(ns),
            publisher: u32::from_le_bytes(publisher),
            seq: u32::from_le_bytes(seq),
        })
    }
}

/// A payload buffer of `size` bytes (at least [`STAMP_LEN`]) with its padding filled in;
/// only the stamp changes from one message to the next.
pub fn buffer(size: usize) -> Vec<u8> {
    vec![PAD; size.max(STAMP_LEN)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips() {
        let mut buf = buffer(20);
        let stamp = Stamp {
            sent_ns: 0x0102_0304_0506_0708,
            publisher: 7,
            seq: 42,
        };
        stamp.write(&mut buf);
        assert_eq!(Stamp::read(&buf), Some(stamp));
        assert_eq!(buf[16..], [PAD; 4]);
        assert_eq!(Stamp::read(&buf[..15]), None);
    }
}
