//! The load generator's own counting, checked against a broker that misbehaves on purpose.
//!
//! The test double below is a tiny MQTT broker built from petrel-codec packets. It routes
//! every PUBLISH to the matching subscribers, except that it drops every `drop_every`-th
//! message (no subscriber gets it) and sends every `dup_every`-th message twice, and it
//! counts what it did per delivery. The generator, which knows none of this, must report
//! exactly those losses and duplicates, every message accounted for, and latencies that
//! make sense for a loopback broker.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use petrel_benches::load::report::Report;
use petrel_benches::load::run::{run_blocking, Config, Topology};
use petrel_codec::{
    ConnAck, Decoded, Decoder, Packet, PacketId, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, SubAck,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the double did, per delivery (one message to one subscriber).
#[derive(Default)]
struct Faults {
    /// Publishes received, numbered from 1 in arrival order.
    received: AtomicU64,
    /// Deliveries withheld.
    dropped: AtomicU64,
    /// Deliveries sent a second time.
    duplicated: AtomicU64,
}

struct Subscriber {
    filter: String,
    qos: QoS,
    next_id: AtomicU16,
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

struct Double {
    drop_every: u64,
    dup_every: u64,
    faults: Faults,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
}

fn matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn encode(version: ProtocolVersion, packet: &Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; packet.encoded_len(version).expect("encodable")];
    packet.encode(version, &mut buf).expect("encodes");
    buf
}

impl Double {
    /// Routes one PUBLISH, with the faults.
    fn route(&self, version: ProtocolVersion, topic: &str, payload: &[u8]) {
        let n = self.faults.received.fetch_add(1, Ordering::SeqCst) + 1;
        let targets: Vec<Arc<Subscriber>> = self
            .subscribers
            .lock()
            .unwrap()
            .iter()
            .filter(|s| matches(&s.filter, topic))
            .cloned()
            .collect();
        if self.drop_every > 0 && n % self.drop_every == 0 {
            self.faults
                .dropped
                .fetch_add(targets.len() as u64, Ordering::SeqCst);
            return;
        }
        let copies = if self.dup_every > 0 && n % self.dup_every == 0 {
            self.faults
                .duplicated
                .fetch_add(targets.len() as u64, Ordering::SeqCst);
            2
        } else {
            1
        };
        for s in &targets {
            for _ in 0..copies {
                let packet_id = (s.qos != QoS::AtMostOnce).then(|| {
                    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
                    PacketId::new(id.max(1)).expect("non-zero")
                });
                let publish = Packet::Publish(Publish {
                    qos: s.qos,
                    topic,
                    packet_id,
                    payload,
                    ..Publish::default()
                });
                let _ = s.tx.send(encode(version, &publish));
            }
        }
    }
}

async fn connection(double: Arc<Double>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&first);
            while let Ok(more) = rx.try_recv() {
                batch.extend_from_slice(&more);
                if batch.len() > 64 * 1024 {
                    break;
                }
            }
            if wr.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 1 << 20];
    let (mut start, mut end) = (0, 0);
    let mut version = ProtocolVersion::V311;
    'read: loop {
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        match rd.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => end += n,
        }
        loop {
            let decoded = Decoder::new(version).decode(&buf[start..end]);
            let (packet, len) = match decoded {
                Ok(Decoded::Packet { packet, len }) => (packet, len),
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => panic!("the double got a malformed packet: {e:?}"),
            };
            match packet {
                Packet::Connect(c) => {
                    version = c.protocol_version;
                    let _ = tx.send(encode(version, &Packet::ConnAck(ConnAck::default())));
                }
                Packet::Subscribe(s) => {
                    let mut codes = Vec::new();
                    for f in s.filters.iter() {
                        // Deliveries at QoS 0 or 1: enough to exercise both paths.
                        let qos = f.options.qos.min(QoS::AtLeastOnce);
                        codes.push(if qos == QoS::AtMostOnce {
                            ReasonCode::Success
                        } else {
                            ReasonCode::GrantedQoS1
                        });
                        double
                            .subscribers
                            .lock()
                            .unwrap()
                            .push(Arc::new(Subscriber {
                                filter: f.filter.to_owned(),
                                qos,
                                next_id: AtomicU16::new(1),
                                tx: tx.clone(),
                            }));
                    }
                    let suback = Packet::SubAck(SubAck {
                        packet_id: s.packet_id,
                        properties: Default::default(),
                        reason_codes: petrel_codec::List::new(&codes),
                    });
                    let _ = tx.send(encode(version, &suback));
                }
                Packet::Publish(p) => {
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => {
                            let _ = tx.send(encode(version, &Packet::PubAck(PubResponse::new(id))));
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            let _ = tx.send(encode(version, &Packet::PubRec(PubResponse::new(id))));
                        }
                        _ => {}
                    }
                    double.route(version, p.topic, p.payload);
                }
                Packet::PubRel(r) => {
                    let _ = tx.send(encode(
                        version,
                        &Packet::PubComp(PubResponse::new(r.packet_id)),
                    ));
                }
                Packet::PingReq => {
                    let _ = tx.send(encode(version, &Packet::PingResp));
                }
                Packet::Disconnect(_) => break 'read,
                _ => {}
            }
            start += len;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Starts the double on a free loopback port, on a runtime of its own.
