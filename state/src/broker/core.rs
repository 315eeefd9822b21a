//! The broker core of one shard: connections, sessions, subscriptions, retained messages,
//! wills, and the routing between them.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use bytes::{Bytes, BytesMut};
use petrel_codec::topic::SharedFilter;
use petrel_codec::{
    Decoded, Decoder, PacketId, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubscriptionId,
};

use crate::message::Message;
use crate::server::{
    Accept, CloseInfo, CloseInitiator, ConnectRequest, Delivery, DeliveryOutcome, DropReason,
    OutboundState, ServerConfig, ServerConnection, ServerEvent, Session, SharedPublish,
    SubscribeRequest, UnsubscribeRequest, Will,
};
use crate::time::{Duration, Instant};

use super::hooks::{AuthDecision, ClientInfo, Hooks, PacketDirection, PeerIdentity, Verdict};
use super::limits::{ClientLimits, TokenBucket};
use super::pipeline::{Offer, Pipeline, PipelineTicket};
use super::retained_tree::TopicTree;
use super::shard::{owner_shard, ShardMessage};
use super::storage::{
    Durability, NoStorage, SessionRecord, SessionView, Storage, StoredState, StoredSubscription,
};
use super::trie::SubscriptionTrie;

pub(super) mod admin;

/// Identifies a connection of a broker; stale identifiers (of released connections) are
/// recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId {
    index: u32,
    generation: u32,
}

impl ConnectionId {
    /// A number unique among the broker's open connections (slots are reused).
    pub fn index(self) -> u32 {
        self.index
    }

    /// An identifier outside any broker: the proxy names its connection pairs with these.
    pub(crate) const fn detached(index: u32) -> Self {
        ConnectionId {
            index,
            generation: 0,
        }
    }
}

/// How a shared subscription group picks the member for each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharedPolicy {
    /// Members take turns.
    #[default]
    RoundRobin,
    /// The member with the fewest messages in flight and queued (among members on this
    /// shard; members elsewhere take turns).
    LeastLoaded,
}

/// Broker-wide settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// What every client connection allows and announces.
    pub server: Arc<ServerConfig>,
    /// This shard's number, from 0.
    pub shard_index: u16,
    /// How many shards share the broker's work (1: no sharding).
    pub shard_count: u16,
    /// How shared subscription groups pick members.
    pub shared_policy: SharedPolicy,
    /// Whether a 5.0 PUBACK / PUBREC says 0x10 "no matching subscribers" when nobody got
    /// the message (the specification allows it; some clients log it as a warning).
    pub report_no_subscribers: bool,
    /// Prefix of the client identifiers the server assigns.
    pub assigned_id_prefix: String,
    /// The most retained messages kept; past it new retained topics are not stored.
    pub max_retained: usize,
    /// Publish rate and topic size limits per client.
    pub limits: ClientLimits,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            server: Arc::new(ServerConfig::default()),
            shard_index: 0,
            shard_count: 1,
            shared_policy: SharedPolicy::RoundRobin,
            report_no_subscribers: true,
            assigned_id_prefix: String::from("petrel-"),
            max_retained: 1_000_000,
            limits: ClientLimits::default(),
        }
    }
}

/// Counters of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerStats {
    /// Connections accepted (CONNACK success) since start.
    pub connections_accepted: u64,
    /// Application messages accepted from clients and the inline client.
    pub messages_received: u64,
    /// Deliveries handed to sessions (sent, or queued for later).
    pub deliveries: u64,
    /// Deliveries dropped (queue full, too large, expired, buffer full).
    pub deliveries_dropped: u64,
    /// PUBLISH and SUBSCRIBE refusals by hooks.
    pub refused: u64,
    /// Will messages published.
    pub wills_published: u64,
    /// Sessions that expired.
    pub sessions_expired: u64,
    /// Connections closed with 0x96 for publishing faster than
    /// [`ClientLimits::publish_rate`].
    pub publish_rate_exceeded: u64,
    /// Topic names and filters refused for exceeding the topic level or length limits.
    pub topic_too_large: u64,
    /// Connections closed for sending a packet over the maximum packet size (0x95).
    pub packet_too_large: u64,
    /// Connections closed for exceeding the receive maximum (0x93).
    pub receive_maximum_exceeded: u64,
    /// Messages received, by the QoS they were published at (0, 1, 2).
    pub messages_received_by_qos: [u64; 3],
    /// Payload bytes received, by QoS.
    pub bytes_received_by_qos: [u64; 3],
    /// Deliveries handed to sessions, by the QoS they were delivered at.
    pub deliveries_by_qos: [u64; 3],
    /// Payload bytes handed to sessions, by QoS.
    pub bytes_delivered_by_qos: [u64; 3],
    /// Deliveries dropped, by why.
    pub dropped: DropTally,
}

/// Deliveries dropped, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropTally {
    /// QoS 0 to a connection whose transmit buffer was full (a slow reader).
    pub buffer_full: u64,
    /// The session's queue was at its limit.
    pub queue_full: u64,
    /// Larger than the client's maximum packet size.
    pub too_large: u64,
    /// The message expiry interval had passed.
    pub expired: u64,
}

impl BrokerStats {
    fn count_received(&mut self, message: &Message) {
        self.messages_received += 1;
        let qos = message.qos as usize;
        self.messages_received_by_qos[qos] += 1;
        self.bytes_received_by_qos[qos] += message.payload.len() as u64;
    }
}

type SessionKey = u32;

/// What routing needs of a subscription (the filter is the trie's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubscriptionSpec {
    options: petrel_codec::SubscriptionOptions,
    identifier: Option<u32>,
}

impl SubscriptionSpec {
    fn of(subscription: &StoredSubscription) -> Self {
        SubscriptionSpec {
            options: subscription.options,
            identifier: subscription.identifier,
        }
    }
}

/// An acknowledgement waiting for the store: connection, packet identifier, reason.
type HeldAck = (ConnectionId, PacketId, ReasonCode);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Connection(ConnectionId),
    SessionExpiry(SessionKey),
    Will(SessionKey),
    RetainedSweep,
}

struct ConnState {
    conn: ServerConnection,
    session: Option<SessionKey>,
    client_id: String,
    username: Option<String>,
    remote: Option<String>,
    identity: Option<Box<PeerIdentity>>,
    version: ProtocolVersion,
    will: Option<Box<Will>>,
    /// The CONNECT of an enhanced authentication exchange still under way.
    pending_connect: Option<Box<ConnectRequest>>,
    deadline: Option<Instant>,
    /// Store batches not yet durable that cover bytes in this connection's buffer.
    barrier: u32,
    in_ready: bool,
    closed: bool,
    /// Tokens for the client's PUBLISH packets, when a rate is configured (boxed: without
    /// one, every connection would keep room for it).
    publish_bucket: Option<Box<TokenBucket>>,
    /// The client went over its publish rate: the connection is closing.
    rate_exceeded: bool,
}

struct ConnSlot {
    generation: u32,
    state: Option<Box<ConnState>>,
}

struct SessionEntry {
    client_id: String,
    /// The session while no connection holds it.
    detached: Option<Box<Session>>,
    connection: Option<ConnectionId>,
    subscriptions: SessionSubscriptions,
    pending_will: Option<Box<(Instant, Will)>>,
    expires_at: Option<Instant>,
    /// The store holds a record of this session (it was saved, or restored from there).
    stored: bool,
    /// Its plain subscriptions count in this shard's interest as a session the store keeps
    /// (see [`LocalInterest`]).
    kept: bool,
}

/// This shard's subscriptions to one filter, as the other shards are told of them.
#[derive(Debug, Default)]
struct LocalInterest {
    /// Plain subscriptions, plus one for a shared group this shard owns.
    count: u32,
    /// How many of those are of a session the store keeps (a shared group always counts:
    /// its members may be anywhere). While there are none, a QoS 1/2 message forwarded
    /// here leaves nothing in this shard's store, so the publisher's acknowledgement need
    /// not wait for it.
    kept: u32,
}

struct SharedMember {
    shard: u16,
    client_id: String,
    subscription: StoredSubscription,
}

struct SharedGroup {
    filter: String,
    members: Vec<SharedMember>,
    cursor: usize,
}

/// What the pipeline did with a client's publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piped {
    /// Not the pipeline's (or no pipeline).
    No,
    /// Taken, and routed locally too.
    Local,
    /// Taken (or a QoS 0 publish dropped by a full pipeline), not routed locally.
    Only,
    /// A QoS 1/2 publish the full pipeline could not take: refused.
    Refused,
}

/// What routing a message found, for the PUBACK reason and the hooks.
struct RouteResult {
    receivers: usize,
}

/// One shard of the broker. See the [module documentation](super).
pub struct Broker {
    config: BrokerConfig,
    hooks: Box<dyn Hooks>,
    storage: Box<dyn Storage>,
    conns: Vec<ConnSlot>,
    free_conns: Vec<u32>,
    sessions: Vec<Option<SessionEntry>>,
    free_sessions: Vec<SessionKey>,
    by_client_id: BTreeMap<String, SessionKey>,
    /// Plain subscriptions; the values are small and `Copy` so routing copies no string.
    subscriptions: SubscriptionTrie<SessionKey, SubscriptionSpec>,
    groups: BTreeMap<String, SharedGroup>,
    group_ids: BTreeMap<String, u32>,
    group_names: BTreeMap<u32, String>,
    shared_trie: SubscriptionTrie<u32, ()>,
    next_group_id: u32,
    retained: TopicTree<Arc<Message>>,
    /// Which other shards have subscriptions to a filter; the value says whether one of
    /// them is of a session their store keeps.
    remote_interest: SubscriptionTrie<u16, bool>,
    local_interest: BTreeMap<String, LocalInterest>,
    timers: BTreeSet<(Instant, Timer)>,
    ready: VecDeque<ConnectionId>,
    closing: VecDeque<ConnectionId>,
    shard_out: VecDeque<(u16, ShardMessage)>,
    held_acks: Vec<HeldAck>,
    /// Per pending store batch: the acknowledgements it holds and the connections whose
    /// bytes wait for it.
    awaiting: BTreeMap<u64, (Vec<HeldAck>, Vec<ConnectionId>)>,
    pipeline: Option<Box<dyn Pipeline>>,
    /// Acknowledgements waiting for the pipeline, by ticket.
    piped: BTreeMap<PipelineTicket, (ConnectionId, PacketId)>,
    next_ticket: u64,
    touched_sessions: Touched<SessionKey>,
    touched_conns: Touched<ConnectionId>,
    stats: BrokerStats,
    retained_sweep_scheduled: bool,
    next_assigned_id: u64,
    scratch: Vec<(SessionKey, SubscriptionSpec)>,
    /// The PUBLISH encodings of the message being routed, shared by its deliveries.
    encoded: SharedPublish,
    /// The message being routed goes to more than one session: share its encodings.
    share_encoding: bool,
    /// The shards an input forwarded acknowledged messages to, kept to reuse its allocation.
    forwarded_to: Vec<u16>,
    /// The hooks observe every packet ([`Hooks::observes_packets`]).
    trace_packets: bool,
    /// Packets received and not yet shown to the hooks: they wait for the end of the
    /// connection's input, when its CONNECT has named the client.
    traced: Vec<(ConnectionId, Bytes)>,
}

