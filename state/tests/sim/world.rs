//! The simulated world: broker shards, the store they restart from, the channels between
//! shards, hundreds of clients, the byte pipes between clients and shards, and a virtual
//! clock. The world plays the runtime: it routes each connection to the shard that owns its
//! client identifier, carries shard messages first in, first out, moves bytes in random
//! chunks, and restarts the broker from the store.
//!
//! Everything is a function of the seed: the only randomness is [`Rng`], every collection
//! is ordered (`BTreeMap`, `Vec`, `VecDeque`), and time is [`Instant`] arithmetic.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use petrel_codec::{
    Decoded, Decoder, Packet, ProtocolVersion, QoS, ReasonCode, SubscribeFilter,
    SubscriptionOptions,
};
use petrel_state::broker::{
    owner_shard, AllowAll, Broker, BrokerConfig, ConnectionId, Durability, MemoryStorage,
    SessionView, ShardMessage, Storage,
};
use petrel_state::client::{Client, ClientError, ClientEvent, ClientOptions, ConnectionState};
use petrel_state::message::Message;
use petrel_state::server::{QueueLimits, ServerConfig};
use petrel_state::{Duration, Instant};

use super::model::{MatchTable, PayloadTag, FILTERS, TOPICS};
use super::oracle::{MessageId, MessageRecord, Oracle, Requirement};
use super::rng::Rng;

/// The client type every simulated client uses. 128 packet identifiers: a 3.1.1 server
/// has no way to learn a client's capacity (3.1.1 has no Receive Maximum), so the client
/// must be able to hold every QoS 2 message in transit to it while its PUBRECs travel back.
type MqttClient = Client<'static, 128, 16384>;

/// Bytes a connection's socket holds towards its client before the world stops taking bytes
/// from the broker for it: what makes a slow reader push back on the broker. The bounded
/// profiles use a quarter of it, so that slow readers fill the broker's buffer quickly.
const SOCKET_CAPACITY: usize = 1024;

/// How far a connection's outbound buffer may exceed `max_outbound_buffer` when the world
/// takes its bytes. Deliveries stop at the limit, but a few packets are never refused:
/// acknowledgements, SUBACKs, and above all the re-sending of a resumed session's whole
/// in-flight window right after CONNACK (up to the client's Receive Maximum of 128, and for
/// a 3.1.1 client whatever was in flight).
const OUTBOUND_SLACK: usize = 16 * 1024;

/// Rounds of byte moving per step: enough for a request and its answer to cross within a
/// step most of the time, while slow readers and random chunking still leave work behind.
const NETWORK_ROUNDS: usize = 3;

/// Rounds a quiescence phase may take before the world is declared stuck (livelock).
const MAX_HEAL_ROUNDS: usize = 3000;

/// Entries of the action log kept for a failure report (`SIM_LOG` changes it).
const LOG_TAIL: usize = 120;

/// The client identifiers, leaked once per process so that clients can borrow them for
/// `'static` (the client is `no_std` and keeps a borrowed identifier).
fn client_id(index: usize) -> &'static str {
    static IDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    IDS.get_or_init(|| {
        (0..MAX_CLIENTS)
            .map(|i| &*Box::leak(format!("sim-{i:04}").into_boxed_str()))
            .collect()
    })[index]
}

/// The most clients a run may have.
pub(crate) const MAX_CLIENTS: usize = 4096;

/// What one run simulates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Profile {
    /// The name reports use, and the test that runs it.
    pub(crate) name: &'static str,
    /// Broker shards.
    pub(crate) shards: u16,
    /// Simulated clients.
    pub(crate) clients: usize,
    /// Steps of random actions.
    pub(crate) steps: u64,
    /// Small queue and buffer limits, so that messages are dropped: a QoS 1/2 loss is then
    /// excused for a session whose queue overflowed (and only for it). Otherwise the limits
    /// are far above what a run can queue and any QoS 1/2 drop is a failure.
    pub(crate) bounded_memory: bool,
    /// Steps between quiescence phases (also run at the end).
    pub(crate) heal_every: u64,
}

/// What a run did, for the summary line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    pub(crate) steps: u64,
    pub(crate) heals: u64,
    pub(crate) restarts_crash: u64,
    pub(crate) restarts_graceful: u64,
    pub(crate) takeovers: u64,
    /// Takeovers whose old connection was seen closed by the new connection's CONNACK.
    pub(crate) takeovers_verified: u64,
    pub(crate) drops: u64,
    pub(crate) connects: u64,
    pub(crate) client_timeouts: u64,
    pub(crate) v311_overruns: u64,
    pub(crate) max_outbound_seen: usize,
    pub(crate) broker_drops: u64,
    pub(crate) oracle: String,
    /// FNV-1a over every action logged: two runs with the same fingerprint took the same
    /// actions at the same virtual times.
    pub(crate) fingerprint: u64,
}

/// A store shared by every shard and by the world, so that it outlives the brokers: a
/// broker restart is new shards restoring from it.
struct SharedStore(Rc<RefCell<MemoryStorage>>);

impl Storage for SharedStore {
    fn save_session(&mut self, session: SessionView<'_>) {
        self.0.borrow_mut().save_session(session)
    }
    fn delete_session(&mut self, client_id: &str) {
        self.0.borrow_mut().delete_session(client_id)
    }
    fn set_retained(&mut self, topic: &str, message: Option<&Arc<Message>>) {
        self.0.borrow_mut().set_retained(topic, message)
    }
    fn commit(&mut self) -> Durability {
        self.0.borrow_mut().commit()
    }
}

/// The channel from one shard to another: FIFO, as the runtime's are.
#[derive(Default)]
struct Channel {
    queue: VecDeque<ShardMessage>,
    /// Messages ever put in.
    sent: u64,
    /// The tick at which each message (by position since the last restart) was handled by
    /// the target shard.
    delivered_at: Vec<u64>,
}

/// How a session lasts beyond its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persistence {
    /// A new session at every connection (clean start, expiry 0).
    Clean,
    /// Resumes its session, which outlives a connection by `expiry` seconds (`u32::MAX`:
    /// forever, as a 3.1.1 persistent session).
    Persistent { expiry: u32 },
    /// 5.0: resumes its session, but each connection asks for an expiry of 0, 10 minutes
    /// or forever (MQTT 5.0 lets every CONNECT change it).
    Fickle,
}

/// How fast a client reads what the broker sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slowness {
    Normal,
    /// Reads only every `n`th step.
    Periodic(u64),
    /// Reads at most this many bytes per round.
    Trickle(usize),
}

/// What the world knows about a client's session at the broker, from what the client saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionModel {
    /// No session may exist: the last one ended with its connection (expiry 0).
    Absent,
    /// A session exists at least until `until` (`None`: forever or while connected).
    Present { until: Option<Instant> },
    /// A CONNECT went out whose CONNACK never came: it may or may not have been handled.
    /// Whatever happened, a session (if any) lasts at least until `until`; `maybe_replaced`:
    /// the session may have ended and that CONNECT (or a later one) created a new one,
    /// which a later CONNACK would report present. The client cannot tell the two apart
    /// (the CONNACK that said "new" was lost), so neither can the oracle.
    Unknown {
        until: Option<Instant>,
        maybe_replaced: bool,
    },
}

/// One transport connection between a client and a shard.
struct Link {
    serial: u64,
    shard: u16,
    id: ConnectionId,
    /// Client to broker bytes in transit.
    up: VecDeque<u8>,
    /// Broker to client bytes in transit (the socket buffer).
    down: VecDeque<u8>,
    /// The broker closed the connection and the world released it.
    broker_closed: bool,
    /// When the broker closed it: the session's expiry runs from then.
    closed_at: Option<Instant>,
    /// A CONNACK accepting the connection reached the client.
    accepted: bool,
    clean_start: bool,
    /// The session expiry this connection asked for (3.1.1: 0 or forever).
    expiry: u32,
}

/// A subscription the client holds, from its SUBACK on.
#[derive(Debug, Clone)]
struct Subscription {
    qos: QoS,
    /// The tick the SUBACK reached the client.
    acked_at: u64,
    /// The restart generation it was acknowledged in.
    generation: u32,
    /// Per other shard: messages this shard had sent it when the SUBACK arrived. Once the
    /// other shard has handled that many, it knows of the subscription (the `Interest`
    /// message went out with the SUBACK) and forwards its publishers' messages.
    watermark: Vec<u64>,
    /// Per shard: the tick from which it forwards, once known for good (set at restarts).
    settled: Vec<Option<u64>>,
}

