//! Persistence in the runtime: the `[store]` configuration, opening the store at start,
//! restoring what it holds, and the committer that tells each worker which of its batches
//! are durable (through the worker's inbox, so `storage_committed` runs on the worker).

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use petrel_state::broker::{owner_shard, NoStorage, Storage, StoredState};
use petrel_store::{
    Backend, Clock, CommitListener, CommitSettings, Committer, EmbeddedStore, RedisStore,
    StoreError,
};
use serde::Deserialize;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{error, info};

use crate::config::Config;
use crate::shared::WorkerMessage;

/// Where sessions and retained messages are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A redb file in the data directory (`petrel.redb`).
    #[default]
    Embedded,
    /// A Redis server (`redis_url`).
    Redis,
    /// Nowhere: state lives and dies with the process.
    Memory,
}

/// Whether acknowledgements wait for stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// PUBACK / PUBREC only once the message is on disk (fsync per group commit).
    #[default]
    Always,
    /// Acknowledge at once and write behind: a crash of the broker loses up to one commit
    /// window of acknowledged messages, a crash of the machine what the kernel had not
    /// written yet.
    Never,
}

/// The `[store]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where state is kept.
    pub kind: StoreKind,
    /// Whether acknowledgements wait for stable storage.
    pub fsync: Fsync,
    /// Milliseconds the committer waits for more changes to join a commit.
    pub commit_window_ms: u64,
    /// The Redis server, for `kind = "redis"`.
    pub redis_url: String,
    /// The prefix of Petrel's Redis keys.
    pub redis_prefix: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Embedded,
            fsync: Fsync::Always,
            commit_window_ms: 2,
            redis_url: String::from("redis://127.0.0.1:6379/0"),
            redis_prefix: String::from("petrel"),
        }
    }
}

impl StoreConfig {
    /// Checks values that parse but make no sense.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.commit_window_ms > 1000 {
            return Err(String::from(
                "store.commit_window_ms: at most 1000 (every acknowledgement waits for it)",
            ));
        }
        Ok(())
    }
}

/// The opened store: what each shard restores, and the committer.
pub(crate) struct Persistence {
    committer: Option<Committer>,
    restored: Vec<StoredState>,
}

impl Persistence {
    /// Opens the configured store, reads it, and starts the committer, which reports to
    /// `inboxes`. `origin` is the instant the workers' clocks count from.
    pub(crate) fn open(
        config: &Config,
        origin: std::time::Instant,
        inboxes: Vec<UnboundedSender<WorkerMessage>>,
    ) -> io::Result<Persistence> {
        let workers = inboxes.len();
        let store = &config.store;
        let mut backend: Box<dyn Backend> = match store.kind {
            StoreKind::Memory => {
                return Ok(Persistence {
                    committer: None,
                    restored: (0..workers).map(|_| StoredState::default()).collect(),
                })
            }
            StoreKind::Embedded => Box::new(EmbeddedStore::open(&config.data_dir).map_err(other)?),
            StoreKind::Redis => {
                Box::new(RedisStore::open(&store.redis_url, &store.redis_prefix).map_err(other)?)
            }
        };
        let clock = Clock::for_origin(origin);
        let started = std::time::Instant::now();
        let loaded = petrel_store::load(backend.as_mut(), clock).map_err(other)?;
        info!(
            store = %backend.location(),
            sessions = loaded.state.sessions.len(),
            retained = loaded.state.retained.len(),
            expired_sessions = loaded.expired_sessions,
            expired_retained = loaded.expired_retained,
            millis = started.elapsed().as_millis() as u64,
            "store loaded"
        );
        let mut restored: Vec<StoredState> = (0..workers).map(|_| StoredState::default()).collect();
        for record in loaded.state.sessions {
            let owner = usize::from(owner_shard(&record.session.client_id, workers as u16));
            if let Some(shard) = restored.get_mut(owner) {
                shard.sessions.push(record);
            }
        }
        for shard in &mut restored {
            shard.retained.clone_from(&loaded.state.retained);
        }
        let settings = CommitSettings {
            window: Duration::from_millis(store.commit_window_ms),
            durable: store.fsync == Fsync::Always,
        };
        let committer = Committer::start(
            backend,
            settings,
            clock,
            Box::new(InboxListener { inboxes }),
        )?;
        Ok(Persistence {
            committer: Some(committer),
            restored,
        })
    }

    /// The store, the restored state and the durability tracker of worker `index`.
    pub(crate) fn shard(
        &mut self,
        index: usize,
    ) -> (Box<dyn Storage + Send>, StoredState, Durable) {
        let state = self
            .restored
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default();
        match &self.committer {
            Some(committer) => {
                let storage = committer.shard(index);
                let durable = Durable::new(Some(storage.issued()));
                (Box::new(storage), state, durable)
            }
            None => (Box::new(NoStorage), state, Durable::new(None)),
        }
    }

    /// Writes what the workers left and stops the committer; call after they stopped.
    pub(crate) fn finish(self) {
        if let Some(committer) = self.committer {
            committer.finish();
        }
    }
}

