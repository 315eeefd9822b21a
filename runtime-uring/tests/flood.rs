//! A connection flood: 10,000 connections that never finish CONNECT (half-open) or send
//! garbage, held open at once. Meanwhile and afterwards real clients (mosquitto_pub and
//! mosquitto_sub) connect and exchange messages; once the flood is gone every descriptor
//! is closed and the broker's resident memory is back where it was, twice over.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{publish, Broker, Sub};

const FLOOD: usize = 10_000;

/// The broker's resident set size, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A publisher and a subscriber get through. The message is retained, so it arrives
/// whether the subscriber's SUBSCRIBE lands before or after it on a loaded broker.
fn good_clients_work(broker: &Broker, tag: &str) {
    let topic = format!("flood/{tag}");
    publish(broker, &["-q", "1", "-r", "-t", &topic, "-m", tag]);
    let sub = Sub::start(broker, &["-t", &topic, "-C", "1", "-W", "10"]);
    assert_eq!(sub.lines(), [format!("{topic} {tag}")], "{tag}");
}

/// Descriptors the broker has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc fd")
        .count()
}

/// Opens `FLOOD` connections that never complete a CONNECT and holds them open.
fn flood(broker: &Broker) -> Vec<TcpStream> {
    (0..FLOOD)
        .map(|n| {
            let mut stream = TcpStream::connect(broker.addr)
                .unwrap_or_else(|e| panic!("connection {n} failed: {e}"));
            let _ = match n % 4 {
                // Half-open: connected, nothing sent.
                0 => Ok(()),
                // The start of a CONNECT that never ends (remaining length 16383).
                1 => stream.write_all(&[0x10, 0xff, 0x7f, 0x00, 0x04, b'M']),
                // Garbage: no MQTT packet starts with 0x00.
                2 => stream.write_all(&[0x00; 64]),
                // A CONNECT claiming a protocol that does not exist.
                _ => stream.write_all(&[
                    0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'X', 0x63, 0x02, 0x00, 0x3c, 0x00,
                    0x00,
                ]),
            };
            stream
        })
        .collect()
}

/// Waits until the broker holds no more descriptors than `baseline`.
fn wait_for_fds(broker: &Broker, baseline: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fds = open_fds(broker.pid());
        if fds <= baseline || Instant::now() > deadline {
            return fds;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ten_thousand_half_open_and_garbage_connections() {
    let config = std::env::temp_dir().join(format!("petrel-flood-{}.toml", std::process::id()));
    std::fs::write(&config, "[limits]\nconnect_timeout = 3\n").unwrap();
    let broker = Broker::start_with(&["--workers", "2", "--config", config.to_str().unwrap()]);
    good_clients_work(&broker, "before");
    // Let the first allocations settle (buffers, $SYS, the client's session).
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = open_fds(broker.pid());
    let before = rss_kib(broker.pid());

    let started = Instant::now();
    let held = flood(&broker);
    let flooded_in = started.elapsed();
    // While the flood is held open, good clients still get in.
    good_clients_work(&broker, "during");
    let peak = rss_kib(broker.pid());
    drop(held);
    // Every flood connection is closed: by the peer, or by the connect timeout.
    let fds_after = wait_for_fds(&broker, fds_before);
    let after = rss_kib(broker.pid());
    good_clients_work(&broker, "after");

    // A second flood: nothing of the first may have stayed behind to add up.
    let held = flood(&broker);
    good_clients_work(&broker, "again");
    let second_peak = rss_kib(broker.pid());
    drop(held);
    let fds_again = wait_for_fds(&broker, fds_before);
    let after_again = rss_kib(broker.pid());
    eprintln!(
        "flood of {FLOOD} connections in {flooded_in:?}; broker RSS before {before} KiB, \
         peak {peak} KiB, after {after} KiB, second peak {second_peak} KiB, after the \
         second {after_again} KiB; descriptors before {fds_before}, after {fds_after}, \
         {fds_again}"
    );
    assert!(fds_after <= fds_before && fds_again <= fds_before);
    // Back within 2 MiB of where it started, after each flood (the broker gives the
    // allocator's free pages back once a flood has left).
    assert!(
        after <= before + 2048 && after_again <= before + 2048,
        "RSS did not come back: before {before} KiB, after {after} KiB and {after_again} KiB"
    );
}
