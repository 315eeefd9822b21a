//! Group commit: every shard hands its batches to one committer thread, which gathers what
//! arrives within the commit window into one transaction, makes it durable, and tells each
//! shard the last of its batches that is. The workers never wait on a disk or a socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant as WallInstant};

use petrel_state::broker::{Durability, SessionRecord, Storage};
use petrel_state::message::Message;

use crate::backend::{Backend, Op, StoreError};
use crate::record::{encode_message, encode_session, Clock};

/// How batches become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitSettings {
    /// How long the committer waits after the first batch of a group for others to join it.
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
}

struct Batch {
    shard: usize,
    /// 0 for a batch nobody waits for (`durable: false`).
    token: u64,
    ops: Vec<Op>,
}

/// The committer thread. Dropping every [`ShardStorage`] and then calling
/// [`Committer::finish`] writes what is left and stops it.
#[derive(Debug)]
pub struct Committer {
    sender: Option<Sender<Batch>>,
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
        }
    }

    /// Waits for every batch sent so far to be written, then stops the thread. The shards'
    /// stores must be dropped first, or this waits for them.
    pub fn finish(mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn absorb(batch: Batch, ops: &mut Vec<Op>, tokens: &mut Vec<u64>) {
    ops.extend(batch.ops);
    if batch.token > 0 {
        if tokens.len() <= batch.shard {
            tokens.resize(batch.shard + 1, 0);
        }
        tokens[batch.shard] = tokens[batch.shard].max(batch.token);
    }
}

fn run(
    mut backend: Box<dyn Backend>,
    settings: CommitSettings,
    receiver: Receiver<Batch>,
    mut listener: Box<dyn CommitListener>,
) {
    let mut ops: Vec<Op> = Vec::new();
    // The highest token per shard in the group being committed.
    let mut tokens: Vec<u64> = Vec::new();
    while let Ok(first) = receiver.recv() {
        absorb(first, &mut ops, &mut tokens);
        let deadline = WallInstant::now() + settings.window;
        let mut closed = false;
        loop {
            let left = deadline.saturating_duration_since(WallInstant::now());
            match receiver.recv_timeout(left) {
                Ok(batch) => absorb(batch, &mut ops, &mut tokens),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        // Whatever arrived while waiting for the window also joins, without waiting more.
        while let Ok(batch) = receiver.try_recv() {
            absorb(batch, &mut ops, &mut tokens);
        }
        loop {
            match backend.apply(&ops, settings.durable) {
                Ok(()) => break,
                Err(error) => {
                    listener.failed(&error);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        ops.clear();
        for (shard, token) in tokens.iter_mut().enumerate() {
            if *token > 0 {
                listener.committed(shard, *token);
                *token = 0;
            }
        }
        if closed {
            break;
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
    sender: Option<Sender<Batch>>,
}

/// The tokens a shard's store has handed out, readable from the worker that owns the broker.
///
/// A token is handed out for every input whose changes must be durable before its
/// acknowledgements go out, and also for an input that changed nothing here but forwarded
/// acknowledged messages to other shards: its acknowledgements wait for those shards
/// (the runtime's fences), not for a disk. Such an *empty* batch is never sent to the
/// committer, so a token above [`BatchTokens::sent`] is empty and durable as soon as the
/// batches before it are.
#[derive(Debug, Default)]
pub struct BatchTokens {
    issued: AtomicU64,
    sent: AtomicU64,
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
}

impl ShardStorage {
    /// The tokens this store hands out, readable from the worker that owns the broker.
    pub fn tokens(&self) -> Arc<BatchTokens> {
        self.tokens.clone()
    }

    fn send(&mut self, forwarded: bool) -> Durability {
        if self.ops.is_empty() {
            if forwarded && self.durable {
                // Nothing to write: the acknowledgements wait for the other shards only.
                let token = self.tokens.issued.fetch_add(1, Ordering::Relaxed) + 1;
                return Durability::Pending(token);
            }
            return Durability::Durable;
        }
        let ops = std::mem::take(&mut self.ops);
        let token = if self.durable {
            let token = self.tokens.issued.fetch_add(1, Ordering::Relaxed) + 1;
            self.tokens.sent.store(token, Ordering::Relaxed);
            token
        } else {
            0
        };
        // A batch the committer never gets is never durable: its acknowledgements stay held
        // (the client re-sends after reconnecting) rather than claim what is not true.
        if let Some(sender) = &self.sender {
            let _ = sender.send(Batch {
                shard: self.shard,
                token,
                ops,
            });
        }
        if self.durable {
            Durability::Pending(token)
        } else {
            Durability::Durable
        }
    }
}

impl Storage for ShardStorage {
    fn save_session(&mut self, record: &SessionRecord) {
        self.ops.push(Op::PutSession(
            record.session.client_id.clone(),
            encode_session(record, self.clock),
        ));
    }

    fn delete_session(&mut self, client_id: &str) {
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
        self.send(false)
    }

    fn commit_forwarding(&mut self, forwarded: bool) -> Durability {
        self.send(forwarded)
    }
}
