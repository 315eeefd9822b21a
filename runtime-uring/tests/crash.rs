//! Crash test: `kill -9` the real petrel binary in the middle of QoS 1 and QoS 2 load from
//! paho-mqtt clients with persistent sessions, restart it on its data directory, and count
//! (`tests/crash.py` says exactly what). A few seeds, two kills each, mostly two workers: in
//! every seed the publisher and the subscriber live on different shards, so a QoS 2
//! publisher's exactly-once marker and the subscriber's copy are stored by two shards and
//! must still commit together.
//!
//! The longer runs, over more seeds and both QoS levels:
//! `python3 runtime-uring/tests/crash.py target/debug/petrel --seeds 1..31 --kills 3 --qos 2`
//! (and `--workers 1`, and without `--qos` for both levels mixed; `--stop term` stops the
//! broker gracefully instead, `--workers 3 --shared` goes through a shared group owned by a
//! third shard).

use std::process::Command;

/// Runs the crash script with `args` and checks that each of its `seeds` passed.
fn crash(args: &str, seeds: usize) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/crash.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_petrel"))
        .args(args.split_whitespace())
        .output()
        .expect("python3");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "crash test failed (pip install paho-mqtt):\n{report}"
    );
    assert_eq!(report.matches("— OK").count(), seeds, "{report}");
}

#[test]
fn acknowledged_qos1_messages_survive_kill_9() {
    crash(
        "--seeds 1,2,3 --kills 2 --messages 2000 --workers 2 --qos 1",
        3,
    );
}

#[test]
fn acknowledged_qos2_messages_arrive_exactly_once_after_kill_9() {
    crash(
        "--seeds 4,5 --kills 2 --messages 2000 --workers 2 --qos 2",
        2,
    );
    crash("--seeds 6 --kills 2 --messages 2000 --workers 1 --qos 2", 1);
}

#[test]
fn qos2_through_a_shared_group_owned_by_a_third_shard_arrives_exactly_once_after_kill_9() {
    // Three workers: the publisher, the subscriber and the group's owner each on its own.
    crash(
        "--seeds 9,10 --kills 2 --messages 2000 --workers 3 --qos 2 --shared",
        2,
    );
}

#[test]
fn a_graceful_stop_loses_no_acknowledged_message_and_doubles_no_qos2_one() {
    crash(
        "--seeds 7,8 --kills 2 --messages 2000 --workers 2 --stop term",
        2,
    );
}

#[test]
fn a_damaged_store_file_stops_the_start_and_is_left_alone() {
    let dir = std::env::temp_dir().join(format!("petrel-damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("petrel.redb");
    let garbage = vec![0x5a_u8; 10_000];
    std::fs::write(&file, &garbage).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("petrel");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started on a damaged store: {log}"
    );
    assert!(
        log.contains("petrel.redb"),
        "the error names the file: {log}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "and leaves it as it was"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
