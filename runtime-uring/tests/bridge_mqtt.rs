//! `[[bridge.mqtt]]` against a real mosquitto: messages out with the remote prefix and their
//! QoS, in with the local prefix, no loop in both directions, reconnection with the queued
//! messages delivered, and the bridge's figures in `/metrics` and `$SYS`. Driven by
//! mosquitto_pub and mosquitto_sub on both sides.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{publish, publish_on, scratch_dir, Broker, Sub};

/// A mosquitto broker on a loopback port, stopped when dropped.
struct Mosquitto {
    child: Child,
    port: u16,
    /// Removed when it stops for good.
    dir: PathBuf,
}

impl Mosquitto {
    /// On a free port, keeping sessions on disk in `dir` across restarts.
    fn start(dir: &Path) -> Mosquitto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Mosquitto::start_on(dir, port)
    }

    /// With a `passwords` file in `dir` (mosquitto_passwd's), only its users may connect.
    fn start_on(dir: &Path, port: u16) -> Mosquitto {
        // Started as root, mosquitto drops to its own user, who must be able to save there.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .expect("open the directory to mosquitto's user");
        let passwords = dir.join("passwords");
        let access = if passwords.exists() {
            format!(
                "allow_anonymous false\npassword_file {}\n",
                passwords.display()
            )
        } else {
            String::from("allow_anonymous true\n")
        };
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{access}persistence true\n\
                 persistence_location {}/\nautosave_interval 1\n",
                dir.display()
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt-get install mosquitto)");
        wait_until(&format!("mosquitto listening on {port}"), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Mosquitto {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// SIGTERM: mosquitto saves its sessions and exits.
    fn stop(&mut self) {
        self.signal("-TERM");
        let _ = self.child.wait();
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Petrel with one bridge named `up` to `remote` and these extra bridge keys and topics;
/// returns once the bridge is connected.
fn petrel(remote: &Mosquitto, bridge: &str, extra: &str) -> Broker {
    let dir = scratch_dir("bridge-config");
    let config = dir.join("petrel.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nkind = \"memory\"\n{extra}\n\
             [[bridge.mqtt]]\nname = \"up\"\naddress = \"127.0.0.1:{}\"\n\
             reconnect_min_ms = 200\nreconnect_max_ms = 1000\n{bridge}\n",
            remote.port
        ),
    )
    .expect("write petrel.toml");
    let broker = Broker::start_with(&["--workers", "2", "--config", config.to_str().unwrap()]);
    wait_until("the bridge to connect", || connects(&broker) == 1);
    broker
}

fn connects(broker: &Broker) -> usize {
    broker.log().matches("bridge connected").count()
}

/// Waits until the remote broker has acknowledged the bridge's subscriptions, so what is
/// published there from now on comes in.
fn settle(broker: &Broker) {
    wait_until("the bridge's remote subscriptions", || {
        broker.log().contains("bridge subscribed")
    });
}

fn out_keeps_qos_and_swaps_prefixes(protocol: &str) {
    let dir = scratch_dir("bridge-out");
    let remote = Mosquitto::start(&dir);
    let petrel = petrel(
        &remote,
        &format!(
            "protocol = \"{protocol}\"\ntopics = [{{ filter = \"sensors/#\", qos = 2, \
             local_prefix = \"site/\", remote_prefix = \"plant/a/\" }}]"
        ),
        "",
    );
    let sub = Sub::start_on(
        remote.port,
        &[
            "-t",
            "plant/a/#",
            "-q",
            "2",
            "-F",
            "%t %q %p",
            "-C",
            "3",
            "-W",
            "10",
        ],
    );
    for qos in ["0", "1", "2"] {
        publish(
            &petrel,
            &["-t", &format!("site/sensors/q{qos}"), "-q", qos, "-m", qos],
        );
        // Not bridged: outside the local prefix.
        publish(
            &petrel,
            &["-t", &format!("sensors/q{qos}"), "-q", qos, "-m", "no"],
        );
    }
    let mut lines = sub.lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "plant/a/sensors/q0 0 0",
            "plant/a/sensors/q1 1 1",
            "plant/a/sensors/q2 2 2"
        ],
        "{}",
        petrel.log()
    );
}

#[test]
fn out_keeps_qos_and_swaps_prefixes_3_1_1() {
    out_keeps_qos_and_swaps_prefixes("3.1.1");
}

#[test]
fn out_keeps_qos_and_swaps_prefixes_5_0() {
    out_keeps_qos_and_swaps_prefixes("5.0");
}

