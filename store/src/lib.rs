//! `petrel-store`: persistence for the Petrel broker behind `petrel-state`'s
//! [`Storage`](petrel_state::broker::Storage) trait.
//!
//! - [`EmbeddedStore`]: the default, one redb file in the data directory;
//! - [`RedisStore`]: hashes on a Redis server;
//! - [`Committer`]: group commit on its own thread, so a worker never waits on a disk;
//!   each shard gets a [`ShardStorage`] that encodes its changes and hands them over;
//! - [`load`]: everything stored, decoded for `Broker::restore`, after removing what
//!   expired while the broker was down. A record that does not decode stops the start
//!   with an error naming it: a store is never silently emptied.
//!
//! Records are encoded by [`record`], with a checksum each and wall-clock times. A session
//! is a small header record plus one entry per message it holds in flight or queued
//! ([`Op`]), so that a delivery or an acknowledgement writes O(1) bytes; a store written
//! by an older Petrel, which kept each session whole, is migrated by [`load`].

#![forbid(unsafe_code)]

pub mod backend;
pub mod commit;
pub mod embedded;
#[cfg(feature = "fjall")]
pub mod fjall_store;
pub mod record;
pub mod redis_store;

use std::collections::HashMap;
use std::sync::Arc;

use petrel_state::broker::{SessionRecord, StoredState};

pub use backend::{Backend, EntryKey, EntryKind, Op, RawState, StoreError};
pub use commit::{BatchTokens, CommitListener, CommitSettings, Committer, Linker, ShardStorage};
pub use embedded::EmbeddedStore;
#[cfg(feature = "fjall")]
pub use fjall_store::FjallStore;
pub use record::{Clock, Layout, RecordError};
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
    /// Sessions stored whole by an older Petrel (record format 1), now rewritten as a
    /// header and per-message entries.
    pub migrated_sessions: usize,
}

/// Reads and decodes everything in `backend` for a process whose clock is `clock`, removes
/// from the store the sessions and retained messages that expired meanwhile, and rewrites
/// sessions stored whole by an older Petrel in the current layout (one durable commit
/// before anything else is written).
pub fn load(backend: &mut dyn Backend, clock: Clock) -> Result<Loaded, StoreError> {
    let raw = backend.load()?;
    let now_unix = Clock::unix_now();
    let location = backend.location();
    let corrupt = |table, key: &str, error| StoreError::Corrupt {
        location: location.clone(),
        table,
        key: key.to_string(),
        error,
    };
    let mut entries: HashMap<String, Vec<(EntryKey, Vec<u8>)>> = HashMap::new();
    for (session, key, value) in raw.entries {
        entries.entry(session).or_default().push((key, value));
    }
    let mut loaded = Loaded::default();
    let mut changes = Vec::new();
    for (key, bytes) in &raw.sessions {
        let own = entries.remove(key).unwrap_or_default();
        let expiry = record::session_expiry(bytes).map_err(|e| corrupt("session", key, e))?;
        if expiry.is_some_and(|at| at <= now_unix) {
            changes.push(Op::DeleteSession(key.clone()));
            loaded.expired_sessions += 1;
            continue;
        }
        let (mut session, layout) =
            record::decode_session(bytes, clock).map_err(|e| corrupt("session", key, e))?;
        match layout {
            Layout::Whole => {
                if !own.is_empty() {
                    // Nothing writes entries beside a whole record: something else did.
                    let error = RecordError::Invalid("entries beside a whole-session record");
                    return Err(corrupt("session", key, error));
                }
                changes.extend(record::session_ops(session.view(), clock));
                loaded.migrated_sessions += 1;
            }
            Layout::Header => attach(&mut session, own, clock)
                .map_err(|(entry, e)| corrupt("entry", &format!("{key} {entry:?}"), e))?,
        }
        loaded.state.sessions.push(session);
    }
    if let Some((session, own)) = entries.into_iter().next() {
        let entry = own.first().map(|(entry, _)| *entry);
        let error = RecordError::Invalid("entry of a session that has no record");
        return Err(corrupt("entry", &format!("{session} {entry:?}"), error));
    }
    let now = clock.from_unix(now_unix);
    for (key, bytes) in &raw.retained {
        let message =
            record::decode_message(bytes, clock).map_err(|e| corrupt("retained", key, e))?;
        if message.is_expired(now) {
            changes.push(Op::DeleteRetained(key.clone()));
            loaded.expired_retained += 1;
            continue;
        }
        loaded.state.retained.push(Arc::new(message));
    }
    if !changes.is_empty() {
        backend.apply(&changes, true)?;
    }
    Ok(loaded)
}

/// Puts a session's entries back into its lists, in the order their keys give.
fn attach(
    record: &mut SessionRecord,
    mut entries: Vec<(EntryKey, Vec<u8>)>,
    clock: Clock,
) -> Result<(), (EntryKey, RecordError)> {
    entries.sort_unstable_by_key(|(entry, _)| *entry);
    let session = &mut record.session;
    for (entry, bytes) in entries {
        match entry.kind {
            EntryKind::Outbound => {
                let outbound = record::decode_outbound(&bytes, clock).map_err(|e| (entry, e))?;
                session.outbound.push_back(outbound);
            }
            EntryKind::Queued => {
                let delivery = record::decode_queued(&bytes, clock).map_err(|e| (entry, e))?;
                session.queued_bytes += delivery.message.size();
                session.queue.push_back(delivery);
            }
        }
    }
    Ok(())
}
