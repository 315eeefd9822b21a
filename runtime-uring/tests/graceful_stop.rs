//! A graceful stop (what SIGTERM does) stores what the shards are handing each other at
//! that moment: a worker with nothing of its own left to do keeps handling what the others
//! forward to it until none of them has anything left, and only then stops.

mod common;

use common::Sub;
use petrel::{Config, Server};
use petrel_codec::QoS;
use petrel_state::broker::owner_shard;
use petrel_state::message::Message;

/// Enough that worker 0 is still forwarding when worker 1 is told to stop. (Each one
/// rewrites the offline session's list of entries it tracks, so many more make the run long.)
const MESSAGES: usize = 4000;

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        workers: 2,
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.listeners[0].bind = Some("127.0.0.1:0".parse().unwrap());
    config.sys.interval = 0;
    config.limits.max_queued_messages = 100_000;
    config.limits.max_queued_bytes = 100_000_000;
    // What a graceful stop stores does not depend on fsync, and without it the run is short.
    config.store.fsync = petrel::persistence::Fsync::Never;
    config
}

#[test]
fn messages_forwarded_between_shards_at_a_graceful_stop_are_stored() {
    let dir = common::scratch_dir("graceful-stop");
    // A subscriber whose session lives on worker 1; the program's messages enter on worker 0.
    let id = (0..)
        .map(|n| format!("drain-sub-{n}"))
        .find(|id| owner_shard(id, 2) == 1)
        .unwrap();
    let server = Server::new(config(&dir)).start().unwrap();
    let port = server.local_addrs()[0].port();
    // Subscribes (clean session off) and leaves: its messages queue on worker 1, in store.
    let sub = Sub::start_on(port, &["-c", "-i", &id, "-q", "1", "-t", "drain/#", "-E"]);
    assert!(sub.subscribed());
    sub.lines();
    for n in 0..MESSAGES {
        let mut message = Message::new("drain/x", n.to_string());
        message.qos = QoS::AtLeastOnce;
        server.publish(message);
    }
    // Worker 0 handles every publish before its stop (its inbox is in order) and forwards
    // each to worker 1, which has no connection and is told to stop at once.
    server.shutdown();

    let server = Server::new(config(&dir)).start().unwrap();
    let port = server.local_addrs()[0].port();
    let count = MESSAGES.to_string();
    let lines = Sub::start_on(
        port,
        &[
            "-c", "-i", &id, "-q", "1", "-t", "drain/#", "-C", &count, "-W", "30",
        ],
    )
    .lines();
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("drain/x {n}")).collect();
    assert_eq!(
        lines.len(),
        MESSAGES,
        "lost at the stop: {:?}",
        expected
            .iter()
            .filter(|l| !lines.contains(l))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(lines, expected, "in order, once each");
}