/// One simulated client: a real `petrel_state::client::Client` and what the world knows
/// about it.
struct SimClient {
    id: &'static str,
    version: ProtocolVersion,
    persistence: Persistence,
    receive_maximum: u16,
    /// The shard that owns its client identifier.
    shard: u16,
    mqtt: Box<MqttClient>,
    link: Option<Link>,
    /// Earlier connections a takeover left open at the broker, until it closes them.
    zombies: Vec<Link>,
    /// Bytes received and not yet taken by the client.
    inbox: Vec<u8>,
    slowness: Slowness,
    reconnect_at: Option<u64>,
    session: SessionModel,
    /// Incremented at each CONNACK without a session: requirements of an earlier epoch are
    /// void (the session that owed them is gone).
    epoch: u32,
    next_seq: u64,
    /// QoS 1/2 publishes in flight, by packet identifier.
    in_flight: BTreeMap<u16, MessageId>,
    /// Subscriptions acknowledged and not since unsubscribed, by filter index.
    subscriptions: BTreeMap<usize, Subscription>,
    pending_subscribes: BTreeMap<u16, (usize, QoS)>,
    pending_unsubscribes: BTreeSet<u16>,
    /// The epoch in which a queue overflow of this client's session was seen.
    queue_drop_epoch: Option<u32>,
}

/// An owned copy of what a client event said.
#[derive(Debug)]
enum Observed {
    Connected {
        session_present: bool,
    },
    Refused(ReasonCode),
    Message {
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        packet_id: Option<u16>,
        dup: bool,
    },
    Published(u16),
    PublishFailed(u16, ReasonCode),
    Subscribed(u16, Vec<ReasonCode>),
    Unsubscribed(u16),
    Disconnected(ReasonCode),
    SessionLost(u16),
    Pong,
}

impl Observed {
    fn from_event(event: &ClientEvent<'_>) -> Observed {
        match event {
            ClientEvent::Connected { session_present } => Observed::Connected {
                session_present: *session_present,
            },
            ClientEvent::Refused(reason) => Observed::Refused(*reason),
            ClientEvent::Message(publish) => Observed::Message {
                topic: publish.topic.to_string(),
                payload: publish.payload.to_vec(),
                qos: publish.qos,
                packet_id: publish.packet_id.map(|id| id.get()),
                dup: publish.dup,
            },
            ClientEvent::Published { packet_id } => Observed::Published(packet_id.get()),
            ClientEvent::PublishFailed { packet_id, reason } => {
                Observed::PublishFailed(packet_id.get(), *reason)
            }
            ClientEvent::Subscribed {
                packet_id,
                reason_codes,
            } => Observed::Subscribed(packet_id.get(), reason_codes.iter().collect()),
            ClientEvent::Unsubscribed { packet_id, .. } => Observed::Unsubscribed(packet_id.get()),
            ClientEvent::Disconnected { reason, .. } => Observed::Disconnected(*reason),
            ClientEvent::SessionLost { packet_id } => Observed::SessionLost(packet_id.get()),
            ClientEvent::Pong => Observed::Pong,
        }
    }
}

/// How a connection ends, from the world's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkEnd {
    /// The transport breaks: bytes in transit are lost.
    Abrupt,
    /// The client is done (DISCONNECT sent, or a fatal error): what it still has to send
    /// goes out, then the transport closes.
    ClientClosed,
    /// The broker closed it and the client has read everything: end of stream.
    BrokerClosed,
}

/// The simulated world. See the [module documentation](self).
pub(crate) struct World {
    profile: Profile,
    seed: u64,
    rng: Rng,
    now: Instant,
    step: u64,
    /// A counter of observable events (publish calls, SUBACKs, shard messages handled,
    /// acknowledgements, restarts): the oracle's notion of "before".
    tick: u64,
    config: BrokerConfig,
    store: Rc<RefCell<MemoryStorage>>,
    shards: Vec<Broker>,
    channels: Vec<Channel>,
    /// Restarts so far.
    generation: u32,
    /// Which client (and which of its links) each open broker connection belongs to.
    owners: BTreeMap<(u16, ConnectionId), (usize, u64)>,
    /// Connections the broker reported ready (`poll_ready`) and the world has not emptied
    /// since: only those are polled for bytes, as a runtime would.
    ready: BTreeSet<(u16, ConnectionId)>,
    next_serial: u64,
    clients: Vec<SimClient>,
    matches: MatchTable,
    oracle: Oracle,
    /// `(shard, message)`: a forwarded copy of the message was handed to that shard.
    arrivals: BTreeSet<(u16, MessageId)>,
    /// `(shard, message)` → the subscribers there (and their session epochs) that were
    /// owed the message when it was acknowledged, before it arrived there.
    awaiting_arrival: BTreeMap<(u16, MessageId), Vec<(usize, u32)>>,
    socket_capacity: usize,
    log: VecDeque<String>,
    log_capacity: usize,
    watch: BTreeSet<usize>,
    summary: Summary,
    scratch: BytesMut,
    tx_scratch: Vec<u8>,
}

impl World {
    pub(crate) fn new(profile: Profile, seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let queue_qos0_offline = rng.chance(500);
        let server = if profile.bounded_memory {
            ServerConfig {
                receive_maximum: 16,
                max_outbound_buffer: 128,
                queue: QueueLimits {
                    max_messages: 4,
                    max_bytes: 256,
                    queue_qos0_offline,
                },
                ..ServerConfig::default()
            }
        } else {
            ServerConfig {
                receive_maximum: 16,
                max_outbound_buffer: 1024,
                queue: QueueLimits {
                    max_messages: 1 << 20,
                    max_bytes: 1 << 30,
                    queue_qos0_offline,
                },
                ..ServerConfig::default()
            }
        };
        let config = BrokerConfig {
            server: Arc::new(server),
            shard_count: profile.shards,
            ..BrokerConfig::default()
        };
        let store = Rc::new(RefCell::new(MemoryStorage::new()));
        let mut clients = Vec::with_capacity(profile.clients);
        for index in 0..profile.clients.min(MAX_CLIENTS) {
            let id = client_id(index);
            let version = if rng.chance(400) {
                ProtocolVersion::V311
            } else {
                ProtocolVersion::V5
            };
            let persistence = match rng.below(10) {
                0 | 1 => Persistence::Clean,
                2 if version.is_v5() => Persistence::Fickle,
                3 if version.is_v5() => Persistence::Persistent { expiry: 600 },
                4 if version.is_v5() => Persistence::Persistent { expiry: 86_400 },
                _ => Persistence::Persistent { expiry: u32::MAX },
            };
            let receive_maximum = *rng.pick(&[2u16, 4, 8, 32, 128]);
            let expiry = match persistence {
                Persistence::Clean => 0,
                Persistence::Persistent { expiry } => expiry,
                Persistence::Fickle => u32::MAX,
            };
            let options = client_options(
                id,
                version,
                persistence == Persistence::Clean,
                expiry,
                receive_maximum,
            );
            clients.push(SimClient {
                id,
                version,
                persistence,
                receive_maximum,
                shard: owner_shard(id, profile.shards),
                mqtt: Box::new(MqttClient::new(options)),
                link: None,
                zombies: Vec::new(),
                inbox: Vec::new(),
                slowness: Slowness::Normal,
                // Everyone connects within the first few steps.
                reconnect_at: Some(rng.below(4)),
                session: SessionModel::Absent,
                epoch: 0,
                next_seq: 0,
                in_flight: BTreeMap::new(),
                subscriptions: BTreeMap::new(),
                pending_subscribes: BTreeMap::new(),
                pending_unsubscribes: BTreeSet::new(),
                queue_drop_epoch: None,
            });
        }
        let mut world = World {
            profile,
            seed,
            rng,
            now: Instant::ZERO,
            step: 0,
            tick: 0,
            config,
            store,
            shards: Vec::new(),
            channels: Vec::new(),
            generation: 0,
            owners: BTreeMap::new(),
            ready: BTreeSet::new(),
            next_serial: 0,
            oracle: Oracle::new(clients.len()),
            clients,
            matches: MatchTable::new(),
            arrivals: BTreeSet::new(),
            awaiting_arrival: BTreeMap::new(),
            socket_capacity: if profile.bounded_memory {
                SOCKET_CAPACITY / 4
            } else {
                SOCKET_CAPACITY
            },
            log: VecDeque::new(),
            log_capacity: std::env::var("SIM_LOG")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(LOG_TAIL),
            watch: std::env::var("SIM_WATCH")
                .unwrap_or_default()
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect(),
            summary: Summary::default(),
            scratch: BytesMut::new(),
            tx_scratch: vec![0; 4096],
        };
        world.start_shards();
        world
    }