#[test]
fn in_arrives_with_the_local_prefix() {
    let dir = scratch_dir("bridge-in");
    let remote = Mosquitto::start(&dir);
    let mut petrel = petrel(
        &remote,
        "protocol = \"5.0\"\ntopics = [{ filter = \"cmd/#\", direction = \"in\", qos = 1, \
         local_prefix = \"site/\", remote_prefix = \"plant/a/\" }]",
        "",
    );
    settle(&petrel);
    let sub = Sub::start(
        &petrel,
        &[
            "-t", "#", "-q", "1", "-F", "%t %q %p", "-C", "2", "-W", "10",
        ],
    );
    publish_on(remote.port, &["-t", "plant/a/cmd/1", "-q", "1", "-m", "go"]);
    // QoS 2 at the remote, capped by the topic's QoS 1.
    publish_on(
        remote.port,
        &["-t", "plant/a/cmd/2", "-q", "2", "-m", "stop"],
    );
    publish_on(
        remote.port,
        &["-t", "plant/b/cmd/3", "-q", "1", "-m", "not ours"],
    );
    let mut lines = sub.lines();
    lines.sort();
    assert_eq!(
        lines,
        ["site/cmd/1 1 go", "site/cmd/2 1 stop"],
        "{}",
        petrel.log()
    );
    // SIGTERM: the bridge says goodbye and the broker stops.
    assert!(petrel.terminate().success());
    wait_until("the bridge's goodbye in the log", || {
        petrel.log().contains("bridge stopped")
    });
}

fn both_does_not_loop(protocol: &str) {
    let dir = scratch_dir("bridge-both");
    let remote = Mosquitto::start(&dir);
    // No prefixes: the same topic on both sides, the case that loops without care.
    let petrel = petrel(
        &remote,
        &format!(
            "protocol = \"{protocol}\"\n\
             topics = [{{ filter = \"x/#\", direction = \"both\", qos = 1 }}]"
        ),
        "",
    );
    settle(&petrel);
    // Both subscribers are subscribed (SUBACK) once started; they run until killed.
    let local = Sub::start(&petrel, &["-t", "x/#", "-q", "1", "-v"]);
    let far = Sub::start_on(remote.port, &["-t", "x/#", "-q", "1", "-v"]);
    publish(&petrel, &["-t", "x/from-petrel", "-q", "1", "-m", "a"]);
    publish_on(
        remote.port,
        &["-t", "x/from-mosquitto", "-q", "1", "-m", "b"],
    );
    // Each side gets both messages, however slow the machine...
    for (side, sub) in [("petrel", &local), ("mosquitto", &far)] {
        wait_until(&format!("both messages on {side}"), || {
            sub.so_far().len() >= 2
        });
    }
    // ...and a loop would bring them back within moments: after a quiet while, still
    // exactly once each.
    std::thread::sleep(Duration::from_secs(2));
    for (side, sub) in [("petrel", local), ("mosquitto", far)] {
        let mut lines = sub.so_far();
        sub.kill();
        lines.sort();
        assert_eq!(
            lines,
            ["x/from-mosquitto b", "x/from-petrel a"],
            "{protocol}: on {side}, each message exactly once\n{}",
            petrel.log()
        );
    }
}

#[test]
fn both_does_not_loop_3_1_1() {
    both_does_not_loop("3.1.1");
}

#[test]
fn both_does_not_loop_5_0() {
    both_does_not_loop("5.0");
}

