//! The generator's counts against a real broker and an independent counter: a mosquitto
//! started on a free loopback port, `mosquitto_sub -C N` and `petrel-bench sub` both
//! subscribed while `petrel-bench pub` sends N messages. All three must agree.
//!
//! Skipped, with a message, when mosquitto or mosquitto_sub cannot be started (CI installs
//! both: see .ci/run).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use petrel_benches::load::run::{run_blocking, Config, Topology};
use petrel_codec::{ProtocolVersion, QoS};

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Broker {
    process: Killed,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mosquitto_binary() -> Option<&'static str> {
    ["mosquitto", "/usr/sbin/mosquitto"].into_iter().find(|b| {
        Command::new(b)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

fn start_broker(name: &str) -> Option<Broker> {
    let Some(binary) = mosquitto_binary() else {
        eprintln!(
            "skipping: mosquitto is not installed (apt-get install mosquitto mosquitto-clients)"
        );
        return None;
    };
    if Command::new("mosquitto_sub")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("skipping: mosquitto_sub is not installed (apt-get install mosquitto-clients)");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("petrel-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    // Started as root, mosquitto drops to its own user, which must be able to write the log.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let log = dir.join("mosquitto.log");
    let _ = std::fs::remove_file(&log);
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n\
             persistence false\nlog_dest file {}\nlog_type subscribe\nlog_type error\n",
            log.display()
        ),
    )
    .ok()?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!("skipping: mosquitto could not be started");
        return None;
    };
    let process = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            eprintln!("skipping: mosquitto did not open port {port}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Broker {
        process,
        port,
        dir,
        log,
    })
}

/// Starts `mosquitto_sub -C count` as client `id` and returns it with the number of
/// messages it printed (one payload length per line).
fn mosquitto_sub(
    port: u16,
    id: &str,
    topic: &str,
    count: u64,
    qos: u8,
    v5: bool,
) -> (Killed, Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        topic,
        "-i",
        id,
    ])
    .args(["-C", &count.to_string(), "-q", &qos.to_string()])
    // -F %l prints each message as its payload length, one per line.
    .args(["-F", "%l", "-W", "60"])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if v5 {
        cmd.args(["-V", "mqttv5"]);
    }
    let mut child = cmd.spawn().expect("mosquitto_sub starts");
    let stdout = child.stdout.take().expect("piped");
    let counted = Arc::new(AtomicU64::new(0));
    let c = counted.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim().parse::<u64>().is_ok() {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (Killed(child), counted, reader)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn agree(name: &str, version: ProtocolVersion, qos: QoS, publishers: usize, per_publisher: u64) {
    let Some(broker) = start_broker(name) else {
        return;
    };
    let total = per_publisher * publishers as u64;
    let prefix = format!("pbtest/{name}");
    let qos_number = match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    };
    let v5 = version == ProtocolVersion::V5;
    let subscribed = |client: &str| {
        // mosquitto logs each subscription with the client id (log_type subscribe).
        std::fs::read_to_string(&broker.log).is_ok_and(|log| log.contains(client))
    };
    let sub_id = format!("{name}-mosquitto-sub");
    let (mut process, counted, reader) = mosquitto_sub(
        broker.port,
        &sub_id,
        &format!("{prefix}/+"),
        total,
        qos_number,
        v5,
    );
    wait_for("mosquitto_sub's subscription", || subscribed(&sub_id));

    // petrel-bench sub, in another thread: its own runtime, like the binary.
    let mut sub = Config::new(
        "sub",
        Topology::Sub {
            clients: 1,
            filter: format!("{prefix}/+"),
        },
    );
    sub.port = broker.port;
    sub.version = version;
    sub.qos = qos;
    sub.sub_qos = qos;
    sub.count = Some(total);
    sub.duration = Some(Duration::from_secs(30));
    sub.warmup = Duration::ZERO;
    sub.threads = 1;
    sub.client_prefix = Some(format!("{name}-checker-"));
    let subscriber = std::thread::spawn(move || run_blocking(&sub));
    wait_for("petrel-bench sub's subscription", || {
        subscribed(&format!("{name}-checker-"))
    });

    let mut publish = Config::new(
        "pub",
        Topology::Pub {
            clients: publishers,
            topic: format!("{prefix}/%i"),
        },
    );
    publish.port = broker.port;
    publish.version = version;
    publish.qos = qos;
    publish.count = Some(per_publisher);
    publish.duration = None;
    publish.threads = 1;
    let sent = run_blocking(&publish).expect("pub runs");
    assert_eq!(sent.published.sent, total, "{}", sent.human());
    if qos != QoS::AtMostOnce {
        assert_eq!(sent.published.acked, total, "{}", sent.human());
    }

    let received = subscriber.join().unwrap().expect("sub runs");
    let status = process.0.wait().expect("mosquitto_sub ends");
    reader.join().unwrap();
    let theirs = counted.load(Ordering::SeqCst);
    let ours = received.delivered.as_ref().expect("a subscriber's figures");
    assert!(status.success(), "mosquitto_sub exited with {status}");
    assert_eq!(theirs, total, "mosquitto_sub counted {theirs}");
    assert_eq!(ours.unique, total, "{}", received.human());
    assert_eq!(ours.received, theirs, "{}", received.human());
    assert_eq!((ours.duplicates, ours.gaps), (0, 0), "{}", received.human());
    assert_eq!(ours.clock_skewed, 0, "{}", received.human());
    // Latency across two runtimes of one process, on one clock: positive and sane.
    let l = ours.latency_us.expect("latency");
    assert!(
        l.samples == total && l.p50 > 0.0 && l.max < 30_000_000.0,
        "{l:?}"
    );
}

#[test]
fn pub_and_sub_agree_with_mosquitto_sub_v311_qos1() {
    agree("v311", ProtocolVersion::V311, QoS::AtLeastOnce, 1, 2000);
}

#[test]
fn pub_and_sub_agree_with_mosquitto_sub_v5_qos0() {
    agree("v5", ProtocolVersion::V5, QoS::AtMostOnce, 2, 500);
}
