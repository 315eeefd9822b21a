//! The Kafka bridge: publishes to Kafka records (with the publisher's acknowledgement held
//! until Kafka has them), Kafka records into the broker.
//!
//! The client (rdkafka, i.e. librdkafka) runs on a thread of its own with a plain tokio
//! runtime; the workers never wait for it. Each worker's shard offers client publishes to a
//! [`KafkaPipeline`] (the state crate's [`Pipeline`]), which maps them to records and hands
//! them to the thread through a channel. The thread gives them to an idempotent producer
//! (producer id, epoch and sequence numbers, so a retried produce request whose answer was
//! lost is not stored twice); when Kafka acknowledges a record, the thread sends its
//! publisher's worker `WorkerMessage::Pipeline(ticket, result)`, and the shard releases the
//! PUBACK / PUBREC. Consumed topics are read by a member of a Kafka consumer group: records
//! go to worker 0 as one job per batch, and their offsets are committed to Kafka once the
//! shard has routed them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use petrel_codec::{QoS, ReasonCode};
use petrel_state::broker::{ClientInfo, Offer, Pipeline, PipelineTicket};
use petrel_state::message::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message as _, TopicPartitionList};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tracing::{info, warn};

use super::kafka_map::{
    consumed_topic, record_for, BridgeMode, ConsumeConfig, KafkaBridgeConfig, OutRecord, StartAt,
};
use crate::shared::WorkerMessage;

/// Consumed records routed by one job on worker 0 (and committed together).
const BATCH: usize = 1000;

/// One bridge's counters, read by `/metrics` and `$SYS`.
#[derive(Debug)]
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
    /// Records in the consumed topics not yet consumed (high watermark − committed offset,
    /// over the partitions this instance's group members were given).
    pub(crate) consumer_lag: AtomicU64,
    /// The idempotent producer's id, given by Kafka (InitProducerId); −1 until then.
    pub(crate) producer_id: AtomicI64,
}

