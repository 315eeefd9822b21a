//! The password file and the ACL file, from real clients: a password file written by the
//! real `mosquitto_passwd` and by `petrel passwd`, mosquitto_pub / mosquitto_sub with `-u`
//! / `-P` over 3.1.1 and 5.0, paho-mqtt, and raw packets where the exact reason code
//! matters.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::raw::Raw;
use common::{Broker, Sub};
use petrel_codec::{Packet, ProtocolVersion, ReasonCode};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("petrel-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A password file with alice (by `mosquitto_passwd`, PBKDF2-SHA512), bob (by
/// `mosquitto_passwd -H sha512`, mosquitto 1.x's scheme) and carol (by `petrel passwd`).
fn password_file(dir: &Path) -> PathBuf {
    let file = dir.join("passwords");
    let run = |program: &str, args: &[&str]| {
        let output = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} (apt-get install mosquitto)"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let path = file.to_str().unwrap();
    run("mosquitto_passwd", &["-c", "-b", path, "alice", "alice-pw"]);
    run(
        "mosquitto_passwd",
        &["-H", "sha512", "-b", path, "bob", "bob-pw"],
    );
    run(
        env!("CARGO_BIN_EXE_petrel"),
        &["passwd", "-b", path, "carol", "carol-pw"],
    );
    file
}

fn start(dir: &Path, auth: &str) -> Broker {
    let config = dir.join("petrel.toml");
    std::fs::write(
        &config,
        format!("anonymous = \"deny\"\n[sys]\ninterval = 1\n[auth]\n{auth}"),
    )
    .unwrap();
    Broker::start_with(&["--workers", "2", "--config", config.to_str().unwrap()])
}

#[test]
fn users_from_mosquitto_passwd_and_petrel_passwd_log_in_and_others_do_not() {
    let dir = temp_dir("passwords");
    let passwords = password_file(&dir);
    let broker = start(
        &dir,
        &format!("password_file = {:?}\n", passwords.to_str().unwrap()),
    );
    for version in ["mqttv311", "mqttv5"] {
        for (user, password) in [
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("carol", "carol-pw"),
        ] {
            let sub = Sub::start(
                &broker,
                &[
                    "-V", version, "-u", user, "-P", password, "-t", "t", "-C", "1", "-W", "5",
                ],
            );
            common::publish(
                &broker,
                &[
                    "-V", version, "-u", user, "-P", password, "-t", "t", "-m", user,
                ],
            );
            assert_eq!(sub.lines(), [format!("t {user}")], "{user} over {version}");
        }
    }
    // Wrong password, unknown user, no password, no user name at all: refused.
    for args in [
        &["-u", "alice", "-P", "bob-pw"][..],
        &["-u", "mallory", "-P", "alice-pw"],
        &["-u", "alice"],
        &[],
    ] {
        let output = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port(),
                "-t",
                "t",
                "-m",
                "x",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} got in");
    }
}

#[test]
fn unknown_user_and_wrong_password_get_the_same_answer() {
    let dir = temp_dir("same-answer");
    let passwords = password_file(&dir);
    let broker = start(
        &dir,
        &format!("password_file = {:?}\n", passwords.to_str().unwrap()),
    );
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let (_, wrong) = Raw::connect(&broker, version, "w", Some("alice"), Some("nope"));
        let (_, unknown) = Raw::connect(&broker, version, "u", Some("mallory"), Some("nope"));
        let (_, right) = Raw::connect(&broker, version, "r", Some("alice"), Some("alice-pw"));
        // 0x86 in 5.0; return code 4 in 3.1.1, which the codec reads as the same reason.
        assert_eq!(wrong, ReasonCode::BadUserNameOrPassword, "{version:?}");
        assert_eq!(unknown, wrong, "{version:?}");
        assert_eq!(right, ReasonCode::Success, "{version:?}");
    }
    // What mosquitto_pub prints is the same too.
    let message = |user: &str, version: &str| {
        let output = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", version])
            .args(["-u", user, "-P", "nope", "-t", "t", "-m", "x"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    for version in ["mqttv311", "mqttv5"] {
        let wrong = message("alice", version);
        assert!(!wrong.is_empty());
        assert_eq!(wrong, message("mallory", version), "{version}");
    }
}

const ACL: &str = "\
user alice readwrite home/alice/#
user alice read $SYS/#
deny secret/#
readwrite devices/%c/#
read public/#
";

#[test]
fn the_acl_file_allows_and_denies_with_the_right_codes() {
    let dir = temp_dir("acl");
    let passwords = password_file(&dir);
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    let broker = start(
        &dir,
        &format!(
            "password_file = {:?}\nacl_file = {:?}\n",
            passwords.to_str().unwrap(),
            acl.to_str().unwrap()
        ),
    );
    // Exact codes: 5.0 PUBACK 0x87 and SUBACK 0x87; 3.1.1 PUBACK (acknowledged, dropped)
    // and SUBACK 0x80.
    let (mut v5, code) = Raw::connect(
        &broker,
        ProtocolVersion::V5,
        "dev1",
        Some("bob"),
        Some("bob-pw"),
    );
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(v5.subscribe("devices/dev1/#"), ReasonCode::GrantedQoS1);
    assert_eq!(v5.subscribe("devices/dev2/#"), ReasonCode::NotAuthorized);
    assert_eq!(v5.subscribe("#"), ReasonCode::NotAuthorized);
    assert_eq!(
        v5.publish_qos1("devices/dev2/x", 1),
        ReasonCode::NotAuthorized
    );
    assert_eq!(v5.publish_qos1("secret/x", 2), ReasonCode::NotAuthorized);
    let (mut v3, _) = Raw::connect(
        &broker,
        ProtocolVersion::V311,
        "dev3",
        Some("bob"),
        Some("bob-pw"),
    );
    assert_eq!(v3.subscribe("devices/dev1/#"), ReasonCode::UnspecifiedError); // 0x80
    assert_eq!(v3.subscribe("public/+"), ReasonCode::GrantedQoS1);
    assert_eq!(v3.publish_qos1("devices/dev1/x", 1), ReasonCode::Success);
    // The denied 3.1.1 publish was dropped: dev1 receives only what dev3 may send.
    assert_eq!(v3.publish_qos1("devices/dev3/x", 2), ReasonCode::Success);
    v5.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(v5.next(|p| matches!(p, Packet::Publish(_))).is_none());

    // mosquitto clients: alice reads and writes her home, not bob's devices.
    for version in ["mqttv311", "mqttv5"] {
        let sub = Sub::start(
            &broker,
            &[
                "-V",
                version,
                "-u",
                "alice",
                "-P",
                "alice-pw",
                "-t",
                "home/alice/#",
                "-W",
                "3",
            ],
        );
        for topic in ["home/alice/lamp", "home/bob/lamp", "devices/x/y"] {
            common::publish(
                &broker,
                &[
                    "-V", version, "-u", "alice", "-P", "alice-pw", "-q", "1", "-t", topic, "-m",
                    "on",
                ],
            );
        }
        assert_eq!(sub.lines(), ["home/alice/lamp on"], "{version}");
    }
    // The refusals are counted in $SYS.
    let sys = Sub::start(
        &broker,
        &[
            "-u",
            "alice",
            "-P",
            "alice-pw",
            "-t",
            "$SYS/broker/acl/#",
            "-C",
            "2",
            "-W",
            "5",
        ],
    );
    let lines = sys.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("$SYS/broker/acl/publish denied ")
                && l != "$SYS/broker/acl/publish denied 0"),
        "{lines:?}"
    );
}