fn start(drop_every: u64, dup_every: u64) -> (Arc<Double>, u16) {
    let double = Arc::new(Double {
        drop_every,
        dup_every,
        faults: Faults::default(),
        subscribers: Mutex::new(Vec::new()),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let d = double.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(connection(d.clone(), stream));
            }
        });
    });
    (double, port)
}

fn config(name: &str, topology: Topology, port: u16) -> Config {
    let mut c = Config::new(name, topology);
    c.port = port;
    c.threads = 2;
    c.warmup = Duration::ZERO;
    c.drain = Duration::from_millis(1500);
    // PB_PROGRESS=1 shows the live progress line when a test needs debugging.
    c.progress = std::env::var_os("PB_PROGRESS").is_some();
    c
}

/// The generator's figures must equal what the double did.
fn check_against(double: &Double, r: &Report, expected_total: u64) {
    let d = r.delivered.as_ref().expect("a run with subscribers");
    let dropped = double.faults.dropped.load(Ordering::SeqCst);
    let duplicated = double.faults.duplicated.load(Ordering::SeqCst);
    assert_eq!(r.connections.failed, 0, "{}", r.human());
    assert_eq!(d.expected, Some(expected_total), "{}", r.human());
    assert_eq!(d.lost, Some(dropped), "{}", r.human());
    assert_eq!(d.duplicates, duplicated, "{}", r.human());
    assert_eq!(d.unique + dropped, expected_total, "{}", r.human());
    assert_eq!(d.received, d.unique + duplicated, "{}", r.human());
    assert_eq!(d.reordered, 0);
    assert_eq!(d.foreign, 0);
    // Every distinct message has a latency sample (a count run measures them all), and
    // on loopback none can be negative or take seconds.
    let l = d.latency_us.expect("latency");
    assert_eq!(l.samples, d.unique);
    assert!(l.p50 > 0.0 && l.p50 <= l.p99 && l.p99 <= l.max, "{l:?}");
    assert!(l.max < 5_000_000.0, "{l:?}");
}

#[test]
fn fan_in_qos1_counts_exactly_what_the_broker_dropped_and_duplicated() {
    let (double, port) = start(7, 5);
    let mut c = config("fan-in", Topology::FanIn { publishers: 4 }, port);
    c.qos = QoS::AtLeastOnce;
    c.sub_qos = QoS::AtLeastOnce;
    c.count = Some(500);
    c.duration = None;
    c.inflight = Some(16);
    let r = run_blocking(&c).unwrap();
    assert_eq!(r.published.sent, 2000);
    assert_eq!(r.published.acked, 2000, "{}", r.human());
    assert!(r.published.ack_latency_us.is_some());
    assert!(r.published.max_inflight <= 16);
    assert_eq!(double.faults.received.load(Ordering::SeqCst), 2000);
    // 2000 / 7 publishes dropped, to one subscriber each.
    assert_eq!(double.faults.dropped.load(Ordering::SeqCst), 285);
    check_against(&double, &r, 2000);
}

#[test]
fn fan_out_v5_qos0_counts_per_subscriber() {
    let (double, port) = start(10, 4);
    let mut c = config("fan-out", Topology::FanOut { subscribers: 3 }, port);
    c.version = ProtocolVersion::V5;
    c.count = Some(600);
    c.duration = None;
    let r = run_blocking(&c).unwrap();
    assert_eq!(r.published.sent, 600);
    // 60 publishes dropped for all three subscribers; every 4th not dropped, sent twice.
    assert_eq!(double.faults.dropped.load(Ordering::SeqCst), 180);
    assert_eq!(
        double.faults.duplicated.load(Ordering::SeqCst),
        3 * (150 - 30)
    );
    check_against(&double, &r, 1800);
}

#[test]
fn qos2_roundtrip_through_a_correct_broker_loses_nothing() {
    let (double, port) = start(0, 0);
    let mut c = config("qos2-roundtrip", Topology::Pairs { pairs: 2 }, port);
    c.qos = QoS::ExactlyOnce;
    c.sub_qos = QoS::ExactlyOnce;
    c.count = Some(300);
    c.duration = None;
    let r = run_blocking(&c).unwrap();
    assert_eq!((r.published.sent, r.published.acked), (600, 600));
    check_against(&double, &r, 600);
}

#[test]
fn paced_duration_run_keeps_its_rate_and_its_books() {
    let (double, port) = start(50, 0);
    let mut c = config("pairs", Topology::Pairs { pairs: 2 }, port);
    c.rate = Some(2_000.0);
    c.duration = Some(Duration::from_millis(1500));
    c.warmup = Duration::from_millis(300);
    let r = run_blocking(&c).unwrap();
    // Paced at 2,000 msg/s over the window: within a tenth, on a busy machine too.
    let rate = r.published.per_sec;
    assert!((1_800.0..=2_200.0).contains(&rate), "{}", r.human());
    assert!((r.measured_s - 1.5).abs() < 0.1, "{}", r.human());
    let d = r.delivered.as_ref().unwrap();
    assert_eq!(d.lost, Some(double.faults.dropped.load(Ordering::SeqCst)));
    assert_eq!(d.expected, Some(r.published.sent));
}
