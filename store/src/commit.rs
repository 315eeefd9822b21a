//! Group commit: every shard hands its batches to one committer thread, which gathers what
//! arrives within the commit window into one transaction, makes it durable, and tells each
//! shard the last of its batches that is. The workers never wait on a disk or a socket.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as WallInstant};

use petrel_state::broker::{Durability, SessionView, Storage};
use petrel_state::message::Message;
use petrel_state::server::{Delivery, Outbound};

use crate::backend::{Backend, EntryKey, EntryKind, Op, StoreError};
use crate::record::{encode_message, encode_outbound, encode_queued, encode_session_header, Clock};

/// How batches become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitSettings {
    /// How long a batch waits for others to join its transaction, counted from when its
    /// shard sent it: a batch that waited out its window behind a commit in progress is
    /// committed as soon as that commit ends, with whatever else waited with it.
    pub window: Duration,
    /// Whether a commit waits for stable storage (fsync) and acknowledgements wait for the
    /// commit. Without it, acknowledgements go out at once and the changes are written
    /// behind them: a crash of the broker process loses at most what was not yet handed to
    /// the kernel (the last window), and a crash of the machine whatever the kernel had not
    /// yet written.
    pub durable: bool,
}

/// Told about commits, on the committer thread.
pub trait CommitListener: Send {
    /// Every batch of `shard` up to and including `token` is durable.
    fn committed(&mut self, shard: usize, token: u64);
    /// A commit failed; it is retried after a pause, and nothing it holds is acknowledged
    /// meanwhile.
    fn failed(&mut self, error: &StoreError);
    /// A transaction has waited `waited` (past its window) for the links of these batches,
    /// as `(shard, token)`, and every commit waits with it. Called every [`LINK_PATIENCE`]
    /// while it lasts: a link should come within an inbox round trip, so this names the
    /// batches and shards to look at when acknowledgements stall.
    fn waiting_for_links(&mut self, batches: &[(usize, u64)], waited: Duration) {
        let _ = (batches, waited);
    }
    /// Writing one transaction of `ops` changes took `took`, [`LINK_PATIENCE`] or more:
    /// every acknowledgement it holds waited that long for the disk (or Redis).
    fn slow_commit(&mut self, ops: usize, took: Duration) {
        let _ = (ops, took);
    }
}

/// How long a transaction waits for links before the listener hears of it, and again
/// between reports.
pub const LINK_PATIENCE: Duration = Duration::from_secs(1);

/// What the shards send the committer, all through one channel: the items of one shard
/// arrive in the order it sent them, and an item a shard sends after learning of another
/// shard's item (through a worker's inbox) arrives after that item.
#[derive(Debug)]
enum Item {
    Batch(Batch),
    Link(Link),
}

#[derive(Debug)]
struct Batch {
    shard: usize,
    /// 0 for a batch nobody waits for (`durable: false`).
    token: u64,
    ops: Vec<Op>,
    /// When the shard sent it.
    sent: WallInstant,
    /// The shards this batch's input forwarded acknowledged messages to. Each answers with a
    /// [`Link`], and the batch commits in the same transaction as what they stored of
    /// those messages.
    links: Vec<u16>,
}

/// A shard's answer to a linked batch of another shard.
#[derive(Debug)]
struct Link {
    /// The shard that handled the forwarded messages.
    shard: usize,
    /// Its batches up to this token hold what it did with them.
    upto: u64,
    /// The linked batch: (shard, token).
    of: (usize, u64),
    /// The shards it passed some of them on to and relayed the fence to: as many more
    /// links to wait for. Sent before theirs, so counted before they arrive.
    relayed: usize,
}

/// The committer thread. Dropping every [`ShardStorage`] and [`Linker`] and then calling
/// [`Committer::finish`] writes what is left and stops it.
#[derive(Debug)]
pub struct Committer {
    sender: Option<Sender<Item>>,
    thread: Option<JoinHandle<()>>,
    settings: CommitSettings,
    clock: Clock,
}

