//! `petrel-store`: persistence for the Petrel broker behind `petrel-state`'s
//! [`Storage`](petrel_state::broker::Storage) trait.
//!
//! - [`EmbeddedStore`]: the default, one redb file in the data directory;
//! - [`RedisStore`]: two hashes on a Redis server;
//! - [`Committer`]: group commit on its own thread, so a worker never waits on a disk;
//!   each shard gets a [`ShardStorage`] that encodes its changes and hands them over;
//! - [`load`]: everything stored, decoded for `Broker::restore`, after removing what
//!   expired while the broker was down. A record that does not decode stops the start
//!   with an error naming it: a store is never silently emptied.
//!
//! Records are encoded by [`record`], with a checksum each and wall-clock times.

#![forbid(unsafe_code)]

pub mod backend;
pub mod commit;
pub mod embedded;
#[cfg(feature = "fjall")]
pub mod fjall_store;
pub mod record;
pub mod redis_store;

use std::sync::Arc;

use petrel_state::broker::StoredState;

pub use backend::{Backend, Op, RawState, StoreError};
pub use commit::{BatchTokens, CommitListener, CommitSettings, Committer, Linker, ShardStorage};
pub use embedded::EmbeddedStore;
#[cfg(feature = "fjall")]
pub use fjall_store::FjallStore;
pub use record::{Clock, RecordError};
pub use redis_store::RedisStore;

/// What [`load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The state to restore.
    pub state: StoredState,
    /// Sessions that expired while the broker was down, now removed from the store.
    pub expired_sessions: usize,
    /// Retained messages that expired while the broker was down, now removed.
    pub expired_retained: usize,
}

/// Reads and decodes everything in `backend` for a process whose clock is `clock`, and
/// removes from the store the sessions and retained messages that expired meanwhile.
pub fn load(backend: &mut dyn Backend, clock: Clock) -> Result<Loaded, StoreError> {
    let raw = backend.load()?;
    let now_unix = Clock::unix_now();
    let corrupt = |table, key: &str, error| StoreError::Corrupt {
        location: backend.location(),
        table,
        key: key.to_string(),
        error,
    };
    let mut loaded = Loaded::default();
    let mut removals = Vec::new();
    for (key, bytes) in &raw.sessions {
        let expiry = record::session_expiry(bytes).map_err(|e| corrupt("session", key, e))?;
        if expiry.is_some_and(|at| at <= now_unix) {
            removals.push(Op::DeleteSession(key.clone()));
            loaded.expired_sessions += 1;
            continue;
        }
        let session =
            record::decode_session(bytes, clock).map_err(|e| corrupt("session", key, e))?;
        loaded.state.sessions.push(session);
    }
    let now = clock.from_unix(now_unix);
    for (key, bytes) in &raw.retained {
        let message =
            record::decode_message(bytes, clock).map_err(|e| corrupt("retained", key, e))?;
        if message.is_expired(now) {
            removals.push(Op::DeleteRetained(key.clone()));
            loaded.expired_retained += 1;
            continue;
        }
        loaded.state.retained.push(Arc::new(message));
    }
    if !removals.is_empty() {
        backend.apply(&removals, true)?;
    }
    Ok(loaded)
}