/// `GET /metrics`'s lines that start with `prefix`.
fn metrics(url: &str, prefix: &str) -> Vec<String> {
    let output = Command::new("curl")
        .args(["-s", &format!("{url}/metrics")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn http_url(broker: &Broker) -> String {
    let log = broker.log();
    let at = log.find("http api listening on ").expect("[http] is on") + 22;
    let addr = log[at..].split_whitespace().next().unwrap();
    format!("http://{addr}")
}

#[test]
fn reconnects_and_delivers_what_was_queued_meanwhile() {
    let dir = scratch_dir("bridge-reconnect");
    let mut remote = Mosquitto::start(&dir);
    // A persistent subscriber on the remote broker, away while the messages arrive.
    let away = ["-i", "bridge-test-sub", "-c", "-q", "1", "-t", "q/#"];
    Sub::start_on(remote.port, &[&away[..], &["-E"]].concat()).lines();
    let petrel = petrel(
        &remote,
        "protocol = \"3.1.1\"\ntopics = [{ filter = \"q/#\", qos = 1 }]",
        "[sys]\ninterval = 1\n[http]\nbind = \"127.0.0.1:0\"\n",
    );
    let url = http_url(&petrel);
    assert_eq!(
        metrics(&url, "petrel_bridge_connected{"),
        ["petrel_bridge_connected{bridge=\"up\"} 1"]
    );
    let state = Sub::start(
        &petrel,
        &[
            "-t",
            "$SYS/broker/connection/up/state",
            "-C",
            "1",
            "-W",
            "5",
        ],
    );
    assert_eq!(state.lines(), ["$SYS/broker/connection/up/state 1"]);

    remote.stop();
    wait_until("the bridge to notice", || {
        petrel.log().contains("bridge connection lost")
    });
    for n in 1..=3 {
        publish(
            &petrel,
            &["-t", &format!("q/{n}"), "-q", "1", "-m", "queued"],
        );
    }
    wait_until("the queue in /metrics", || {
        metrics(&url, "petrel_bridge_queued{") == ["petrel_bridge_queued{bridge=\"up\"} 3"]
    });
    assert_eq!(
        metrics(&url, "petrel_bridge_connected{"),
        ["petrel_bridge_connected{bridge=\"up\"} 0"]
    );
    // The retained value may be the last tick's; the next one has the queue.
    wait_until("the queue in $SYS", || {
        let sys = Sub::start(
            &petrel,
            &["-t", "$SYS/broker/bridge/up/queued", "-C", "1", "-W", "5"],
        );
        sys.lines() == ["$SYS/broker/bridge/up/queued 3"]
    });

    // The same port, the same sessions on disk.
    let _remote = Mosquitto::start_on(&dir, remote.port);
    wait_until("the bridge to reconnect", || connects(&petrel) == 2);
    let back = Sub::start_on(
        remote.port,
        &[&away[..], &["-v", "-C", "3", "-W", "10"]].concat(),
    );
    assert_eq!(
        back.lines(),
        ["q/1 queued", "q/2 queued", "q/3 queued"],
        "{}",
        petrel.log()
    );
    wait_until("an empty queue in /metrics", || {
        metrics(&url, "petrel_bridge_queued{") == ["petrel_bridge_queued{bridge=\"up\"} 0"]
    });
    // Traffic flows again.
    let sub = Sub::start_on(remote.port, &["-t", "q/#", "-v", "-C", "1", "-W", "10"]);
    publish(&petrel, &["-t", "q/after", "-m", "again"]);
    assert_eq!(sub.lines(), ["q/after again"]);
}

#[test]
fn bad_bridge_config_names_the_key_and_line() {
    let dir = scratch_dir("bridge-bad");
    let config = dir.join("petrel.toml");
    std::fs::write(
        &config,
        "[[bridge.mqtt]]\nname = \"up\"\naddress = \"127.0.0.1:1884\"\n\
         topics = [\n  { filter = \"a/#\" },\n  { filter = \"b\", qos = 3 },\n]\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run petrel");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("line 4") && err.contains("filter = \"b\"") && err.contains("qos"),
        "{err}"
    );
}

#[test]
fn in_flight_qos1_is_sent_again_when_the_remote_comes_back() {
    let dir = scratch_dir("bridge-inflight");
    let mut remote = Mosquitto::start(&dir);
    let away = ["-i", "bridge-inflight-sub", "-c", "-q", "1", "-t", "q/#"];
    Sub::start_on(remote.port, &[&away[..], &["-E"]].concat()).lines();
    let petrel = petrel(
        &remote,
        "protocol = \"5.0\"\ntopics = [{ filter = \"q/#\", qos = 1 }]",
        "[http]\nbind = \"127.0.0.1:0\"\n",
    );
    let url = http_url(&petrel);
    // mosquitto saves every second: then both sessions (ours and the subscriber's) are on
    // disk.
    std::thread::sleep(Duration::from_millis(2500));
    // A remote broker that takes the message and never answers...
    remote.signal("-STOP");
    publish(&petrel, &["-t", "q/inflight", "-q", "1", "-m", "once"]);
    wait_until("the message in flight", || {
        metrics(&url, "petrel_bridge_inflight{") == ["petrel_bridge_inflight{bridge=\"up\"} 1"]
    });
    // ...then dies without saving it.
    remote.signal("-KILL");
    let _ = remote.child.wait();
    wait_until("the bridge to notice", || {
        petrel.log().contains("bridge connection lost")
    });
    let _remote = Mosquitto::start_on(&dir, remote.port);
    wait_until("the bridge to reconnect", || connects(&petrel) == 2);
    assert!(
        petrel.log().contains("session_present=true"),
        "the remote broker kept the bridge's session\n{}",
        petrel.log()
    );
    let back = Sub::start_on(
        remote.port,
        &[&away[..], &["-v", "-C", "1", "-W", "10"]].concat(),
    );
    assert_eq!(back.lines(), ["q/inflight once"], "{}", petrel.log());
    wait_until("nothing in flight", || {
        metrics(&url, "petrel_bridge_inflight{") == ["petrel_bridge_inflight{bridge=\"up\"} 0"]
    });
}

#[test]
fn logs_in_with_a_username_and_password() {
    let dir = scratch_dir("bridge-login");
    let passwords = dir.join("passwords");
    let made = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["site", "s3cret"])
        .status()
        .expect("mosquitto_passwd");
    assert!(made.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o644)).unwrap();
    let remote = Mosquitto::start(&dir);
    let petrel = petrel(
        &remote,
        "username = \"site\"\npassword = \"s3cret\"\ntopics = [{ filter = \"t/#\" }]",
        "",
    );
    let login = ["-u", "site", "-P", "s3cret"];
    let sub = Sub::start_on(
        remote.port,
        &[&login[..], &["-t", "t/#", "-C", "1", "-W", "10"]].concat(),
    );
    publish(&petrel, &["-t", "t/1", "-m", "in"]);
    assert_eq!(sub.lines(), ["t/1 in"], "{}", petrel.log());
}