impl Committer {
    /// Starts the committer thread over `backend`.
    pub fn start(
        backend: Box<dyn Backend>,
        settings: CommitSettings,
        clock: Clock,
        listener: Box<dyn CommitListener>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(String::from("petrel-store"))
            .spawn(move || run(backend, settings, receiver, listener))?;
        Ok(Committer {
            sender: Some(sender),
            thread: Some(thread),
            settings,
            clock,
        })
    }

    /// The store of one shard, to give to its broker.
    pub fn shard(&self, shard: usize) -> ShardStorage {
        ShardStorage {
            shard,
            clock: self.clock,
            durable: self.settings.durable,
            ops: Vec::new(),
            tokens: Arc::new(BatchTokens::default()),
            sender: self.sender.clone(),
            written: HashMap::new(),
        }
    }

    /// Waits for every batch sent so far to be written, then stops the thread. The shards'
    /// stores and linkers must be dropped first, or this waits for them.
    pub fn finish(mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One transaction being gathered.
///
/// Everything that arrives within the commit window joins it. A batch whose input forwarded
/// acknowledged messages to other shards is *linked*: what those shards stored of them
/// (a QoS 2 copy for a subscriber) must commit in the same transaction as the batch (the
/// publisher's exactly-once marker), or a crash between two commits keeps one without the
/// other. So once the window is over, the group stays open while a linked batch misses a
/// [`Link`]; of what arrives meanwhile, only the batches a link names (those up to its
/// `upto`, in each shard's order) join, and the rest waits for the next group.
#[derive(Debug, Default)]
struct Group {
    ops: Vec<Op>,
    /// The highest token per shard in the group.
    tokens: Vec<u64>,
    /// Linked batches in the group that miss links: (shard, token) → links missing.
    unlinked: HashMap<(usize, u64), usize>,
    /// Per shard: its batches up to this token must be in the group.
    needed: Vec<u64>,
    /// Batches that arrived after the window and are not needed: the next group's start.
    /// Per shard, each in its order, with the number of its arrival: a link pulls the
    /// front of one shard's queue, and the next group takes them all in arrival order.
    later: Vec<VecDeque<(u64, Batch)>>,
    /// Batches put in `later` so far.
    arrivals: u64,
    /// Links of batches in `later`, by the batch they link: (shard, token).
    early: HashMap<(usize, u64), Vec<EarlyLink>>,
    /// When the oldest batch in the group was sent.
    oldest: Option<WallInstant>,
}

/// A link that came before its batch joined: (linking shard, upto, relayed).
type EarlyLink = (usize, u64, usize);

fn raise(tokens: &mut Vec<u64>, shard: usize, token: u64) {
    if tokens.len() <= shard {
        tokens.resize(shard + 1, 0);
    }
    tokens[shard] = tokens[shard].max(token);
}

impl Group {
    fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.ops.is_empty()
    }

    /// Whether no batch in the group waits for a link.
    fn complete(&self) -> bool {
        self.unlinked.is_empty()
    }

    /// The batches that wait for links, as `(shard, token)`, in order.
    fn unlinked(&self) -> Vec<(usize, u64)> {
        let mut batches: Vec<_> = self.unlinked.keys().copied().collect();
        batches.sort_unstable();
        batches
    }

    /// Within the window: whatever arrives joins.
    fn gather(&mut self, item: Item) {
        match item {
            Item::Batch(batch) => self.join(batch),
            Item::Link(link) => self.link(link),
        }
    }

    /// After the window: a batch joins only if a link needs it.
    fn close(&mut self, item: Item) {
        match item {
            Item::Batch(batch) => {
                let shard = batch.shard;
                if self.later.len() <= shard {
                    self.later.resize_with(shard + 1, VecDeque::new);
                }
                self.arrivals += 1;
                self.later[shard].push_back((self.arrivals, batch));
                if self.needs(shard) {
                    self.pull();
                }
            }
            Item::Link(link) => {
                self.link(link);
                self.pull();
            }
        }
    }

    /// Starts the next group with what waited for it, in the order it arrived.
    fn resume(&mut self) {
        let mut waiting: Vec<(u64, Batch)> =
            self.later.iter_mut().flat_map(std::mem::take).collect();
        waiting.sort_unstable_by_key(|(arrival, _)| *arrival);
        for (_, batch) in waiting {
            self.join(batch);
        }
    }

    /// Whether the oldest batch of `shard` that waits is one a link needs.
    fn needs(&self, shard: usize) -> bool {
        let upto = self.needed.get(shard).copied().unwrap_or(0);
        self.later
            .get(shard)
            .and_then(VecDeque::front)
            .is_some_and(|(_, batch)| batch.token <= upto)
    }

    /// When the window of the group's oldest batch ends (of a group holding no batch yet, a
    /// window from now).
    fn deadline(&self, window: Duration) -> WallInstant {
        self.oldest.unwrap_or_else(WallInstant::now) + window
    }

    fn join(&mut self, batch: Batch) {
        self.oldest = Some(
            self.oldest
                .map_or(batch.sent, |oldest| oldest.min(batch.sent)),
        );
        if batch.token > 0 {
            raise(&mut self.tokens, batch.shard, batch.token);
        }
        self.ops.extend(batch.ops);
        if batch.links.is_empty() {
            return;
        }
        let key = (batch.shard, batch.token);
        let arrived = self.early.remove(&key).unwrap_or_default();
        let mut expected = batch.links.len();
        for &(shard, upto, relayed) in &arrived {
            raise(&mut self.needed, shard, upto);
            expected += relayed;
        }
        let missing = expected.saturating_sub(arrived.len());
        if missing > 0 {
            self.unlinked.insert(key, missing);
        }
    }

    fn link(&mut self, link: Link) {
        match self.unlinked.get_mut(&link.of) {
            Some(missing) => {
                *missing = (*missing + link.relayed).saturating_sub(1);
                if *missing == 0 {
                    self.unlinked.remove(&link.of);
                }
                raise(&mut self.needed, link.shard, link.upto);
            }
            None => {
                self.early
                    .entry(link.of)
                    .or_default()
                    .push((link.shard, link.upto, link.relayed))
            }
        }
    }

    /// Moves into the group the waiting batches that links need. Each shard's batches wait
    /// in its order, so what joins of a shard is always the oldest of it that waits: the
    /// group holds a prefix of every shard's batches, and its highest token per shard says
    /// that every batch up to it is durable.
    fn pull(&mut self) {
        loop {
            let mut joined = false;
            for shard in 0..self.later.len() {
                while self.needs(shard) {
                    if let Some((_, batch)) = self.later[shard].pop_front() {
                        // A batch that joins may be linked itself, and need more.
                        self.join(batch);
                        joined = true;
                    }
                }
            }
            if !joined {
                return;
            }
        }
    }

    /// The changes to commit and the tokens they make durable; the group starts empty.
    fn take(&mut self) -> (Vec<Op>, Vec<u64>) {
        self.needed.clear();
        self.oldest = None;
        (
            std::mem::take(&mut self.ops),
            std::mem::take(&mut self.tokens),
        )
    }
}

fn run(
    mut backend: Box<dyn Backend>,
    settings: CommitSettings,
    receiver: Receiver<Item>,
    mut listener: Box<dyn CommitListener>,
) {
    let mut group = Group::default();
    let mut open = true;
    while open {
        group.resume();
        if group.is_empty() {
            match receiver.recv() {
                Ok(item) => group.gather(item),
                Err(_) => break,
            }
        }
        // Batches that arrived during the last commit have waited already: the window is
        // each batch's, not the committer's, so a busy committer does not add a whole
        // window to every commit after the first.
        let deadline = group.deadline(settings.window);
        loop {
            let left = deadline.saturating_duration_since(WallInstant::now());
            match receiver.recv_timeout(left) {
                Ok(item) => group.gather(item),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Whatever arrived while waiting for the window also joins, without waiting more.
        while let Ok(item) = receiver.try_recv() {
            group.gather(item);
        }
        let waiting_since = WallInstant::now();
        while open && !group.complete() {
            match receiver.recv_timeout(LINK_PATIENCE) {
                Ok(item) => group.close(item),
                Err(RecvTimeoutError::Timeout) => {
                    listener.waiting_for_links(&group.unlinked(), waiting_since.elapsed());
                }
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        if !open {
            // The shards are gone and no link will come: write everything they sent.
            group.resume();
        }
        let (ops, tokens) = group.take();
        // A group of batches with nothing to write makes nothing more durable.
        let writing = WallInstant::now();
        while !ops.is_empty() {
            match backend.apply(&ops, settings.durable) {
                Ok(()) => break,
                Err(error) => {
                    listener.failed(&error);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        let took = writing.elapsed();
        if took >= LINK_PATIENCE {
            listener.slow_commit(ops.len(), took);
        }
        for (shard, token) in tokens.into_iter().enumerate() {
            if token > 0 {
                listener.committed(shard, token);
            }
        }
    }
}

/// One shard's side of the store: implements the broker's [`Storage`], encoding records on
/// the worker and sending each input's changes to the committer as one batch.
#[derive(Debug)]
pub struct ShardStorage {
    shard: usize,
    clock: Clock,
    durable: bool,
    ops: Vec<Op>,
    tokens: Arc<BatchTokens>,
    sender: Option<Sender<Item>>,
    /// What was sent of each session saved in this process.
    written: HashMap<String, Written>,
}

/// The tokens a shard's store has handed out, readable from the worker that owns the broker.
///
/// A token is handed out for every input whose changes must be durable before its
/// acknowledgements go out, and also for an input that changed nothing here but forwarded
/// acknowledged messages to other shards: its acknowledgements wait for those shards
/// (the runtime's fences), not for a disk. Such an *empty* batch is never sent to the
/// committer, so a token above [`BatchTokens::sent`] is empty and durable as soon as the
/// batches before it are.
///
/// A batch that was sent and forwarded acknowledged messages is *linked*: the committer
/// holds it until each shard it forwarded to has sent a link ([`Linker::link`]), so that
/// it commits together with what they stored. [`BatchTokens::take_linked`] says which
/// links to ask for.
#[derive(Debug, Default)]
pub struct BatchTokens {
    issued: AtomicU64,
    sent: AtomicU64,
    linked: Mutex<Vec<(u64, Vec<u16>)>>,
}

impl BatchTokens {
    /// The last token handed out.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// The last token of a batch sent to the committer (every later one is empty).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The linked batches sent since the last call, as `(token, shards)`: each of those
    /// shards must be asked for a link (after the messages forwarded to it), or the
    /// committer waits for it forever.
    pub fn take_linked(&self) -> Vec<(u64, Vec<u16>)> {
        std::mem::take(&mut *lock(&self.linked))
    }
}

/// How a shard answers a linked batch of another shard: it tells the committer which of its
/// own batches hold what it did with the messages that batch forwarded.
#[derive(Debug, Clone)]
pub struct Linker {
    shard: usize,
    tokens: Arc<BatchTokens>,
    sender: Sender<Item>,
}

impl Linker {
    /// Batch `token` of `shard` forwarded messages here, all of them handled by now: it
    /// commits with every batch this shard has sent so far. Call it when the shard's fence
    /// arrives (behind the messages, in the same inbox). `relayed`: this shard passed some
    /// of those messages on to that many other shards and relays the fence to them (after
    /// this call), so the batch also waits for their links.
    pub fn link(&self, shard: usize, token: u64, relayed: usize) {
        let _ = self.sender.send(Item::Link(Link {
            shard: self.shard,
            upto: self.tokens.sent(),
            of: (shard, token),
            relayed,
        }));
    }
}

impl ShardStorage {
    /// The tokens this store hands out, readable from the worker that owns the broker.
    pub fn tokens(&self) -> Arc<BatchTokens> {
        self.tokens.clone()
    }

    /// This shard's side of linking, for the worker that owns the broker; `None` once the
    /// committer is gone.
    pub fn linker(&self) -> Option<Linker> {
        Some(Linker {
            shard: self.shard,
            tokens: self.tokens.clone(),
            sender: self.sender.clone()?,
        })
    }

    fn send(&mut self, forwarded: &[u16]) -> Durability {
        if self.ops.is_empty() {
            if !forwarded.is_empty() && self.durable {
                // Nothing to write: the acknowledgements wait for the other shards only.
                let token = self.tokens.issued.fetch_add(1, Ordering::Relaxed) + 1;
                return Durability::Pending(token);
            }
            return Durability::Durable;
        }
        let ops = std::mem::take(&mut self.ops);
        let (token, links) = if self.durable {
            let token = self.tokens.issued.fetch_add(1, Ordering::Relaxed) + 1;
            self.tokens.sent.store(token, Ordering::Relaxed);
            (token, forwarded.to_vec())
        } else {
            (0, Vec::new())
        };
        // A batch the committer never gets is never durable: its acknowledgements stay held
        // (the client re-sends after reconnecting) rather than claim what is not true.
        if let Some(sender) = &self.sender {
            if !links.is_empty() {
                lock(&self.tokens.linked).push((token, links.clone()));
            }
            let _ = sender.send(Item::Batch(Batch {
                shard: self.shard,
                token,
                ops,
                sent: WallInstant::now(),
                links,
            }));
        }
        if self.durable {
            Durability::Pending(token)
        } else {
            Durability::Durable
        }
    }
}

/// What a shard has sent the committer of one session: its header, and each message in
/// flight and queued with the sequence number of its entry, in list order. A save writes
/// only the difference, so a delivery or an acknowledgement costs one entry, not the
/// session. The messages are the session's own (`Arc`s): while they are held here, a
/// pointer identifies a message.
#[derive(Debug, Default)]
struct Written {
    header: Vec<u8>,
    outbound: VecDeque<(u64, Outbound)>,
    queue: VecDeque<(u64, Delivery)>,
    next_seq: u64,
}

/// Whether two deliveries are the same one (the same message, shared, delivered alike).
fn same_delivery(a: &Delivery, b: &Delivery) -> bool {
    Arc::ptr_eq(&a.message, &b.message)
        && a.qos == b.qos
        && a.retain == b.retain
        && a.subscription_ids == b.subscription_ids
        && a.shared_group == b.shared_group
}

/// Brings `written` (a list as the store has it, with each item's entry number) in line
/// with `current`, calling `write(seq, Some(item))` for each entry to put and
/// `write(seq, None)` for each to delete.
///
/// Lists change at their ends and by removals (a queue is taken from the front and
/// appended to; an acknowledgement removes one message in flight), so the items of
/// `current` are found in `written` in order, skipping (deleting) those gone, and a new
/// item ends the matching: it and everything after it get fresh numbers after every number
/// used, which keeps the stored order the list's order whatever else happened. Items
/// `same` as before but not `unchanged` (an outbound message whose handshake moved on) are
/// rewritten under their own number. The cost is one comparison per item and one write per
/// change.
fn sync<T: Clone>(
    written: &mut VecDeque<(u64, T)>,
    current: &VecDeque<T>,
    next_seq: &mut u64,
    same: impl Fn(&T, &T) -> bool,
    unchanged: impl Fn(&T, &T) -> bool,
    mut write: impl FnMut(u64, Option<&T>),
) {
    let mut old = std::mem::take(written);
    let mut matching = true;
    for item in current {
        if matching {
            match old.iter().position(|(_, was)| same(was, item)) {
                Some(at) => {
                    for (seq, _) in old.drain(..at) {
                        write(seq, None);
                    }
                    if let Some((seq, was)) = old.pop_front() {
                        if unchanged(&was, item) {
                            written.push_back((seq, was));
                        } else {
                            write(seq, Some(item));
                            written.push_back((seq, item.clone()));
                        }
                        continue;
                    }
                }
                None => matching = false,
            }
        }
        let seq = *next_seq;
        *next_seq += 1;
        write(seq, Some(item));
        written.push_back((seq, item.clone()));
    }
    for (seq, _) in old {
        write(seq, None);
    }
}

/// Nothing panics while holding these locks; a poisoned one is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Storage for ShardStorage {
    fn save_session(&mut self, view: SessionView<'_>) {
        let session = view.session;
        let id = &session.client_id;
        let header = encode_session_header(view, self.clock);
        let written = match self.written.get_mut(id) {
            Some(written) => written,
            None => {
                // The first save of the session in this process: what the store holds of it
                // (from an earlier run, if any) is replaced whole, and diffs start from here.
                self.ops.push(Op::DeleteSession(id.clone()));
                self.written.entry(id.clone()).or_default()
            }
        };
        if written.header != header {
            self.ops.push(Op::PutSession(id.clone(), header.clone()));
            written.header = header;
        }
        let (ops, clock) = (&mut self.ops, self.clock);
        sync(
            &mut written.outbound,
            &session.outbound,
            &mut written.next_seq,
            |a, b| a.packet_id == b.packet_id && same_delivery(&a.delivery, &b.delivery),
            |a, b| a.state == b.state,
            |seq, entry| {
                let key = EntryKey {
                    kind: EntryKind::Outbound,
                    seq,
                };
                ops.push(match entry {
                    Some(o) => Op::PutEntry(id.clone(), key, encode_outbound(o, clock)),
                    None => Op::DeleteEntry(id.clone(), key),
                });
            },
        );
        sync(
            &mut written.queue,
            &session.queue,
            &mut written.next_seq,
            same_delivery,
            |_, _| true,
            |seq, entry| {
                let key = EntryKey {
                    kind: EntryKind::Queued,
                    seq,
                };
                ops.push(match entry {
                    Some(d) => Op::PutEntry(id.clone(), key, encode_queued(d, clock)),
                    None => Op::DeleteEntry(id.clone(), key),
                });
            },
        );
    }

    fn delete_session(&mut self, client_id: &str) {
        self.written.remove(client_id);
        self.ops.push(Op::DeleteSession(client_id.to_string()));
    }

    fn set_retained(&mut self, topic: &str, message: Option<&Arc<Message>>) {
        self.ops.push(match message {
            Some(message) => {
                Op::PutRetained(topic.to_string(), encode_message(message, self.clock))
            }
            None => Op::DeleteRetained(topic.to_string()),
        });
    }

    fn commit(&mut self) -> Durability {
        self.send(&[])
    }

    fn commit_forwarding(&mut self, forwarded: &[u16]) -> Durability {
        self.send(forwarded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(shard: usize, token: u64, links: &[u16]) -> Item {
        sent_batch(shard, token, links, WallInstant::now())
    }

    fn sent_batch(shard: usize, token: u64, links: &[u16], sent: WallInstant) -> Item {
        Item::Batch(Batch {
            shard,
            token,
            ops: vec![Op::DeleteSession(format!("{shard}/{token}"))],
            sent,
            links: links.to_vec(),
        })
    }

    fn link(shard: usize, upto: u64, of: (usize, u64)) -> Item {
        relayed_link(shard, upto, of, 0)
    }

    fn relayed_link(shard: usize, upto: u64, of: (usize, u64), relayed: usize) -> Item {
        Item::Link(Link {
            shard,
            upto,
            of,
            relayed,
        })
    }

    fn keys(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                Op::DeleteSession(key) => key.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_linked_batch_commits_with_what_the_link_names() {
        let mut group = Group::default();
        group.gather(batch(0, 1, &[1]));
        assert!(!group.complete());
        // After the window: shard 1 stores its copy, then links.
        group.close(batch(1, 1, &[]));
        assert!(!group.complete());
        group.close(link(1, 1, (0, 1)));
        assert!(group.complete());
        let (ops, tokens) = group.take();
        assert_eq!(keys(&ops), ["0/1", "1/1"]);
        assert_eq!(tokens, [1, 1]);
    }

    #[test]
    fn what_no_link_needs_after_the_window_waits_for_the_next_group() {
        let mut group = Group::default();
        group.gather(batch(0, 1, &[1]));
        group.close(batch(2, 1, &[]));
        group.close(batch(1, 1, &[]));
        group.close(batch(0, 2, &[]));
        group.close(link(1, 1, (0, 1)));
        assert!(group.complete());
        let (ops, tokens) = group.take();
        assert_eq!(keys(&ops), ["0/1", "1/1"]);
        assert_eq!(tokens, [1, 1]);
        group.resume();
        let (ops, tokens) = group.take();
        assert_eq!(keys(&ops), ["2/1", "0/2"], "in the order they came");
        assert_eq!(tokens, [2, 0, 1]);
    }

    #[test]
    fn a_link_names_every_batch_of_its_shard_up_to_it_in_order() {
        let mut group = Group::default();
        group.gather(batch(0, 1, &[1]));
        group.close(batch(1, 1, &[]));
        group.close(batch(1, 2, &[]));
        group.close(batch(1, 3, &[]));
        group.close(link(1, 2, (0, 1)));
        let (ops, tokens) = group.take();
        assert_eq!(keys(&ops), ["0/1", "1/1", "1/2"]);
        assert_eq!(tokens, [1, 2]);
    }

    #[test]
    fn a_linked_batch_that_joins_late_brings_its_own_links() {
        let mut group = Group::default();
        group.gather(batch(0, 1, &[1]));
        // Shard 1 forwarded to shard 0 too before it handled shard 0's fence.
        group.close(batch(1, 1, &[0]));
        group.close(batch(0, 2, &[]));
        group.close(link(1, 1, (0, 1)));
        assert!(!group.complete(), "1/1 waits for shard 0's link");
        group.close(link(0, 2, (1, 1)));
        assert!(group.complete());
        let (ops, tokens) = group.take();
        assert_eq!(keys(&ops), ["0/1", "1/1", "0/2"]);
        assert_eq!(tokens, [2, 1]);
    }

    #[test]
    fn a_relayed_link_makes_the_batch_wait_for_the_shards_it_names() {
        let mut group = Group::default();
        group.gather(batch(0, 1, &[1]));
        // Shard 1 owns the shared group: it links, and passes the message on to shard 2.
        group.close(relayed_link(1, 0, (0, 1), 1));
        assert!(!group.complete(), "shard 2 holds the member's copy");
        group.close(batch(2, 1, &[]));
        group.close(link(2, 1, (0, 1)));
        assert!(group.complete());
        let (ops, tokens) = group.take();
        assert_eq!(keys(&ops), ["0/1", "2/1"]);
        assert_eq!(tokens, [1, 0, 1]);
    }

    #[test]
    fn relayed_links_that_come_before_their_batch_are_counted_when_it_joins() {
        let mut group = Group::default();
        group.gather(batch(1, 1, &[2]));
        group.close(batch(0, 1, &[1]));
        group.close(relayed_link(1, 1, (0, 1), 1));
        group.close(link(2, 0, (0, 1)));
        group.close(link(2, 0, (1, 1)));
        let (ops, _) = group.take();
        assert_eq!(keys(&ops), ["1/1"], "0/1 waited after the window");
        group.resume();
        assert!(group.complete(), "both of 0/1's links came while it waited");
        group.gather(batch(0, 2, &[1]));
        group.close(relayed_link(1, 1, (0, 2), 2));
        group.close(link(2, 0, (0, 2)));
        assert!(!group.complete(), "one relayed link still missing");
        group.close(link(0, 2, (0, 2)));
        assert!(group.complete());
    }

    /// What `sync` asked for: `(seq, Some(item))` puts, `(seq, None)` deletes.
    fn synced(
        written: &mut VecDeque<(u64, char)>,
        current: &str,
        next_seq: &mut u64,
    ) -> Vec<(u64, Option<char>)> {
        let current: VecDeque<char> = current.chars().collect();
        let mut writes = Vec::new();
        let same = |a: &char, b: &char| a.eq_ignore_ascii_case(b);
        sync(
            written,
            &current,
            next_seq,
            same,
            |a, b| a == b,
            |seq, item| {
                writes.push((seq, item.copied()));
            },
        );
        writes
    }

    #[test]
    fn a_list_is_synced_by_its_changes_only() {
        let mut written = VecDeque::new();
        let mut next = 0;
        assert_eq!(
            synced(&mut written, "abc", &mut next),
            [(0, Some('a')), (1, Some('b')), (2, Some('c'))]
        );
        // Taken from the front, appended at the back: one delete, one put.
        assert_eq!(
            synced(&mut written, "bcd", &mut next),
            [(0, None), (3, Some('d'))]
        );
        // One removed from the middle, one changed in place (same item, new state).
        assert_eq!(
            synced(&mut written, "bD", &mut next),
            [(2, None), (3, Some('D'))]
        );
        // Put back at the front: what follows gets fresh numbers, so the order holds.
        assert_eq!(
            synced(&mut written, "abD", &mut next),
            [
                (4, Some('a')),
                (5, Some('b')),
                (6, Some('D')),
                (1, None),
                (3, None)
            ]
        );
        let order: Vec<_> = written.iter().map(|(seq, item)| (*seq, *item)).collect();
        assert_eq!(order, [(4, 'a'), (5, 'b'), (6, 'D')]);
        assert!(synced(&mut written, "abD", &mut next).is_empty());
    }

    /// A backend that keeps nothing and fails nothing.
    struct Nowhere;

    impl Backend for Nowhere {
        fn location(&self) -> String {
            String::from("nowhere")
        }
        fn apply(&mut self, _ops: &[Op], _durable: bool) -> Result<(), StoreError> {
            Ok(())
        }
        fn load(&mut self) -> Result<crate::RawState, StoreError> {
            Ok(crate::RawState::default())
        }
    }

    enum Heard {
        Committed(usize, u64),
        Waiting(Vec<(usize, u64)>),
    }

    struct Tell(mpsc::Sender<Heard>);

    impl CommitListener for Tell {
        fn committed(&mut self, shard: usize, token: u64) {
            let _ = self.0.send(Heard::Committed(shard, token));
        }
        fn failed(&mut self, error: &StoreError) {
            panic!("{error}");
        }
        fn waiting_for_links(&mut self, batches: &[(usize, u64)], _waited: Duration) {
            let _ = self.0.send(Heard::Waiting(batches.to_vec()));
        }
    }

    #[test]
    fn a_transaction_that_waits_for_a_link_is_reported_until_the_link_comes() {
        let (tx, heard) = mpsc::channel();
        let settings = CommitSettings {
            window: Duration::from_millis(1),
            durable: true,
        };
        let committer = Committer::start(
            Box::new(Nowhere),
            settings,
            Clock::new(0),
            Box::new(Tell(tx)),
        )
        .unwrap();
        let mut publisher = committer.shard(0);
        let subscriber = committer.shard(1);
        publisher.delete_session("marker");
        assert_eq!(publisher.commit_forwarding(&[1]), Durability::Pending(1));
        let patience = LINK_PATIENCE * 3;
        match heard.recv_timeout(patience).unwrap() {
            Heard::Waiting(batches) => assert_eq!(batches, [(0, 1)]),
            Heard::Committed(..) => panic!("committed without its link"),
        }
        subscriber.linker().unwrap().link(0, 1, 0);
        loop {
            match heard.recv_timeout(patience).unwrap() {
                Heard::Waiting(_) => continue,
                Heard::Committed(shard, token) => {
                    assert_eq!((shard, token), (0, 1));
                    break;
                }
            }
        }
        drop((publisher, subscriber));
        committer.finish();
    }

    #[test]
    fn the_window_counts_from_the_oldest_batch_even_one_that_waited_for_the_last_commit() {
        let window = Duration::from_millis(2);
        let start = WallInstant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut group = Group::default();
        group.gather(sent_batch(0, 1, &[1], at(5)));
        group.gather(sent_batch(1, 1, &[], at(3)));
        assert_eq!(group.deadline(window), at(5));
        // After the window, batch 1/2 arrives (at 6 ms) and waits while the group waits for
        // 0/1's link and then commits.
        group.close(sent_batch(1, 2, &[], at(6)));
        group.close(link(1, 1, (0, 1)));
        assert_eq!(keys(&group.take().0), ["0/1", "1/1"]);
        group.resume();
        assert_eq!(
            group.deadline(window),
            at(8),
            "the next group's window is 1/2's, begun when it was sent"
        );
        group.take();
        assert!(
            group.deadline(window) >= WallInstant::now(),
            "an empty group starts now"
        );
    }

    #[test]
    fn a_link_for_a_waiting_batch_is_kept_until_the_batch_joins() {
        let mut group = Group::default();
        group.gather(batch(0, 1, &[1]));
        group.close(batch(2, 1, &[1]));
        group.close(batch(1, 1, &[]));
        group.close(link(1, 1, (2, 1)));
        group.close(link(1, 1, (0, 1)));
        let (ops, _) = group.take();
        assert_eq!(keys(&ops), ["0/1", "1/1"]);
        group.resume();
        assert!(group.complete(), "2/1's link came while it waited");
        assert_eq!(keys(&group.take().0), ["2/1"]);
    }
}
