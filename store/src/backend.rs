//! What a store backend does: apply a batch of changes atomically, and give everything back
//! at start-up. The encoding of the values is [`crate::record`]'s; a backend stores bytes.

use std::fmt;

use crate::record::RecordError;

/// One change to the store.
///
/// A session is kept as one small record (its header: expiry, subscriptions, exactly-once
/// markers, will) plus one *entry* per message it holds, in flight or queued, so that a
/// delivery or an acknowledgement writes or deletes one entry instead of rewriting the
/// whole session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Replaces the header record of a session (key: client identifier).
    PutSession(String, Vec<u8>),
    /// Forgets a session: its header and every entry it has.
    DeleteSession(String),
    /// Sets one entry of a session.
    PutEntry(String, EntryKey, Vec<u8>),
    /// Removes one entry of a session.
    DeleteEntry(String, EntryKey),
    /// Sets the retained message of a topic.
    PutRetained(String, Vec<u8>),
    /// Clears the retained message of a topic.
    DeleteRetained(String),
}

/// Which list of its session an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// An outbound publication in flight (sent, not yet acknowledged).
    Outbound = 0,
    /// A delivery waiting in the session's queue.
    Queued = 1,
}

/// The key of an entry within its session: entries of one kind come back in `seq` order,
/// which is the order of the list they were written from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryKey {
    /// Its list.
    pub kind: EntryKind,
    /// Its place in the list, unique within the session.
    pub seq: u64,
}

impl EntryKey {
    /// The key as stored within its session: the kind, then the sequence number big-endian,
    /// so that byte order is list order.
    pub fn to_bytes(self) -> [u8; 9] {
        let mut out = [0; 9];
        out[0] = self.kind as u8;
        out[1..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// The key of [`EntryKey::to_bytes`]; `None` for bytes no writer produces.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&kind, seq) = bytes.split_first()?;
        let kind = match kind {
            0 => EntryKind::Outbound,
            1 => EntryKind::Queued,
            _ => return None,
        };
        Some(EntryKey {
            kind,
            seq: u64::from_be_bytes(seq.try_into().ok()?),
        })
    }
}

/// The prefix every entry key of `session` starts with in an ordered store (redb, fjall):
/// the identifier's length (two bytes, big-endian: an MQTT client identifier is at most
/// 65,535 bytes) and the identifier, so that no session's prefix is another's.
pub fn entry_prefix(session: &str) -> Vec<u8> {
    let len = u16::try_from(session.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + session.len() + 9);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(session.as_bytes());
    out
}

/// The whole key of an entry in an ordered store: [`entry_prefix`], then [`EntryKey::to_bytes`].
pub fn entry_key(session: &str, entry: EntryKey) -> Vec<u8> {
    let mut out = entry_prefix(session);
    out.extend_from_slice(&entry.to_bytes());
    out
}

/// The session and entry of a key written by [`entry_key`]; `None` for bytes no writer
/// produces.
pub fn split_entry_key(key: &[u8]) -> Option<(String, EntryKey)> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() != len + 9 {
        return None;
    }
    let (session, entry) = rest.split_at(len);
    let session = std::str::from_utf8(session).ok()?;
    Some((session.to_string(), EntryKey::from_bytes(entry)?))
}

/// Everything a backend holds, still encoded.
#[derive(Debug, Default)]
pub struct RawState {
    /// `(client identifier, header record)` of every session.
    pub sessions: Vec<(String, Vec<u8>)>,
    /// `(client identifier, key, value)` of every session entry, in any order.
    pub entries: Vec<(String, EntryKey, Vec<u8>)>,
    /// `(topic, message)` of every retained message.
    pub retained: Vec<(String, Vec<u8>)>,
}

/// A store that cannot be opened, read or written.
#[derive(Debug)]
pub enum StoreError {
    /// The backend itself failed (I/O, a damaged file, a refused connection).
    Backend {
        /// Which store: a file path or a Redis URL.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// A record in an otherwise readable store does not decode. The broker refuses to start
    /// rather than drop it: starting empty would silently lose acknowledged messages.
    Corrupt {
        /// Which store.
        location: String,
        /// `session`, `entry` or `retained`.
        table: &'static str,
        /// The record's key (client identifier or topic; for an entry, the client
        /// identifier and the entry).
        key: String,
        /// Why it does not decode.
        error: RecordError,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Backend { location, message } => write!(f, "store {location}: {message}"),
            StoreError::Corrupt {
                location,
                table,
                key,
                error,
            } => write!(
                f,
                "store {location}: {table} record {key:?} is damaged ({error}); refusing to \
                 start with a store that would lose it — restore a backup, or move the store \
                 away to start empty"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// A place sessions and retained messages are kept.
pub trait Backend: Send {
    /// Where it is, for messages: a path or a URL.
    fn location(&self) -> String;

    /// Applies `ops` in order as one atomic change. With `durable`, it is on stable storage
    /// when this returns; without, it survives the process but maybe not the machine.
    fn apply(&mut self, ops: &[Op], durable: bool) -> Result<(), StoreError>;

    /// Everything stored.
    fn load(&mut self) -> Result<RawState, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_by_session_then_list_then_place_and_split_back() {
        let a = |kind, seq| entry_key("ab", EntryKey { kind, seq });
        assert!(a(EntryKind::Outbound, 2) < a(EntryKind::Outbound, 256));
        assert!(a(EntryKind::Outbound, u64::MAX) < a(EntryKind::Queued, 0));
        // A session whose identifier extends another's has a prefix of its own.
        assert!(!entry_key(
            "abc",
            EntryKey {
                kind: EntryKind::Outbound,
                seq: 0
            }
        )
        .starts_with(&entry_prefix("ab")));
        let key = EntryKey {
            kind: EntryKind::Queued,
            seq: 7,
        };
        assert_eq!(
            split_entry_key(&entry_key("ab", key)),
            Some((String::from("ab"), key))
        );
        assert_eq!(split_entry_key(&entry_prefix("ab")), None);
        assert_eq!(split_entry_key(&[0, 9, b'x']), None);
    }
}
