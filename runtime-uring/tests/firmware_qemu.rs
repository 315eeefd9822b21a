//! The `no_std` client of `firmware-example/` on an emulated Cortex-M4 (QEMU `mps2-an386`),
//! against the real `petrel` broker and against mosquitto.
//!
//! QEMU turns the board's UART0 into a TCP connection to the broker, so the firmware's MQTT
//! bytes reach it unchanged. A test passes only when the firmware exits with status 0 (every
//! step of its demo checked out, see `firmware-example/src/demo.rs`) and a host-side
//! `mosquitto_sub` received every message it published.
//!
//! Needs `qemu-system-arm`, the `thumbv7em-none-eabihf` target, `mosquitto` and
//! `mosquitto-clients`; `.ci/run` installs them.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Broker, Sub};

/// What the firmware publishes under `petrel/fw/{version}/` (`MESSAGES` in
/// `firmware-example/src/demo.rs`).
const MESSAGES: [&str; 5] = ["qos0", "qos1", "qos2", "stalled", "resumed"];

/// The demo takes about 20 s (it sits out a keep-alive timeout); far more means it hangs.
const QEMU_TIMEOUT_SECS: &str = "120";

fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("firmware-example")
}

/// Builds the firmware once per test run and returns the directory holding its binaries:
/// `demo-v5` with the client's `v5` feature, `demo` without it, as a 3.1.1-only firmware
/// is built (so the client without MQTT 5.0 code runs the whole demo too).
fn firmware_bins() -> &'static Path {
    static BINS: OnceLock<PathBuf> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = firmware_dir();
        let target_dir = dir.join("target");
        let builds: [&[&str]; 2] = [
            &["--bin", "demo-v5"],
            &[
                "--bin",
                "demo",
                "--no-default-features",
                "--features",
                "defmt",
            ],
        ];
        for args in builds {
            let status = Command::new(env!("CARGO"))
                .current_dir(&dir)
                .args(["build", "--release", "--target-dir"])
                .arg(&target_dir)
                .args(args)
                .status()
                .expect("run cargo build for firmware-example");
            assert!(
                status.success(),
                "building firmware-example failed (rustup target add thumbv7em-none-eabihf)"
            );
        }
        target_dir.join("thumbv7em-none-eabihf").join("release")
    })
}

/// A mosquitto broker on a free loopback port, stopped when dropped.
struct Mosquitto {
    child: Child,
    port: u16,
    config: PathBuf,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("pick a free port")
            .port();
        let config = std::env::temp_dir().join(format!("petrel-firmware-mosquitto-{port}.conf"));
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
        )
        .expect("write mosquitto config");
        let binary = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (apt-get install mosquitto)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Mosquitto {
            child,
            port,
            config,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Runs the firmware binary `bin` against the broker on `port`, with `mosquitto_sub`
/// watching `petrel/fw/{version}/#`, and checks both.
fn run_demo(port: u16, bin: &str, version: &str) {
    let elf = firmware_bins().join(bin);
    let sub = Sub::start_on(port, &["-q", "1", "-t", &format!("petrel/fw/{version}/#")]);
    assert!(sub.subscribed(), "mosquitto_sub did not subscribe");

    let qemu: Output = Command::new("timeout")
        .arg(QEMU_TIMEOUT_SECS)
        .arg(firmware_dir().join("qemu-run.sh"))
        .arg(&elf)
        .env("MQTT_PORT", port.to_string())
        .output()
        .expect("run qemu-run.sh (apt-get install qemu-system-arm)");

    let expected: Vec<String> = MESSAGES
        .iter()
        .map(|message| format!("petrel/fw/{version}/{message} {message}"))
        .collect();
    // The firmware has its own copies back, but the subscriber's may still be on the way.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !expected.iter().all(|line| sub.so_far().contains(line)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = sub.so_far().join("\n");
    sub.kill();
    let log = String::from_utf8_lossy(&qemu.stdout);
    let errors = String::from_utf8_lossy(&qemu.stderr);
    assert_eq!(
        qemu.status.code(),
        Some(0),
        "{bin} failed (status 2..=9 names the step: `Failure` in firmware-example/src/demo.rs; \
         124 is the timeout)\nlog:\n{log}\nstderr:\n{errors}\nsubscriber saw:\n{seen}"
    );
    for line in expected {
        assert!(
            seen.lines().any(|l| l == line),
            "the subscriber missed {line:?}; it saw:\n{seen}"
        );
    }
}

#[test]
fn firmware_v311_against_petrel() {
    let broker = Broker::start();
    run_demo(broker.addr.port(), "demo", "311");
}

#[test]
fn firmware_v5_against_petrel() {
    let broker = Broker::start();
    run_demo(broker.addr.port(), "demo-v5", "5");
}

#[test]
fn firmware_v311_against_mosquitto() {
    let broker = Mosquitto::start();
    run_demo(broker.port, "demo", "311");
}

#[test]
fn firmware_v5_against_mosquitto() {
    let broker = Mosquitto::start();
    run_demo(broker.port, "demo-v5", "5");
}
