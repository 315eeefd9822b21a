//! Persistence in the runtime: the `[store]` configuration, opening the store at start,
//! restoring what it holds, and the committer that tells each worker which of its batches
//! are durable (through the worker's inbox, so `storage_committed` runs on the worker).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use petrel_state::broker::{owner_shard, NoStorage, Storage, StoredState};
use petrel_store::{
    Backend, BatchTokens, Clock, CommitListener, CommitSettings, Committer, EmbeddedStore,
    FjallStore, Linker, RedisStore, StoreError,
};
use serde::Deserialize;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::shared::WorkerMessage;

/// Where sessions and retained messages are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A redb file in the data directory (`petrel.redb`).
    #[default]
    Embedded,
    /// A fjall keyspace in the data directory (`petrel.fjall/`).
    Fjall,
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
            StoreKind::Fjall => Box::new(FjallStore::open(&config.data_dir).map_err(other)?),
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
            migrated_sessions = loaded.migrated_sessions,
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
                let durable = Durable::new(
                    Some(storage.tokens() as Arc<dyn TokenSource>),
                    storage.linker(),
                );
                (Box::new(storage), state, durable)
            }
            None => (Box::new(NoStorage), state, Durable::new(None, None)),
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

    fn waiting_for_links(&mut self, batches: &[(usize, u64)], waited: Duration) {
        warn!(
            ?batches,
            waited_ms = waited.as_millis() as u64,
            "store commit waits for other shards' links to these (shard, batch) pairs; \
             every acknowledgement waits with it"
        );
    }

    fn slow_commit(&mut self, ops: usize, took: Duration) {
        warn!(
            ops,
            took_ms = took.as_millis() as u64,
            "store commit was slow; the acknowledgements it holds waited for it"
        );
    }
}

/// One worker's view of durability: which of its store batches are durable, and which wait
/// for other shards.
///
/// A publish routed to subscribers on another shard is stored there, by that shard's own
/// batch. The publisher's acknowledgement must wait for that batch too, or a crash between
/// the two commits would lose a message the publisher was told is safe; and for QoS 2 the
/// publisher's exactly-once marker (in this shard's batch) and the copies must become
/// durable together, or a crash between them loses the message (marker without copies) or
/// delivers it twice (copies without marker, the publisher's re-send routed again). So
/// after an input that forwarded acknowledged (QoS 1/2) messages, the worker sends each
/// target shard that may store them (`ShardMessage::awaits_durability`: one whose matching
/// subscribers include a session its store keeps) a fence behind them (the inbox is FIFO):
///
/// - When the input's batch went to the committer, the batch is *linked* to those shards
///   (`petrel_store::BatchTokens::take_linked`). A linked fence asks the target to send the
///   committer a link naming its own batches so far, which hold what it did with the
///   messages; the committer commits the batch in the same transaction as those. Nothing
///   comes back: the batch is released once it is durable.
/// - When the input changed nothing here, its batch is *empty* (a token the committer never
///   sees): there is no marker to keep together with the copies, and the fence is answered
///   once the target's batches holding them are durable. The empty batch waits for the
///   answers only, not for a disk, so a broker whose clients keep no sessions pays one
///   inbox round trip per forwarding input, not a commit.
///
/// A batch is released (`storage_committed`) once it is durable and its fences are
/// answered, in token order.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    /// The tokens this shard's store hands out; `None` without a store.
    tokens: Option<Arc<dyn TokenSource>>,
    /// Every batch up to here is durable.
    durable: u64,
    /// Every batch up to here is released to the broker.
    released: u64,
    /// Own batches waiting for other shards: token → fences unanswered.
    waiting: BTreeMap<u64, u32>,
    /// Own empty batches not yet released: durable once those before them are.
    empty: BTreeSet<u64>,
    /// Fences owed to others once an own batch is durable: (own token, shard, their token).
    owed: Vec<(u64, usize, u64)>,
    /// Answers linked fences; `None` without a store.
    linker: Option<Linker>,
}

/// A fence to send after an input's forwarded messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fence {
    /// The shard the messages went to.
    pub(crate) target: usize,
    /// The batch of this shard that forwarded them.
    pub(crate) token: u64,
    /// Whether that batch waits in the committer for the target's link (rather than for an
    /// answer).
    pub(crate) linked: bool,
}

/// Where a [`Durable`] reads the tokens its store handed out.
pub(crate) trait TokenSource: std::fmt::Debug + Send + Sync {
    /// The last token handed out.
    fn issued(&self) -> u64;
    /// The last token of a batch sent to the committer; later ones are empty.
    fn sent(&self) -> u64;
    /// The linked batches sent since the last call: `(token, shards to ask for a link)`.
    fn take_linked(&self) -> Vec<(u64, Vec<u16>)>;
}