impl core::fmt::Debug for Broker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Broker")
            .field("shard", &self.config.shard_index)
            .field("sessions", &self.by_client_id.len())
            .field("subscriptions", &self.subscriptions.len())
            .field("retained", &self.retained.len())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker shard with the given hooks and store, and no state.
    pub fn new(config: BrokerConfig, hooks: Box<dyn Hooks>, storage: Box<dyn Storage>) -> Self {
        Broker {
            trace_packets: hooks.observes_packets(),
            traced: Vec::new(),
            config,
            hooks,
            storage,
            conns: Vec::new(),
            free_conns: Vec::new(),
            sessions: Vec::new(),
            free_sessions: Vec::new(),
            by_client_id: BTreeMap::new(),
            subscriptions: SubscriptionTrie::new(),
            groups: BTreeMap::new(),
            group_ids: BTreeMap::new(),
            group_names: BTreeMap::new(),
            shared_trie: SubscriptionTrie::new(),
            next_group_id: 0,
            retained: TopicTree::new(),
            remote_interest: SubscriptionTrie::new(),
            local_interest: BTreeMap::new(),
            timers: BTreeSet::new(),
            ready: VecDeque::new(),
            closing: VecDeque::new(),
            shard_out: VecDeque::new(),
            held_acks: Vec::new(),
            awaiting: BTreeMap::new(),
            pipeline: None,
            piped: BTreeMap::new(),
            next_ticket: 0,
            touched_sessions: Touched::default(),
            touched_conns: Touched::default(),
            stats: BrokerStats::default(),
            retained_sweep_scheduled: false,
            next_assigned_id: 0,
            scratch: Vec::new(),
            encoded: SharedPublish::default(),
            share_encoding: false,
            forwarded_to: Vec::new(),
        }
    }

    /// Loads what a store kept: sessions (detached, expiring from `now`), their
    /// subscriptions and pending wills, and retained messages. Call before opening
    /// connections.
    pub fn restore(&mut self, now: Instant, state: StoredState) {
        for message in state.retained {
            if !message.is_expired(now) {
                self.retained.insert(&message.topic, message.clone());
            }
        }
        for record in state.sessions {
            let mut session = record.session;
            let client_id = session.client_id.clone();
            if self.config.shard_count > 1
                && owner_shard(&client_id, self.config.shard_count) != self.config.shard_index
            {
                continue;
            }
            // Everything in flight is re-sent when the client returns [MQTT-4.4.0-1]. A
            // session that was detached keeps its deadline; one whose connection the restart
            // ended starts counting now.
            session.expires_at = session
                .expires_at
                .or_else(|| expiry_deadline(now, session.expiry_interval));
            let key = self.insert_session(SessionEntry {
                client_id: client_id.clone(),
                detached: None,
                connection: None,
                subscriptions: SessionSubscriptions::default(),
                pending_will: record.pending_will.clone().map(Box::new),
                expires_at: session.expires_at,
                stored: true,
                kept: self.storage.keeps_sessions() && session.expiry_interval > 0,
            });
            if let Some(at) = session.expires_at {
                self.timers.insert((at, Timer::SessionExpiry(key)));
            }
            if let Some((at, _)) = &record.pending_will {
                self.timers.insert((*at, Timer::Will(key)));
            }
            if let Some(entry) = self.sessions[key as usize].as_mut() {
                entry.detached = Some(Box::new(session));
            }
            for subscription in record.subscriptions {
                self.add_subscription(key, &client_id, subscription);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Connections

    /// A new transport connection, waiting for CONNECT. `remote` is the peer's address as
    /// the transport names it, for hooks and logs.
    pub fn open(&mut self, now: Instant, remote: Option<&str>) -> ConnectionId {
        self.open_with_identity(now, remote, None)
    }

    /// A new transport connection whose peer the transport has already identified (a
    /// verified TLS client certificate), waiting for CONNECT. When the identity carries a
    /// user name, it replaces the one the CONNECT gives.
    pub fn open_with_identity(
        &mut self,
        now: Instant,
        remote: Option<&str>,
        identity: Option<PeerIdentity>,
    ) -> ConnectionId {
        let mut conn = ServerConnection::new(self.config.server.clone(), now);
        conn.set_packet_trace(self.trace_packets);
        let deadline = conn.poll_timeout();
        let state = Box::new(ConnState {
            conn,
            session: None,
            client_id: String::new(),
            username: None,
            remote: remote.map(String::from),
            identity: identity.map(Box::new),
            version: ProtocolVersion::V5,
            will: None,
            pending_connect: None,
            deadline,
            barrier: 0,
            in_ready: false,
            closed: false,
            publish_bucket: self
                .config
                .limits
                .publish_rate
                .map(|rate| Box::new(TokenBucket::new(rate, now))),
            rate_exceeded: false,
        });
        let id = match self.free_conns.pop() {
            Some(index) => {
                let slot = &mut self.conns[index as usize];
                slot.state = Some(state);
                ConnectionId {
                    index,
                    generation: slot.generation,
                }
            }
            None => {
                self.conns.push(ConnSlot {
                    generation: 0,
                    state: Some(state),
                });
                ConnectionId {
                    index: (self.conns.len() - 1) as u32,
                    generation: 0,
                }
            }
        };
        if let Some(at) = deadline {
            self.timers.insert((at, Timer::Connection(id)));
        }
        id
    }

    fn conn_mut(&mut self, id: ConnectionId) -> Option<&mut ConnState> {
        let slot = self.conns.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.state.as_deref_mut()
    }

    fn conn(&self, id: ConnectionId) -> Option<&ConnState> {
        let slot = self.conns.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.state.as_deref()
    }

    /// Bytes read from a connection.
    pub fn handle_bytes(&mut self, now: Instant, id: ConnectionId, data: &[u8]) {
        let Some(state) = self.conn_mut(id) else {
            return;
        };
        state.conn.handle_bytes(now, data);
        self.drain(now, id);
        self.end_input(now);
    }

    /// The transport of a connection closed or failed.
    pub fn connection_lost(&mut self, now: Instant, id: ConnectionId) {
        let Some(state) = self.conn_mut(id) else {
            return;
        };
        state.conn.connection_lost(now);
        self.drain(now, id);
        self.end_input(now);
    }

    /// The connection went quiet (its last read was small): gives back the room its
    /// buffers kept for bursts. See [`ServerConnection::release_spare_capacity`].
    pub fn release_spare_capacity(&mut self, id: ConnectionId) {
        if let Some(state) = self.conn_mut(id) {
            state.conn.release_spare_capacity();
        }
    }

    /// Whether the runtime should read from this connection now (backpressure).
    pub fn wants_read(&self, id: ConnectionId) -> bool {
        self.conn(id).is_some_and(|s| s.conn.wants_read())
    }

    /// Moves a connection's bytes to send into `out`; 0 while a store batch covering them
    /// is not yet durable.
    pub fn poll_transmit(&mut self, now: Instant, id: ConnectionId, out: &mut BytesMut) -> usize {
        let Some(state) = self.conn_mut(id) else {
            return 0;
        };
        state.in_ready = false;
        if state.barrier > 0 {
            return 0;
        }
        // The queue's length counts too: a QoS 0 message queued offline leaves the queue
        // without entering the in-flight window, and a store still holding it would send it
        // again after a restart.
        let footprint = |s: &Session| (s.inflight(), s.queue.len());
        let before = state.conn.session().map(footprint);
        let n = state.conn.poll_transmit(now, out);
        let after = state.conn.session().map(footprint);
        let refilled = state.conn.pending_transmit() > 0;
        let session = state.session;
        if refilled {
            // The queue refilled the window: that new in-flight state is stored, and a QoS 2
            // PUBLISH among the bytes waits until it is durable, like any other input's.
            if before != after {
                if let Some(key) = session {
                    self.touched_sessions.insert(key);
                }
            }
            self.touched_conns.insert(id);
            self.end_input(now);
        }
        if self.trace_packets {
            self.trace_sent(id, out, n);
        }
        n
    }

    /// The next connection with bytes to send.
    pub fn poll_ready(&mut self) -> Option<ConnectionId> {
        while let Some(id) = self.ready.pop_front() {
            if let Some(state) = self.conn_mut(id) {
                state.in_ready = false;
                if state.barrier == 0 && state.conn.pending_transmit() > 0 {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The next connection that is over: send what [`Broker::poll_transmit`] still gives,
    /// close the transport, then [`Broker::release`] it.
    ///
    /// A connection whose last bytes (a DISCONNECT, say) wait for a store batch is not
    /// reported until the batch is durable, so that closing it does not drop them.
    pub fn poll_closed(&mut self) -> Option<ConnectionId> {
        let next = self
            .closing
            .iter()
            .position(|&id| self.conn(id).is_none_or(|s| s.barrier == 0))?;
        self.closing.remove(next)
    }

    /// Forgets a closed connection; its identifier becomes stale.
    pub fn release(&mut self, id: ConnectionId) {
        let Some(slot) = self.conns.get_mut(id.index as usize) else {
            return;
        };
        if slot.generation != id.generation || slot.state.is_none() {
            return;
        }
        if slot.state.as_ref().is_some_and(|s| !s.closed) {
            return;
        }
        slot.state = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free_conns.push(id.index);
    }

    /// The number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.iter().filter(|s| s.state.is_some()).count()
    }

    /// The number of sessions (connected or not).
    pub fn session_count(&self) -> usize {
        self.by_client_id.len()
    }

    /// The number of (non-shared) subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// The number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Counters.
    pub fn stats(&self) -> BrokerStats {
        self.stats
    }

    /// The state of a session, as a store would save it.
    pub fn session_record(&self, client_id: &str) -> Option<SessionRecord> {
        let key = *self.by_client_id.get(client_id)?;
        self.record_of(key)
    }

    // -----------------------------------------------------------------------------------------
    // Time

    /// Handles every deadline that has passed: connection timeouts, session expiry, delayed
    /// wills, retained message expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Connection(id) => {
                    let Some(state) = self.conn_mut(id) else {
                        continue;
                    };
                    if state.deadline != Some(at) {
                        continue;
                    }
                    state.deadline = None;
                    state.conn.handle_timeout(now);
                    self.drain(now, id);
                    self.touched_conns.insert(id);
                }
                Timer::SessionExpiry(key) => {
                    let expired = self
                        .sessions
                        .get(key as usize)
                        .and_then(Option::as_ref)
                        .is_some_and(|e| e.connection.is_none() && e.expires_at == Some(at));
                    if expired {
                        self.stats.sessions_expired += 1;
                        if let Some(entry) = self.sessions[key as usize].as_ref() {
                            self.hooks.on_session_expired(&entry.client_id);
                        }
                        self.end_session(now, key);
                    }
                }
                Timer::Will(key) => {
                    let due = self
                        .sessions
                        .get_mut(key as usize)
                        .and_then(Option::as_mut)
                        .and_then(|e| match &e.pending_will {
                            Some(pending) if pending.0 == at => e.pending_will.take(),
                            _ => None,
                        });
                    if let Some(pending) = due {
                        let (_, will) = *pending;
                        self.touched_sessions.insert(key);
                        let client_id = self.sessions[key as usize]
                            .as_ref()
                            .map(|e| e.client_id.clone())
                            .unwrap_or_default();
                        self.publish_will(now, &client_id, will);
                    }
                }
                Timer::RetainedSweep => {
                    self.retained_sweep_scheduled = false;
                    let mut expired = Vec::new();
                    self.retained.retain(|m| {
                        let keep = !m.is_expired(now);
                        if !keep {
                            expired.push(String::from(&*m.topic));
                        }
                        keep
                    });
                    // Every shard sweeps its own copy; only the topic's owner writes the store,
                    // which a newer message set by the owner meanwhile must not lose.
                    for topic in expired {
                        if owner_shard(&topic, self.config.shard_count) == self.config.shard_index {
                            self.storage.set_retained(&topic, None);
                        }
                    }
                    if !self.retained.is_empty() {
                        self.schedule_retained_sweep(now);
                    }
                }
            }
        }
        self.end_input(now);
    }

    /// The earliest deadline, for [`Broker::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Expired retained messages are also skipped when read; the sweep returns their memory.
    fn schedule_retained_sweep(&mut self, now: Instant) {
        if !self.retained_sweep_scheduled {
            self.retained_sweep_scheduled = true;
            self.timers
                .insert((now + Duration::from_secs(60), Timer::RetainedSweep));
        }
    }

    // -----------------------------------------------------------------------------------------
    // The inline client, shards and the store

    /// Publishes a message from the embedding program (the inline client), as if a client
    /// had. Returns how many sessions it was delivered or queued to.
    pub fn publish(&mut self, now: Instant, message: Message) -> usize {
        self.stats.count_received(&message);
        let message = Arc::new(message);
        self.apply_retain(now, &message);
        let result = self.route(now, &message, None, true);
        self.hooks.on_published(None, &message, result.receivers);
        self.end_input(now);
        result.receivers
    }

    /// A message from another shard.
    pub fn handle_shard_message(&mut self, now: Instant, message: ShardMessage) {
        self.handle_shard_messages(now, core::iter::once(message));
    }

    /// Messages from other shards, in the order they were sent, handled as one input: one
    /// store commit and one round of ready connections for all of them. The runtime hands
    /// over everything one input of a shard produced for this one at once.
    pub fn handle_shard_messages(
        &mut self,
        now: Instant,
        messages: impl IntoIterator<Item = ShardMessage>,
    ) {
        for message in messages {
            self.apply_shard_message(now, message);
        }
        self.end_input(now);
    }

    fn apply_shard_message(&mut self, now: Instant, message: ShardMessage) {
        match message {
            ShardMessage::Publish { message, .. } => {
                self.route(now, &message, None, false);
            }
            ShardMessage::Interest {
                shard,
                filter,
                add,
                stored,
            } => {
                if add {
                    self.remote_interest.insert(&filter, shard, stored);
                } else {
                    self.remote_interest.remove(&filter, &shard);
                }
            }
            ShardMessage::SharedMember {
                shared_filter,
                shard,
                client_id,
                subscription,
                add,
            } => {
                if add {
                    self.add_shared_member(&shared_filter, shard, &client_id, subscription);
                } else {
                    self.remove_shared_member(&shared_filter, shard, &client_id);
                }
            }
            ShardMessage::SharedDeliver {
                shared_filter,
                client_id,
                message,
            } => {
                if let Some(&key) = self.by_client_id.get(&client_id) {
                    let subscription = self.sessions[key as usize]
                        .as_ref()
                        .and_then(|e| e.subscriptions.get(&shared_filter).cloned());
                    if let Some(subscription) = subscription {
                        let delivery = make_delivery(
                            &message,
                            subscription.options.qos,
                            subscription.options.retain_as_published,
                            subscription
                                .identifier
                                .into_iter()
                                .map(SubscriptionId)
                                .collect(),
                            Some(Arc::from(shared_filter.as_str())),
                        );
                        self.deliver_to_session(now, key, delivery);
                    }
                }
            }
            ShardMessage::SetRetained {
                topic,
                message,
                acknowledged,
            } => self.retain(now, &topic, message, acknowledged),
            ShardMessage::Retained { topic, message, .. } => match message {
                Some(message) => {
                    self.retained.insert(&topic, message);
                    self.schedule_retained_sweep(now);
                }
                None => {
                    self.retained.remove(&topic);
                }
            },
        }
    }

    /// The next message for another shard: `(target shard, message)`.
    pub fn poll_shard_message(&mut self) -> Option<(u16, ShardMessage)> {
        self.shard_out.pop_front()
    }

    /// A store batch answered [`Durability::Pending`] has become durable: the
    /// acknowledgements and bytes it held back go out.
    pub fn storage_committed(&mut self, now: Instant, token: u64) {
        let Some((acks, conns)) = self.awaiting.remove(&token) else {
            return;
        };
        for id in conns {
            if let Some(state) = self.conn_mut(id) {
                state.barrier = state.barrier.saturating_sub(1);
            }
            self.touched_conns.insert(id);
        }
        for (id, packet_id, reason) in acks {
            if let Some(state) = self.conn_mut(id) {
                let _ = state.conn.complete_publish(now, packet_id, reason);
            }
            self.touched_conns.insert(id);
        }
        self.mark_ready();
    }

    /// Installs the pipeline every client publish is offered to (see the
    /// [`pipeline`](super::pipeline) module).
    pub fn set_pipeline(&mut self, pipeline: Box<dyn Pipeline>) {
        self.pipeline = Some(pipeline);
    }

    /// The pipeline has the message of `ticket` safe (`Ok`), or gave up on it
    /// (`Err(reason)`, sent to a 5.0 publisher): the acknowledgement it held goes out, behind
    /// the store like any other. A ticket whose publisher has gone is ignored.
    pub fn pipeline_done(
        &mut self,
        now: Instant,
        ticket: PipelineTicket,
        result: Result<(), ReasonCode>,
    ) {
        let Some((id, packet_id)) = self.piped.remove(&ticket) else {
            return;
        };
        let Some(state) = self.conn_mut(id) else {
            return;
        };
        let session = state.session;
        let reason = result.err().unwrap_or(ReasonCode::Success);
        self.held_acks.push((id, packet_id, reason));
        // A PUBREC records the exactly-once marker: the session is saved with it.
        if let Some(key) = session {
            self.touched_sessions.insert(key);
        }
        self.touched_conns.insert(id);
        self.end_input(now);
    }

    /// How many acknowledgements wait for the pipeline.
    pub fn pipeline_pending(&self) -> usize {
        self.piped.len()
    }

    /// Tells every client the server is going away (DISCONNECT 0x8B to 5.0 clients) and
    /// closes every connection; wills are published, sessions kept per their expiry.
    pub fn shutdown(&mut self, now: Instant) {
        let ids: Vec<ConnectionId> = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state.as_ref().is_some_and(|c| !c.closed))
            .map(|(index, s)| ConnectionId {
                index: index as u32,
                generation: s.generation,
            })
            .collect();
        for id in ids {
            if let Some(state) = self.conn_mut(id) {
                state.conn.close(now, ReasonCode::ServerShuttingDown);
            }
            self.drain(now, id);
        }
        self.end_input(now);
    }

    // -----------------------------------------------------------------------------------------
    // Event handling

    /// Handles every event a connection produced.
    fn drain(&mut self, now: Instant, id: ConnectionId) {
        self.touched_conns.insert(id);
        // Packets that raise no event change the session too: a PUBREC moves a delivery to
        // "awaiting PUBCOMP" and answers PUBREL, a PUBREL clears an exactly-once marker. The
        // session is saved before those answers leave, or a restart would re-send a QoS 2
        // message the client has already completed (and forgotten), or keep a stale marker
        // that swallows the client's next message with that packet identifier.
        if let Some(key) = self.conn(id).and_then(|state| state.session) {
            self.touched_sessions.insert(key);
        }
        self.drain_events(now, id);
        if !self.traced.is_empty() {
            self.trace_received();
        }
    }

    fn drain_events(&mut self, now: Instant, id: ConnectionId) {
        loop {
            let Some(state) = self.conn_mut(id) else {
                return;
            };
            let Some(event) = state.conn.poll_event() else {
                return;
            };
            let session = state.session;
            if let Some(key) = session {
                self.touched_sessions.insert(key);
            }
            match event {
                ServerEvent::Connect(request) => self.on_connect(now, id, request),
                ServerEvent::Auth(request) => self.on_auth(now, id, &request),
                ServerEvent::Publish(publish) => {
                    self.on_publish(now, id, publish.packet_id, publish.message)
                }
                ServerEvent::Subscribe(request) => self.on_subscribe(now, id, request),
                ServerEvent::Unsubscribe(request) => self.on_unsubscribe(now, id, request),
                ServerEvent::Delivered { .. } => {}
                ServerEvent::Closed(info) => self.on_closed(now, id, &info),
                ServerEvent::Received(frame) => self.traced.push((id, frame)),
            }
        }
    }

    /// Shows the hooks the packets received since the last call, in order.
    fn trace_received(&mut self) {
        for (id, frame) in core::mem::take(&mut self.traced) {
            self.trace_frames(id, PacketDirection::Received, &frame);
        }
    }

    /// Shows the hooks the packets in the last `n` bytes of `out`, sent to connection
    /// `id`; first those received before them, which they may answer. Kept out of line: the transmit path
    /// that does not trace stays as small as it was.
    #[cold]
    #[inline(never)]
    fn trace_sent(&mut self, id: ConnectionId, out: &[u8], n: usize) {
        if !self.traced.is_empty() {
            self.trace_received();
        }
        let sent = out.get(out.len().saturating_sub(n)..).unwrap_or_default();
        self.trace_frames(id, PacketDirection::Sent, sent);
    }

    /// Decodes the whole packets back to back in `bytes` (decoded once already, or encoded
    /// by the connection itself) and calls [`Hooks::on_packet`] for each.
    fn trace_frames(&mut self, id: ConnectionId, direction: PacketDirection, mut bytes: &[u8]) {
        let Some(state) = self
            .conns
            .get(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.state.as_deref())
        else {
            return;
        };
        let info = Self::client_info(state, id);
        // The connection's own version: it is set by the CONNECT even when the broker
        // never sees the request (a CONNECT refused by the connection itself).
        let decoder = Decoder::new(state.conn.version());
        while let Ok(Decoded::Packet { packet, len }) = decoder.decode(bytes) {
            let (Some(frame), Some(rest)) = (bytes.get(..len), bytes.get(len..)) else {
                return;
            };
            self.hooks.on_packet(&info, direction, &packet, frame);
            bytes = rest;
        }
    }

    /// Calls a hook about the client of connection `id`.
    fn hook<R>(
        &mut self,
        id: ConnectionId,
        f: impl FnOnce(&mut dyn Hooks, &ClientInfo<'_>) -> R,
    ) -> Option<R> {
        let slot = self.conns.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let state = slot.state.as_deref()?;
        let info = Self::client_info(state, id);
        Some(f(self.hooks.as_mut(), &info))
    }

    fn client_info(state: &ConnState, id: ConnectionId) -> ClientInfo<'_> {
        ClientInfo {
            connection: id,
            client_id: &state.client_id,
            username: state.username.as_deref(),
            version: state.version,
            remote: state.remote.as_deref(),
            identity: state.identity.as_ref().map(|i| i.subject.as_str()),
        }
    }

    fn on_connect(&mut self, now: Instant, id: ConnectionId, mut request: ConnectRequest) {
        let Some(state) = self.conn_mut(id) else {
            return;
        };
        if let Some(name) = state.identity.as_ref().and_then(|i| i.username.as_ref()) {
            request.username = Some(name.clone());
        }
        state.client_id.clone_from(&request.client_id);
        state.username.clone_from(&request.username);
        state.version = request.version;
        state.will = request.will.clone().map(Box::new);
        let Some(decision) = self.hook(id, |hooks, info| hooks.on_connect(info, &request)) else {
            return;
        };
        match decision {
            AuthDecision::Accept(data) => self.admit(now, id, &request, data),
            AuthDecision::Continue(data) => {
                if let Some(state) = self.conn_mut(id) {
                    if state.conn.auth_continue(now, &data).is_err() {
                        let _ = state.conn.reject(now, ReasonCode::BadAuthenticationMethod);
                    } else {
                        state.pending_connect = Some(Box::new(request));
                    }
                }
            }
            AuthDecision::Reject(reason) => {
                if let Some(state) = self.conn_mut(id) {
                    let _ = state.conn.reject(now, reason);
                }
            }
        }
    }

    fn on_auth(&mut self, now: Instant, id: ConnectionId, request: &crate::server::AuthRequest) {
        let Some(decision) = self.hook(id, |hooks, info| hooks.on_auth(info, request)) else {
            return;
        };
        let Some(state) = self.conn_mut(id) else {
            return;
        };
        let connected = state.conn.is_connected();
        let Some(state) = self.conn_mut(id) else {
            return;
        };
        match decision {
            AuthDecision::Continue(data) => {
                let _ = state.conn.auth_continue(now, &data);
            }
            AuthDecision::Accept(data) if connected => {
                let _ = state.conn.auth_success(now, data.as_deref());
            }
            AuthDecision::Accept(data) => {
                // The last step of the exchange that began with CONNECT.
                match state.pending_connect.take() {
                    Some(request) => self.admit(now, id, &request, data),
                    None => {
                        let _ = state.conn.reject(now, ReasonCode::ProtocolError);
                    }
                }
            }
            AuthDecision::Reject(reason) if connected => state.conn.close(now, reason),
            AuthDecision::Reject(reason) => {
                let _ = state.conn.reject(now, reason);
            }
        }
    }

    /// Finds or creates the session and accepts the connection.
    fn admit(
        &mut self,
        now: Instant,
        id: ConnectionId,
        request: &ConnectRequest,
        auth_data: Option<bytes::Bytes>,
    ) {
        let mut client_id = request.client_id.clone();
        let mut assigned = None;
        if client_id.is_empty() {
            client_id = self.assign_client_id();
            assigned = Some(client_id.clone());
        }
        // Takeover [MQTT-3.1.4-3]: the older connection is told and closed first, so its
        // session is detached when the new one takes it.
        if let Some(&key) = self.by_client_id.get(&client_id) {
            if let Some(old) = self.sessions[key as usize]
                .as_ref()
                .and_then(|e| e.connection)
            {
                if old != id {
                    if let Some(state) = self.conn_mut(old) {
                        state.conn.close(now, ReasonCode::SessionTakenOver);
                    }
                    self.drain(now, old);
                }
            }
        }
        let existing = self.by_client_id.get(&client_id).copied();
        let (key, session, session_present) = match existing {
            Some(key) if !request.clean_start => {
                let entry = self.sessions[key as usize].as_mut();
                let session = entry.and_then(|e| {
                    // A new connection to the session cancels a will still waiting for its
                    // delay [MQTT-3.1.3-9].
                    e.pending_will = None;
                    e.expires_at = None;
                    e.detached.take()
                });
                match session {
                    Some(session) => (key, *session, true),
                    None => (key, Session::new(client_id.clone(), 0), false),
                }
            }
            Some(key) => {
                // Clean start discards the old session and its subscriptions
                // [MQTT-3.1.2-4].
                if let Some(entry) = self.sessions[key as usize].as_mut() {
                    entry.pending_will = None;
                }
                self.end_session(now, key);
                let key = self.new_session_entry(&client_id);
                (key, Session::new(client_id.clone(), 0), false)
            }
            None => {
                let key = self.new_session_entry(&client_id);
                (key, Session::new(client_id.clone(), 0), false)
            }
        };
        if let Some(entry) = self.sessions[key as usize].as_mut() {
            entry.connection = Some(id);
            entry.expires_at = None;
        }
        self.touched_sessions.insert(key);
        let Some(state) = self.conn_mut(id) else {
            return;
        };
        state.session = Some(key);
        state.client_id.clone_from(&client_id);
        let accepted = state.conn.accept(
            now,
            Accept {
                session,
                session_present,
                assigned_client_id: assigned,
                authentication_data: auth_data,
            },
        );
        // The CONNECT sets the session's expiry: whether the store keeps it from now on.
        let kept = self
            .conn(id)
            .and_then(|state| state.conn.session())
            .is_some_and(|session| session.expiry_interval > 0);
        self.set_kept(key, kept);
        if accepted.is_ok() {
            self.stats.connections_accepted += 1;
            self.hook(id, |hooks, info| hooks.on_connected(info, session_present));
        }
        // Packets the client pipelined behind CONNECT were handled by `accept`.
        self.drain(now, id);
    }

    fn assign_client_id(&mut self) -> String {
        loop {
            self.next_assigned_id += 1;
            let id = format!(
                "{}{}-{}",
                self.config.assigned_id_prefix, self.config.shard_index, self.next_assigned_id
            );
            let local = self.config.shard_count <= 1
                || owner_shard(&id, self.config.shard_count) == self.config.shard_index;
            if local && !self.by_client_id.contains_key(&id) {
                return id;
            }
        }
    }

    fn new_session_entry(&mut self, client_id: &str) -> SessionKey {
        self.insert_session(SessionEntry {
            client_id: String::from(client_id),
            detached: None,
            connection: None,
            subscriptions: SessionSubscriptions::default(),
            pending_will: None,
            expires_at: None,
            stored: false,
            kept: false,
        })
    }

    fn insert_session(&mut self, entry: SessionEntry) -> SessionKey {
        let client_id = entry.client_id.clone();
        let key = match self.free_sessions.pop() {
            Some(key) => {
                self.sessions[key as usize] = Some(entry);
                key
            }
            None => {
                self.sessions.push(Some(entry));
                (self.sessions.len() - 1) as SessionKey
            }
        };
        self.by_client_id.insert(client_id, key);
        key
    }

    fn on_publish(
        &mut self,
        now: Instant,
        id: ConnectionId,
        packet_id: Option<PacketId>,
        mut message: Message,
    ) {
        let Some(state) = self.conn_mut(id) else {
            return;
        };
        let publisher = state.session;
        if let Some(bucket) = state.publish_bucket.as_mut() {
            if state.rate_exceeded {
                // Publications read in the same input as the one over the rate.
                return;
            }
            if !bucket.take(now) {
                // 0x96 may only travel in DISCONNECT; a 3.1.1 client is just closed.
                state.rate_exceeded = true;
                state.conn.close(now, ReasonCode::MessageRateTooHigh);
                self.stats.publish_rate_exceeded += 1;
                return;
            }
        }
        if !self.config.limits.topic_fits(&message.topic) {
            self.stats.topic_too_large += 1;
            if let Some(packet_id) = packet_id {
                self.held_acks
                    .push((id, packet_id, ReasonCode::TopicNameInvalid));
            }
            return;
        }
        let Some(verdict) = self.hook(id, |hooks, info| {
            hooks.authorize_publish(info, &mut message)
        }) else {
            return;
        };
        if let Verdict::Deny(reason) = verdict {
            self.stats.refused += 1;
            if let Some(packet_id) = packet_id {
                // Refusals go out with the batch like any acknowledgement.
                self.held_acks.push((id, packet_id, reason));
            }
            return;
        }
        self.stats.count_received(&message);
        let message = Arc::new(message);
        let piped = self.offer_to_pipeline(id, packet_id, &message);
        let result = match piped {
            Piped::No | Piped::Local => {
                self.apply_retain(now, &message);
                self.route(now, &message, publisher, true)
            }
            Piped::Only | Piped::Refused => RouteResult { receivers: 0 },
        };
        self.hook(id, |hooks, info| {
            hooks.on_published(Some(info), &message, result.receivers)
        });
        if let Some(packet_id) = packet_id {
            let reason = if piped == Piped::Refused {
                ReasonCode::QuotaExceeded
            } else if piped != Piped::No {
                // Answered by `pipeline_done`: the pipeline is a receiver.
                return;
            } else if result.receivers == 0 && self.config.report_no_subscribers {
                ReasonCode::NoMatchingSubscribers
            } else {
                ReasonCode::Success
            };
            self.held_acks.push((id, packet_id, reason));
        }
    }

    /// Offers a client's publish to the pipeline; for a taken QoS 1/2 publish, records the
    /// acknowledgement it holds.
    fn offer_to_pipeline(
        &mut self,
        id: ConnectionId,
        packet_id: Option<PacketId>,
        message: &Arc<Message>,
    ) -> Piped {
        let Some(pipeline) = self.pipeline.as_mut() else {
            return Piped::No;
        };
        let Some(state) = self.conns.get(id.index as usize).and_then(|slot| {
            (slot.generation == id.generation)
                .then_some(slot.state.as_deref())
                .flatten()
        }) else {
            return Piped::No;
        };
        let ticket = packet_id.map(|_| PipelineTicket(self.next_ticket + 1));
        let must_take = ticket.is_some() && !state.version.is_v5();
        let info = Self::client_info(state, id);
        let offer = pipeline.offer(&info, message, ticket, must_take);
        match (offer, ticket.zip(packet_id)) {
            (Offer::Pass, _) => Piped::No,
            (Offer::Taken { local }, held) => {
                if let Some((ticket, packet_id)) = held {
                    self.next_ticket = ticket.0;
                    self.piped.insert(ticket, (id, packet_id));
                }
                if local {
                    Piped::Local
                } else {
                    Piped::Only
                }
            }
            (Offer::Full { .. }, Some(_)) => Piped::Refused,
            (Offer::Full { local: true }, None) => Piped::No,
            (Offer::Full { local: false }, None) => Piped::Only,
        }
    }

    /// Sets or clears the retained message of the message's topic [MQTT-3.3.1-5],
    /// [MQTT-3.3.1-6].
    fn apply_retain(&mut self, now: Instant, message: &Arc<Message>) {
        if !message.retain {
            return;
        }
        let stored = (!message.payload.is_empty()).then(|| message.clone());
        let acknowledged = message.qos != QoS::AtMostOnce;
        self.retain(now, &message.topic, stored, acknowledged);
    }

    /// Sets (`Some`) or clears (`None`) the retained message of `topic`, on the topic's
    /// owner shard ([`owner_shard`] of the topic): a retained message set here for a topic
    /// another shard owns goes to that shard first. The owner alone stores it and tells the
    /// others, in the order it applies them; so every shard, and the store after a restart,
    /// hold the same last message, even when two shards set the topic at once (were each to
    /// apply its own first, their copies would cross and each shard keep the other's, and
    /// the committer could write them in either order). `acknowledged`: the publish that set
    /// it is acknowledged (QoS 1 or 2), and its acknowledgement waits until every shard has
    /// it (the runtime's fences follow the messages to the owner and on from there).
    fn retain(
        &mut self,
        now: Instant,
        topic: &str,
        message: Option<Arc<Message>>,
        acknowledged: bool,
    ) {
        let owner = owner_shard(topic, self.config.shard_count);
        if owner != self.config.shard_index {
            self.shard_out.push_back((
                owner,
                ShardMessage::SetRetained {
                    topic: String::from(topic),
                    message,
                    acknowledged,
                },
            ));
            return;
        }
        let stored = match message {
            None => {
                self.retained.remove(topic);
                None
            }
            Some(message)
                if self.retained.get(topic).is_some()
                    || self.retained.len() < self.config.max_retained =>
            {
                self.retained.insert(topic, message.clone());
                self.schedule_retained_sweep(now);
                Some(message)
            }
            Some(_) => return,
        };
        self.storage.set_retained(topic, stored.as_ref());
        self.broadcast(|| ShardMessage::Retained {
            topic: String::from(topic),
            message: stored.clone(),
            acknowledged,
        });
    }

    fn broadcast(&mut self, mut make: impl FnMut() -> ShardMessage) {
        for shard in 0..self.config.shard_count {
            if shard != self.config.shard_index {
                self.shard_out.push_back((shard, make()));
            }
        }
    }

    /// Delivers a message to every matching session of this shard (one delivery per session
    /// at the highest QoS its matching subscriptions grant, with all their identifiers), to
    /// one member of each matching shared group this shard owns, and, when it came from a
    /// client of this shard, forwards it once to every other shard with an interest.
    fn route(
        &mut self,
        now: Instant,
        message: &Arc<Message>,
        publisher: Option<SessionKey>,
        forward: bool,
    ) -> RouteResult {
        let mut receivers = 0;
        let mut matches = core::mem::take(&mut self.scratch);
        matches.clear();
        self.subscriptions
            .for_each_match(&message.topic, |key, subscription| {
                // [MQTT-3.8.3-3]: No Local.
                if !(subscription.options.no_local && Some(*key) == publisher) {
                    matches.push((*key, *subscription));
                }
            });
        matches.sort_by_key(|(key, _)| *key);
        // One encoding shared by several deliveries pays for itself; for a single subscriber
        // it would only add a copy.
        self.share_encoding = matches.len() > 1;
        let mut index = 0;
        while index < matches.len() {
            let key = matches[index].0;
            let mut qos = QoS::AtMostOnce;
            let mut retain_as_published = false;
            let mut ids: Vec<SubscriptionId> = Vec::new();
            while index < matches.len() && matches[index].0 == key {
                let subscription = &matches[index].1;
                qos = qos.max(subscription.options.qos);
                retain_as_published |= subscription.options.retain_as_published;
                if let Some(id) = subscription.identifier {
                    ids.push(SubscriptionId(id));
                }
                index += 1;
            }
            let delivery = make_delivery(message, qos, retain_as_published, ids, None);
            if self.deliver_to_session(now, key, delivery) {
                receivers += 1;
            }
        }
        self.share_encoding = false;
        self.scratch = matches;

        let mut groups: Vec<u32> = Vec::new();
        self.shared_trie
            .for_each_match(&message.topic, |group, _| groups.push(*group));
        for group in groups {
            if let Some(name) = self.group_names.get(&group).cloned() {
                if self.deliver_shared(now, &name, message, None) {
                    receivers += 1;
                }
            }
        }

        if forward && self.config.shard_count > 1 {
            // Per shard: whether one of its matching filters has a subscriber its store
            // keeps. A few shards, so a short list beats a set.
            let mut shards: Vec<(u16, bool)> = Vec::new();
            self.remote_interest
                .for_each_match(&message.topic, |&shard, &kept| {
                    match shards.iter_mut().find(|(s, _)| *s == shard) {
                        Some((_, stored)) => *stored |= kept,
                        None => shards.push((shard, kept)),
                    }
                });
            shards.sort_unstable_by_key(|&(shard, _)| shard);
            for (shard, stored) in shards {
                if shard != self.config.shard_index {
                    let message = message.clone();
                    self.shard_out
                        .push_back((shard, ShardMessage::Publish { message, stored }));
                    receivers += 1;
                }
            }
        }
        RouteResult { receivers }
    }

    /// Picks a member of a shared group this shard owns and hands it the message; `except`
    /// skips a member that is leaving.
    fn deliver_shared(
        &mut self,
        now: Instant,
        shared_filter: &str,
        message: &Arc<Message>,
        except: Option<&str>,
    ) -> bool {
        let policy = self.config.shared_policy;
        let this_shard = self.config.shard_index;
        let Some(group) = self.groups.get_mut(shared_filter) else {
            return false;
        };
        let count = group.members.len();
        if count == 0 {
            return false;
        }
        let eligible =
            |m: &SharedMember| except.is_none_or(|e| !(m.shard == this_shard && m.client_id == e));
        let mut choice = None;
        if policy == SharedPolicy::LeastLoaded {
            let mut best: Option<(usize, usize)> = None;
            for (i, member) in group.members.iter().enumerate() {
                if member.shard != this_shard || !eligible(member) {
                    continue;
                }
                let load = self
                    .by_client_id
                    .get(&member.client_id)
                    .map_or(usize::MAX, |&key| {
                        session_load(&self.sessions, &self.conns, key)
                    });
                if best.is_none_or(|(_, l)| load < l) {
                    best = Some((i, load));
                }
            }
            choice = best.map(|(i, _)| i);
        }
        if choice.is_none() {
            for step in 0..count {
                let i = (group.cursor + step) % count;
                if eligible(&group.members[i]) {
                    choice = Some(i);
                    group.cursor = (i + 1) % count;
                    break;
                }
            }
        }
        let Some(i) = choice else {
            return false;
        };
        let member = &group.members[i];
        if member.shard != this_shard {
            let target = member.shard;
            let client_id = member.client_id.clone();
            self.shard_out.push_back((
                target,
                ShardMessage::SharedDeliver {
                    shared_filter: String::from(shared_filter),
                    client_id,
                    message: message.clone(),
                },
            ));
            return true;
        }
        let subscription = member.subscription.clone();
        let Some(&key) = self.by_client_id.get(&member.client_id) else {
            return false;
        };
        let delivery = make_delivery(
            message,
            subscription.options.qos,
            subscription.options.retain_as_published,
            subscription
                .identifier
                .into_iter()
                .map(SubscriptionId)
                .collect(),
            Some(Arc::from(shared_filter)),
        );
        self.deliver_to_session(now, key, delivery)
    }

    /// Hands a delivery to a session: to its connection if it has one, else to its queue.
    /// Returns whether the session took it (sent or queued).
    fn deliver_to_session(&mut self, now: Instant, key: SessionKey, delivery: Delivery) -> bool {
        let Some(entry) = self.sessions.get_mut(key as usize).and_then(Option::as_mut) else {
            return false;
        };
        self.stats.deliveries += 1;
        if let Some(id) = entry.connection {
            let allowed = self
                .hook(id, |hooks, info| {
                    hooks.authorize_delivery(info, &delivery.message)
                })
                .unwrap_or(false);
            if !allowed {
                self.stats.deliveries -= 1;
                return false;
            }
            let share = self.share_encoding;
            let mut encoded = core::mem::take(&mut self.encoded);
            let Some(state) = self.conn_mut(id) else {
                self.encoded = encoded;
                return false;
            };
            let (qos, bytes) = (delivery.qos as usize, delivery.message.payload.len() as u64);
            let outcome = if share {
                state.conn.deliver_encoded(now, delivery, &mut encoded)
            } else {
                state.conn.deliver(now, delivery)
            };
            self.encoded = encoded;
            self.touched_conns.insert(id);
            // A QoS 0 message sent at once leaves the session as it was (no packet
            // identifier, nothing in flight or queued): nothing to save.
            if !(qos == QoS::AtMostOnce as usize && matches!(outcome, DeliveryOutcome::Sent)) {
                self.touched_sessions.insert(key);
            }
            return match outcome {
                DeliveryOutcome::Sent | DeliveryOutcome::Queued => {
                    self.stats.deliveries_by_qos[qos] += 1;
                    self.stats.bytes_delivered_by_qos[qos] += bytes;
                    true
                }
                DeliveryOutcome::Dropped(reason) => {
                    self.stats.deliveries_dropped += 1;
                    let tally = &mut self.stats.dropped;
                    *match reason {
                        DropReason::BufferFull => &mut tally.buffer_full,
                        DropReason::QueueFull => &mut tally.queue_full,
                        DropReason::TooLarge => &mut tally.too_large,
                        DropReason::Expired => &mut tally.expired,
                    } += 1;
                    true
                }
                DeliveryOutcome::NotConnected(delivery) => self.enqueue_detached(key, delivery),
            };
        }
        self.touched_sessions.insert(key);
        self.enqueue_detached(key, delivery)
    }

    fn enqueue_detached(&mut self, key: SessionKey, delivery: Delivery) -> bool {
        let limits = self.config.server.queue;
        let Some(session) = self
            .sessions
            .get_mut(key as usize)
            .and_then(Option::as_mut)
            .and_then(|e| e.detached.as_mut())
        else {
            return false;
        };
        if delivery.qos == QoS::AtMostOnce && !limits.queue_qos0_offline {
            return false;
        }
        let (qos, bytes) = (delivery.qos as usize, delivery.message.payload.len() as u64);
        if session.enqueue(delivery, &limits) {
            self.stats.deliveries_by_qos[qos] += 1;
            self.stats.bytes_delivered_by_qos[qos] += bytes;
        } else {
            self.stats.deliveries_dropped += 1;
            self.stats.dropped.queue_full += 1;
        }
        true
    }

    fn on_subscribe(&mut self, now: Instant, id: ConnectionId, request: SubscribeRequest) {
        let Some(state) = self.conn(id) else {
            return;
        };
        let Some(key) = state.session else {
            return;
        };
        let client_id = state.client_id.clone();
        let maximum_qos = self.config.server.maximum_qos;
        let mut codes = Vec::with_capacity(request.filters.len());
        let mut retained_to_send: Vec<(String, StoredSubscription)> = Vec::new();
        for filter_request in request.filters {
            if let Some(refusal) = filter_request.refusal {
                codes.push(refusal);
                continue;
            }
            if !self.config.limits.topic_fits(&filter_request.filter) {
                self.stats.topic_too_large += 1;
                codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            let mut filter = filter_request.filter;
            let mut options = filter_request.options;
            let Some(verdict) = self.hook(id, |hooks, info| {
                hooks.authorize_subscribe(info, &mut filter, &mut options)
            }) else {
                return;
            };
            if let Verdict::Deny(reason) = verdict {
                self.stats.refused += 1;
                codes.push(reason);
                continue;
            }
            if petrel_codec::topic::validate_topic_filter(&filter).is_err() {
                // A hook rewrote the filter into something invalid.
                codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            // [MQTT-3.8.4-8]: the server may grant a lower QoS than asked.
            options.qos = options.qos.min(maximum_qos);
            let subscription = StoredSubscription {
                filter: filter.clone(),
                options,
                identifier: request.subscription_id,
            };
            let existed = self.sessions[key as usize]
                .as_ref()
                .is_some_and(|e| e.subscriptions.contains_key(&filter));
            self.add_subscription(key, &client_id, subscription.clone());
            let granted = match options.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            };
            codes.push(granted);
            self.hook(id, |hooks, info| {
                hooks.on_subscribed(info, &filter, granted)
            });
            // Retained messages: per Retain Handling [MQTT-3.3.1-9], [MQTT-3.3.1-10],
            // never for shared subscriptions [MQTT-3.8.4-?, section 4.8.2].
            let send = match options.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
            if send && !filter.starts_with(petrel_codec::topic::SHARED_PREFIX) {
                retained_to_send.push((filter, subscription));
            }
        }
        if let Some(state) = self.conn_mut(id) {
            let _ = state
                .conn
                .complete_subscribe(now, request.packet_id, &codes);
        }
        // Retained messages follow the SUBACK [MQTT-3.8.4-4 ordering is not required, but
        // clients expect the acknowledgement first].
        for (filter, subscription) in retained_to_send {
            let mut found: Vec<Arc<Message>> = Vec::new();
            self.retained
                .for_each_matching(&filter, |m| found.push(m.clone()));
            for message in found {
                if message.is_expired(now) {
                    continue;
                }
                let delivery = Delivery {
                    qos: message.qos.min(subscription.options.qos),
                    // A retained message sent because of a new subscription keeps RETAIN
                    // set [MQTT-3.3.1-9].
                    retain: true,
                    subscription_ids: subscription
                        .identifier
                        .into_iter()
                        .map(SubscriptionId)
                        .collect(),
                    shared_group: None,
                    message,
                };
                self.deliver_to_session(now, key, delivery);
            }
        }
    }

    fn on_unsubscribe(&mut self, now: Instant, id: ConnectionId, request: UnsubscribeRequest) {
        let Some(state) = self.conn(id) else {
            return;
        };
        let Some(key) = state.session else {
            return;
        };
        let client_id = state.client_id.clone();
        let mut codes = Vec::with_capacity(request.filters.len());
        for filter in &request.filters {
            let removed = self.remove_subscription(now, key, &client_id, filter);
            codes.push(if removed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
            if removed {
                self.hook(id, |hooks, info| hooks.on_unsubscribed(info, filter));
            }
        }
        if let Some(state) = self.conn_mut(id) {
            let _ = state
                .conn
                .complete_unsubscribe(now, request.packet_id, &codes);
        }
    }

    fn on_closed(&mut self, now: Instant, id: ConnectionId, info: &CloseInfo) {
        if self.conn(id).is_some_and(|state| !state.closed)
            && info.initiator == CloseInitiator::Server
        {
            match info.reason {
                ReasonCode::PacketTooLarge => self.stats.packet_too_large += 1,
                ReasonCode::ReceiveMaximumExceeded => self.stats.receive_maximum_exceeded += 1,
                _ => {}
            }
        }
        let Some(state) = self.conn_mut(id) else {
            return;
        };
        if state.closed {
            return;
        }
        state.closed = true;
        let key = state.session.take();
        let will = state.will.take();
        let session = state.conn.take_session();
        self.closing.push_back(id);
        self.hook(id, |hooks, client| hooks.on_disconnected(client, info));
        let Some(key) = key else {
            return;
        };
        self.touched_sessions.insert(key);
        let Some(entry) = self.sessions.get_mut(key as usize).and_then(Option::as_mut) else {
            return;
        };
        if entry.connection != Some(id) {
            return;
        }
        entry.connection = None;
        let client_id = entry.client_id.clone();
        let mut session = session.unwrap_or_else(|| Session::new(client_id.clone(), 0));
        session.expiry_interval = info.session_expiry_interval;
        // QoS 1 messages a shared subscription gave this member go to another member now
        // [MQTT-4.8.2-5 allows it for QoS 1; QoS 2 waits for the session to end].
        let handed_back = take_shared(&mut session, false);
        entry.detached = Some(Box::new(session));
        let expiry = info.session_expiry_interval;
        entry.expires_at = expiry_deadline(now, expiry);
        if let Some(will) = will.filter(|_| info.publish_will) {
            // [MQTT-3.1.3-9]: the will waits for its delay or the session's end, whichever
            // comes first.
            let delay = will.delay_interval.min(expiry);
            if delay == 0 {
                self.publish_will(now, &client_id, *will);
            } else {
                let at = now + Duration::from_secs(u64::from(delay));
                if let Some(entry) = self.sessions[key as usize].as_mut() {
                    entry.pending_will = Some(Box::new((at, *will)));
                }
                self.timers.insert((at, Timer::Will(key)));
            }
        }
        for delivery in handed_back {
            self.redispatch_shared(now, &client_id, delivery);
        }
        match self.sessions[key as usize]
            .as_ref()
            .and_then(|e| e.expires_at)
        {
            _ if expiry == 0 => self.end_session(now, key),
            Some(at) => {
                self.timers.insert((at, Timer::SessionExpiry(key)));
            }
            None => {}
        }
    }

    fn publish_will(&mut self, now: Instant, client_id: &str, will: Will) {
        self.stats.wills_published += 1;
        let message = will.into_message(now);
        self.hooks.on_will(client_id, &message);
        let message = Arc::new(message);
        self.apply_retain(now, &message);
        self.route(now, &message, None, true);
    }

    /// Ends a session: its subscriptions go, a pending will is published now
    /// [MQTT-3.1.3-9], QoS 1 and 2 messages from shared subscriptions go to another member
    /// [MQTT-4.8.2-5], and the store forgets it.
    fn end_session(&mut self, now: Instant, key: SessionKey) {
        let Some(entry) = self.sessions.get_mut(key as usize).and_then(Option::take) else {
            return;
        };
        self.free_sessions.push(key);
        self.by_client_id.remove(&entry.client_id);
        self.touched_sessions.remove(&key);
        self.storage.delete_session(&entry.client_id);
        for subscription in entry.subscriptions.iter() {
            self.unindex_subscription(key, &entry.client_id, &subscription.filter, entry.kept);
        }
        if let Some(pending) = entry.pending_will {
            let (_, will) = *pending;
            self.publish_will(now, &entry.client_id, will);
        }
        if let Some(mut session) = entry.detached {
            for delivery in take_shared(&mut session, true) {
                self.redispatch_shared(now, &entry.client_id, delivery);
            }
        }
    }

    fn redispatch_shared(&mut self, now: Instant, leaving: &str, delivery: Delivery) {
        let Some(group) = delivery.shared_group.clone() else {
            return;
        };
        if self.groups.contains_key(&*group) {
            self.deliver_shared(now, &group, &delivery.message, Some(leaving));
        } else if self.config.shard_count > 1 {
            // The group's owner is another shard: it picks the next member.
            let owner = owner_shard(&group, self.config.shard_count);
            // The owner hands it to a member that may be anywhere, and stored.
            let message = delivery.message;
            self.shard_out.push_back((
                owner,
                ShardMessage::Publish {
                    message,
                    stored: true,
                },
            ));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Subscription bookkeeping

    fn add_subscription(
        &mut self,
        key: SessionKey,
        client_id: &str,
        subscription: StoredSubscription,
    ) {
        let filter = subscription.filter.clone();
        let Some(entry) = self.sessions.get_mut(key as usize).and_then(Option::as_mut) else {
            return;
        };
        let replaced = entry.subscriptions.insert(subscription.clone()).is_some();
        let kept = entry.kept;
        match SharedFilter::parse(&filter).ok().flatten() {
            Some(_) => {
                let owner = owner_shard(&filter, self.config.shard_count);
                if owner == self.config.shard_index {
                    self.add_shared_member(&filter, owner, client_id, subscription);
                } else {
                    self.shard_out.push_back((
                        owner,
                        ShardMessage::SharedMember {
                            shared_filter: filter,
                            shard: self.config.shard_index,
                            client_id: String::from(client_id),
                            subscription,
                            add: true,
                        },
                    ));
                }
            }
            None => {
                self.subscriptions
                    .insert(&filter, key, SubscriptionSpec::of(&subscription));
                if !replaced {
                    self.add_interest(&filter, kept);
                }
            }
        }
    }

    fn remove_subscription(
        &mut self,
        _now: Instant,
        key: SessionKey,
        client_id: &str,
        filter: &str,
    ) -> bool {
        let Some(entry) = self.sessions.get_mut(key as usize).and_then(Option::as_mut) else {
            return false;
        };
        let removed = entry.subscriptions.remove(filter).is_some();
        let kept = entry.kept;
        if removed {
            self.unindex_subscription(key, client_id, filter, kept);
        }
        removed
    }

    /// Takes a subscription of the session `key` out of the indexes; `kept`: the session's
    /// subscriptions count as kept by the store ([`SessionEntry::kept`]).
    fn unindex_subscription(&mut self, key: SessionKey, client_id: &str, filter: &str, kept: bool) {
        if SharedFilter::parse(filter).ok().flatten().is_some() {
            let owner = owner_shard(filter, self.config.shard_count);
            if owner == self.config.shard_index {
                self.remove_shared_member(filter, owner, client_id);
            } else {
                self.shard_out.push_back((
                    owner,
                    ShardMessage::SharedMember {
                        shared_filter: String::from(filter),
                        shard: self.config.shard_index,
                        client_id: String::from(client_id),
                        subscription: StoredSubscription {
                            filter: String::from(filter),
                            options: Default::default(),
                            identifier: None,
                        },
                        add: false,
                    },
                ));
            }
        } else if self.subscriptions.remove(filter, &key).is_some() {
            self.remove_interest(filter, kept);
        }
    }

    fn add_shared_member(
        &mut self,
        shared_filter: &str,
        shard: u16,
        client_id: &str,
        subscription: StoredSubscription,
    ) {
        let Some(parsed) = SharedFilter::parse(shared_filter).ok().flatten() else {
            return;
        };
        if !self.groups.contains_key(shared_filter) {
            let id = self.next_group_id;
            self.next_group_id += 1;
            self.group_ids.insert(String::from(shared_filter), id);
            self.group_names.insert(id, String::from(shared_filter));
            self.shared_trie.insert(parsed.filter, id, ());
            self.groups.insert(
                String::from(shared_filter),
                SharedGroup {
                    filter: String::from(parsed.filter),
                    members: Vec::new(),
                    cursor: 0,
                },
            );
            self.add_interest(parsed.filter, true);
        }
        if let Some(group) = self.groups.get_mut(shared_filter) {
            match group
                .members
                .iter_mut()
                .find(|m| m.shard == shard && m.client_id == client_id)
            {
                Some(member) => member.subscription = subscription,
                None => group.members.push(SharedMember {
                    shard,
                    client_id: String::from(client_id),
                    subscription,
                }),
            }
        }
    }

    fn remove_shared_member(&mut self, shared_filter: &str, shard: u16, client_id: &str) {
        let Some(group) = self.groups.get_mut(shared_filter) else {
            return;
        };
        group
            .members
            .retain(|m| !(m.shard == shard && m.client_id == client_id));
        if group.cursor >= group.members.len() {
            group.cursor = 0;
        }
        if group.members.is_empty() {
            let filter = group.filter.clone();
            self.groups.remove(shared_filter);
            if let Some(id) = self.group_ids.remove(shared_filter) {
                self.group_names.remove(&id);
                self.shared_trie.remove(&filter, &id);
            }
            self.remove_interest(&filter, true);
        }
    }

    /// Counts this shard's subscriptions to a filter (`kept`: of a session the store keeps)
    /// and tells the other shards when the first one arrives, or the first kept one.
    fn add_interest(&mut self, filter: &str, kept: bool) {
        if self.config.shard_count <= 1 {
            return;
        }
        let interest = self.local_interest.entry(String::from(filter)).or_default();
        interest.count += 1;
        interest.kept += u32::from(kept);
        if interest.count == 1 || (kept && interest.kept == 1) {
            self.announce_interest(filter);
        }
    }

    /// The opposite of [`Broker::add_interest`]: tells the other shards when the last
    /// subscription goes, or the last kept one.
    fn remove_interest(&mut self, filter: &str, kept: bool) {
        if self.config.shard_count <= 1 {
            return;
        }
        let Some(interest) = self.local_interest.get_mut(filter) else {
            return;
        };
        interest.count = interest.count.saturating_sub(1);
        interest.kept = interest.kept.saturating_sub(u32::from(kept));
        if interest.count == 0 {
            self.local_interest.remove(filter);
            self.announce_interest(filter);
        } else if kept && interest.kept == 0 {
            self.announce_interest(filter);
        }
    }

    /// Whether the session `key`'s subscriptions are of a session the store keeps changed
    /// (its expiry interval went from or to 0): its plain subscriptions move between the
    /// kinds of interest, and the other shards hear of a filter whose kind changed.
    fn set_kept(&mut self, key: SessionKey, kept: bool) {
        let kept = kept && self.storage.keeps_sessions();
        let Some(entry) = self.sessions.get_mut(key as usize).and_then(Option::as_mut) else {
            return;
        };
        if entry.kept == kept {
            return;
        }
        entry.kept = kept;
        if self.config.shard_count <= 1 {
            return;
        }
        let filters: Vec<String> = entry
            .subscriptions
            .iter()
            .filter(|s| SharedFilter::parse(&s.filter).ok().flatten().is_none())
            .map(|s| s.filter.clone())
            .collect();
        for filter in filters {
            let Some(interest) = self.local_interest.get_mut(&filter) else {
                continue;
            };
            let announce = if kept {
                interest.kept += 1;
                interest.kept == 1
            } else {
                interest.kept = interest.kept.saturating_sub(1);
                interest.kept == 0
            };
            if announce {
                self.announce_interest(&filter);
            }
        }
    }

    /// Tells the other shards this shard's interest in `filter` as it now stands.
    fn announce_interest(&mut self, filter: &str) {
        let shard = self.config.shard_index;
        let interest = self.local_interest.get(filter);
        let add = interest.is_some();
        let stored = interest.is_some_and(|i| i.kept > 0);
        self.broadcast(|| ShardMessage::Interest {
            shard,
            filter: String::from(filter),
            add,
            stored,
        });
    }

    // -----------------------------------------------------------------------------------------
    // End of an input: the store, acknowledgements, readiness, timers

    fn record_of(&self, key: SessionKey) -> Option<SessionRecord> {
        self.view_of(key).map(|view| view.to_record())
    }

    fn view_of(&self, key: SessionKey) -> Option<SessionView<'_>> {
        let entry = self.sessions.get(key as usize)?.as_ref()?;
        let (session, expires_at) = match entry.connection {
            Some(id) => {
                let session = self.conn(id)?.conn.session()?;
                (session, session.expires_at)
            }
            // The deadline lives in the entry while detached; the store needs it to drop
            // the session if it expires while the broker is down.
            None => (entry.detached.as_deref()?, entry.expires_at),
        };
        Some(SessionView {
            session,
            expires_at,
            subscriptions: &entry.subscriptions.0,
            pending_will: entry.pending_will.as_deref(),
        })
    }

    fn end_input(&mut self, now: Instant) {
        // Acknowledgements are completed before the sessions are saved: completing a QoS 2
        // PUBREC records its exactly-once marker, which must be stored in the same batch as
        // the copies the message was routed to, or a restart before the publisher's next save
        // would route its re-sent PUBLISH again [MQTT-4.3.3-9]. Their bytes still wait for
        // the batch: the publisher's connection is touched by this input, so a pending batch
        // holds them behind its barrier.
        // The message routed last is not kept alive by its encodings past the input.
        self.encoded.clear();
        for (id, packet_id, reason) in core::mem::take(&mut self.held_acks) {
            if let Some(state) = self.conn_mut(id) {
                let _ = state.conn.complete_publish(now, packet_id, reason);
            }
        }
        let touched = self.touched_sessions.take_sorted();
        if self.storage.keeps_sessions() {
            for key in touched {
                let Some(entry) = self.sessions.get(key as usize).and_then(Option::as_ref) else {
                    continue;
                };
                let persistent = entry
                    .detached
                    .as_ref()
                    .map(|s| s.expiry_interval)
                    .or_else(|| {
                        entry
                            .connection
                            .and_then(|id| self.conn(id))
                            .and_then(|s| s.conn.session())
                            .map(|s| s.expiry_interval)
                    })
                    .is_some_and(|e| e > 0);
                if !persistent {
                    // A stored session that a CONNECT resumed with expiry 0 now ends with its
                    // connection [MQTT-3.1.2-23]: its old record must not bring it back
                    // after a restart.
                    if entry.stored {
                        self.storage.delete_session(&entry.client_id);
                        if let Some(entry) = self.sessions[key as usize].as_mut() {
                            entry.stored = false;
                        }
                    }
                    continue;
                }
                // The store is handed a view that borrows the broker, so it is taken out
                // for the call (a `NoStorage` box does not allocate).
                let mut storage = core::mem::replace(&mut self.storage, Box::new(NoStorage));
                let saved = self.view_of(key).map(|view| storage.save_session(view));
                self.storage = storage;
                if saved.is_some() {
                    if let Some(entry) = self.sessions[key as usize].as_mut() {
                        entry.stored = true;
                    }
                }
            }
        }
        let conns = self.touched_conns.take_sorted();
        // Messages for other shards leave after this input: a store shared by the shards
        // may hold the acknowledgements until those shards have stored their copies.
        let mut forwarded = core::mem::take(&mut self.forwarded_to);
        forwarded.clear();
        for (shard, message) in &self.shard_out {
            if message.awaits_durability() && !forwarded.contains(shard) {
                forwarded.push(*shard);
            }
        }
        let durability = self.storage.commit_forwarding(&forwarded);
        self.forwarded_to = forwarded;
        // Only bytes that promise what this batch holds wait for it (acknowledgements, QoS 2
        // deliveries: `ServerConnection::take_binding_output`). A QoS 1 delivery goes at
        // once, so a subscriber's in-flight window refills without a commit per round trip;
        // if its in-flight entry is lost in a crash, the message is sent again or its
        // publisher, never acknowledged, sends it again.
        let mut held = Vec::new();
        for &id in &conns {
            if let Some(state) = self.conn_mut(id) {
                if state.conn.take_binding_output() {
                    if let Durability::Pending(_) = durability {
                        state.barrier += 1;
                        held.push(id);
                    }
                }
            }
        }
        if let (Durability::Pending(token), false) = (durability, held.is_empty()) {
            self.awaiting.insert(token, (Vec::new(), held));
        }
        self.touched_conns.extend(conns);
        self.mark_ready();
    }

    fn mark_ready(&mut self) {
        let conns = self.touched_conns.take_sorted();
        for id in conns {
            let Some(state) = self.conn_mut(id) else {
                continue;
            };
            let deadline = state.conn.poll_timeout();
            let old = state.deadline;
            state.deadline = deadline;
            let ready = !state.in_ready && state.barrier == 0 && state.conn.pending_transmit() > 0;
            if ready {
                state.in_ready = true;
            }
            if old != deadline {
                if let Some(at) = old {
                    self.timers.remove(&(at, Timer::Connection(id)));
                }
                if let Some(at) = deadline {
                    self.timers.insert((at, Timer::Connection(id)));
                }
            }
            if ready {
                self.ready.push_back(id);
            }
        }
    }
}

fn expiry_deadline(now: Instant, interval: u32) -> Option<Instant> {
    match interval {
        0 | u32::MAX => None,
        secs => Some(now + Duration::from_secs(u64::from(secs))),
    }
}

fn make_delivery(
    message: &Arc<Message>,
    granted: QoS,
    retain_as_published: bool,
    subscription_ids: Vec<SubscriptionId>,
    shared_group: Option<Arc<str>>,
) -> Delivery {
    Delivery {
        // [MQTT-3.8.4-8]: never above the granted QoS; the message is downgraded, never
        // skipped.
        qos: message.qos.min(granted),
        // [MQTT-3.3.1-12], [MQTT-3.3.1-13]: an established subscription clears RETAIN unless
        // Retain As Published.
        retain: message.retain && retain_as_published,
        message: message.clone(),
        subscription_ids,
        shared_group,
    }
}

/// Takes out of a session the deliveries a shared subscription gave it that should go to
/// another member: QoS 0 and 1 not yet acknowledged, and, when the session ends, QoS 2 not
/// yet received by the client (PUBREC not seen).
fn take_shared(session: &mut Session, session_ends: bool) -> Vec<Delivery> {
    let mut out = Vec::new();
    let movable =
        |d: &Delivery| d.shared_group.is_some() && (session_ends || d.qos != QoS::ExactlyOnce);
    let mut kept = VecDeque::new();
    for entry in core::mem::take(&mut session.outbound) {
        if movable(&entry.delivery) && entry.state != OutboundState::AwaitingPubComp {
            out.push(entry.delivery);
        } else {
            kept.push_back(entry);
        }
    }
    session.outbound = kept;
    let mut queue = VecDeque::new();
    while let Some(delivery) = session.queue.pop_front() {
        if movable(&delivery) {
            session.queued_bytes = session.queued_bytes.saturating_sub(delivery.message.size());
            out.push(delivery);
        } else {
            queue.push_back(delivery);
        }
    }
    session.queue = queue;
    out
}

fn session_load(sessions: &[Option<SessionEntry>], conns: &[ConnSlot], key: SessionKey) -> usize {
    let Some(entry) = sessions.get(key as usize).and_then(Option::as_ref) else {
        return usize::MAX;
    };
    let session = match entry.connection {
        Some(id) => conns
            .get(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.state.as_ref())
            .and_then(|s| s.conn.session()),
        None => entry.detached.as_deref(),
    };
    session.map_or(usize::MAX, |s| s.inflight() + s.queue.len())
}

/// A session's subscriptions, sorted by filter.
///
/// A sorted `Vec` rather than a `BTreeMap`: most sessions hold one or a few subscriptions,
/// and a map's first node alone has room for eleven (about 700 bytes here), where this
/// holds exactly what the session subscribed to.
#[derive(Debug, Default)]
struct SessionSubscriptions(Vec<StoredSubscription>);

impl SessionSubscriptions {
    fn position(&self, filter: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|s| s.filter.as_str().cmp(filter))
    }

    fn get(&self, filter: &str) -> Option<&StoredSubscription> {
        self.position(filter).ok().map(|i| &self.0[i])
    }

    fn contains_key(&self, filter: &str) -> bool {
        self.position(filter).is_ok()
    }

    /// Adds or replaces the subscription to its filter; returns the one it replaced.
    fn insert(&mut self, subscription: StoredSubscription) -> Option<StoredSubscription> {
        match self.position(&subscription.filter) {
            Ok(i) => Some(core::mem::replace(&mut self.0[i], subscription)),
            Err(i) => {
                // Most sessions hold one subscription: the first takes room for one, not
                // the four a growing Vec starts with.
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, subscription);
                None
            }
        }
    }

    fn remove(&mut self, filter: &str) -> Option<StoredSubscription> {
        let removed = self.position(filter).ok().map(|i| self.0.remove(i));
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        removed
    }

    fn iter(&self) -> core::slice::Iter<'_, StoredSubscription> {
        self.0.iter()
    }
}

