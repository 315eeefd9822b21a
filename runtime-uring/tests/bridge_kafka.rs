//! The Kafka bridge against a real Kafka-protocol broker: `tansu` (installed by `.ci/run`;
//! these tests fail without it), started in memory on a free loopback port, with the real
//! mosquitto clients on the MQTT side and rskafka reading and writing Kafka. What rskafka
//! cannot ask (a group's committed offsets, the producer fields of stored record batches)
//! is asked over the Kafka wire protocol directly, independently of the bridge's client.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
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

    /// Sends tansu a signal (`STOP`: it stops answering, with its state kept; `CONT`).
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("tansu runs").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
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
        self.produce_to(topic, 0, key, value);
    }

    fn produce_to(&self, topic: &str, partition: i32, key: &str, value: &str) {
        let client = self.client();
        self.runtime.block_on(async {
            let partition = client
                .partition_client(topic, partition, UnknownTopicHandling::Retry)
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

    /// Asks Kafka one request (`api_key`, `version`, the body after the header) and returns
    /// the response after its correlation id.
    fn call(&self, api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
        let mut request = Vec::new();
        request.extend(api_key.to_be_bytes());
        request.extend(version.to_be_bytes());
        request.extend(7_i32.to_be_bytes());
        put_str(&mut request, "petrel-test");
        request.extend(body);
        let mut stream = TcpStream::connect(self.addr()).expect("connect to tansu");
        stream
            .write_all(&(request.len() as i32).to_be_bytes())
            .unwrap();
        stream.write_all(&request).unwrap();
        let mut length = [0; 4];
        stream.read_exact(&mut length).unwrap();
        let mut response = vec![0; i32::from_be_bytes(length) as usize];
        stream.read_exact(&mut response).unwrap();
        response.split_off(4)
    }

    /// The offset `group` committed for `topic`'s `partition` (OffsetFetch v1), −1 if none.
    fn committed(&self, group: &str, topic: &str, partition: i32) -> i64 {
        let mut body = Vec::new();
        put_str(&mut body, group);
        body.extend(1_i32.to_be_bytes());
        put_str(&mut body, topic);
        body.extend(1_i32.to_be_bytes());
        body.extend(partition.to_be_bytes());
        let response = self.call(9, 1, &body);
        let mut r = Reader(&response);
        assert_eq!(r.i32(), 1, "one topic");
        assert_eq!(r.str(), topic);
        assert_eq!(r.i32(), 1, "one partition");
        assert_eq!(r.i32(), partition);
        let offset = r.i64();
        let _metadata = r.str();
        assert_eq!(r.i16(), 0, "OffsetFetch error code");
        offset
    }

    /// The producer fields (id, epoch, base sequence) of every record batch stored in
    /// partition 0 of `topic` (Fetch v4).
    fn batch_producers(&self, topic: &str) -> Vec<(i64, i16, i32)> {
        let mut body = Vec::new();
        body.extend((-1_i32).to_be_bytes()); // replica: a consumer
        body.extend(100_i32.to_be_bytes()); // max wait, ms
        body.extend(1_i32.to_be_bytes()); // min bytes
        body.extend(1_000_000_i32.to_be_bytes()); // max bytes
        body.push(0); // read uncommitted
        body.extend(1_i32.to_be_bytes());
        put_str(&mut body, topic);
        body.extend(1_i32.to_be_bytes());
        body.extend(0_i32.to_be_bytes()); // partition
        body.extend(0_i64.to_be_bytes()); // from offset 0
        body.extend(1_000_000_i32.to_be_bytes());
        let response = self.call(1, 4, &body);
        let mut r = Reader(&response);
        let _throttle = r.i32();
        assert_eq!(r.i32(), 1, "one topic");
        assert_eq!(r.str(), topic);
        assert_eq!(r.i32(), 1, "one partition");
        assert_eq!(r.i32(), 0);
        assert_eq!(r.i16(), 0, "Fetch error code");
        let _high_watermark = r.i64();
        let _last_stable = r.i64();
        let aborted = r.i32();
        for _ in 0..aborted.max(0) {
            r.i64();
            r.i64();
        }
        let length = r.i32().max(0) as usize;
        let mut records = Reader(r.take(length));
        let mut batches = Vec::new();
        // Record batch v2: base offset, length, leader epoch, magic, crc, attributes, last
        // offset delta, two timestamps, then the producer id, epoch and base sequence.
        while records.0.len() >= 61 {
            let _base_offset = records.i64();
            let length = records.i32() as usize;
            let mut batch = Reader(records.take(length));
            batch.take(4 + 1 + 4 + 2 + 4 + 8 + 8);
            batches.push((batch.i64(), batch.i16(), batch.i32()));
        }
        batches
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as i16).to_be_bytes());
    out.extend(s.as_bytes());
}

/// Reads big-endian Kafka protocol fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }

    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }

    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }

    /// A nullable string (null reads as empty).
    fn str(&mut self) -> String {
        let length = self.i16();
        String::from_utf8_lossy(self.take(length.max(0) as usize)).into_owned()
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
    // Kafka stops answering, its state kept.
    kafka.signal("STOP");
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
    kafka.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = waiting.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no PUBACK after Kafka came back");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let values: Vec<Option<Vec<u8>>> = kafka
        .records("mqtt-in")
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(
        values,
        vec![Some(b"first".to_vec()), Some(b"second".to_vec())]
    );
    // Kafka restarts, empty: a restarted in-memory tansu has forgotten the producer id it
    // gave and refuses every epoch librdkafka moves to by itself (Kafka, whose producer
    // state survives a restart, would not); the bridge starts a new producer.
    kafka.down();
    let mut waiting = pub_cmd(&broker, &["-q", "1", "-t", "held/a", "-m", "third"])
        .spawn()
        .expect("run mosquitto_pub");
    std::thread::sleep(Duration::from_secs(1));
    assert!(waiting.try_wait().unwrap().is_none());
    kafka.up();
    kafka.create_topic("mqtt-in", 1);
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = waiting.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no PUBACK after Kafka restarted");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let records = kafka.records("mqtt-in");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_deref(), Some(&b"third"[..]));
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
    // Committed in Kafka, where Kafka's own group tools read it: the next record is 2.
    assert_eq!(kafka.committed("g1", "cmd", 0), 2);
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
fn two_instances_in_one_group_share_the_partitions() {
    let kafka = Kafka::start();
    kafka.create_topic("shared", 2);
    let consume = "[[bridge.kafka.consume]]\ntopic = \"shared\"\ngroup = \"g2\"\n\
                   mqtt_topic = \"k/{partition}/{offset}\"\n";
    let dirs = [scratch_dir("kafka-group-a"), scratch_dir("kafka-group-b")];
    let brokers: Vec<Broker> = dirs
        .iter()
        .map(|dir| petrel(dir, &kafka.addr(), consume))
        .collect();
    let subs: Vec<Sub> = brokers
        .iter()
        .map(|b| Sub::start(b, &["-t", "k/#"]))
        .collect();
    // The group settles: the first member joins, the second's join rebalances it. Records
    // go on arriving on both partitions until each instance has been given some.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut warm = 0;
    while subs.iter().any(|s| s.so_far().is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the group never split: {:?} / {:?}",
            subs[0].so_far(),
            subs[1].so_far()
        );
        for partition in 0..2 {
            kafka.produce_to("shared", partition, "k", &format!("warm{warm}"));
        }
        warm += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    for n in 0..10 {
        for partition in 0..2 {
            kafka.produce_to("shared", partition, "k", &format!("m{n}"));
        }
    }
    let counted = |lines: Vec<String>| -> Vec<(String, String)> {
        lines
            .into_iter()
            .filter_map(|l| {
                let (topic, payload) = l.split_once(' ')?;
                payload
                    .starts_with('m')
                    .then(|| (topic.to_string(), payload.to_string()))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got: Vec<Vec<(String, String)>> = subs.iter().map(|s| counted(s.so_far())).collect();
        if got.iter().map(Vec::len).sum::<usize>() >= 20 || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Each instance delivers one partition's records, each record once.
    let partitions: Vec<BTreeSet<String>> = got
        .iter()
        .map(|g| {
            g.iter()
                .map(|(topic, _)| topic.split('/').nth(1).unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(partitions[0].len(), 1, "{got:?}");
    assert_eq!(partitions[1].len(), 1, "{got:?}");
    assert_ne!(partitions[0], partitions[1], "{got:?}");
    assert_eq!(got[0].len(), 10, "{got:?}");
    assert_eq!(got[1].len(), 10, "{got:?}");
    // And the group's offsets reach the end of both partitions in Kafka.
    let end = i64::from(warm) + 10;
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..2).any(|p| kafka.committed("g2", "shared", p) != end) {
        assert!(
            Instant::now() < deadline,
            "offsets not committed up to {end}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for sub in subs {
        sub.kill();
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn the_producer_is_idempotent() {
    let kafka = Kafka::start();
    kafka.create_topic("mqtt-in", 1);
    let dir = scratch_dir("kafka-idempotent");
    let broker = petrel(
        &dir,
        &kafka.addr(),
        "filters = [\"i/#\"]\ntopic = \"mqtt-in\"\n",
    );
    for n in 0..3 {
        publish(&broker, &["-q", "1", "-t", "i/a", "-m", &format!("m{n}")]);
    }
    // Each publish waited for its acknowledgement, so each is a batch of its own, stamped
    // with the producer id Kafka gave and numbered in sequence: what lets Kafka discard a
    // retried batch it already has.
    let batches = kafka.batch_producers("mqtt-in");
    assert_eq!(batches.len(), 3, "{batches:?}");
    let (id, epoch, _) = batches[0];
    assert!(id >= 0 && epoch >= 0, "not idempotent: {batches:?}");
    assert_eq!(
        batches,
        vec![(id, epoch, 0), (id, epoch, 1), (id, epoch, 2)]
    );
    // The bridge reports the same id.
    let expected = format!("$SYS/broker/bridge/kafka/main/producer_id {id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sys = Sub::start(
            &broker,
            &[
                "-t",
                "$SYS/broker/bridge/kafka/main/producer_id",
                "-C",
                "1",
                "-W",
                "3",
            ],
        );
        let lines = sys.lines();
        if lines.contains(&expected) {
            break;
        }
        assert!(Instant::now() < deadline, "{lines:?}");
    }
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
