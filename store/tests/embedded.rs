//! The embedded store through the committer: what is committed comes back, expired state is
//! removed from disk, and a damaged file or record is refused with a message naming it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{commits, session, Scratch};
use petrel_state::broker::{Durability, Storage};
use petrel_state::message::Message;
use petrel_state::Instant;
use petrel_store::{
    embedded::FILE_NAME, load, Clock, CommitSettings, Committer, EmbeddedStore, StoreError,
};

const SETTINGS: CommitSettings = CommitSettings {
    window: Duration::from_millis(2),
    durable: true,
};

fn clock() -> Clock {
    Clock::new(Clock::unix_now())
}

#[test]
fn committed_state_comes_back_after_reopening() {
    let dir = Scratch::new("reopen");
    let clock = clock();
    let (listener, committed) = commits();
    let committer = Committer::start(
        Box::new(EmbeddedStore::open(&dir.0).unwrap()),
        SETTINGS,
        clock,
        listener,
    )
    .unwrap();
    let mut shard0 = committer.shard(0);
    let mut shard1 = committer.shard(1);
    shard0.save_session(session("a", 3600).view());
    let mut retained = Message::new("status", &b"up"[..]);
    retained.retain = true;
    shard0.set_retained("status", Some(&Arc::new(retained.clone())));
    assert_eq!(shard0.commit(), Durability::Pending(1));
    shard1.save_session(session("b", 3600).view());
    shard1.save_session(session("gone", 3600).view());
    assert_eq!(shard1.commit(), Durability::Pending(1));
    shard1.delete_session("gone");
    assert_eq!(shard1.commit(), Durability::Pending(2));
    // Nothing to write: durable at once.
    assert_eq!(shard1.commit(), Durability::Durable);

    let mut seen = [0u64; 2];
    while seen != [1, 2] {
        let (shard, token) = committed.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(token > seen[shard], "tokens only move forward");
        seen[shard] = token;
    }
    drop((shard0, shard1));
    committer.finish();

    let mut store = EmbeddedStore::open(&dir.0).unwrap();
    let loaded = load(&mut store, clock).unwrap();
    let mut ids: Vec<_> = loaded
        .state
        .sessions
        .iter()
        .map(|r| r.session.client_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(loaded.state.sessions[0], session("a", 3600));
    assert_eq!(*loaded.state.retained[0], retained);
}

#[test]
fn a_linked_batch_waits_for_the_other_shards_link_and_commits_with_its_batches() {
    let dir = Scratch::new("linked");
    let clock = clock();
    let (listener, committed) = commits();
    let committer = Committer::start(
        Box::new(EmbeddedStore::open(&dir.0).unwrap()),
        SETTINGS,
        clock,
        listener,
    )
    .unwrap();
    let mut publisher = committer.shard(0);
    let mut subscriber = committer.shard(1);
    let linker = subscriber.linker().unwrap();
    // The publisher's input stored its marker and forwarded the message to shard 1.
    publisher.save_session(session("publisher", 3600).view());
    assert_eq!(publisher.commit_forwarding(&[1]), Durability::Pending(1));
    assert_eq!(publisher.tokens().take_linked(), vec![(1, vec![1])]);
    assert!(publisher.tokens().take_linked().is_empty());
    assert!(
        committed.recv_timeout(Duration::from_millis(100)).is_err(),
        "long past the window, the batch waits for shard 1"
    );
    // Shard 1 stores its copy, then its fence from shard 0 arrives.
    subscriber.save_session(session("subscriber", 3600).view());
    assert_eq!(subscriber.commit(), Durability::Pending(1));
    linker.link(0, 1, 0);
    let mut seen = [0u64; 2];
    while seen != [1, 1] {
        let (shard, token) = committed.recv_timeout(Duration::from_secs(5)).unwrap();
        seen[shard] = token;
    }
    // An input that forwarded but wrote nothing is never the committer's.
    assert_eq!(publisher.commit_forwarding(&[1]), Durability::Pending(2));
    assert!(publisher.tokens().take_linked().is_empty());
    assert_eq!(publisher.tokens().sent(), 1);
    drop((publisher, subscriber, linker));
    committer.finish();

    let mut store = EmbeddedStore::open(&dir.0).unwrap();
    let loaded = load(&mut store, clock).unwrap();
    assert_eq!(loaded.state.sessions.len(), 2);
}

#[test]
fn expired_sessions_and_messages_are_removed_from_disk() {
    let dir = Scratch::new("expiry");
    // A process that started 100 s ago.
    let clock = Clock::new(Clock::unix_now() - 100_000_000);
    let mut store = EmbeddedStore::open(&dir.0).unwrap();
    let mut expired = session("expired", 10);
    expired.session.expires_at = Some(Instant::from_secs(20));
    let mut alive = session("alive", 3600);
    alive.session.expires_at = Some(Instant::from_secs(3000));
    let mut old = Message::new("old", &b"x"[..]);
    old.properties.expires_at = Some(Instant::from_secs(50));
    use petrel_store::{record, Backend, Op};
    store
        .apply(
            &[
                record::session_ops(expired.view(), clock),
                record::session_ops(alive.view(), clock),
                vec![Op::PutRetained(
                    String::from("old"),
                    record::encode_message(&old, clock),
                )],
            ]
            .concat(),
            true,
        )
        .unwrap();
    let loaded = load(&mut store, clock).unwrap();
    assert_eq!(loaded.expired_sessions, 1);
    assert_eq!(loaded.expired_retained, 1);
    assert_eq!(loaded.state.sessions.len(), 1);
    let raw = store.load().unwrap();
    assert_eq!(raw.sessions.len(), 1, "the expired session left the disk");
    assert_eq!(raw.entries.len(), 2, "and its entries with it");
    assert!(raw.retained.is_empty(), "the expired message left the disk");
}

#[test]
fn a_damaged_record_is_refused_by_name() {
    use petrel_store::{Backend, Op};
    let dir = Scratch::new("damaged");
    let clock = clock();
    let mut store = EmbeddedStore::open(&dir.0).unwrap();
    let mut bytes =
        petrel_store::record::encode_session_header(session("victim", 60).view(), clock);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    store
        .apply(&[Op::PutSession(String::from("victim"), bytes)], true)
        .unwrap();
    let err = load(&mut store, clock).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("\"victim\"") && text.contains("refusing"),
        "{text}"
    );
    // Still there: refusing does not delete it.
    assert_eq!(store.load().unwrap().sessions.len(), 1);
}

