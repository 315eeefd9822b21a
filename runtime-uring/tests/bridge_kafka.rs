//! The Kafka bridge against a real Kafka-protocol broker: `tansu` (installed by `.ci/run`;
//! these tests fail without it), started in memory on a free loopback port, with the real
//! mosquitto clients on the MQTT side and rskafka reading and writing Kafka.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{scratch_dir, Broker, Sub};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

/// A `tansu broker` with in-memory storage; killed when dropped.
struct Kafka {
    child: Option<Child>,
    port: u16,
    runtime: tokio::runtime::Runtime,
}

fn tansu_binary() -> PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cargo"));
    let installed = home.join("bin").join("tansu");
    if installed.exists() {
        return installed;
    }
    // On the PATH, then.
    let found = Command::new("sh")
        .args(["-c", "command -v tansu"])
        .output()
        .expect("run sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "tansu is not installed: cargo install tansu --no-default-features --features dynostore --locked"
    );
    PathBuf::from(path)
}

impl Kafka {
    fn start() -> Kafka {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut kafka = Kafka {
            child: None,
            port,
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
        };
        kafka.up();
        kafka
    }

    /// Starts tansu on this port (again) and waits until it accepts connections.
    fn up(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills tansu (its in-memory topics go with it).
    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn client(&self) -> Client {
        self.runtime.block_on(async {
            ClientBuilder::new(vec![self.addr()])
                .build()
                .await
                .expect("connect to tansu")
        })
    }

    fn create_topic(&self, topic: &str, partitions: i32) {
        let client = self.client();
        self.runtime.block_on(async {
            client
                .controller_client()
                .unwrap()
                .create_topic(topic, partitions, 1, 5_000)
                .await
                .expect("create topic");
        });
    }

    /// Every record of partition 0 of `topic`.
    fn records(&self, topic: &str) -> Vec<Record> {
        let client = self.client();
        self.runtime.block_on(async {
            let partition = client
                .partition_client(topic, 0, UnknownTopicHandling::Retry)
                .await
                .unwrap();
            let mut all = Vec::new();
            loop {
                let (records, high_watermark) = partition
                    .fetch_records(all.len() as i64, 1..1_000_000, 200)
                    .await
                    .unwrap();
                all.extend(records.into_iter().map(|r| r.record));
                if all.len() as i64 >= high_watermark {
                    return all;
                }
            }
        })
    }

    /// Waits until `topic` has at least `n` records.
    fn wait_records(&self, topic: &str, n: usize) -> Vec<Record> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = self.records(topic);
            if records.len() >= n || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn produce(&self, topic: &str, key: &str, value: &str) {
        let client = self.client();
        self.runtime.block_on(async {
            let partition = client
                .partition_client(topic, 0, UnknownTopicHandling::Retry)
                .await
                .unwrap();
            let record = Record {
                key: Some(key.as_bytes().to_vec()),
                value: Some(value.as_bytes().to_vec()),
                headers: BTreeMap::from([(String::from("origin"), b"test".to_vec())]),
                timestamp: chrono::DateTime::from_timestamp_millis(0).unwrap(),
            };
            partition
                .produce(vec![record], Compression::NoCompression)
                .await
                .expect("produce");
        });
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.down();
    }
}

fn header(record: &Record, name: &str) -> String {
    String::from_utf8_lossy(record.headers.get(name).map_or(&[][..], |v| v)).into_owned()
}

/// Writes a configuration with one listener and one Kafka bridge (`bridge` is the body of
/// the `[[bridge.kafka]]` table) and starts petrel with it.
fn petrel(dir: &Path, kafka: &str, bridge: &str) -> Broker {
    let config = dir.join("petrel.toml");
    std::fs::write(
        &config,
        format!(
            "workers = 2\ndata_dir = \"{}\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
             [sys]\ninterval = 1\n[[bridge.kafka]]\nname = \"main\"\nbrokers = [\"{}\"]\n{bridge}",
            dir.join("data").display(),
            kafka
        ),
    )
    .unwrap();
    Broker::start_config(&config, 1).0
}

fn pub_cmd(broker: &Broker, args: &[&str]) -> Command {
    let mut command = Command::new("mosquitto_pub");
    command
        .args(["-h", "127.0.0.1", "-p", &broker.port()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// mosquitto_pub, which returns once its PUBACK / PUBCOMP arrived.
fn publish(broker: &Broker, args: &[&str]) {
    let output = pub_cmd(broker, args).output().expect("run mosquitto_pub");
    assert!(
        output.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn publishes_at_every_qos_reach_kafka_with_topic_key_and_headers() {
    let kafka = Kafka::start();
    kafka.create_topic("mqtt-in", 1);
    let dir = scratch_dir("kafka-out");
    let broker = petrel(
        &dir,
        &kafka.addr(),
        "filters = [\"sensors/#\"]\ntopic = \"mqtt-in\"\nkey = \"level:1\"\n",
    );
    let sub = Sub::start(&broker, &["-t", "sensors/#", "-C", "3", "-W", "10"]);
    for qos in ["1", "2"] {
        publish(
            &broker,
            &[
                "-V",
                "5",
                "-i",
                "pub-1",
                "-u",
                "alice",
                "-q",
                qos,
                "-t",
                "sensors/dev7/temp",
                "-m",
                &format!("q{qos}"),
                "-D",
                "publish",
                "user-property",
                "unit",
                "C",
            ],
        );
        // mosquitto_pub has exited, so it had its PUBACK / PUBREC: Kafka has the record.
        let records = kafka.records("mqtt-in");
        let record = records
            .last()
            .expect("the record is in Kafka before the ack");
        assert_eq!(record.value.as_deref(), Some(format!("q{qos}").as_bytes()));
        assert_eq!(record.key.as_deref(), Some(&b"dev7"[..]));
        assert_eq!(header(record, "clientID"), "pub-1");
        assert_eq!(header(record, "username"), "alice");
        assert_eq!(header(record, "mqttTopic"), "sensors/dev7/temp");
        assert_eq!(header(record, "unit"), "C");
    }
    publish(&broker, &["-q", "0", "-t", "sensors/dev8/temp", "-m", "q0"]);
    let records = kafka.wait_records("mqtt-in", 3);
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].value.as_deref(), Some(&b"q0"[..]));
    // Other topics stay out of Kafka.
    publish(&broker, &["-q", "1", "-t", "other/x", "-m", "no"]);
    assert_eq!(kafka.records("mqtt-in").len(), 3);
    // Broker mode: local subscribers get them too.
    let lines = sub.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_puback_waits_for_kafka_while_it_is_down() {
    let mut kafka = Kafka::start();
    kafka.create_topic("mqtt-in", 1);
    let dir = scratch_dir("kafka-down");
    let broker = petrel(
        &dir,
        &kafka.addr(),
        "filters = [\"held/#\"]\ntopic = \"mqtt-in\"\n",
    );
    // The bridge connects with its first record.
    publish(&broker, &["-q", "1", "-t", "held/a", "-m", "first"]);
    kafka.down();
    let mut waiting = pub_cmd(&broker, &["-q", "1", "-t", "held/a", "-m", "second"])
        .spawn()
        .expect("run mosquitto_pub");
    let pending = Sub::start(
        &broker,
        &[
            "-t",
            "$SYS/broker/bridge/kafka/main/pending",
            "-C",
            "3",
            "-W",
            "10",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "mosquitto_pub got its PUBACK while Kafka was down"
    );
    let lines = pending.lines();
    assert!(lines.iter().any(|l| l.ends_with(" 1")), "{lines:?}");
    // Kafka comes back (empty: tansu kept its topics in memory).
    kafka.up();
    kafka.create_topic("mqtt-in", 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = waiting.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no PUBACK after Kafka came back");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let records = kafka.records("mqtt-in");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_deref(), Some(&b"second"[..]));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pipeline_mode_sends_to_kafka_only() {
    let kafka = Kafka::start();
    kafka.create_topic("mqtt-in", 1);
    let dir = scratch_dir("kafka-pipeline");
    let broker = petrel(
        &dir,
        &kafka.addr(),
        "mode = \"pipeline\"\nfilters = [\"p/#\"]\ntopic = \"mqtt-in\"\n",
    );
    let sub = Sub::start(&broker, &["-t", "p/#", "-t", "q/#", "-W", "3"]);
    publish(&broker, &["-q", "1", "-t", "p/a", "-m", "to-kafka", "-r"]);
    publish(&broker, &["-q", "1", "-t", "q/a", "-m", "local"]);
    assert_eq!(kafka.records("mqtt-in").len(), 1);
    let lines = sub.lines();
    assert_eq!(lines, vec![String::from("q/a local")]);
    // Nor retained here.
    let late = Sub::start(&broker, &["-t", "p/#", "-W", "2"]);
    assert!(late.lines().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn kafka_records_reach_subscribers_and_a_restart_resumes_at_the_committed_offset() {
    let kafka = Kafka::start();
    kafka.create_topic("cmd", 1);
    let dir = scratch_dir("kafka-in");
    let consume = "[[bridge.kafka.consume]]\ntopic = \"cmd\"\ngroup = \"g1\"\n\
                   mqtt_topic = \"from-kafka/{topic}/{key}\"\nqos = 1\n";
    let mut broker = petrel(&dir, &kafka.addr(), consume);
    // A persistent session: what is routed while it is away is queued for it, so a replay
    // after the restart would show.
    let sub_args = ["-c", "-i", "kafka-sub", "-q", "1", "-t", "from-kafka/#"];
    let sub = Sub::start(
        &broker,
        &[&sub_args[..], &["-C", "2", "-W", "10"][..]].concat(),
    );
    kafka.produce("cmd", "dev1", "on");
    kafka.produce("cmd", "dev2", "off");
    assert_eq!(
        sub.lines(),
        vec![
            String::from("from-kafka/cmd/dev1 on"),
            String::from("from-kafka/cmd/dev2 off")
        ]
    );
    assert!(broker.terminate().success());
    let offsets = std::fs::read_to_string(dir.join("data/kafka/g1.offsets")).unwrap();
    assert_eq!(offsets, "cmd 0 2\n");
    kafka.produce("cmd", "dev3", "reset");
    let broker = petrel(&dir, &kafka.addr(), consume);
    let sub = Sub::start(
        &broker,
        &[&sub_args[..], &["-C", "1", "-W", "10"][..]].concat(),
    );
    assert_eq!(sub.lines(), vec![String::from("from-kafka/cmd/dev3 reset")]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_full_bridge_refuses_v5_qos1_and_drops_qos0_but_holds_v311() {
    // Nothing listens there: Kafka is down for the whole test.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = scratch_dir("kafka-full");
    let broker = petrel(
        &dir,
        &format!("127.0.0.1:{port}"),
        "filters = [\"f/#\"]\ntopic = \"t\"\nmax_pending = 1\n",
    );
    let mut held = pub_cmd(&broker, &["-q", "1", "-t", "f/a", "-m", "held"])
        .spawn()
        .expect("run mosquitto_pub");
    std::thread::sleep(Duration::from_millis(500));
    // Over the bound: a 5.0 QoS 1 publish is answered at once (0x97), QoS 0 is dropped.
    let refused = pub_cmd(&broker, &["-V", "5", "-q", "1", "-t", "f/b", "-m", "no"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("uota"),
        "{refused:?}"
    );
    publish(&broker, &["-q", "0", "-t", "f/c", "-m", "dropped"]);
    // A 3.1.1 publisher cannot be told no: it waits like the first.
    let mut old = pub_cmd(&broker, &["-q", "1", "-t", "f/d", "-m", "waits"])
        .spawn()
        .expect("run mosquitto_pub");
    let sys = Sub::start(
        &broker,
        &[
            "-t",
            "$SYS/broker/bridge/kafka/main/+",
            "-C",
            "14",
            "-W",
            "10",
        ],
    );
    let lines = sys.lines();
    for expected in ["pending 2", "refused 1", "dropped 1", "produced 0"] {
        assert!(
            lines.iter().any(|l| l.ends_with(expected)),
            "{expected}: {lines:?}"
        );
    }
    assert!(held.try_wait().unwrap().is_none() && old.try_wait().unwrap().is_none());
    let _ = held.kill();
    let _ = old.kill();
    let _ = held.wait();
    let _ = old.wait();
    let _ = std::fs::remove_dir_all(dir);
}
