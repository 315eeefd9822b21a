//! Inline subscriptions (`RunningServer::subscribe`, the mechanism behind bridges): each
//! worker keeps its own copy of the list and takes the new one when a tap comes or goes.

use std::time::Duration;

use petrel::{Config, Server};
use petrel_state::message::Message;

#[test]
fn taps_come_and_go_while_messages_flow() {
    let mut config = Config::default();
    config.listeners[0].bind = Some("127.0.0.1:0".parse().unwrap());
    config.store.kind = petrel::persistence::StoreKind::Memory;
    let server = Server::new(config).start().unwrap();
    let wait = Duration::from_secs(10);

    let first = server.subscribe("a/#");
    let other = server.subscribe("b/#");
    server.publish(Message::new("a/1", &b"one"[..]));
    server.publish(Message::new("b/1", &b"bee"[..]));
    assert_eq!(&*first.recv_timeout(wait).unwrap().topic, "a/1");
    assert_eq!(&*other.recv_timeout(wait).unwrap().topic, "b/1");

    // A tap whose receiver is gone is dropped on the next message it matches; the others
    // go on.
    drop(first);
    server.publish(Message::new("a/2", &b"two"[..]));
    server.publish(Message::new("b/2", &b"bee"[..]));
    assert_eq!(&*other.recv_timeout(wait).unwrap().topic, "b/2");

    // A tap added now is seen by the worker, which takes the new list.
    let second = server.subscribe("a/#");
    server.publish(Message::new("a/3", &b"three"[..]));
    let mut topics = Vec::new();
    while topics.last().is_none_or(|t| t != "a/3") {
        topics.push(second.recv_timeout(wait).unwrap().topic.to_string());
    }
    // `a/2` may reach it too: published before, it may be routed after the tap came.
    assert!(
        topics[..topics.len() - 1].iter().all(|t| t == "a/2"),
        "{topics:?}"
    );
    assert!(other.try_recv().is_err(), "b/# saw nothing of a/#");
    server.shutdown();
}