impl TokenSource for BatchTokens {
    fn issued(&self) -> u64 {
        BatchTokens::issued(self)
    }

    fn sent(&self) -> u64 {
        BatchTokens::sent(self)
    }

    fn take_linked(&self) -> Vec<(u64, Vec<u16>)> {
        BatchTokens::take_linked(self)
    }
}

impl Durable {
    pub(crate) fn new(tokens: Option<Arc<dyn TokenSource>>, linker: Option<Linker>) -> Self {
        Durable {
            tokens,
            linker,
            ..Durable::default()
        }
    }

    /// With a store, `(last released, last issued)` batch tokens; `None` without one.
    pub(crate) fn backlog(&self) -> Option<(u64, u64)> {
        self.tokens.as_ref()?;
        Some((self.released, self.issued_token()))
    }

    fn issued_token(&self) -> u64 {
        self.tokens.as_ref().map_or(0, |tokens| tokens.issued())
    }

    fn sent_token(&self) -> u64 {
        self.tokens.as_ref().map_or(0, |tokens| tokens.sent())
    }

    /// Called after every input, with the shards it sent acknowledged messages to: the
    /// fences to send after them.
    pub(crate) fn forwarded(&mut self, targets: &[usize]) -> Vec<Fence> {
        let linked = self
            .tokens
            .as_ref()
            .map(|tokens| tokens.take_linked())
            .unwrap_or_default();
        let mut fences: Vec<Fence> = linked
            .iter()
            .flat_map(|(token, shards)| {
                shards.iter().map(|&shard| Fence {
                    target: usize::from(shard),
                    token: *token,
                    linked: true,
                })
            })
            .collect();
        let token = self.issued_token();
        if token > self.released && token > self.sent_token() {
            self.empty.insert(token);
        }
        // Shards asked for links need no answer; any other target (an input that wrote
        // nothing here, handled in the same turn) waits for one on the last token.
        let all_linked = targets.iter().all(|&target| {
            linked
                .iter()
                .any(|(_, shards)| shards.iter().any(|&shard| usize::from(shard) == target))
        });
        if all_linked || token <= self.released {
            return fences;
        }
        *self.waiting.entry(token).or_insert(0) += targets.len() as u32;
        fences.extend(targets.iter().map(|&target| Fence {
            target,
            token,
            linked: false,
        }));
        fences
    }

    /// Shard `from`'s batch `token` forwarded messages here and waits in the committer for
    /// this shard's link: everything this shard did with them is in the batches it has sent
    /// so far (the fence came behind the messages), except what it passed on to `relayed`
    /// more shards, whose links the committer is told to wait for too.
    pub(crate) fn link(&self, from: usize, token: u64, relayed: usize) {
        if let Some(linker) = &self.linker {
            linker.link(from, token, relayed);
        }
    }

