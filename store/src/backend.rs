//! What a store backend does: apply a batch of changes atomically, and give everything back
//! at start-up. The encoding of the values is [`crate::record`]'s; a backend stores bytes.

use std::fmt;

use crate::record::RecordError;

/// One change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Replaces the record of a session (key: client identifier).
    PutSession(String, Vec<u8>),
    /// Forgets a session.
    DeleteSession(String),
    /// Sets the retained message of a topic.
    PutRetained(String, Vec<u8>),
    /// Clears the retained message of a topic.
    DeleteRetained(String),
}

/// Everything a backend holds, still encoded.
#[derive(Debug, Default)]
pub struct RawState {
    /// `(client identifier, record)` of every session.
    pub sessions: Vec<(String, Vec<u8>)>,
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
        /// `session` or `retained`.
        table: &'static str,
        /// The record's key (client identifier or topic).
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