    /// The last actions, oldest first, for a failure report.
    pub(crate) fn log_tail(&self) -> Vec<String> {
        self.log.iter().cloned().collect()
    }

    /// The step being run.
    pub(crate) fn step_number(&self) -> u64 {
        self.step
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether `SIM_WATCH` (client indexes, comma-separated) asks for this client's details
    /// in the log: every message it receives, and its stored session at each restart.
    fn watched(&self, c: usize) -> bool {
        self.watch.contains(&c)
    }

    fn broker_drops(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.stats().deliveries_dropped)
            .sum()
    }

    fn note(&mut self, text: String) {
        if self.log.len() >= self.log_capacity {
            self.log.pop_front();
        }
        let line = format!("step {} t={:?}: {text}", self.step, self.now);
        let mut hash = self.summary.fingerprint ^ 0xcbf2_9ce4_8422_2325;
        for byte in line.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.summary.fingerprint = hash;
        self.log.push_back(line);
    }

    /// Runs every step, with quiescence phases, and returns the summary.
    pub(crate) fn run(&mut self) -> Result<Summary, String> {
        for _ in 0..self.profile.steps {
            self.step()?;
            if self.profile.heal_every > 0 && self.step % self.profile.heal_every == 0 {
                self.heal()?;
            }
        }
        if self.profile.heal_every == 0 || self.step % self.profile.heal_every != 0 {
            self.heal()?;
        }
        let mut summary = self.summary.clone();
        summary.steps = self.step;
        summary.broker_drops += self.broker_drops();
        summary.oracle = format!("{:?}", self.oracle.stats);
        Ok(summary)
    }

    // -----------------------------------------------------------------------------------------
    // Steps and actions

    fn step(&mut self) -> Result<(), String> {
        self.step += 1;
        self.now = self.now + Duration::from_millis(self.rng.range(10, 200));
        self.reconnect_due()?;
        // Actions land between rounds of byte moving, so that drops, takeovers and restarts
        // find exchanges half done.
        let actions = 1 + self.rng.below(4);
        let mut rounds = 0;
        for _ in 0..actions {
            self.random_action()?;
            if rounds < NETWORK_ROUNDS && self.rng.chance(400) {
                self.network_round(false)?;
                rounds += 1;
            }
        }
        for _ in rounds..NETWORK_ROUNDS {
            self.network_round(false)?;
        }
        self.run_timers()?;
        self.check_sessions(false)
    }

    fn random_action(&mut self) -> Result<(), String> {
        let c = self.rng.index(self.clients.len());
        match self.rng.below(1000) {
            0..=549 => self.publish(c),
            550..=669 => self.subscribe(c),
            670..=719 => self.unsubscribe(c),
            720..=769 => {
                if self.clients[c].link.is_some() {
                    self.summary.drops += 1;
                    self.note(format!("client {c}: connection drops"));
                    self.end_link(c, LinkEnd::Abrupt)?;
                }
                Ok(())
            }
            770..=799 => self.graceful_disconnect(c),
            800..=819 => self.takeover(c),
            820..=859 => {
                let slowness = match self.rng.below(3) {
                    0 => Slowness::Normal,
                    1 => Slowness::Periodic(self.rng.range(2, 8)),
                    _ => Slowness::Trickle(self.rng.range(1, 16) as usize),
                };
                self.note(format!("client {c}: reads {slowness:?}"));
                self.clients[c].slowness = slowness;
                Ok(())
            }
            860..=994 if self.rng.chance(30) => self.long_pause(),
            860..=994 => {
                let by = Duration::from_millis(self.rng.range(100, 5000));
                self.now = self.now + by;
                self.note(format!("clock advances by {by:?}"));
                self.run_timers()
            }
            _ => {
                let crash = self.rng.chance(600);
                self.restart(crash)
            }
        }
    }

    /// Minutes pass with nothing but keep-alive traffic, in 10-second increments so that
    /// connected clients keep pinging: connections nobody reads (takeover leftovers) time
    /// out, and offline sessions with a 10-minute expiry may end.
    fn long_pause(&mut self) -> Result<(), String> {
        let increments = self.rng.range(6, 70);
        self.note(format!("pause of {} s", increments * 10));
        for _ in 0..increments {
            self.now = self.now + Duration::from_secs(10);
            self.network_round(false)?;
            self.run_timers()?;
        }
        Ok(())
    }

    fn is_connected(&self, c: usize) -> bool {
        let client = &self.clients[c];
        client.mqtt.state() == ConnectionState::Connected
            && client.link.as_ref().is_some_and(|l| l.accepted)
    }

    fn publish(&mut self, c: usize) -> Result<(), String> {
        if !self.is_connected(c) {
            return Ok(());
        }
        let topic = self.rng.index(TOPICS.len());
        let qos = match self.rng.below(10) {
            0..=2 => QoS::AtMostOnce,
            3..=6 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let padding = self.rng.below(48) as usize;
        let client = &mut self.clients[c];
        let tag = PayloadTag {
            publisher: c,
            seq: client.next_seq,
            qos,
            message: self.oracle.next_id(),
        };
        let payload = tag.encode(padding);
        match client
            .mqtt
            .publish(self.now, TOPICS[topic], &payload, qos, false)
        {
            Ok(packet_id) => {
                client.next_seq += 1;
                self.tick += 1;
                let shard = client.shard;
                let id = self.oracle.on_published(MessageRecord {
                    publisher: c,
                    publisher_shard: shard,
                    seq: tag.seq,
                    topic,
                    qos,
                    published_at: self.tick,
                    fate: super::oracle::Fate::Unacknowledged,
                    resent: false,
                });
                if let Some(packet_id) = packet_id {
                    self.clients[c].in_flight.insert(packet_id.get(), id);
                }
                self.note(format!(
                    "client {c}: publish #{id} seq {} {qos:?} to {} (packet {packet_id:?})",
                    tag.seq, TOPICS[topic]
                ));
                self.flush_client(c);
                Ok(())
            }
            Err(ClientError::InflightFull | ClientError::StoreFull | ClientError::BufferFull) => {
                Ok(())
            }
            Err(e) => Err(format!("client {c}: publish refused by the client: {e:?}")),
        }
    }

    fn pick_filter(&mut self) -> usize {
        let total: u64 = FILTERS.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.below(total);
        for (index, (_, weight)) in FILTERS.iter().enumerate() {
            if roll < *weight {
                return index;
            }
            roll -= weight;
        }
        FILTERS.len() - 1
    }

    fn subscribe(&mut self, c: usize) -> Result<(), String> {
        if !self.is_connected(c) {
            return Ok(());
        }
        if self.clients[c].subscriptions.len() >= 3 {
            return self.unsubscribe(c);
        }
        let filter = self.pick_filter();
        let qos = match self.rng.below(3) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let client = &mut self.clients[c];
        let request = [SubscribeFilter {
            filter: FILTERS[filter].0,
            options: SubscriptionOptions::qos(qos),
        }];
        match client.mqtt.subscribe(self.now, &request) {
            Ok(packet_id) => {
                // A subscription being replaced no longer counts from now: whether the
                // broker has the old or the new one is unknown until the SUBACK.
                client.subscriptions.remove(&filter);
                client
                    .pending_subscribes
                    .insert(packet_id.get(), (filter, qos));
                self.note(format!(
                    "client {c}: subscribe {} {qos:?} (packet {})",
                    FILTERS[filter].0,
                    packet_id.get()
                ));
                self.flush_client(c);
                Ok(())
            }
            Err(ClientError::InflightFull | ClientError::BufferFull) => Ok(()),
            Err(e) => Err(format!(
                "client {c}: subscribe refused by the client: {e:?}"
            )),
        }
    }

    fn unsubscribe(&mut self, c: usize) -> Result<(), String> {
        if !self.is_connected(c) || self.clients[c].subscriptions.is_empty() {
            return Ok(());
        }
        let filters: Vec<usize> = self.clients[c].subscriptions.keys().copied().collect();
        let filter = *self.rng.pick(&filters);
        let client = &mut self.clients[c];
        match client.mqtt.unsubscribe(self.now, &[FILTERS[filter].0]) {
            Ok(packet_id) => {
                // From the moment the request leaves, the broker may drop the subscription.
                client.subscriptions.remove(&filter);
                client.pending_unsubscribes.insert(packet_id.get());
                self.note(format!("client {c}: unsubscribe {}", FILTERS[filter].0));
                self.flush_client(c);
                Ok(())
            }
            Err(ClientError::InflightFull | ClientError::BufferFull) => Ok(()),
            Err(e) => Err(format!(
                "client {c}: unsubscribe refused by the client: {e:?}"
            )),
        }
    }

    fn graceful_disconnect(&mut self, c: usize) -> Result<(), String> {
        if !self.is_connected(c) {
            return Ok(());
        }
        self.note(format!("client {c}: DISCONNECT"));
        self.clients[c]
            .mqtt
            .disconnect(self.now)
            .map_err(|e| format!("client {c}: disconnect refused: {e:?}"))?;
        self.flush_client(c);
        Ok(())
    }

    /// A second connection with the same client identifier while the first is open (a
    /// device that lost its socket without noticing and reconnects): the first stays open
    /// at the broker, unread, until the broker closes it.
    fn takeover(&mut self, c: usize) -> Result<(), String> {
        if !self.is_connected(c) {
            return Ok(());
        }
        self.summary.takeovers += 1;
        let Some(old) = self.clients[c].link.take() else {
            return Ok(());
        };
        self.note(format!(
            "client {c}: takeover, connection {:?} left open",
            old.id
        ));
        let mut old = old;
        self.session_after_link(c, &old);
        let client = &mut self.clients[c];
        // The stream the broker sent on the old connection, from the first byte the client
        // had not yet taken as a whole packet: what the takeover check decodes.
        let unread: Vec<u8> = client.inbox.drain(..).chain(old.down.drain(..)).collect();
        old.down = unread.into();
        client.zombies.push(old);
        client.mqtt.connection_lost(self.now);
        self.poll_client_events(c)?;
        self.connect(c)
    }

    fn reconnect_due(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            let due = self.clients[c].link.is_none()
                && self.clients[c]
                    .reconnect_at
                    .is_some_and(|at| at <= self.step);
            if due {
                self.connect(c)?;
            }
        }
        Ok(())
    }

