//! What the workers share: the configuration, counters, and each other's inboxes.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use petrel_state::broker::ShardMessage;
use petrel_state::message::Message;
use petrel_state::server::ServerConfig;
use petrel_state::Instant;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::Config;
use crate::hooks::Tap;

/// A message to a worker.
pub(crate) enum WorkerMessage {
    /// From another shard of the broker.
    Shard(ShardMessage),
    /// A connection whose session this worker owns, with the bytes read so far.
    Connection {
        fd: OwnedFd,
        received: Vec<u8>,
        remote: String,
        unix: bool,
    },
    /// A message from the embedding program.
    Publish(Message),
    /// Stop.
    Shutdown,
}

/// Counters every worker adds to; `$SYS` reports them.
#[derive(Debug, Default)]
pub(crate) struct GlobalStats {
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) connections_open: AtomicU64,
}

/// Per-worker figures, written by each worker's `$SYS` tick and summed by worker 0.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ShardFigures {
    pub(crate) sessions: u64,
    pub(crate) subscriptions: u64,
    pub(crate) retained: u64,
    pub(crate) messages_received: u64,
    pub(crate) messages_sent: u64,
    pub(crate) dropped: u64,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) server_config: Arc<ServerConfig>,
    pub(crate) origin: std::time::Instant,
    pub(crate) stats: GlobalStats,
    pub(crate) shards: Mutex<Vec<ShardFigures>>,
    pub(crate) inboxes: Mutex<Vec<UnboundedSender<WorkerMessage>>>,
    pub(crate) taps: Mutex<Vec<Tap>>,
    pub(crate) hooks_factory: Option<crate::HooksFactory>,
}

impl Shared {
    pub(crate) fn workers(&self) -> usize {
        self.config.worker_count()
    }

    /// Now, on the clock every worker shares (a message's expiry crosses shards).
    pub(crate) fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    pub(crate) fn to_tokio(&self, at: Instant) -> tokio::time::Instant {
        let when = self.origin + std::time::Duration::from_micros(at.as_micros());
        tokio::time::Instant::from_std(when)
    }

    pub(crate) fn send(&self, worker: usize, message: WorkerMessage) {
        let inboxes = self.inboxes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(inbox) = inboxes.get(worker) {
            let _ = inbox.send(message);
        }
    }

    pub(crate) fn uptime_secs(&self) -> u64 {
        self.origin.elapsed().as_secs()
    }

    pub(crate) fn load(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
