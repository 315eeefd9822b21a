//! The Kafka bridge: publishes to Kafka records (with the publisher's acknowledgement held
//! until Kafka has them), Kafka records into the broker.
//!
//! The client (rskafka) runs on a thread of its own with a plain tokio runtime; the workers
//! never wait for it. Each worker's shard offers client publishes to a [`KafkaPipeline`]
//! (the state crate's [`Pipeline`]), which maps them to records and hands them to the
//! thread through a channel. When Kafka acknowledges a batch, the thread sends each
//! publisher's worker `WorkerMessage::Pipeline(ticket, result)`, and the shard releases the
//! PUBACK / PUBREC. Consumed records go to worker 0 as one job per fetched batch, and their
//! offsets are committed (in the data directory) once the shard has routed them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use petrel_codec::{QoS, ReasonCode};
use petrel_state::broker::{ClientInfo, Offer, Pipeline, PipelineTicket};
use petrel_state::message::Message;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use rskafka::BackoffConfig;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tracing::{info, warn};

use super::kafka_map::{
    consumed_topic, record_for, BridgeMode, ConsumeConfig, KafkaBridgeConfig, OutRecord, StartAt,
};
use crate::shared::WorkerMessage;

/// Records taken from the channel for one round of produce requests.
const BATCH: usize = 1000;

/// One bridge's counters, read by `/metrics` and `$SYS`.
#[derive(Debug, Default)]
pub(crate) struct BridgeStats {
    /// Records handed to the client and not yet acknowledged by Kafka.
    pub(crate) pending: AtomicU64,
    /// Records Kafka acknowledged.
    pub(crate) produced: AtomicU64,
    /// QoS 0 publishes dropped because the bridge was full.
    pub(crate) dropped: AtomicU64,
    /// QoS 1/2 publishes refused (0x97) because the bridge was full.
    pub(crate) refused: AtomicU64,
    /// Records Kafka refused for good.
    pub(crate) failed: AtomicU64,
    /// Records consumed and published into the broker.
    pub(crate) consumed: AtomicU64,
    /// Records in the consumed topics not yet consumed (high watermark − next offset, over
    /// every partition).
    pub(crate) consumer_lag: AtomicU64,
}

/// A record on its way to the client thread.
struct Job {
    record: OutRecord,
    /// The worker and ticket of the acknowledgement it holds.
    ticket: Option<(usize, PipelineTicket)>,
}

/// One configured bridge, as the workers and the metrics see it.
pub(crate) struct Bridge {
    pub(crate) config: KafkaBridgeConfig,
    pub(crate) stats: BridgeStats,
    jobs: UnboundedSender<Job>,
}