/// What one input touched (sessions to save, connections to flush), each once, in order.
///
/// Pushed to on every delivery, so it must cost little per push: an item is pushed only the
/// first time in an input (a side table, indexed by the item's slot, remembers which are in),
/// and the list, already free of duplicates, is sorted once at the end. A `BTreeSet` per
/// delivery spent a quarter of routing's instructions; sorting every push, duplicates and
/// all, still spent a fifth when one read carried many publishes to the same subscribers.
#[derive(Debug)]
struct Touched<T> {
    items: Vec<T>,
    /// By slot: the item of that slot that is in `items`.
    present: Vec<Option<T>>,
}

/// Something with a slot of its own in a broker's table.
trait Slotted: Ord + Copy {
    fn slot(self) -> usize;
}

impl Slotted for SessionKey {
    fn slot(self) -> usize {
        self as usize
    }
}

impl Slotted for ConnectionId {
    fn slot(self) -> usize {
        self.index as usize
    }
}

impl<T> Default for Touched<T> {
    fn default() -> Self {
        Touched {
            items: Vec::new(),
            present: Vec::new(),
        }
    }
}

impl<T: Slotted> Touched<T> {
    fn insert(&mut self, item: T) {
        let slot = item.slot();
        if self.present.len() <= slot {
            self.present.resize(slot + 1, None);
        }
        // A slot holds one item at a time; another generation of it is pushed all the same.
        if self.present[slot] != Some(item) {
            self.present[slot] = Some(item);
            self.items.push(item);
        }
    }