    fn schedule_reconnect(&mut self, c: usize) {
        let delay = match self.rng.below(100) {
            0..=79 => self.rng.range(1, 5),
            80..=94 => self.rng.range(5, 40),
            // Long absences let offline queues grow and short sessions expire.
            _ => self.rng.range(40, 200),
        };
        self.clients[c].reconnect_at = Some(self.step + delay);
    }

    /// Opens a connection to the owner shard and sends CONNECT.
    fn connect(&mut self, c: usize) -> Result<(), String> {
        self.summary.connects += 1;
        let now = self.now;
        let client = &mut self.clients[c];
        client.reconnect_at = None;
        // A CONNACK that says "new session" can be lost (a crash, a drop), and a later one
        // then calls that new session "present": a client that kept in-flight publishes or
        // exactly-once markers would carry them into a session that never knew them (the
        // marker is never released, and swallows the next message with its identifier; a
        // QoS 2 publish re-sent there is routed a second time). MQTT leaves this to the
        // application: one that may have outlived its session, and holds such state, starts
        // clean. The margin covers a CONNECT that reaches the broker a round later.
        let may_have_ended = |until: Option<Instant>| {
            until.is_some_and(|until| now + Duration::from_secs(60) >= until)
        };
        let session_may_be_gone = match client.session {
            SessionModel::Absent => true,
            SessionModel::Present { until } => may_have_ended(until),
            SessionModel::Unknown {
                until,
                maybe_replaced,
            } => maybe_replaced || may_have_ended(until),
        };
        let holds_state = client.mqtt.packet_ids_in_use() > 0 || client.mqtt.incoming_qos2() > 0;
        let clean_start =
            client.persistence == Persistence::Clean || (session_may_be_gone && holds_state);
        if client.persistence == Persistence::Fickle
            && client.mqtt.packet_ids_in_use() == 0
            && client.mqtt.incoming_qos2() == 0
        {
            // A new client object is the only way to change the expiry the client asks
            // for; it is safe only when the old one holds no session state.
            let expiry = *self.rng.pick(&[0u32, 600, u32::MAX]);
            let options = client_options(
                client.id,
                client.version,
                false,
                expiry,
                client.receive_maximum,
            );
            *client.mqtt = MqttClient::new(options);
        }
        let client = &mut self.clients[c];
        client.mqtt.set_clean_start(clean_start);
        // 5.0 asks for an expiry whatever the clean start; 3.1.1's clean session decides it.
        let expiry = match (client.version, clean_start) {
            (ProtocolVersion::V311, true) => 0,
            (ProtocolVersion::V311, false) => u32::MAX,
            _ => client.mqtt.options().session_expiry_interval,
        };
        client
            .mqtt
            .connect(self.now)
            .map_err(|e| format!("client {c}: connect refused by the client: {e:?}"))?;
        let shard = client.shard;
        let serial = self.next_serial;
        self.next_serial += 1;
        let id = self.shards[usize::from(shard)].open(self.now, None);
        self.owners.insert((shard, id), (c, serial));
        self.clients[c].link = Some(Link {
            serial,
            shard,
            id,
            up: VecDeque::new(),
            down: VecDeque::new(),
            broker_closed: false,
            closed_at: None,
            accepted: false,
            clean_start,
            expiry,
        });
        self.note(format!(
            "client {c} ({}, {:?}): connects to shard {shard} as {id:?}, clean {clean_start}, \
             expiry {expiry}",
            self.clients[c].id, self.clients[c].version
        ));
        self.collect(shard);
        self.poll_client_events(c)?;
        self.flush_client(c);
        Ok(())
    }