fn other(e: StoreError) -> io::Error {
    io::Error::other(e.to_string())
}

struct InboxListener {
    inboxes: Vec<UnboundedSender<WorkerMessage>>,
}

impl CommitListener for InboxListener {
    fn committed(&mut self, shard: usize, token: u64) {
        if let Some(inbox) = self.inboxes.get(shard) {
            let _ = inbox.send(WorkerMessage::Committed(token));
        }
    }

    fn failed(&mut self, error: &StoreError) {
        error!("store commit failed, retrying; acknowledgements wait: {error}");
    }
}

/// One worker's view of durability: which of its store batches are durable, and which wait
/// for other shards.
///
/// A publish routed to subscribers on another shard is stored there, by that shard's own
/// batch. The publisher's acknowledgement must wait for that batch too, or a crash between
/// the two commits would lose a message the publisher was told is safe. So after an input
/// that forwarded messages, the worker sends each target shard a fence behind them (the
/// inbox is FIFO); the target answers once the batch holding what it did with them is
/// durable. A batch is released (`storage_committed`) once it is durable and its fences are
/// answered, in token order.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    /// The last token this shard's store handed out; `None` without a store.
    issued: Option<Arc<AtomicU64>>,
    /// Every batch up to here is durable.
    durable: u64,
    /// Every batch up to here is released to the broker.
    released: u64,
    /// Own batches waiting for other shards: token → fences unanswered.
    waiting: BTreeMap<u64, u32>,
    /// Fences owed to others once an own batch is durable: (own token, shard, their token).
    owed: Vec<(u64, usize, u64)>,
}

impl Durable {
    pub(crate) fn new(issued: Option<Arc<AtomicU64>>) -> Self {
        Durable {
            issued,
            ..Durable::default()
        }
    }

    fn issued_token(&self) -> u64 {
        self.issued
            .as_ref()
            .map_or(0, |issued| issued.load(Ordering::Relaxed))
    }

    /// An input sent messages to `targets`: the fences to send after them, as
    /// `(target, token)`.
    pub(crate) fn forwarded(&mut self, targets: &[usize]) -> Vec<(usize, u64)> {
        let token = self.issued_token();
        if targets.is_empty() || token <= self.released {
            return Vec::new();
        }
        *self.waiting.entry(token).or_insert(0) += targets.len() as u32;
        targets.iter().map(|&target| (target, token)).collect()
    }

    /// Shard `from` asks to hear once what this shard did with its messages is durable:
    /// the answer now (`Some`), or later from [`Durable::committed`].
    pub(crate) fn fence(&mut self, from: usize, token: u64) -> Option<(usize, u64)> {
        let own = self.issued_token();
        if own <= self.durable {
            Some((from, token))
        } else {
            self.owed.push((own, from, token));
            None
        }
    }

    /// The committer reports every batch up to `upto` durable: the fences now answered, as
    /// `(shard, their token)`.
    pub(crate) fn committed(&mut self, upto: u64) -> Vec<(usize, u64)> {
        self.durable = self.durable.max(upto);
        let durable = self.durable;
        let mut answers = Vec::new();
        self.owed.retain(|&(own, shard, token)| {
            if own <= durable {
                answers.push((shard, token));
                false
            } else {
                true
            }
        });
        answers
    }

    /// Another shard answered a fence of batch `token`.
    pub(crate) fn fence_answered(&mut self, token: u64) {
        if let Some(left) = self.waiting.get_mut(&token) {
            *left -= 1;
            if *left == 0 {
                self.waiting.remove(&token);
            }
        }
    }

    /// The batches that may now be released, in order.
    pub(crate) fn releasable(&mut self) -> std::ops::RangeInclusive<u64> {
        let from = self.released + 1;
        let mut to = self.released;
        while to < self.durable && !self.waiting.contains_key(&(to + 1)) {
            to += 1;
        }
        self.released = to;
        from..=to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_waits_for_its_fences_and_releases_in_order() {
        let issued = Arc::new(AtomicU64::new(0));
        let mut d = Durable::new(Some(issued.clone()));
        issued.store(1, Ordering::Relaxed);
        assert_eq!(d.forwarded(&[1, 2]), vec![(1, 1), (2, 1)]);
        issued.store(2, Ordering::Relaxed);
        assert!(d.committed(2).is_empty());
        assert!(
            d.releasable().is_empty(),
            "1 waits for two fences, 2 waits for 1"
        );
        d.fence_answered(1);
        assert!(d.releasable().is_empty());
        d.fence_answered(1);
        assert_eq!(d.releasable(), 1..=2);
    }

    #[test]
    fn a_fence_is_answered_once_the_own_batch_is_durable() {
        let issued = Arc::new(AtomicU64::new(3));
        let mut d = Durable::new(Some(issued));
        assert_eq!(d.fence(0, 9), None);
        assert!(d.committed(2).is_empty());
        assert_eq!(d.committed(3), vec![(0, 9)]);
        assert_eq!(d.fence(1, 4), Some((1, 4)), "nothing pending: at once");
    }
}
