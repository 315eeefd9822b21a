//! What the store tests share: scratch directories, sample records, a listener that
//! records commits.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use petrel_codec::{PacketId, QoS, SubscriptionOptions};
use petrel_state::broker::{Durability, SessionRecord, Storage, StoredSubscription};
use petrel_state::message::Message;
use petrel_state::server::{Delivery, Outbound, OutboundState, Session};
use petrel_store::{
    load, Backend, Clock, CommitListener, CommitSettings, Committer, Op, RawState, StoreError,
};

/// A fresh directory under the system's temporary directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "petrel-store-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A persistent session with one message in flight each way and one queued.
pub fn session(client_id: &str, expiry: u32) -> SessionRecord {
    let mut session = Session::new(client_id, expiry);
    let mut message = Message::new("sensors/1", &b"21.5"[..]);
    message.qos = QoS::ExactlyOnce;
    let delivery = Delivery::new(Arc::new(message));
    session.outbound.push_back(Outbound {
        packet_id: PacketId::new(1).unwrap(),
        delivery: delivery.clone(),
        state: OutboundState::AwaitingPubRec,
    });
    session.inbound_qos2.insert(42);
    session.queued_bytes = delivery.message.size();
    session.queue.push_back(delivery);
    SessionRecord {
        session,
        subscriptions: vec![StoredSubscription {
            filter: String::from("sensors/#"),
            options: SubscriptionOptions::qos(QoS::ExactlyOnce),
            identifier: None,
        }],
        pending_will: None,
    }
}

/// Forwards commits to a channel.
pub struct Commits(pub Sender<(usize, u64)>);

impl CommitListener for Commits {
    fn committed(&mut self, shard: usize, token: u64) {
        let _ = self.0.send((shard, token));
    }
    fn failed(&mut self, error: &StoreError) {
        panic!("commit failed: {error}");
    }
}

pub fn commits() -> (Box<dyn CommitListener>, Receiver<(usize, u64)>) {
    let (tx, rx) = channel();
    (Box::new(Commits(tx)), rx)
}

/// A backend that counts the bytes (keys and values) each `apply` is asked to write.
pub struct Counting {
    pub inner: Box<dyn Backend>,
    pub written: Arc<Mutex<Vec<usize>>>,
}

impl Backend for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn apply(&mut self, ops: &[Op], durable: bool) -> Result<(), StoreError> {
        let bytes = ops
            .iter()
            .map(|op| match op {
                Op::PutSession(k, v) | Op::PutRetained(k, v) => k.len() + v.len(),
                Op::PutEntry(k, _, v) => k.len() + 9 + v.len(),
                Op::DeleteSession(k) | Op::DeleteRetained(k) => k.len(),
                Op::DeleteEntry(k, _) => k.len() + 9,
            })
            .sum();
        self.written.lock().unwrap().push(bytes);
        self.inner.apply(ops, durable)
    }
    fn load(&mut self) -> Result<RawState, StoreError> {
        self.inner.load()
    }
}

/// xorshift64: the same steps every run.
struct Steps(u64);

