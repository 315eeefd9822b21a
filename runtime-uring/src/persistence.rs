//! Persistence in the runtime: the `[store]` configuration, opening the store at start,
//! restoring what it holds, and the committer that tells each worker which of its batches
//! are durable (through the worker's inbox, so `storage_committed` runs on the worker).

use std::io;
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

    /// The store and the restored state of worker `index`.
    pub(crate) fn shard(&mut self, index: usize) -> (Box<dyn Storage + Send>, StoredState) {
        let state = self
            .restored
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default();
        let storage: Box<dyn Storage + Send> = match &self.committer {
            Some(committer) => Box::new(committer.shard(index)),
            None => Box::new(NoStorage),
        };
        (storage, state)
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
