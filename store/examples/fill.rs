//! Fills an embedded store for the restart-time figure: N retained messages and M
//! persistent sessions (each with one subscription and one queued QoS 1 message, stored as a
//! session header and one entry).
//!
//! ```sh
//! cargo run --release -p petrel-store --example fill -- DATA_DIR 1000000 100000
//! time target/release/petrel --data-dir DATA_DIR --listen 127.0.0.1:0   # until "listening on"
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use petrel_codec::{QoS, SubscriptionOptions};
use petrel_state::broker::{SessionRecord, StoredSubscription};
use petrel_state::message::Message;
use petrel_state::server::{Delivery, Session};
use petrel_store::{record, Backend, Clock, EmbeddedStore, Op};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("DATA_DIR"));
    let retained: usize = args.next().map_or(1_000_000, |n| n.parse().expect("count"));
    let sessions: usize = args.next().map_or(100_000, |n| n.parse().expect("count"));
    let clock = Clock::new(Clock::unix_now());
    let mut store = EmbeddedStore::open(&dir).expect("open");
    let mut ops = Vec::new();
    let flush = |ops: &mut Vec<Op>, store: &mut EmbeddedStore| {
        store.apply(ops, true).expect("write");
        ops.clear();
    };
    for i in 0..retained {
        let topic = format!("sensors/{}/{}/value", i / 1000, i % 1000);
        let mut message = Message::new(&topic, format!("{i:032}").into_bytes());
        message.retain = true;
        ops.push(Op::PutRetained(
            topic,
            record::encode_message(&message, clock),
        ));
        if ops.len() == 50_000 {
            flush(&mut ops, &mut store);
        }
    }
    for i in 0..sessions {
        let id = format!("device-{i:07}");
        let mut session = Session::new(id.clone(), u32::MAX);
        let mut message = Message::new(&format!("commands/{id}"), &b"reboot"[..]);
        message.qos = QoS::AtLeastOnce;
        let delivery = Delivery::new(Arc::new(message));
        session.queued_bytes = delivery.message.size();
        session.queue.push_back(delivery);
        let record = SessionRecord {
            session,
            subscriptions: vec![StoredSubscription {
                filter: format!("commands/{id}"),
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
                identifier: None,
            }],
            pending_will: None,
        };
        ops.extend(record::session_ops(record.view(), clock));
        if ops.len() >= 50_000 {
            flush(&mut ops, &mut store);
        }
    }
    flush(&mut ops, &mut store);
    println!(
        "{retained} retained messages and {sessions} sessions in {}",
        dir.display()
    );
}