#[test]
fn the_acl_is_reloaded_on_sighup_and_on_change() {
    let dir = temp_dir("reload");
    let acl = dir.join("acl");
    std::fs::write(&acl, "read a/#\nreadwrite b/#\n").unwrap();
    let config = dir.join("petrel.toml");
    std::fs::write(
        &config,
        format!("[auth]\nacl_file = {:?}\n", acl.to_str().unwrap()),
    )
    .unwrap();
    let broker = Broker::start_with(&["--workers", "1", "--config", config.to_str().unwrap()]);
    let subscribe = |filter: &str| {
        let (mut raw, _) = Raw::connect(&broker, ProtocolVersion::V5, "r", None, None);
        raw.subscribe(filter)
    };
    assert_eq!(subscribe("a/x"), ReasonCode::GrantedQoS1);
    assert_eq!(subscribe("c/x"), ReasonCode::NotAuthorized);

    // A broken file is refused and the rules in force stay.
    std::fs::write(&acl, "read c/#\nbogus\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &broker_pid(&broker)])
        .status()
        .unwrap();
    wait_for(|| broker.log().contains("reload failed"));
    assert_eq!(subscribe("a/x"), ReasonCode::GrantedQoS1);

    std::fs::write(&acl, "read c/#\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &broker_pid(&broker)])
        .status()
        .unwrap();
    wait_for(|| subscribe("c/x") == ReasonCode::GrantedQoS1);
    assert_eq!(subscribe("a/x"), ReasonCode::NotAuthorized);

    // Without a signal: the watcher sees the file change.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&acl, "read d/#\n").unwrap();
    wait_for(|| subscribe("d/x") == ReasonCode::GrantedQoS1);
    assert_eq!(subscribe("c/x"), ReasonCode::NotAuthorized);
}

fn broker_pid(broker: &Broker) -> String {
    broker.pid().to_string()
}

fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn paho_logs_in_with_a_password_and_is_refused_without() {
    let dir = temp_dir("paho");
    let passwords = password_file(&dir);
    let broker = start(
        &dir,
        &format!("password_file = {:?}\n", passwords.to_str().unwrap()),
    );
    let script = r#"
import sys, threading
import paho.mqtt.client as mqtt
port = int(sys.argv[1])
def attempt(protocol, user, password):
    result = {}
    done = threading.Event()
    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        done.set()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-" + user, protocol=protocol)
    c.username_pw_set(user, password)
    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(5)
    c.loop_stop()
    return result.get("rc")
for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
    ok = attempt(protocol, "carol", "carol-pw")
    bad = attempt(protocol, "carol", "wrong")
    unknown = attempt(protocol, "nobody", "wrong")
    assert ok is not None and not ok.is_failure, ok
    assert bad is not None and bad.is_failure, bad
    assert str(bad) == str(unknown), (bad, unknown)
    print(protocol, ok, bad)
"#;
    let output = Command::new("python3")
        .args(["-c", script, &broker.port()])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "paho (pip install paho-mqtt):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