impl Default for BridgeStats {
    fn default() -> BridgeStats {
        BridgeStats {
            pending: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumer_lag: AtomicU64::new(0),
            producer_id: AtomicI64::new(-1),
        }
    }
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
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let running = bridges.clone();
        let thread = std::thread::Builder::new()
            .name(String::from("petrel-kafka"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mut consumers = Vec::new();
                    for (bridge, rx) in running.into_iter().zip(receivers) {
                        tokio::spawn(produce(bridge.clone(), rx, inboxes.clone()));
                        for consume in &bridge.config.consume {
                            let consumer = match consumer(&bridge, consume) {
                                Ok(c) => Arc::new(c),
                                Err(e) => {
                                    let name = &bridge.config.name;
                                    warn!(
                                        bridge = name,
                                        topic = consume.topic,
                                        "Kafka consumer: {e}"
                                    );
                                    continue;
                                }
                            };
                            consumers.push(consumer.clone());
                            tokio::spawn(consume_topic(
                                bridge.clone(),
                                consume.clone(),
                                consumer,
                                inboxes[0].clone(),
                            ));
                        }
                    }
                    let _ = stopped.await;
                    // What was routed is committed before the members leave their groups
                    // (dropping a consumer leaves; auto-commit would also commit then, but
                    // only what it was told before this point either way).
                    for consumer in consumers {
                        let _ = consumer.commit_consumer_state(CommitMode::Sync);
                    }
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
    let producer_ids: Vec<(String, u64)> = bridges
        .iter()
        .filter_map(|b| {
            let id = u64::try_from(b.stats.producer_id.load(Ordering::Relaxed)).ok()?;
            Some((format!("{{bridge=\"{}\"}}", b.config.name), id))
        })
        .collect();
    metric(
        "kafka_bridge_producer_id",
        "gauge",
        "The idempotent producer's id given by Kafka (absent until it is given).",
        &producer_ids,
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
            (
                "producer_id",
                s.producer_id.load(Ordering::Relaxed).to_string(),
            ),
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

/// Epochs a producer may move to by itself, answering UnknownProducerId, before the bridge
/// concludes that the broker refuses its producer id for good (a broker that lost its
/// producer state and, unlike Kafka, does not take a new epoch from sequence 0).
const EPOCH_BUMPS: i64 = 50;

/// Reads librdkafka's statistics (every second) into the bridge's gauges.
struct StatsContext {
    bridge: Arc<Bridge>,
    /// This client's share of the bridge's consumer lag, last reported.
    lag: AtomicU64,
    /// The producer id and the epoch it was first seen with.
    given: Mutex<(i64, i64)>,
    /// Set once the epoch has moved more than [`EPOCH_BUMPS`] past it.
    forgotten: Arc<AtomicBool>,
}

impl StatsContext {
    fn new(bridge: &Arc<Bridge>) -> StatsContext {
        StatsContext {
            bridge: bridge.clone(),
            lag: AtomicU64::new(0),
            given: Mutex::new((-1, -1)),
            forgotten: Arc::default(),
        }
    }
}

impl ClientContext for StatsContext {
    /// A broker away is the normal case the bridge waits out (librdkafka reconnects by
    /// itself): a warning with the bridge's name, not an error.
    fn error(&self, error: KafkaError, reason: &str) {
        let name = self.bridge.config.name.as_str();
        warn!(bridge = name, "Kafka client: {error}: {reason}");
    }

    fn stats(&self, statistics: Statistics) {
        let stats = &self.bridge.stats;
        if let Some(eos) = &statistics.eos {
            stats.producer_id.store(eos.producer_id, Ordering::Relaxed);
            let mut given = self.given.lock().unwrap_or_else(|e| e.into_inner());
            if given.0 != eos.producer_id {
                *given = (eos.producer_id, eos.producer_epoch);
            } else if eos.producer_epoch - given.1 > EPOCH_BUMPS {
                self.forgotten.store(true, Ordering::Relaxed);
            }
        }
        if statistics.client_type != "consumer" {
            return;
        }
        // Partition −1 is librdkafka's "not assigned yet" queue; −1 lags are unknown.
        let lag: u64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0)
            .map(|p| u64::try_from(p.consumer_lag).unwrap_or(0))
            .sum();
        // Several consumers add to one gauge: move it by this one's change.
        let old = self.lag.swap(lag, Ordering::Relaxed);
        if lag >= old {
            stats.consumer_lag.fetch_add(lag - old, Ordering::Relaxed);
        } else {
            stats.consumer_lag.fetch_sub(old - lag, Ordering::Relaxed);
        }
    }
}

impl ConsumerContext for StatsContext {}

/// The settings both clients share.
fn client_config(bridge: &Bridge) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bridge.config.brokers.join(","))
        .set("client.id", "petrel")
        .set("statistics.interval.ms", "1000");
    config
}

/// The idempotent producer. Kafka gives it a producer id and epoch (InitProducerId), and it
/// numbers each partition's batches, so a retried produce request whose answer was lost is
/// recognised by the broker and not stored twice. librdkafka retries connection errors and
/// leader changes by itself and, with no message timeout, never gives up on a record: a
/// QoS 1/2 publisher waits for as long as Kafka is away.
fn producer(bridge: &Arc<Bridge>) -> Result<Live, KafkaError> {
    let context = StatsContext::new(bridge);
    let forgotten = context.forgotten.clone();
    let producer = client_config(bridge)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "0")
        // Java's partitioner: a key lands on the partition Java producers would pick.
        .set("partitioner", "murmur2_random")
        .create_with_context(context)?;
    Ok(Live {
        producer,
        forgotten,
    })
}

/// A producer, and whether its statistics show the broker refusing its producer id.
struct Live {
    producer: FutureProducer<StatsContext>,
    forgotten: Arc<AtomicBool>,
}

/// Errors after which sending the record again cannot help.
fn refused_for_good(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidTopic
        )
    )
}

/// The producer in use; replaced when it cannot deliver any more: librdkafka declares it
/// unusable (a fatal idempotence error), or the broker keeps refusing its producer id.
struct ProducerSlot {
    bridge: Arc<Bridge>,
    current: Mutex<Arc<Live>>,
}