impl Steps {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn delivery(n: usize, qos: QoS) -> Delivery {
    let mut message = Message::new(&format!("fan/in/{n}"), vec![b'x'; 100]);
    message.qos = qos;
    Delivery::new(Arc::new(message))
}

fn wait_for(committed: &Receiver<(usize, u64)>, token: u64) {
    loop {
        let (_, done) = committed.recv_timeout(Duration::from_secs(10)).unwrap();
        if done >= token {
            return;
        }
    }
}

/// The committer settings of [`churn`], before and after its restart.
const CHURN_SETTINGS: CommitSettings = CommitSettings {
    window: Duration::from_millis(1),
    durable: true,
};

/// Changes one session the ways the broker does (messages queued, sent, acknowledged, a
/// QoS 2 handshake moving on, a message put back at the queue's front, the exactly-once
/// markers), saving it after each change through the committer over `open()`; then checks
/// that the store gives back exactly that session, also after a restart that saves it
/// again, and that adding one message to a session holding hundreds writes about one
/// message's bytes.
pub fn churn(open: impl Fn() -> Box<dyn Backend>) {
    let clock = Clock::new(Clock::unix_now());
    let written = Arc::new(Mutex::new(Vec::new()));
    let (listener, committed) = commits();
    let committer = Committer::start(
        Box::new(Counting {
            inner: open(),
            written: written.clone(),
        }),
        CHURN_SETTINGS,
        clock,
        listener,
    )
    .unwrap();
    let mut shard = committer.shard(0);
    let mut record = session("sub", 3600);
    record.session.outbound.clear();
    let mut made = 0;
    let mut next_id = 1u16;
    let mut steps = Steps(0x9E37_79B9_7F4A_7C15);
    let mut token = 0;
    for step in 0..400 {
        let s = &mut record.session;
        let choice = if step < 200 { 0 } else { steps.below(7) };
        match choice {
            0 | 1 => {
                let qos = if made % 3 == 0 {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                };
                let d = delivery(made, qos);
                made += 1;
                s.queued_bytes += d.message.size();
                s.queue.push_back(d);
            }
            2 => {
                if let Some(d) = s.queue.pop_front() {
                    s.queued_bytes -= d.message.size();
                    let state = if d.qos == QoS::ExactlyOnce {
                        OutboundState::AwaitingPubRec
                    } else {
                        OutboundState::AwaitingPubAck
                    };
                    s.outbound.push_back(Outbound {
                        packet_id: PacketId::new(next_id).unwrap(),
                        delivery: d,
                        state,
                    });
                    next_id += 1;
                }
            }
            3 if !s.outbound.is_empty() => {
                let at = steps.below(s.outbound.len());
                s.outbound.remove(at);
            }
            4 => {
                if let Some(o) = s
                    .outbound
                    .iter_mut()
                    .find(|o| o.state == OutboundState::AwaitingPubRec)
                {
                    o.state = OutboundState::AwaitingPubComp;
                }
            }
            5 if !s.outbound.is_empty() => {
                let at = steps.below(s.outbound.len());
                if let Some(o) = s.outbound.remove(at) {
                    s.queued_bytes += o.delivery.message.size();
                    s.queue.push_front(o.delivery);
                }
            }
            _ => {
                let id = steps.below(8) as u16;
                if !s.inbound_qos2.remove(&id) {
                    s.inbound_qos2.insert(id);
                }
            }
        }
        shard.save_session(record.view());
        // Several changes per batch at times, as one input makes.
        // Several changes per batch at times, as one input makes; a step that changed
        // nothing writes nothing.
        if step % 3 != 1 {
            if let Durability::Pending(t) = shard.commit() {
                token = t;
            }
        }
    }
    if let Durability::Pending(t) = shard.commit() {
        token = t;
    }
    wait_for(&committed, token);

    // One message more, on a session holding hundreds of them.
    assert!(record.session.queue.len() + record.session.outbound.len() > 100);
    let before = written.lock().unwrap().len();
    let d = delivery(made, QoS::AtLeastOnce);
    record.session.queued_bytes += d.message.size();
    record.session.queue.push_back(d);
    shard.save_session(record.view());
    let Durability::Pending(token) = shard.commit() else {
        panic!("a change is pending");
    };
    wait_for(&committed, token);
    let one: usize = written.lock().unwrap()[before..].iter().sum();
    assert!(
        one < 300,
        "adding one 100-byte message wrote {one} bytes; the session holds {} messages",
        record.session.queue.len() + record.session.outbound.len()
    );
    drop(shard);
    committer.finish();

    let mut store = open();
    let loaded = load(store.as_mut(), clock).unwrap();
    assert_eq!(loaded.migrated_sessions, 0);
    assert_eq!(loaded.state.sessions, [record.clone()]);

    // A restarted broker saves the session whole once, over what is there, then in diffs.
    let (listener, committed) = commits();
    let committer = Committer::start(store, CHURN_SETTINGS, clock, listener).unwrap();
    let mut shard = committer.shard(0);
    record.session.queue.pop_front();
    record.session.queued_bytes = record.session.queue.iter().map(|d| d.message.size()).sum();
    shard.save_session(record.view());
    record.session.outbound.pop_back();
    shard.save_session(record.view());
    let Durability::Pending(token) = shard.commit() else {
        panic!("a change is pending");
    };
    wait_for(&committed, token);
    drop(shard);
    committer.finish();
    let loaded = load(open().as_mut(), clock).unwrap();
    assert_eq!(loaded.state.sessions, [record]);
}