    /// What a connection's end means for the session, as far as the client can tell.
    fn session_after_link(&mut self, c: usize, link: &Link) {
        // The broker may have closed the connection before the client noticed (a keep-alive
        // timeout read late by a slow reader): expiry counts from the earlier moment.
        let end = link.closed_at.unwrap_or(self.now);
        for &id in self.clients[c].in_flight.values() {
            self.oracle.on_in_flight_at_disconnect(id);
        }
        let until = match link.expiry {
            0 => Some(end),
            u32::MAX => None,
            expiry => Some(end + Duration::from_secs(u64::from(expiry))),
        };
        let client = &mut self.clients[c];
        client.session = if link.accepted {
            if link.expiry == 0 {
                SessionModel::Absent
            } else {
                SessionModel::Present { until }
            }
        } else {
            // The CONNECT was handled or not. Handled, it resumed the session (and detached
            // it again at `end`), or created a new one if the old had ended by then (or if
            // it asked for a clean start, or for expiry 0, which ends the session at `end`).
            let (before, replaced_before) = match client.session {
                SessionModel::Absent => (until, true),
                SessionModel::Present { until } => (until, false),
                SessionModel::Unknown {
                    until,
                    maybe_replaced,
                } => (until, maybe_replaced),
            };
            let maybe_replaced = replaced_before
                || link.clean_start
                || link.expiry == 0
                || before.is_some_and(|before| end >= before);
            let until = match (before, until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            SessionModel::Unknown {
                until,
                maybe_replaced,
            }
        };
    }

    /// Ends the client's current connection.
    fn end_link(&mut self, c: usize, how: LinkEnd) -> Result<(), String> {
        if how == LinkEnd::ClientClosed {
            // What the client still had to say (DISCONNECT, acknowledgements) goes out
            // before the transport closes.
            self.flush_client(c);
            let pending: Option<(u16, ConnectionId, Vec<u8>)> =
                self.clients[c].link.as_mut().and_then(|link| {
                    (!link.broker_closed)
                        .then(|| (link.shard, link.id, link.up.drain(..).collect()))
                });
            if let Some((shard, id, bytes)) = pending {
                if !bytes.is_empty() {
                    self.with_shard(shard, |b, now| b.handle_bytes(now, id, &bytes));
                }
            }
        }
        let Some(link) = self.clients[c].link.take() else {
            return Ok(());
        };
        if !link.broker_closed {
            self.with_shard(link.shard, |b, now| b.connection_lost(now, link.id));
        }
        self.session_after_link(c, &link);
        let client = &mut self.clients[c];
        client.mqtt.connection_lost(self.now);
        client.inbox.clear();
        self.poll_client_events(c)?;
        self.schedule_reconnect(c);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // The runtime's side: shards, channels, timers

    fn start_shards(&mut self) {
        let count = self.profile.shards;
        self.shards = (0..count)
            .map(|index| {
                Broker::new(
                    BrokerConfig {
                        shard_index: index,
                        ..self.config.clone()
                    },
                    Box::new(AllowAll),
                    Box::new(SharedStore(self.store.clone())),
                )
            })
            .collect();
        self.channels = (0..usize::from(count) * usize::from(count))
            .map(|_| Channel::default())
            .collect();
    }

    /// Calls the broker of `shard`, then collects what it produced for other shards and
    /// the connections it closed.
    fn with_shard(&mut self, shard: u16, f: impl FnOnce(&mut Broker, Instant)) {
        f(&mut self.shards[usize::from(shard)], self.now);
        self.collect(shard);
    }

    fn collect(&mut self, shard: u16) {
        let count = usize::from(self.profile.shards);
        let broker = &mut self.shards[usize::from(shard)];
        while let Some((target, message)) = broker.poll_shard_message() {
            let channel = &mut self.channels[usize::from(shard) * count + usize::from(target)];
            channel.queue.push_back(message);
            channel.sent += 1;
        }
        while let Some(id) = broker.poll_closed() {
            if let Some((c, serial)) = self.owners.remove(&(shard, id)) {
                let client = &mut self.clients[c];
                let link = client
                    .link
                    .iter_mut()
                    .chain(client.zombies.iter_mut())
                    .find(|l| l.serial == serial);
                if let Some(link) = link {
                    // The last bytes (a DISCONNECT) go out before the transport closes.
                    loop {
                        self.scratch.clear();
                        if broker.poll_transmit(self.now, id, &mut self.scratch) == 0 {
                            break;
                        }
                        link.down.extend(self.scratch.iter());
                    }
                    link.broker_closed = true;
                    link.closed_at = Some(self.now);
                }
            }
            broker.release(id);
        }
        // A runtime polls only the connections the broker reports ready; so does the world.
        while let Some(id) = broker.poll_ready() {
            self.ready.insert((shard, id));
        }
    }

    /// Carries shard messages: each channel hands its target some (or all) of its
    /// messages, in order.
    fn deliver_shard_messages(&mut self, everything: bool) -> bool {
        let count = usize::from(self.profile.shards);
        let mut moved = false;
        for index in 0..self.channels.len() {
            let waiting = self.channels[index].queue.len();
            if waiting == 0 {
                continue;
            }
            // Channels lag now and then, so that a crash finds publishes between shards.
            let take = if everything || self.rng.chance(400) {
                waiting
            } else if self.rng.chance(500) {
                0
            } else {
                self.rng.below(waiting as u64 + 1) as usize
            };
            let target = (index % count) as u16;
            for _ in 0..take {
                let Some(message) = self.channels[index].queue.pop_front() else {
                    break;
                };
                self.tick += 1;
                let tick = self.tick;
                self.channels[index].delivered_at.push(tick);
                let arriving = match &message {
                    ShardMessage::Publish { message: m, .. } => PayloadTag::decode(&m.payload),
                    _ => None,
                };
                self.with_shard(target, |b, now| b.handle_shard_message(now, message));
                if let Some(tag) = arriving {
                    self.on_arrival(target, tag.message);
                }
                moved = true;
            }
        }
        moved
    }

    fn run_timers(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            let due = self.clients[c]
                .mqtt
                .poll_timeout()
                .is_some_and(|at| at <= self.now);
            if !due || self.clients[c].link.is_none() {
                continue;
            }
            match self.clients[c].mqtt.handle_timeout(self.now) {
                Ok(()) | Err(ClientError::BufferFull) => self.flush_client(c),
                Err(ClientError::Timeout) => {
                    self.summary.client_timeouts += 1;
                    self.note(format!("client {c}: times out waiting for the broker"));
                    self.end_link(c, LinkEnd::ClientClosed)?;
                }
                Err(e) => return Err(format!("client {c}: handle_timeout failed: {e:?}")),
            }
        }
        for shard in 0..self.profile.shards {
            let due = self.shards[usize::from(shard)]
                .poll_timeout()
                .is_some_and(|at| at <= self.now);
            if due {
                self.with_shard(shard, |b, now| b.handle_timeout(now));
            }
        }
        Ok(())
    }

    /// A broker restart from the store: every shard goes, new ones restore what the store
    /// kept, every connection drops, and clients reconnect over the next steps.
    ///
    /// A crash loses the messages in the channels between shards. Those channels are
    /// memory, and a publish that crossed to another shard was acknowledged once the
    /// publisher's shard had routed it, not once the target shard had stored it: the
    /// copies a crash destroys there are lost. The oracle counts those losses apart
    /// (`excused_crash`) instead of failing on them. A graceful restart (shutdown, then the
    /// channels drained) loses nothing.
    fn restart(&mut self, crash: bool) -> Result<(), String> {
        self.note(format!(
            "broker restart ({})",
            if crash { "crash" } else { "graceful" }
        ));
        if crash {
            self.summary.restarts_crash += 1;
            let count = usize::from(self.profile.shards);
            for index in 0..self.channels.len() {
                let target = (index % count) as u16;
                for message in std::mem::take(&mut self.channels[index].queue) {
                    if let ShardMessage::Publish { message, .. } = message {
                        if let Some(tag) = PayloadTag::decode(&message.payload) {
                            self.oracle.lost_in_crash(target, tag.message);
                        }
                    }
                }
            }
        } else {
            self.summary.restarts_graceful += 1;
            for shard in 0..self.profile.shards {
                self.with_shard(shard, |b, now| b.shutdown(now));
            }
            while self.deliver_shard_messages(true) {}
        }
        self.tick += 1;
        let restart_tick = self.tick;
        // Subscriptions whose interest had not reached every shard will have reached it
        // before any connection is accepted (below): settle them at the restart.
        for c in 0..self.clients.len() {
            let shard = self.clients[c].shard;
            let keys: Vec<usize> = self.clients[c].subscriptions.keys().copied().collect();
            for key in keys {
                for target in 0..self.profile.shards {
                    let settled =
                        self.settled_at(&self.clients[c].subscriptions[&key], shard, target);
                    let subscription = self.clients[c].subscriptions.get_mut(&key).unwrap();
                    subscription.settled[usize::from(target)] =
                        Some(settled.unwrap_or(restart_tick));
                }
            }
        }
        // Every connection is gone; clients notice and come back soon.
        for c in 0..self.clients.len() {
            if let Some(link) = self.clients[c].link.take() {
                self.session_after_link(c, &link);
            }
            let client = &mut self.clients[c];
            client.zombies.clear();
            client.inbox.clear();
            client.mqtt.connection_lost(self.now);
            self.poll_client_events(c)?;
            let delay = self.rng.range(1, 10);
            self.clients[c].reconnect_at = Some(self.step + delay);
        }
        self.owners.clear();
        self.ready.clear();
        self.generation += 1;
        self.summary.broker_drops += self.broker_drops();
        self.start_shards();
        let state = self.store.borrow().load();
        for record in &state.sessions {
            let watched = self
                .clients
                .iter()
                .position(|c| c.id == record.session.client_id)
                .filter(|&c| self.watched(c));
            if let Some(c) = watched {
                let session = &record.session;
                let outbound: Vec<(u16, String)> = session
                    .outbound
                    .iter()
                    .map(|o| (o.packet_id.get(), format!("{:?}", o.state)))
                    .collect();
                self.note(format!(
                    "client {c}: restored with exactly-once markers {:?}, in flight {outbound:?}, \
                     {} queued",
                    session.inbound_qos2,
                    session.queue.len()
                ));
            }
        }
        for shard in 0..self.profile.shards {
            let state = state.clone();
            self.with_shard(shard, |b, now| b.restore(now, state));
        }
        // The runtime lets the shards exchange their interests before it accepts
        // connections, as `Broker::restore` asks: a publish must find the subscribers of
        // every shard from the first connection on.
        while self.deliver_shard_messages(true) {}
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Bytes

    /// Moves what the client has to send into its link.
    fn flush_client(&mut self, c: usize) {
        let client = &mut self.clients[c];
        loop {
            let n = client.mqtt.poll_transmit(self.now, &mut self.tx_scratch);
            if n == 0 {
                break;
            }
            if let Some(link) = client.link.as_mut() {
                link.up.extend(&self.tx_scratch[..n]);
            }
        }
    }

    /// One round of byte moving for every client and its zombies, then the shard
    /// channels. `everything`: no chunking, no slow readers (quiescence). Returns whether
    /// anything moved.
    fn network_round(&mut self, everything: bool) -> Result<bool, String> {
        let mut moved = false;
        for c in 0..self.clients.len() {
            moved |= self.client_io(c, everything)?;
            moved |= self.zombie_io(c);
        }
        moved |= self.deliver_shard_messages(everything);
        Ok(moved)
    }

    fn chunk(&mut self, len: usize, everything: bool) -> usize {
        if everything || len <= 1 || self.rng.chance(700) {
            len
        } else {
            self.rng.range(1, len as u64) as usize
        }
    }

    /// Client → broker: some of the bytes in transit, in one or a few pieces, while the
    /// broker wants to read.
    fn deliver_up(&mut self, c: usize, zombie: Option<usize>, everything: bool) -> bool {
        let mut moved = false;
        for _ in 0..3 {
            let client = &self.clients[c];
            let link = match zombie {
                Some(z) => &client.zombies[z],
                None => match client.link.as_ref() {
                    Some(link) => link,
                    None => return moved,
                },
            };
            if link.broker_closed || link.up.is_empty() {
                return moved;
            }
            let (shard, id, len) = (link.shard, link.id, link.up.len());
            if !self.shards[usize::from(shard)].wants_read(id) {
                return moved;
            }
            let n = self.chunk(len, everything);
            let client = &mut self.clients[c];
            let link = match zombie {
                Some(z) => &mut client.zombies[z],
                None => client.link.as_mut().unwrap(),
            };
            let bytes: Vec<u8> = link.up.drain(..n).collect();
            self.with_shard(shard, |b, now| b.handle_bytes(now, id, &bytes));
            moved = true;
        }
        moved
    }

    /// Broker → socket, while the socket has room; checks the outbound buffer bound.
    fn take_from_broker(&mut self, c: usize, zombie: Option<usize>) -> Result<bool, String> {
        let client = &self.clients[c];
        let link = match zombie {
            Some(z) => &client.zombies[z],
            None => match client.link.as_ref() {
                Some(link) => link,
                None => return Ok(false),
            },
        };
        if link.broker_closed || link.down.len() >= self.socket_capacity {
            return Ok(false);
        }
        let (shard, id) = (link.shard, link.id);
        if !self.ready.remove(&(shard, id)) {
            return Ok(false);
        }
        self.scratch.clear();
        let n = self.shards[usize::from(shard)].poll_transmit(self.now, id, &mut self.scratch);
        // The refill inside poll_transmit is an input of its own (it may have been stored).
        self.collect(shard);
        if n == 0 {
            return Ok(false);
        }
        self.summary.max_outbound_seen = self.summary.max_outbound_seen.max(n);
        let bound = self.config.server.max_outbound_buffer + OUTBOUND_SLACK;
        if n > bound {
            return Err(format!(
                "client {c}: the broker buffered {n} bytes for one connection, over the bound \
                 {bound}"
            ));
        }
        let client = &mut self.clients[c];
        let link = match zombie {
            Some(z) => &mut client.zombies[z],
            None => client.link.as_mut().unwrap(),
        };
        link.down.extend(self.scratch.iter());
        Ok(true)
    }

    fn client_io(&mut self, c: usize, everything: bool) -> Result<bool, String> {
        self.flush_client(c);
        if self.clients[c].link.is_none() {
            return Ok(false);
        }
        if self.clients[c].mqtt.state() == ConnectionState::Closing {
            self.end_link(c, LinkEnd::ClientClosed)?;
            return Ok(true);
        }
        let mut moved = self.deliver_up(c, None, everything);
        moved |= self.take_from_broker(c, None)?;
        // Socket → client, as fast as this reader reads.
        let waiting = self.clients[c].link.as_ref().map_or(0, |l| l.down.len());
        let n = match (everything, self.clients[c].slowness) {
            (_, _) if waiting == 0 => 0,
            (true, _) | (false, Slowness::Normal) => self.chunk(waiting, everything),
            (false, Slowness::Periodic(every)) => {
                if self.step % every == 0 {
                    waiting
                } else {
                    0
                }
            }
            (false, Slowness::Trickle(most)) => {
                waiting.min(self.rng.range(1, most as u64) as usize)
            }
        };
        if n > 0 {
            let client = &mut self.clients[c];
            let link = client.link.as_mut().unwrap();
            client.inbox.extend(link.down.drain(..n));
            moved = true;
        }
        self.process_inbox(c)?;
        self.flush_client(c);
        let at_end = self.clients[c]
            .link
            .as_ref()
            .is_some_and(|l| l.broker_closed && l.down.is_empty());
        if at_end {
            self.end_link(c, LinkEnd::BrokerClosed)?;
            moved = true;
        }
        Ok(moved)
    }

    /// A connection left open by a takeover: its remaining bytes still reach the broker,
    /// and the broker's bytes fill its socket, which nobody reads.
    fn zombie_io(&mut self, c: usize) -> bool {
        let mut moved = false;
        for z in 0..self.clients[c].zombies.len() {
            moved |= self.deliver_up(c, Some(z), false);
            // The world's own bound checks apply to zombies as well.
            moved |= self.take_from_broker(c, Some(z)).unwrap_or(false);
        }
        moved
    }

    // -----------------------------------------------------------------------------------------
    // The client's side

    /// Feeds the client every complete packet of its inbox, one per call as its API asks.
    fn process_inbox(&mut self, c: usize) -> Result<(), String> {
        let mut inbox = std::mem::take(&mut self.clients[c].inbox);
        let mut offset = 0;
        let result = loop {
            let client = &mut self.clients[c];
            if client.mqtt.state() == ConnectionState::Disconnected || offset == inbox.len() {
                break Ok(());
            }
            match client.mqtt.handle_bytes(self.now, &inbox[offset..]) {
                Ok(received) if received.needs_more() => break Ok(()),
                Ok(received) => {
                    offset += received.consumed;
                    let observed = received.event.as_ref().map(Observed::from_event);
                    self.flush_client(c);
                    if let Some(observed) = observed {
                        if let Err(e) = self.apply(c, observed) {
                            break Err(e);
                        }
                    }
                    if let Err(e) = self.poll_client_events(c) {
                        break Err(e);
                    }
                }
                Err(ClientError::BufferFull) => {
                    let before = client.mqtt.pending_transmit();
                    self.flush_client(c);
                    if self.clients[c].mqtt.pending_transmit() == before {
                        break Err(format!(
                            "client {c}: transmit queue full and nothing to send"
                        ));
                    }
                }
                Err(ClientError::Protocol(ReasonCode::ReceiveMaximumExceeded))
                    if client.version == ProtocolVersion::V311 =>
                {
                    // 3.1.1 has no Receive Maximum: the broker cannot know how many QoS 2
                    // messages awaiting PUBREL the client can track. Counted, and the client
                    // reconnects; the broker re-sends.
                    self.summary.v311_overruns += 1;
                    self.note(format!("client {c}: 3.1.1 QoS 2 overrun"));
                    offset = inbox.len();
                }
                Err(e) => {
                    break Err(format!(
                        "client {c} ({:?}): the broker's bytes broke the client: {e:?}",
                        client.version
                    ))
                }
            }
        };
        inbox.drain(..offset.min(inbox.len()));
        if self.clients[c].link.is_some() {
            self.clients[c].inbox = inbox;
        }
        result
    }

    fn poll_client_events(&mut self, c: usize) -> Result<(), String> {
        while let Some(event) = self.clients[c].mqtt.poll_event() {
            let observed = Observed::from_event(&event);
            self.apply(c, observed)?;
        }
        Ok(())
    }

    /// What a client event means for the world and the oracle.
    fn apply(&mut self, c: usize, observed: Observed) -> Result<(), String> {
        match observed {
            Observed::Connected { session_present } => self.on_connack(c, session_present),
            Observed::Refused(reason) => Err(format!("client {c}: connection refused: {reason:?}")),
            Observed::Message {
                topic,
                payload,
                qos,
                packet_id,
                dup,
            } => {
                let Some(tag) = PayloadTag::decode(&payload) else {
                    return Err(format!("client {c}: unreadable payload {payload:?}"));
                };
                if self.watched(c) {
                    self.note(format!(
                        "client {c}: got #{} {qos:?} packet {packet_id:?} dup {dup}",
                        tag.message
                    ));
                }
                if let Some(record) =
                    (tag.message < self.oracle.next_id()).then(|| self.oracle.message(tag.message))
                {
                    if TOPICS[record.topic] != topic {
                        return Err(format!(
                            "client {c}: message {} arrived on {topic}, published to {}",
                            tag.message, TOPICS[record.topic]
                        ));
                    }
                }
                self.oracle.on_copy(c, tag, qos)
            }
            Observed::Published(packet_id) => {
                let Some(id) = self.clients[c].in_flight.remove(&packet_id) else {
                    return Err(format!(
                        "client {c}: completion for packet {packet_id}, not in flight"
                    ));
                };
                self.tick += 1;
                self.oracle.on_acknowledged(id, self.tick)?;
                self.require_deliveries(id);
                Ok(())
            }
            Observed::PublishFailed(packet_id, reason) => Err(format!(
                "client {c}: publish {packet_id} refused with {reason:?}"
            )),
            Observed::Subscribed(packet_id, codes) => {
                let Some((filter, asked)) = self.clients[c].pending_subscribes.remove(&packet_id)
                else {
                    return Err(format!("client {c}: SUBACK for unknown packet {packet_id}"));
                };
                let granted = match codes.as_slice() {
                    [ReasonCode::Success] => QoS::AtMostOnce,
                    [ReasonCode::GrantedQoS1] => QoS::AtLeastOnce,
                    [ReasonCode::GrantedQoS2] => QoS::ExactlyOnce,
                    other => {
                        return Err(format!("client {c}: SUBACK with {other:?}"));
                    }
                };
                if granted != asked {
                    return Err(format!(
                        "client {c}: asked for {asked:?}, granted {granted:?}"
                    ));
                }
                self.tick += 1;
                let shard = usize::from(self.clients[c].shard);
                let count = usize::from(self.profile.shards);
                let watermark = (0..count)
                    .map(|target| self.channels[shard * count + target].sent)
                    .collect();
                self.clients[c].subscriptions.insert(
                    filter,
                    Subscription {
                        qos: granted,
                        acked_at: self.tick,
                        generation: self.generation,
                        watermark,
                        settled: vec![None; count],
                    },
                );
                Ok(())
            }
            Observed::Unsubscribed(packet_id) => {
                if !self.clients[c].pending_unsubscribes.remove(&packet_id) {
                    return Err(format!(
                        "client {c}: UNSUBACK for unknown packet {packet_id}"
                    ));
                }
                Ok(())
            }
            Observed::Disconnected(reason) => {
                self.note(format!(
                    "client {c}: DISCONNECT from the broker: {reason:?}"
                ));
                match reason {
                    // A clock jump past one and a half keep-alive periods, and shutdown.
                    ReasonCode::KeepAliveTimeout | ReasonCode::ServerShuttingDown => Ok(()),
                    other => Err(format!("client {c}: disconnected by the broker: {other:?}")),
                }
            }
            Observed::SessionLost(packet_id) => {
                let client = &mut self.clients[c];
                if let Some(id) = client.in_flight.remove(&packet_id) {
                    self.oracle.on_abandoned(id);
                } else if client.pending_subscribes.remove(&packet_id).is_none()
                    && !client.pending_unsubscribes.remove(&packet_id)
                {
                    return Err(format!(
                        "client {c}: lost request {packet_id} that was never made"
                    ));
                }
                Ok(())
            }
            Observed::Pong => Ok(()),
        }
    }

    /// A CONNACK accepted the client's connection: checks the session against what the
    /// client could expect, and that a takeover closed the connection it replaced.
    fn on_connack(&mut self, c: usize, session_present: bool) -> Result<(), String> {
        let now = self.now;
        let client = &mut self.clients[c];
        let Some(link) = client.link.as_mut() else {
            return Err(format!("client {c}: CONNACK without a connection"));
        };
        link.accepted = true;
        let clean_start = link.clean_start;
        self.note(format!(
            "client {c}: CONNACK, session present {session_present}, model {:?}",
            self.clients[c].session
        ));
        let client = &mut self.clients[c];
        if !clean_start {
            match client.session {
                SessionModel::Absent if session_present => {
                    return Err(format!(
                        "client {c}: a session that ended with its connection (expiry 0) was \
                         resumed"
                    ));
                }
                SessionModel::Present { until }
                    if !session_present && until.is_none_or(|until| now < until) =>
                {
                    return Err(format!(
                        "client {c}: session lost before its expiry ({until:?})"
                    ));
                }
                _ => {}
            }
        }
        let maybe_new = matches!(
            client.session,
            SessionModel::Unknown {
                maybe_replaced: true,
                ..
            }
        );
        if !session_present || maybe_new {
            client.epoch += 1;
            client.subscriptions.clear();
        }
        client.session = SessionModel::Present { until: None };
        // [MQTT-3.1.4-3]: the connection a takeover replaced is closed, a 5.0 one with
        // DISCONNECT 0x8E (or earlier, 0x8D, if its keep-alive ran out first).
        for zombie in std::mem::take(&mut client.zombies) {
            self.summary.takeovers_verified += 1;
            if !zombie.broker_closed {
                return Err(format!(
                    "client {c}: connection {:?} still open after a new connection took the \
                     session over",
                    zombie.id
                ));
            }
            if client.version.is_v5() {
                let last = last_packet_reason(client.version, &zombie.down)
                    .map_err(|e| format!("client {c}: old connection's bytes: {e}"))?;
                if !matches!(
                    last,
                    Some(ReasonCode::SessionTakenOver | ReasonCode::KeepAliveTimeout)
                ) {
                    return Err(format!(
                        "client {c}: connection taken over ended with {last:?}, not DISCONNECT \
                         0x8E"
                    ));
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Invariants

    /// The tick from which the shard `to` forwards its publishers' messages to this
    /// subscription of a client on shard `from`, if it does yet.
    fn settled_at(&self, subscription: &Subscription, from: u16, to: u16) -> Option<u64> {
        if from == to || self.profile.shards == 1 {
            return Some(subscription.acked_at);
        }
        if let Some(at) = subscription.settled[usize::from(to)] {
            return Some(at);
        }
        if subscription.generation != self.generation {
            return None;
        }
        let count = usize::from(self.profile.shards);
        let channel = &self.channels[usize::from(from) * count + usize::from(to)];
        match subscription.watermark[usize::from(to)] {
            0 => Some(subscription.acked_at),
            w => channel
                .delivered_at
                .get(w as usize - 1)
                .map(|&at| at.max(subscription.acked_at)),
        }
    }

    /// Whether `subscriber` is owed `record` at QoS 1 or 2 by its subscriptions as they
    /// stand: one matched it from before it was published (and was known to the publisher's
    /// shard by then), at a granted QoS that leaves the message at QoS 1 or 2.
    fn owed(&self, subscriber: &SimClient, record: &MessageRecord) -> bool {
        let mut best: Option<QoS> = None;
        for (&filter, subscription) in &subscriber.subscriptions {
            if !self.matches.get(filter, record.topic) {
                continue;
            }
            let settled = self.settled_at(subscription, subscriber.shard, record.publisher_shard);
            if settled.is_some_and(|at| at < record.published_at) {
                best = best.max(Some(subscription.qos));
            }
        }
        best.is_some_and(|granted| granted.min(record.qos) != QoS::AtMostOnce)
    }

    /// An acknowledged message is owed to every subscriber whose subscription matched it
    /// from before it was published until it was routed to the subscriber's session: at
    /// the acknowledgement on the publisher's shard; on another shard when the forwarded
    /// copy arrives there, which may be after the acknowledgement (an unsubscribe handled
    /// there first wins). Those requirements wait for the arrival ([`World::on_arrival`]);
    /// a copy that never arrives is a failure at quiescence, unless a crash destroyed it.
    fn require_deliveries(&mut self, id: MessageId) {
        let record = self.oracle.message(id).clone();
        let mut owed = Vec::new();
        let mut awaited: Vec<(u16, usize, u32)> = Vec::new();
        for (s, subscriber) in self.clients.iter().enumerate() {
            if !self.owed(subscriber, &record) {
                continue;
            }
            let routed = subscriber.shard == record.publisher_shard
                || self.arrivals.contains(&(subscriber.shard, id));
            if routed {
                owed.push(Requirement {
                    subscriber: s,
                    subscriber_shard: subscriber.shard,
                    epoch: subscriber.epoch,
                    message: id,
                });
            } else {
                awaited.push((subscriber.shard, s, subscriber.epoch));
            }
        }
        for requirement in owed {
            self.oracle.require(requirement);
        }
        for (shard, s, epoch) in awaited {
            self.awaiting_arrival
                .entry((shard, id))
                .or_default()
                .push((s, epoch));
        }
    }

    /// A forwarded copy of `id` reached `shard`: the requirements that waited for it are
    /// decided by the subscriptions as they stand now.
    fn on_arrival(&mut self, shard: u16, id: MessageId) {
        self.arrivals.insert((shard, id));
        if self.awaiting_arrival.remove(&(shard, id)).is_none() {
            return;
        }
        let record = self.oracle.message(id).clone();
        let owed: Vec<Requirement> = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, subscriber)| subscriber.shard == shard && self.owed(subscriber, &record))
            .map(|(s, subscriber)| Requirement {
                subscriber: s,
                subscriber_shard: shard,
                epoch: subscriber.epoch,
                message: id,
            })
            .collect();
        for requirement in owed {
            self.oracle.require(requirement);
        }
    }

    /// Memory stays within the configured limits: each session's queue within its count
    /// and byte limits (and its byte count right). In the strict profiles nothing at QoS 1/2
    /// is dropped at all; in the bounded ones, a queue overflow is noted so that the losses
    /// it causes are excused for that session only. `all`: every session (quiescence);
    /// otherwise a rotating eighth of them, since a session record is a copy of the queue.
    fn check_sessions(&mut self, all: bool) -> Result<(), String> {
        let limits = self.config.server.queue;
        for c in 0..self.clients.len() {
            let sampled = all || self.profile.bounded_memory || (c as u64 + self.step) % 8 == 0;
            if !sampled {
                continue;
            }
            let client = &self.clients[c];
            let Some(record) = self.shards[usize::from(client.shard)].session_record(client.id)
            else {
                continue;
            };
            let session = &record.session;
            let bytes: usize = session.queue.iter().map(|d| d.message.size()).sum();
            if session.queue.len() > limits.max_messages
                || session.queued_bytes > limits.max_bytes
                || bytes != session.queued_bytes
            {
                return Err(format!(
                    "client {c}: session queue over its limits or miscounted: {} messages, {} \
                     bytes counted, {bytes} real, limits {limits:?}",
                    session.queue.len(),
                    session.queued_bytes
                ));
            }
            let dropped = session.dropped;
            if dropped.too_large > 0 || dropped.expired > 0 {
                return Err(format!("client {c}: unexpected drops {dropped:?}"));
            }
            if dropped.queue_full > 0 {
                if !self.profile.bounded_memory {
                    return Err(format!(
                        "client {c}: queue overflow with limits no run can reach: {dropped:?}"
                    ));
                }
                let epoch = client.epoch;
                self.clients[c].queue_drop_epoch = Some(epoch);
            }
        }
        Ok(())
    }

    /// Quiescence: slow readers read, every client reconnects and resumes, and the world
    /// runs without new actions or time until nothing moves. Then every acknowledged QoS 1/2
    /// message must have reached every subscriber still owed it, every publish must be
    /// complete, and every session's queue and in-flight window must be empty.
    pub(crate) fn heal(&mut self) -> Result<(), String> {
        self.summary.heals += 1;
        self.note("quiescence phase".to_string());
        for client in &mut self.clients {
            client.slowness = Slowness::Normal;
        }
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > MAX_HEAL_ROUNDS {
                return Err(format!(
                    "no quiescence after {MAX_HEAL_ROUNDS} rounds: {}",
                    self.describe_busy()
                ));
            }
            for c in 0..self.clients.len() {
                if self.clients[c].link.is_none() {
                    self.connect(c)?;
                }
            }
            let moved = self.network_round(true)?;
            self.run_timers()?;
            if !moved && self.describe_busy().is_empty() {
                break;
            }
        }
        // Nothing may wait in a connection the broker never reported ready: the runtime
        // would never send it.
        for c in 0..self.clients.len() {
            if let Some(link) = self.clients[c].link.as_ref() {
                let (shard, id) = (link.shard, link.id);
                self.scratch.clear();
                let n =
                    self.shards[usize::from(shard)].poll_transmit(self.now, id, &mut self.scratch);
                if n > 0 {
                    return Err(format!(
                        "client {c}: the broker held {n} bytes for it without reporting the \
                         connection ready"
                    ));
                }
            }
        }
        self.check_sessions(true)?;
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            let record = self.shards[usize::from(client.shard)].session_record(client.id);
            let Some(record) = record else {
                return Err(format!("client {c}: connected without a session"));
            };
            if !record.session.queue.is_empty() || !record.session.outbound.is_empty() {
                return Err(format!(
                    "client {c}: at quiescence its session still holds {} queued and {} in \
                     flight",
                    record.session.queue.len(),
                    record.session.outbound.len()
                ));
            }
        }
        // A copy owed to a shard that never got there: lost, unless a crash destroyed it in
        // the channel or every session it was owed to has ended since (a session that does
        // not survive a restart takes its subscriptions, and the shard's interest, along).
        for ((shard, id), owed) in std::mem::take(&mut self.awaiting_arrival) {
            let alive: Vec<usize> = owed
                .iter()
                .filter(|&&(s, epoch)| self.clients[s].epoch == epoch)
                .map(|&(s, _)| s)
                .collect();
            if !alive.is_empty() && !self.oracle.was_lost_in_crash(shard, id) {
                return Err(format!(
                    "message {id} was acknowledged and owed to subscribers {alive:?} on shard \
                     {shard}, but never forwarded there: {:?}",
                    self.oracle.message(id)
                ));
            }
        }
        let epochs: Vec<u32> = self.clients.iter().map(|c| c.epoch).collect();
        let drops: Vec<Option<u32>> = self.clients.iter().map(|c| c.queue_drop_epoch).collect();
        self.oracle
            .check_complete(&epochs, |s| drops[s] == Some(epochs[s]))
    }

    /// Why the world is not quiet yet (empty when it is).
    fn describe_busy(&self) -> String {
        if self.channels.iter().any(|c| !c.queue.is_empty()) {
            return "shard messages in transit".to_string();
        }
        for (c, client) in self.clients.iter().enumerate() {
            let Some(link) = client.link.as_ref() else {
                return format!("client {c} has no connection");
            };
            let busy = !link.accepted
                || link.broker_closed
                || !link.up.is_empty()
                || !link.down.is_empty()
                || !client.inbox.is_empty()
                || !client.zombies.is_empty()
                || client.mqtt.state() != ConnectionState::Connected
                || client.mqtt.pending_transmit() > 0
                || client.mqtt.packet_ids_in_use() > 0
                || client.mqtt.incoming_qos2() > 0;
            if busy {
                return format!(
                    "client {c}: state {:?}, accepted {}, closed {}, up {}, down {}, inbox {}, \
                     zombies {}, ids in use {}, incoming QoS 2 {}",
                    client.mqtt.state(),
                    link.accepted,
                    link.broker_closed,
                    link.up.len(),
                    link.down.len(),
                    client.inbox.len(),
                    client.zombies.len(),
                    client.mqtt.packet_ids_in_use(),
                    client.mqtt.incoming_qos2()
                );
            }
        }
        String::new()
    }
}

/// Options of a simulated client: keep-alive 30 s, a patient response timeout (slow readers
/// see their PINGRESP late), and the session behaviour of its kind.
fn client_options(
    id: &'static str,
    version: ProtocolVersion,
    clean_start: bool,
    expiry: u32,
    receive_maximum: u16,
) -> ClientOptions<'static> {
    let mut options = ClientOptions::new(version, id);
    options.keep_alive = 30;
    options.clean_start = clean_start;
    options.session_expiry_interval = if version.is_v5() { expiry } else { 0 };
    options.receive_maximum = receive_maximum;
    options.response_timeout = Duration::from_secs(60);
    options
}

/// The reason code of the last packet in `bytes` if it is a DISCONNECT (`None` if the
/// stream ends with anything else); an error if the stream does not decode.
fn last_packet_reason(
    version: ProtocolVersion,
    bytes: &VecDeque<u8>,
) -> Result<Option<ReasonCode>, String> {
    let bytes: Vec<u8> = bytes.iter().copied().collect();
    let decoder = Decoder::new(version);
    let mut offset = 0;
    let mut last = None;
    while offset < bytes.len() {
        match decoder.decode(&bytes[offset..]) {
            Ok(Decoded::Packet { packet, len }) => {
                last = match packet {
                    Packet::Disconnect(d) => Some(d.reason_code),
                    _ => None,
                };
                offset += len;
            }
            Ok(Decoded::Incomplete { .. }) => return Err("ends inside a packet".to_string()),
            Err(e) => return Err(format!("malformed: {e:?}")),
        }
    }
    Ok(last)
}