/// Every Kafka bridge, and the thread that runs their client.
pub(crate) struct KafkaBridges {
    pub(crate) bridges: Vec<Arc<Bridge>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl KafkaBridges {
    /// Starts the client thread for the configured bridges (none: no thread).
    pub(crate) fn start(
        configs: &[KafkaBridgeConfig],
        data_dir: &Path,
        inboxes: Vec<UnboundedSender<WorkerMessage>>,
    ) -> std::io::Result<KafkaBridges> {
        if configs.is_empty() {
            return Ok(KafkaBridges {
                bridges: Vec::new(),
                stop: None,
                thread: None,
            });
        }
        let mut bridges = Vec::new();
        let mut receivers = Vec::new();
        for config in configs {
            let (jobs, rx) = tokio::sync::mpsc::unbounded_channel();
            bridges.push(Arc::new(Bridge {
                config: config.clone(),
                stats: BridgeStats::default(),
                jobs,
            }));
            receivers.push(rx);
        }
        let offsets_dir = data_dir.join("kafka");
        if configs.iter().any(|c| !c.consume.is_empty()) {
            std::fs::create_dir_all(&offsets_dir)?;
        }
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let running = bridges.clone();
        let thread = std::thread::Builder::new()
            .name(String::from("petrel-kafka"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut groups: BTreeMap<String, Arc<OffsetFile>> = BTreeMap::new();
                    for (bridge, rx) in running.into_iter().zip(receivers) {
                        tokio::spawn(produce(bridge.clone(), rx, inboxes.clone()));
                        for consume in bridge.config.consume.clone() {
                            let file = groups
                                .entry(consume.group.clone())
                                .or_insert_with(|| {
                                    Arc::new(OffsetFile::load(
                                        offsets_dir.join(format!("{}.offsets", consume.group)),
                                    ))
                                })
                                .clone();
                            tokio::spawn(consume_topic(
                                bridge.clone(),
                                consume,
                                file,
                                inboxes[0].clone(),
                            ));
                        }
                    }
                    let _ = stopped.await;
                });
            })?;
        Ok(KafkaBridges {
            bridges,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the client thread; records not yet acknowledged are not acknowledged to their
    /// publishers either, who send them again when they reconnect.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The pipeline of worker `worker`, or `None` when no bridge sends to Kafka.
pub(crate) fn pipeline(bridges: &[Arc<Bridge>], worker: usize) -> Option<KafkaPipeline> {
    let bridges: Vec<Arc<Bridge>> = bridges
        .iter()
        .filter(|b| !b.config.filters.is_empty())
        .cloned()
        .collect();
    (!bridges.is_empty()).then_some(KafkaPipeline { bridges, worker })
}

/// Writes one Prometheus metric: name, kind, help, and its samples (labels, value).
pub(crate) type MetricWriter<'a> = dyn FnMut(&str, &str, &str, &[(String, u64)]) + 'a;

/// The bridges' Prometheus metrics.
pub(crate) fn metrics(bridges: &[Arc<Bridge>], metric: &mut MetricWriter<'_>) {
    if bridges.is_empty() {
        return;
    }
    let per_bridge = |f: &dyn Fn(&BridgeStats) -> &AtomicU64| -> Vec<(String, u64)> {
        bridges
            .iter()
            .map(|b| {
                let value = f(&b.stats).load(Ordering::Relaxed);
                (format!("{{bridge=\"{}\"}}", b.config.name), value)
            })
            .collect()
    };
    metric(
        "kafka_bridge_pending",
        "gauge",
        "Records waiting for Kafka's acknowledgement (their QoS 1/2 publishers wait too).",
        &per_bridge(&|s| &s.pending),
    );
    metric(
        "kafka_bridge_produced_total",
        "counter",
        "Records Kafka acknowledged.",
        &per_bridge(&|s| &s.produced),
    );
    metric(
        "kafka_bridge_dropped_total",
        "counter",
        "QoS 0 publishes not sent to Kafka because the bridge was full.",
        &per_bridge(&|s| &s.dropped),
    );
    metric(
        "kafka_bridge_refused_total",
        "counter",
        "QoS 1/2 publishes refused (0x97) because the bridge was full.",
        &per_bridge(&|s| &s.refused),
    );
    metric(
        "kafka_bridge_failed_total",
        "counter",
        "Records Kafka refused.",
        &per_bridge(&|s| &s.failed),
    );
    metric(
        "kafka_bridge_consumed_total",
        "counter",
        "Kafka records published into the broker.",
        &per_bridge(&|s| &s.consumed),
    );
    metric(
        "kafka_bridge_consumer_lag",
        "gauge",
        "Records in the consumed Kafka topics not consumed yet.",
        &per_bridge(&|s| &s.consumer_lag),
    );
}

/// The `$SYS` entries: `$SYS/broker/bridge/kafka/NAME/…`.
pub(crate) fn sys_entries(bridges: &[Arc<Bridge>]) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    for bridge in bridges {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let s = &bridge.stats;
        for (name, value) in [
            ("pending", load(&s.pending)),
            ("produced", load(&s.produced)),
            ("dropped", load(&s.dropped)),
            ("refused", load(&s.refused)),
            ("failed", load(&s.failed)),
            ("consumed", load(&s.consumed)),
            ("consumer_lag", load(&s.consumer_lag)),
        ] {
            entries.push((
                format!("$SYS/broker/bridge/kafka/{}/{name}", bridge.config.name),
                value,
            ));
        }
    }
    entries
}

impl Drop for KafkaBridges {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a worker's shard offers client publishes to.
pub(crate) struct KafkaPipeline {
    bridges: Vec<Arc<Bridge>>,
    worker: usize,
}

impl Pipeline for KafkaPipeline {
    fn offer(
        &mut self,
        publisher: &ClientInfo<'_>,
        message: &Arc<Message>,
        ticket: Option<PipelineTicket>,
        must_take: bool,
    ) -> Offer {
        // The first bridge whose filters match takes the publish.
        let Some(bridge) = self.bridges.iter().find(|b| b.config.wants(&message.topic)) else {
            return Offer::Pass;
        };
        let local = bridge.config.mode == BridgeMode::Broker;
        let Some(record) = record_for(&bridge.config, publisher, message) else {
            return Offer::Pass;
        };
        let stats = &bridge.stats;
        let before = stats.pending.fetch_add(1, Ordering::Relaxed);
        if before >= bridge.config.max_pending as u64 && !must_take {
            stats.pending.fetch_sub(1, Ordering::Relaxed);
            let counter = if ticket.is_some() {
                &stats.refused
            } else {
                &stats.dropped
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Offer::Full { local };
        }
        let job = Job {
            record,
            ticket: ticket.map(|t| (self.worker, t)),
        };
        if bridge.jobs.send(job).is_err() {
            // The client thread is gone (the broker is stopping): nothing can take it.
            stats.pending.fetch_sub(1, Ordering::Relaxed);
            return Offer::Full { local };
        }
        Offer::Taken { local }
    }
}

/// Connects, retrying until Kafka answers.
async fn connect(bridge: &Bridge) -> Arc<Client> {
    loop {
        let built = ClientBuilder::new(bridge.config.brokers.clone())
            .client_id("petrel")
            .backoff_config(backoff())
            .build()
            .await;
        match built {
            Ok(client) => {
                info!(bridge = bridge.config.name, "connected to Kafka");
                return Arc::new(client);
            }
            Err(e) => {
                warn!(bridge = bridge.config.name, "connecting to Kafka: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Retry without a deadline, but not minutes apart: a QoS 1/2 publisher is waiting.
fn backoff() -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        base: 2.0,
        deadline: None,
    }
}

/// The partitions of `topic`, waiting until it exists.
async fn partitions(client: &Client, topic: &str, bridge: &str) -> Vec<i32> {
    let mut warned = false;
    loop {
        match client.list_topics().await {
            Ok(topics) => {
                if let Some(t) = topics.into_iter().find(|t| t.name == topic) {
                    if !t.partitions.is_empty() {
                        return t.partitions.into_iter().collect();
                    }
                }
                if !warned {
                    warn!(bridge, topic, "Kafka topic does not exist (yet): waiting");
                    warned = true;
                }
            }
            Err(e) => warn!(bridge, "listing Kafka topics: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A stable spread of keys over partitions (FNV-1a); keyless records take turns.
fn partition_of(key: Option<&[u8]>, partitions: &[i32], turn: &mut usize) -> i32 {
    let index = match key {
        Some(key) => {
            let hash = key.iter().fold(0x811c_9dc5_u32, |h, b| {
                (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
            });
            hash as usize % partitions.len()
        }
        None => {
            *turn = turn.wrapping_add(1);
            *turn % partitions.len()
        }
    };
    partitions[index]
}

fn to_record(record: OutRecord) -> Record {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Record {
        key: record.key,
        value: Some(record.value),
        headers: record.headers,
        timestamp: chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default(),
    }
}

/// Sends the bridge's records to Kafka in batches, in order per partition, and reports
/// each acknowledgement to the worker that holds it.
async fn produce(
    bridge: Arc<Bridge>,
    mut jobs: UnboundedReceiver<Job>,
    inboxes: Vec<UnboundedSender<WorkerMessage>>,
) {
    let name = bridge.config.name.clone();
    let Some(first) = jobs.recv().await else {
        return;
    };
    let client = connect(&bridge).await;
    let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut clients: BTreeMap<(String, i32), Arc<PartitionClient>> = BTreeMap::new();
    let mut turn = 0;
    let mut head = Some(first);
    loop {
        let first = match head.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut groups: BTreeMap<(String, i32), Vec<Job>> = BTreeMap::new();
        for job in batch {
            if !topics.contains_key(&job.record.topic) {
                let found = partitions(&client, &job.record.topic, &name).await;
                topics.insert(job.record.topic.clone(), found);
            }
            let partition = partition_of(
                job.record.key.as_deref(),
                &topics[&job.record.topic],
                &mut turn,
            );
            groups
                .entry((job.record.topic.clone(), partition))
                .or_default()
                .push(job);
        }
        for (place, group) in groups {
            let partition_client = match clients.get(&place) {
                Some(c) => c.clone(),
                None => loop {
                    match client
                        .partition_client(&place.0, place.1, UnknownTopicHandling::Retry)
                        .await
                    {
                        Ok(c) => {
                            let c = Arc::new(c);
                            clients.insert(place.clone(), c.clone());
                            break c;
                        }
                        Err(e) => {
                            warn!(bridge = name, topic = place.0, "Kafka partition: {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                },
            };
            let mut tickets = Vec::with_capacity(group.len());
            let records: Vec<Record> = group
                .into_iter()
                .map(|job| {
                    tickets.push(job.ticket);
                    to_record(job.record)
                })
                .collect();
            let n = records.len() as u64;
            // rskafka retries connection errors, leader changes and unknown topics by
            // itself (no deadline): an error here is Kafka refusing the records.
            let result = match partition_client
                .produce(records, Compression::NoCompression)
                .await
            {
                Ok(_) => {
                    bridge.stats.produced.fetch_add(n, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    warn!(
                        bridge = name,
                        topic = place.0,
                        "Kafka refused {n} records: {e}"
                    );
                    bridge.stats.failed.fetch_add(n, Ordering::Relaxed);
                    Err(ReasonCode::ImplementationSpecificError)
                }
            };
            bridge.stats.pending.fetch_sub(n, Ordering::Relaxed);
            for (worker, ticket) in tickets.into_iter().flatten() {
                if let Some(inbox) = inboxes.get(worker) {
                    let _ = inbox.send(WorkerMessage::Pipeline(ticket, result));
                }
            }
        }
    }
}

/// Committed offsets of one consumer group, in `kafka/GROUP.offsets` in the data directory:
/// one `topic partition next-offset` line each, replaced atomically (write, sync, rename).
struct OffsetFile {
    path: PathBuf,
    offsets: Mutex<BTreeMap<(String, i32), i64>>,
}

impl OffsetFile {
    fn load(path: PathBuf) -> OffsetFile {
        let mut offsets = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                let mut parts = line.rsplitn(3, ' ');
                let (Some(offset), Some(partition), Some(topic)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if let (Ok(partition), Ok(offset)) = (partition.parse(), offset.parse()) {
                    offsets.insert((topic.to_string(), partition), offset);
                }
            }
        }
        OffsetFile {
            path,
            offsets: Mutex::new(offsets),
        }
    }

    fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        let offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        offsets.get(&(topic.to_string(), partition)).copied()
    }

    fn commit(&self, topic: &str, partition: i32, next: i64) -> std::io::Result<()> {
        let mut offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        offsets.insert((topic.to_string(), partition), next);
        let mut text = String::new();
        for ((topic, partition), offset) in offsets.iter() {
            text.push_str(&format!("{topic} {partition} {offset}\n"));
        }
        let temporary = self.path.with_extension("offsets.tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)
    }
}

/// Consumes every partition of one Kafka topic into the broker.
async fn consume_topic(
    bridge: Arc<Bridge>,
    consume: ConsumeConfig,
    offsets: Arc<OffsetFile>,
    inbox: UnboundedSender<WorkerMessage>,
) {
    let client = connect(&bridge).await;
    let found = partitions(&client, &consume.topic, &bridge.config.name).await;
    let lags: Arc<Mutex<BTreeMap<i32, u64>>> = Arc::default();
    let consume = Arc::new(consume);
    for partition in found {
        tokio::spawn(consume_partition(
            bridge.clone(),
            client.clone(),
            consume.clone(),
            partition,
            offsets.clone(),
            inbox.clone(),
            lags.clone(),
        ));
    }
}

async fn consume_partition(
    bridge: Arc<Bridge>,
    client: Arc<Client>,
    consume: Arc<ConsumeConfig>,
    partition: i32,
    offsets: Arc<OffsetFile>,
    inbox: UnboundedSender<WorkerMessage>,
    lags: Arc<Mutex<BTreeMap<i32, u64>>>,
) {
    let name = bridge.config.name.as_str();
    let topic = consume.topic.as_str();
    let partition_client = loop {
        match client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                warn!(bridge = name, topic, "Kafka partition {partition}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let start = match consume.start {
        StartAt::Earliest => OffsetAt::Earliest,
        StartAt::Latest => OffsetAt::Latest,
    };
    let mut next = match offsets.get(topic, partition) {
        Some(offset) => offset,
        None => loop {
            match partition_client.get_offset(start).await {
                Ok(offset) => break offset,
                Err(e) => {
                    warn!(bridge = name, topic, "Kafka offset of {partition}: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        },
    };
    let qos = QoS::from_bits(consume.qos).unwrap_or(QoS::AtMostOnce);
    loop {
        let asked = tokio::time::Instant::now();
        let (records, high_watermark) = match partition_client
            .fetch_records(next, 1..1_000_000, 500)
            .await
        {
            Ok(fetched) => fetched,
            Err(e) => {
                warn!(
                    bridge = name,
                    topic, "Kafka fetch from {partition}@{next}: {e}"
                );
                if let rskafka::client::error::Error::ServerError {
                    protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                    ..
                } = e
                {
                    // The committed offset is gone (retention): go on from the oldest left.
                    if let Ok(earliest) = partition_client.get_offset(OffsetAt::Earliest).await {
                        next = earliest;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(last) = records.last().map(|r| r.offset) else {
            record_lag(&bridge, &lags, partition, high_watermark - next);
            // A broker that answers an empty fetch at once, without waiting the 500 ms
            // asked for, would otherwise be polled in a tight loop.
            tokio::time::sleep_until(asked + Duration::from_millis(100)).await;
            continue;
        };
        let n = records.len() as u64;
        let messages: Vec<Message> = records
            .into_iter()
            .map(|r| {
                let mut message = Message::new(
                    &consumed_topic(
                        &consume.mqtt_topic,
                        topic,
                        partition,
                        r.offset,
                        r.record.key.as_deref(),
                    ),
                    r.record.value.unwrap_or_default(),
                );
                message.qos = qos;
                message.properties.user_properties = r
                    .record
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                message
            })
            .collect();
        // Committed only once the shard has routed them (to sessions, queues and the
        // store's batch), so a restart neither skips nor repeats them.
        let (routed, done) = tokio::sync::oneshot::channel();
        let job: crate::shared::AdminJob = Box::new(move |broker, now| {
            for message in messages {
                broker.publish(now, message);
            }
            let _ = routed.send(());
        });
        if inbox.send(WorkerMessage::Admin(job)).is_err() || done.await.is_err() {
            return;
        }
        next = last + 1;
        bridge.stats.consumed.fetch_add(n, Ordering::Relaxed);
        record_lag(&bridge, &lags, partition, high_watermark - next);
        if let Err(e) = offsets.commit(topic, partition, next) {
            warn!(bridge = name, topic, "committing offset {next}: {e}");
        }
    }
}

fn record_lag(bridge: &Bridge, lags: &Mutex<BTreeMap<i32, u64>>, partition: i32, lag: i64) {
    let mut lags = lags.lock().unwrap_or_else(|e| e.into_inner());
    let old: u64 = lags.values().sum();
    lags.insert(partition, lag.max(0) as u64);
    let new: u64 = lags.values().sum();
    // Several topics add to one gauge: move it by this topic's change.
    if new >= old {
        bridge
            .stats
            .consumer_lag
            .fetch_add(new - old, Ordering::Relaxed);
    } else {
        bridge
            .stats
            .consumer_lag
            .fetch_sub(old - new, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_on_one_partition() {
        let partitions = [0, 1, 2, 3];
        let mut turn = 0;
        let a = partition_of(Some(b"dev7"), &partitions, &mut turn);
        assert_eq!(partition_of(Some(b"dev7"), &partitions, &mut turn), a);
        let keyless: Vec<i32> = (0..4)
            .map(|_| partition_of(None, &partitions, &mut turn))
            .collect();
        let mut sorted = keyless.clone();
        sorted.sort();
        assert_eq!(sorted, partitions, "keyless records take turns");
    }

    #[test]
    fn offsets_survive_a_reload() {
        let dir = std::env::temp_dir().join(format!("petrel-offsets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("g.offsets");
        let file = OffsetFile::load(path.clone());
        assert_eq!(file.get("a b", 0), None);
        file.commit("a b", 0, 7).unwrap();
        file.commit("c", 3, 9).unwrap();
        let again = OffsetFile::load(path);
        assert_eq!(again.get("a b", 0), Some(7));
        assert_eq!(again.get("c", 3), Some(9));
        let _ = std::fs::remove_dir_all(dir);
    }
}