    fn remove(&mut self, item: &T) {
        self.items.retain(|t| t != item);
        if let Some(present) = self.present.get_mut(item.slot()) {
            if *present == Some(*item) {
                *present = None;
            }
        }
    }

    fn extend(&mut self, items: Vec<T>) {
        for item in items {
            self.insert(item);
        }
    }

    /// Everything touched since the last call, sorted, each once.
    fn take_sorted(&mut self) -> Vec<T> {
        let mut items = core::mem::take(&mut self.items);
        for item in &items {
            if let Some(present) = self.present.get_mut(item.slot()) {
                *present = None;
            }
        }
        items.sort_unstable();
        // Two generations of one slot in one input may repeat an item already pushed.
        items.dedup();
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_gives_each_item_once_sorted() {
        let mut touched: Touched<SessionKey> = Touched::default();
        for key in [7, 3, 7, 7, 1, 3] {
            touched.insert(key);
        }
        assert_eq!(touched.take_sorted(), [1, 3, 7]);
        // Taking forgets them: the next input starts empty and may touch them again.
        assert!(touched.take_sorted().is_empty());
        touched.insert(3);
        touched.remove(&3);
        touched.insert(5);
        assert_eq!(touched.take_sorted(), [5]);
        touched.insert(3);
        assert_eq!(touched.take_sorted(), [3]);
    }

    #[test]
    fn touched_keeps_both_generations_of_a_slot() {
        let old = ConnectionId {
            index: 2,
            generation: 0,
        };
        let new = ConnectionId {
            index: 2,
            generation: 1,
        };
        let mut touched: Touched<ConnectionId> = Touched::default();
        for id in [old, new, old, new] {
            touched.insert(id);
        }
        assert_eq!(touched.take_sorted(), [old, new]);
        touched.extend(alloc::vec![new, new]);
        assert_eq!(touched.take_sorted(), [new]);
    }
}