impl ProducerSlot {
    fn get(&self) -> Arc<Live> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces `failed` with a new producer if it is in a fatal state (once, however many
    /// records saw the error).
    fn renew_if_fatal(&self, failed: &Arc<Live>) {
        if let Some((code, reason)) = failed.producer.client().fatal_error() {
            self.renew(failed, &format!("{code}: {reason}"));
        }
    }

    /// Replaces the producer if the broker keeps refusing its producer id. Such a broker
    /// lost its producer state, so the records it refused are not stored there: sending
    /// them again from a new producer id duplicates nothing.
    fn renew_if_forgotten(&self) {
        let current = self.get();
        if current.forgotten.load(Ordering::Relaxed) {
            self.renew(&current, "Kafka keeps refusing its producer id");
        }
    }

    /// Starts a new producer in place of `old` (unless that was done already) and makes
    /// the old one give back its records, which [`deliver`] sends again.
    fn renew(&self, old: &Arc<Live>, why: &str) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current, old) {
            return;
        }
        let name = self.bridge.config.name.as_str();
        warn!(
            bridge = name,
            "Kafka producer failed ({why}): starting a new one"
        );
        match producer(&self.bridge) {
            Ok(fresh) => *current = Arc::new(fresh),
            Err(e) => {
                warn!(bridge = name, "new Kafka producer: {e}");
                return;
            }
        }
        drop(current);
        old.producer
            .purge(PurgeConfig::default().queue().inflight());
    }

    /// Hands the record to librdkafka, waiting while its queue is full.
    async fn enqueue(&self, record: &OutRecord) -> Result<(Arc<Live>, DeliveryFuture), KafkaError> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        loop {
            let live = self.get();
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut out = FutureRecord::<[u8], [u8]>::to(&record.topic)
                .payload(&record.value)
                .headers(headers)
                .timestamp(millis);
            if let Some(key) = &record.key {
                out = out.key(key);
            }
            match live.producer.send_result(out) {
                Ok(delivery) => return Ok((live, delivery)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// Sends the bridge's records to Kafka, in the order they came, and reports each
/// acknowledgement to the worker that holds it.
async fn produce(
    bridge: Arc<Bridge>,
    mut jobs: UnboundedReceiver<Job>,
    inboxes: Vec<UnboundedSender<WorkerMessage>>,
) {
    let name = bridge.config.name.clone();
    let first = loop {
        match producer(&bridge) {
            Ok(p) => break p,
            Err(e) => {
                warn!(bridge = name, "Kafka producer: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    info!(bridge = name, "Kafka producer started (idempotent)");
    let slot = Arc::new(ProducerSlot {
        bridge: bridge.clone(),
        current: Mutex::new(Arc::new(first)),
    });
    let watched = Arc::downgrade(&slot);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            match watched.upgrade() {
                Some(slot) => slot.renew_if_forgotten(),
                None => return,
            }
        }
    });
    let inboxes = Arc::new(inboxes);
    while let Some(job) = jobs.recv().await {
        // Enqueued here, one at a time, so records keep their order; the acknowledgement
        // is awaited apart so that the next record need not wait for it.
        let queued = slot.enqueue(&job.record).await;
        tokio::spawn(deliver(
            bridge.clone(),
            slot.clone(),
            job,
            queued,
            inboxes.clone(),
        ));
    }
}

/// Waits for Kafka's acknowledgement of one record (sending it again after errors that
/// are not final) and reports it.
async fn deliver(
    bridge: Arc<Bridge>,
    slot: Arc<ProducerSlot>,
    job: Job,
    mut queued: Result<(Arc<Live>, DeliveryFuture), KafkaError>,
    inboxes: Arc<Vec<UnboundedSender<WorkerMessage>>>,
) {
    let name = bridge.config.name.as_str();
    let topic = job.record.topic.as_str();
    let result = loop {
        let error = match queued {
            Ok((live, delivery)) => match delivery.await {
                Ok(Ok(_)) => break Ok(()),
                Ok(Err((e, _))) => {
                    slot.renew_if_fatal(&live);
                    e
                }
                // The producer was dropped: the bridge is stopping.
                Err(_) => return,
            },
            Err(e) => e,
        };
        if refused_for_good(&error) {
            warn!(bridge = name, topic, "Kafka refused a record: {error}");
            break Err(ReasonCode::ImplementationSpecificError);
        }
        // Such as a topic that does not exist (yet): the publisher keeps waiting.
        warn!(
            bridge = name,
            topic, "sending a record to Kafka again: {error}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        queued = slot.enqueue(&job.record).await;
    };
    let counter = if result.is_ok() {
        &bridge.stats.produced
    } else {
        &bridge.stats.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    bridge.stats.pending.fetch_sub(1, Ordering::Relaxed);
    if let Some((worker, ticket)) = job.ticket {
        if let Some(inbox) = inboxes.get(worker) {
            let _ = inbox.send(WorkerMessage::Pipeline(ticket, result));
        }
    }
}

/// A member of the consumer group `consume.group`, subscribed to `consume.topic`; Kafka's
/// group coordinator shares the topic's partitions among the members (other Petrel
/// instances with the same group included) and keeps the committed offsets.
fn consumer(
    bridge: &Arc<Bridge>,
    consume: &ConsumeConfig,
) -> Result<StreamConsumer<StatsContext>, KafkaError> {
    let start = match consume.start {
        StartAt::Earliest => "earliest",
        StartAt::Latest => "latest",
    };
    let consumer: StreamConsumer<StatsContext> = client_config(bridge)
        .set("group.id", &consume.group)
        .set("auto.offset.reset", start)
        // Offsets are stored only once the shard has routed the record; auto-commit then
        // also commits them when partitions move to another member and on close.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .create_with_context(StatsContext::new(bridge))?;
    consumer.subscribe(&[consume.topic.as_str()])?;
    Ok(consumer)
}

/// Publishes into the broker what the group member is given of one Kafka topic.
async fn consume_topic(
    bridge: Arc<Bridge>,
    consume: ConsumeConfig,
    consumer: Arc<StreamConsumer<StatsContext>>,
    inbox: UnboundedSender<WorkerMessage>,
) {
    let name = bridge.config.name.as_str();
    let qos = QoS::from_bits(consume.qos).unwrap_or(QoS::AtMostOnce);
    loop {
        let mut batch = Vec::new();
        match consumer.recv().await {
            Ok(first) => batch.push(message_of(&consume, qos, &first)),
            Err(e) => {
                // A topic that does not exist (yet), Kafka away: librdkafka goes on trying.
                warn!(bridge = name, topic = consume.topic, "Kafka consumer: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        }
        // What is already fetched goes in the same job.
        while batch.len() < BATCH {
            match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                Ok(Ok(next)) => batch.push(message_of(&consume, qos, &next)),
                _ => break,
            }
        }
        let mut next = BTreeMap::new();
        let mut messages = Vec::with_capacity(batch.len());
        for (partition, offset, message) in batch {
            // Kafka's committed offset is the next record to read.
            next.insert(partition, offset + 1);
            messages.push(message);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in next {
            let _ = offsets.add_partition_offset(
                &consume.topic,
                partition,
                rdkafka::Offset::Offset(next),
            );
        }
        let n = messages.len() as u64;
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
        bridge.stats.consumed.fetch_add(n, Ordering::Relaxed);
        // A partition taken away meanwhile refuses the store: its new owner reads those
        // records again (at least once, never lost).
        if let Err(e) = consumer.store_offsets(&offsets) {
            warn!(bridge = name, topic = consume.topic, "storing offsets: {e}");
            continue;
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
            warn!(
                bridge = name,
                topic = consume.topic,
                "committing offsets: {e}"
            );
        }
    }
}

/// The MQTT message a record becomes, with the record's partition and offset.
fn message_of(
    consume: &ConsumeConfig,
    qos: QoS,
    record: &BorrowedMessage<'_>,
) -> (i32, i64, Message) {
    let mut message = Message::new(
        &consumed_topic(
            &consume.mqtt_topic,
            record.topic(),
            record.partition(),
            record.offset(),
            record.key(),
        ),
        record.payload().unwrap_or_default().to_vec(),
    );
    message.qos = qos;
    if let Some(headers) = record.headers() {
        message.properties.user_properties = headers
            .iter()
            .map(|h| {
                let value = h.value.unwrap_or_default();
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(value).into_owned(),
                )
            })
            .collect();
    }
    (record.partition(), record.offset(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_final_errors_stop_the_retries() {
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(refused_for_good(&refused));
        for passing in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
        ] {
            assert!(!refused_for_good(&KafkaError::MessageProduction(passing)));
        }
    }
}
