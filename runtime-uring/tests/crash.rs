//! Crash test: `kill -9` the real petrel binary in the middle of QoS 1 load from paho-mqtt
//! clients with persistent sessions, restart it on its data directory, and count
//! (`tests/crash.py` says exactly what). Three seeds, two kills each, two workers, so that
//! publisher and subscriber usually live on different shards.
//!
//! The longer run, over more seeds and both QoS levels:
//! `python3 runtime-uring/tests/crash.py target/debug/petrel --seeds 1..50 --kills 3`

use std::process::Command;

#[test]
fn acknowledged_qos1_messages_survive_kill_9() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/crash.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_petrel"))
        .args(["--seeds", "1,2,3", "--kills", "2", "--messages", "2000"])
        .args(["--workers", "2", "--qos", "1"])
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
    assert_eq!(report.matches("— OK").count(), 3, "{report}");
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
