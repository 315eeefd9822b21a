//! The storage trait: what the broker hands to a store so that nothing it acknowledged is lost
//! across a restart, and an in-memory store that the simulation restarts from.
//!
//! The broker calls the store synchronously while it handles an input, then calls
//! [`Storage::commit`] once at the end of that input. A store that makes the batch durable
//! later (a disk with group commit, a Redis round trip) answers [`Durability::Pending`]; the
//! broker then holds back every acknowledgement and every other outbound byte that promises
//! what the batch holds (not a QoS 1 delivery: see
//! [`ServerConnection::take_binding_output`](crate::server::ServerConnection::take_binding_output))
//! until the runtime reports [`Broker::storage_committed`](super::Broker::storage_committed).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use petrel_codec::SubscriptionOptions;

use crate::message::Message;
use crate::server::{Session, Will};
use crate::time::Instant;

/// Whether a committed batch is already durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Durable now (or the store keeps nothing): acknowledge at once.
    Durable,
    /// Durable once the runtime calls `storage_committed` with this token.
    Pending(u64),
}

/// One subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The filter as the client sent it (a `$share/…` filter included).
    pub filter: String,
    /// Its options (QoS granted).
    pub options: SubscriptionOptions,
    /// Its subscription identifier.
    pub identifier: Option<u32>,
}

/// Everything the broker must remember about one client's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session: in-flight state both ways, queued messages, expiry.
    pub session: Session,
    /// Its subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
    /// A will waiting for its delay to pass: when, and what.
    pub pending_will: Option<(Instant, Will)>,
}

impl SessionRecord {
    /// The record, borrowed as the broker hands it to a store.
    pub fn view(&self) -> SessionView<'_> {
        SessionView {
            session: &self.session,
            expires_at: self.session.expires_at,
            subscriptions: &self.subscriptions,
            pending_will: self.pending_will.as_ref(),
        }
    }
}

/// A session as the broker holds it, borrowed for [`Storage::save_session`]: a store that
/// writes only what changed since its last save need not be handed (and the broker need
/// not clone) the whole in-flight window and queue on every change.
#[derive(Debug, Clone, Copy)]
pub struct SessionView<'a> {
    /// The session: in-flight state both ways, queued messages. Its own `expires_at` is not
    /// read; [`SessionView::expires_at`] is.
    pub session: &'a Session,
    /// When the session expires (the broker keeps it outside the session while detached).
    pub expires_at: Option<Instant>,
    /// Its subscriptions.
    pub subscriptions: &'a [StoredSubscription],
    /// A will waiting for its delay to pass: when, and what.
    pub pending_will: Option<&'a (Instant, Will)>,
}

impl SessionView<'_> {
    /// An owned copy, as a store that keeps whole records holds it.
    pub fn to_record(&self) -> SessionRecord {
        let mut session = self.session.clone();
        session.expires_at = self.expires_at;
        SessionRecord {
            session,
            subscriptions: self.subscriptions.to_vec(),
            pending_will: self.pending_will.cloned(),
        }
    }
}

/// What a store gives back at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Every stored session.
    pub sessions: Vec<SessionRecord>,
    /// Every retained message.
    pub retained: Vec<Arc<Message>>,
}

/// A store of sessions and retained messages.
pub trait Storage {
    /// Whether the store keeps sessions at all. The broker skips building session records
    /// for a store that does not (the default for a memory-only broker).
    fn keeps_sessions(&self) -> bool {
        true
    }

    /// Saves the whole state of a persistent session, replacing the previous record.
    fn save_session(&mut self, session: SessionView<'_>);

    /// Forgets a session (it ended or expired).
    fn delete_session(&mut self, client_id: &str);

    /// Sets (`Some`) or clears (`None`) the retained message of `topic`.
    fn set_retained(&mut self, topic: &str, message: Option<&Arc<Message>>);

    /// Ends the batch of calls made for one input.
    fn commit(&mut self) -> Durability;

    /// Ends the batch of one input that also handed acknowledged (QoS 1 and 2) messages to
    /// the shards `forwarded` (each named once). A store that the shards share may answer
    /// `Pending` then even for an empty batch, so that the runtime can hold this input's
    /// acknowledgements until the other shards have stored their copies too; and it may
    /// commit this batch together with those copies, so that a publisher's exactly-once
    /// marker is never durable without them, nor they without it.
    fn commit_forwarding(&mut self, forwarded: &[u16]) -> Durability {
        let _ = forwarded;
        self.commit()
    }
}

/// Keeps nothing: a broker whose state lives and dies with the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStorage;

impl Storage for NoStorage {
    fn keeps_sessions(&self) -> bool {
        false
    }
    fn save_session(&mut self, _session: SessionView<'_>) {}
    fn delete_session(&mut self, _client_id: &str) {}
    fn set_retained(&mut self, _topic: &str, _message: Option<&Arc<Message>>) {}
    fn commit(&mut self) -> Durability {
        Durability::Durable
    }
}

/// A store in memory whose every commit is durable at once: what the deterministic
/// simulation restarts brokers from, and a reference for real stores' behaviour.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    sessions: BTreeMap<String, SessionRecord>,
    retained: BTreeMap<String, Arc<Message>>,
    commits: u64,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStorage::default()
    }

    /// The stored state, as a restarted broker would load it.
    pub fn load(&self) -> StoredState {
        StoredState {
            sessions: self.sessions.values().cloned().collect(),
            retained: self.retained.values().cloned().collect(),
        }
    }

    /// The number of stored sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The number of commits so far.
    pub fn commits(&self) -> u64 {
        self.commits
    }
}

impl Storage for MemoryStorage {
    fn save_session(&mut self, session: SessionView<'_>) {
        self.sessions
            .insert(session.session.client_id.clone(), session.to_record());
    }

    fn delete_session(&mut self, client_id: &str) {
        self.sessions.remove(client_id);
    }

    fn set_retained(&mut self, topic: &str, message: Option<&Arc<Message>>) {
        match message {
            Some(message) => {
                self.retained.insert(String::from(topic), message.clone());
            }
            None => {
                self.retained.remove(topic);
            }
        }
    }

    fn commit(&mut self) -> Durability {
        self.commits += 1;
        Durability::Durable
    }
}