#[test]
fn a_truncated_file_is_refused_not_replaced() {
    let dir = Scratch::new("truncated");
    {
        let mut store = EmbeddedStore::open(&dir.0).unwrap();
        use petrel_store::{Backend, Op};
        let clock = clock();
        let ops: Vec<Op> = (0..200)
            .flat_map(|i| {
                let id = format!("client-{i}");
                petrel_store::record::session_ops(session(&id, 60).view(), clock)
            })
            .collect();
        store.apply(&ops, true).unwrap();
    }
    let path = dir.0.join(FILE_NAME);
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 3).unwrap();
    drop(file);
    let result = EmbeddedStore::open(&dir.0).and_then(|mut s| load(&mut s, clock()));
    match result {
        Err(e) => assert!(e.to_string().contains(FILE_NAME), "{e}"),
        Ok(loaded) => panic!(
            "a truncated store opened with {} sessions",
            loaded.state.sessions.len()
        ),
    }
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len / 3,
        "the damaged file is left as it was, for inspection"
    );
}

#[test]
fn a_session_saved_change_by_change_comes_back_exactly_and_a_change_writes_one_entry() {
    let dir = Scratch::new("churn");
    common::churn(|| Box::new(EmbeddedStore::open(&dir.0).unwrap()));
}

#[cfg(feature = "fjall")]
#[test]
fn the_fjall_store_keeps_sessions_change_by_change_too() {
    let dir = Scratch::new("churn-fjall");
    common::churn(|| Box::new(petrel_store::FjallStore::open(&dir.0).unwrap()));
}

/// A whole-session record as Petrel wrote it before per-message entries (record format 1),
/// of `common::session("old", 3600)` with no will: the layout a store of an older Petrel
/// holds.
fn whole_v1() -> Vec<u8> {
    let record = session("old", 3600);
    let s = &record.session;
    let mut out = vec![1u8];
    let put = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    let delivery = |out: &mut Vec<u8>, d: &petrel_state::server::Delivery| {
        let m = &d.message;
        put(out, m.topic.as_bytes());
        put(out, &m.payload);
        // QoS and retain; payload format; expiry; content type; response topic;
        // correlation data; user properties.
        out.extend_from_slice(&[m.qos as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&[d.qos as u8, 0, 0, 0, 0, 0]);
    };
    put(&mut out, s.client_id.as_bytes());
    out.extend_from_slice(&3600u32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.push(1);
    delivery(&mut out, &s.outbound[0].delivery);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&42u16.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    delivery(&mut out, &s.queue[0]);
    out.extend_from_slice(&[0; 32]);
    out.extend_from_slice(&1u32.to_le_bytes());
    put(&mut out, b"sensors/#");
    out.extend_from_slice(&[2, 0, 0]);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn a_store_of_whole_session_records_is_migrated_to_entries() {
    use petrel_store::{Backend, Op};
    let dir = Scratch::new("migrate");
    let clock = clock();
    let mut store = EmbeddedStore::open(&dir.0).unwrap();
    store
        .apply(&[Op::PutSession(String::from("old"), whole_v1())], true)
        .unwrap();
    let loaded = load(&mut store, clock).unwrap();
    assert_eq!(loaded.migrated_sessions, 1);
    assert_eq!(loaded.state.sessions, [session("old", 3600)]);
    let raw = store.load().unwrap();
    assert_eq!(raw.entries.len(), 2, "one in flight, one queued");
    assert_eq!(raw.sessions[0].1[0], 2, "the header is of format 2");
    let again = load(&mut store, clock).unwrap();
    assert_eq!(again.migrated_sessions, 0);
    assert_eq!(again.state.sessions, [session("old", 3600)]);
}
