//! What the store tests share: scratch directories, sample records, a listener that
//! records commits.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use petrel_codec::{PacketId, QoS, SubscriptionOptions};
use petrel_state::broker::{SessionRecord, StoredSubscription};
use petrel_state::message::Message;
use petrel_state::server::{Delivery, Outbound, OutboundState, Session};
use petrel_store::{CommitListener, StoreError};

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