    /// Shard `from` asks to hear once what this shard did with its messages is durable:
    /// the answer now (`Some`), or later from [`Durable::committed`]. What it did is in the
    /// batches sent to the committer; an empty batch holds nothing to wait for.
    pub(crate) fn fence(&mut self, from: usize, token: u64) -> Option<(usize, u64)> {
        let own = self.sent_token();
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

    /// Another shard relayed a fence of batch `token` to `count` more shards: as many more
    /// answers to wait for. It comes before their answers, and before the relaying shard's
    /// own, so the batch is still waiting.
    pub(crate) fn fence_relayed(&mut self, token: u64, count: u32) {
        *self.waiting.entry(token).or_insert(0) += count;
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
        let sent = self.sent_token();
        loop {
            let next = to + 1;
            // Every token above the last one sent is empty: durable once that one is.
            let durable = next <= self.durable
                || self.empty.contains(&next)
                || (next > sent && self.durable >= sent && next <= self.issued_token());
            if !durable || self.waiting.contains_key(&next) {
                break;
            }
            self.empty.remove(&next);
            to = next;
        }
        self.released = to;
        from..=to
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    /// Tokens set by the test, as the store would hand them out.
    #[derive(Debug, Default)]
    struct Tokens {
        issued: AtomicU64,
        sent: AtomicU64,
        linked: Mutex<Vec<(u64, Vec<u16>)>>,
    }

    impl TokenSource for Tokens {
        fn issued(&self) -> u64 {
            self.issued.load(Ordering::Relaxed)
        }

        fn sent(&self) -> u64 {
            self.sent.load(Ordering::Relaxed)
        }

        fn take_linked(&self) -> Vec<(u64, Vec<u16>)> {
            std::mem::take(&mut *self.linked.lock().unwrap())
        }
    }

    impl Tokens {
        /// A batch with changes, sent to the committer.
        fn batch(&self) -> u64 {
            let token = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
            self.sent.store(token, Ordering::Relaxed);
            token
        }

        /// A batch sent to the committer that forwarded acknowledged messages to `shards`.
        fn linked(&self, shards: &[u16]) -> u64 {
            let token = self.batch();
            self.linked.lock().unwrap().push((token, shards.to_vec()));
            token
        }

        /// An input that changed nothing here but forwarded acknowledged messages.
        fn empty(&self) -> u64 {
            self.issued.fetch_add(1, Ordering::Relaxed) + 1
        }
    }

    fn durable() -> (Arc<Tokens>, Durable) {
        let tokens = Arc::new(Tokens::default());
        let d = Durable::new(Some(tokens.clone() as Arc<dyn TokenSource>), None);
        (tokens, d)
    }

    fn fence(target: usize, token: u64, linked: bool) -> Fence {
        Fence {
            target,
            token,
            linked,
        }
    }

    #[test]
    fn a_linked_batch_asks_for_links_and_waits_for_its_commit_only() {
        let (tokens, mut d) = durable();
        let token = tokens.linked(&[1, 2]);
        assert_eq!(
            d.forwarded(&[1, 2]),
            vec![fence(1, token, true), fence(2, token, true)]
        );
        assert!(d.forwarded(&[]).is_empty(), "asked once");
        assert!(d.releasable().is_empty());
        assert!(d.committed(token).is_empty());
        assert_eq!(
            d.releasable(),
            token..=token,
            "the commit holds the other shards' batches too: no answers to wait for"
        );
    }

    #[test]
    fn linked_batches_of_inputs_handled_together_are_all_asked_for() {
        let (tokens, mut d) = durable();
        let first = tokens.linked(&[1]);
        let second = tokens.linked(&[2]);
        assert_eq!(
            d.forwarded(&[1, 2]),
            vec![fence(1, first, true), fence(2, second, true)]
        );
    }

    #[test]
    fn an_unlinked_batch_waits_for_its_fences_and_releases_in_order() {
        let (tokens, mut d) = durable();
        tokens.batch();
        assert_eq!(
            d.forwarded(&[1, 2]),
            vec![fence(1, 1, false), fence(2, 1, false)]
        );
        tokens.batch();
        assert!(d.forwarded(&[]).is_empty());
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
        let (tokens, mut d) = durable();
        tokens.batch();
        tokens.batch();
        tokens.batch();
        assert_eq!(d.fence(0, 9), None);
        assert!(d.committed(2).is_empty());
        assert_eq!(d.committed(3), vec![(0, 9)]);
        assert_eq!(d.fence(1, 4), Some((1, 4)), "nothing pending: at once");
    }

    #[test]
    fn a_relayed_fence_adds_the_answers_to_wait_for() {
        let (tokens, mut d) = durable();
        let token = tokens.empty();
        assert_eq!(d.forwarded(&[1]), vec![fence(1, token, false)]);
        // Shard 1 passed the messages on to shards 0 and 2, then answered for itself.
        d.fence_relayed(token, 2);
        d.fence_answered(token);
        assert!(
            d.releasable().is_empty(),
            "shards 0 and 2 have not answered"
        );
        d.fence_answered(token);
        assert!(d.releasable().is_empty());
        d.fence_answered(token);
        assert_eq!(d.releasable(), token..=token);
    }

    #[test]
    fn an_empty_batch_waits_for_its_fences_only() {
        let (tokens, mut d) = durable();
        let token = tokens.empty();
        assert_eq!(d.forwarded(&[1]), vec![fence(1, token, false)]);
        assert!(d.releasable().is_empty(), "the fence is not answered yet");
        d.fence_answered(token);
        assert_eq!(d.releasable(), token..=token, "no commit needed");
    }

    #[test]
    fn an_empty_batch_after_a_written_one_waits_for_that_commit() {
        let (tokens, mut d) = durable();
        let written = tokens.batch();
        assert!(d.forwarded(&[]).is_empty());
        let empty = tokens.empty();
        assert_eq!(d.forwarded(&[1]), vec![fence(1, empty, false)]);
        d.fence_answered(empty);
        assert!(
            d.releasable().is_empty(),
            "the written batch is not durable"
        );
        assert!(d.committed(written).is_empty());
        assert_eq!(d.releasable(), written..=empty);
    }

    #[test]
    fn empty_batches_above_the_last_sent_one_follow_it() {
        let (tokens, mut d) = durable();
        let written = tokens.batch();
        tokens.empty();
        let last = tokens.empty();
        assert!(d.releasable().is_empty());
        assert!(d.committed(written).is_empty());
        assert_eq!(d.releasable(), written..=last);
    }

    #[test]
    fn an_empty_batch_does_not_hold_back_fences_asked_of_this_shard() {
        let (tokens, mut d) = durable();
        tokens.empty();
        assert!(d.forwarded(&[1]).len() == 1);
        assert_eq!(
            d.fence(1, 7),
            Some((1, 7)),
            "nothing of this shard's is waiting for a disk"
        );
    }
}
