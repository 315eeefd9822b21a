//! What the workers share: the configuration, counters, and each other's inboxes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use petrel_state::broker::ShardMessage;
use petrel_state::message::Message;
use petrel_state::server::ServerConfig;
use petrel_state::Instant;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::Config;
use crate::hooks::Tap;
use crate::transport::certs::TlsAcceptor;
use crate::transport::Handover;

/// Work the HTTP API hands a shard: it runs on the worker's thread with the shard and the
/// current time, and sends its answer back through a channel of its own.
pub(crate) type AdminJob = Box<dyn FnOnce(&mut petrel_state::broker::Broker, Instant) + Send>;

/// A message to a worker.
pub(crate) enum WorkerMessage {
    /// From shard `from`: everything one of its inputs had for this shard, in order. One
    /// inbox message per input and target rather than per message: a read of a hundred
    /// publishes is one hand-over, one wake-up and one input on the target.
    Shard {
        from: usize,
        messages: Vec<ShardMessage>,
    },
    /// A connection whose session this worker owns, with the bytes read so far.
    Connection {
        stream: Handover,
        ticket: Option<crate::limits::Ticket>,
        received: Vec<u8>,
        remote: String,
    },
    /// A message from the embedding program.
    Publish(Message),
    /// Every store batch of this shard up to this token is durable.
    Committed(u64),
    /// Shard `from` forwarded messages here before this, in the input of its batch `token`.
    /// `linked`: that batch waits in the committer for this shard's link, to commit with
    /// what this shard stored of them; otherwise answer `FenceAnswered(token)` once that is
    /// durable. `relayed`: not from `from` itself but from a shard that passed those
    /// messages on here (a shared group's owner, a retained topic's owner), behind them.
    Fence {
        from: usize,
        token: u64,
        linked: bool,
        relayed: bool,
    },
    /// A shard answered a fence of this shard's batch `token`.
    FenceAnswered(u64),
    /// A shard passed on messages of this shard's batch `token` and relayed its fence to
    /// `count` more shards: `count` more answers to wait for. Sent before the relayed
    /// fences, so it arrives before their answers.
    FenceRelayed { token: u64, count: u32 },
    /// The Kafka bridge has the record of this ticket (or gave up on it): its held
    /// acknowledgement may go.
    Pipeline(
        petrel_state::broker::PipelineTicket,
        Result<(), petrel_codec::ReasonCode>,
    ),
    /// An operator's question or command (the HTTP API), run on the worker's shard.
    Admin(AdminJob),
    /// Stop.
    Shutdown,
}

impl WorkerMessage {
    /// Whether this is a hand-over between shards that a graceful stop must let the target
    /// handle: forwarded messages (stored by the target) and fences (which the committer
    /// may wait on for a link).
    fn is_handover(&self) -> bool {
        matches!(
            self,
            WorkerMessage::Shard { .. } | WorkerMessage::Fence { .. }
        )
    }
}

/// The inline subscriptions and the identifier of the next one.
#[derive(Default)]
pub(crate) struct TapList {
    next_id: u64,
    taps: Arc<Vec<Tap>>,
}

/// One worker's counters; `$SYS` reports their sums.
///
/// One set per worker, each on cache lines of its own: the workers add to them on every
/// read and write, and a counter shared between cores would bounce between their caches on
/// the per-message path.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct WorkerStats {
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) connections_open: AtomicU64,
}

impl WorkerStats {
    /// Adds `n` to a counter only this worker writes.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from a counter only this worker writes.
    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
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
    /// One per worker, indexed by worker.
    pub(crate) stats: Vec<WorkerStats>,
    pub(crate) shards: Mutex<Vec<ShardFigures>>,
    /// Each worker's inbox, indexed by worker; fixed at start, so sending takes no lock.
    pub(crate) inboxes: Vec<UnboundedSender<WorkerMessage>>,
    /// The inline subscriptions, replaced as a whole when one comes or goes. A worker keeps
    /// the list it last took and takes the lock again only when `tap_generation` moved, so
    /// a publish takes no lock, with or without taps.
    pub(crate) taps: Mutex<TapList>,
    /// Moves on every change of `taps`; 0 while there has never been a tap.
    pub(crate) tap_generation: AtomicU64,
    pub(crate) hooks_factory: Option<crate::HooksFactory>,
    pub(crate) access: Arc<crate::auth::Access>,
    pub(crate) limits: crate::limits::Limits,
    /// Every TLS listener's certificates, for reloads.
    pub(crate) tls: Vec<Arc<TlsAcceptor>>,
    /// Each `[[bridge.mqtt]]`'s figures, in configuration order.
    pub(crate) mqtt_bridges: Vec<Arc<crate::bridge::mqtt::BridgeStats>>,
    /// The Kafka bridges, for the workers' pipelines and the metrics.
    pub(crate) kafka: Vec<Arc<crate::bridge::kafka::Bridge>>,
    /// Hand-overs between shards sent and not yet handled (counted before they are sent,
    /// and after the target has sent what handling them produced).
    pub(crate) handovers: AtomicUsize,
    /// Workers that have stopped taking input of their own (a graceful stop) and only
    /// handle what other shards hand over.
    pub(crate) draining: AtomicUsize,
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
        let handover = message.is_handover();
        if handover {
            self.handovers.fetch_add(1, Ordering::SeqCst);
        }
        let sent = self
            .inboxes
            .get(worker)
            .is_some_and(|inbox| inbox.send(message).is_ok());
        if handover && !sent {
            self.handed_over(1);
        }
    }

    /// `n` hand-overs are handled, and what handling them produced is sent.
    pub(crate) fn handed_over(&self, n: usize) {
        self.handovers.fetch_sub(n, Ordering::SeqCst);
    }

    /// Every worker is draining and no hand-over is on its way or being handled: nothing
    /// more will reach a shard's store. A draining worker produces hand-overs only while
    /// handling one (which is counted until then), so once this holds it keeps holding.
    pub(crate) fn drained(&self) -> bool {
        self.draining.load(Ordering::SeqCst) == self.workers()
            && self.handovers.load(Ordering::SeqCst) == 0
    }

    /// Adds inline subscriptions to `filters`, all sending to `sender`.
    pub(crate) fn add_taps(
        &self,
        filters: impl IntoIterator<Item = String>,
        sender: &std::sync::mpsc::Sender<Arc<Message>>,
    ) {
        let mut list = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        let mut taps: Vec<Tap> = list.taps.iter().cloned().collect();
        for filter in filters {
            list.next_id += 1;
            taps.push(Tap {
                id: list.next_id,
                filter,
                sender: sender.clone(),
            });
        }
        list.taps = Arc::new(taps);
        self.tap_generation.fetch_add(1, Ordering::Release);
    }

    /// Removes the taps whose receiver is gone.
    pub(crate) fn remove_taps(&self, gone: &[u64]) {
        let mut list = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        let taps: Vec<Tap> = list
            .taps
            .iter()
            .filter(|tap| !gone.contains(&tap.id))
            .cloned()
            .collect();
        list.taps = Arc::new(taps);
        self.tap_generation.fetch_add(1, Ordering::Release);
    }

    /// The current taps, for a worker whose copy is older than `tap_generation`.
    pub(crate) fn taps(&self) -> Arc<Vec<Tap>> {
        self.taps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .taps
            .clone()
    }

    pub(crate) fn uptime_secs(&self) -> u64 {
        self.origin.elapsed().as_secs()
    }

    /// The sum of one counter over every worker.
    pub(crate) fn total(&self, counter: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
        self.stats
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum()
    }
}
