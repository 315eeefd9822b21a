//! The `Pair` harness: one [`Client`] session and one [`ServerConnection`] wired together in
//! memory, on a virtual clock, in the manner of quinn-proto's `tests/util.rs`.
//!
//! Bytes one side transmits travel through a link per direction: they are cut into
//! chunks ([`ChunkMode`]) and each chunk arrives after the direction's latency, in order, as
//! a TCP stream would deliver them. A small in-test server application ([`ServerApp`])
//! answers the server connection's events the way a broker would: it accepts CONNECT
//! (resuming the session it kept from the previous connection unless the client asks for a
//! clean start), takes inbound publishes and acknowledges them (at once or after a delay,
//! as a broker waiting for its store would), grants subscriptions, and delivers messages to
//! the client on demand ([`Pair::server_publish`]).
//!
//! Everything is deterministic: the clock only moves inside [`Pair::drive`],
//! [`Pair::advance`] and [`Pair::drive_until`], and the only randomness is a seeded
//! xorshift generator for [`ChunkMode::Random`].
//!
//! What the tests look at:
//! - [`Pair::client_log`]: every client event, owned, in order, plus transport losses;
//! - [`ServerApp::received`]: every application message the server application received;
//! - [`Pair::wire`]: every packet each side sent and every packet that arrived, decoded;
//! - [`Pair::stats`]: high-water marks of the in-flight windows and buffers, sampled after
//!   every step.

// Each test file that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use petrel_codec::{Decoded, Decoder, Packet, PacketId, ProtocolVersion, QoS, ReasonCode};
use petrel_state::client::{Client, ClientError, ClientEvent, ClientOptions, ConnectionState};
use petrel_state::message::Message;
use petrel_state::server::{
    Accept, CloseInfo, Delivery, DeliveryOutcome, DropReason, ServerConfig, ServerConnection,
    ServerEvent, Session,
};
use petrel_state::{Duration, Instant};

/// Packet identifiers the test client can have in use at once.
pub(crate) const CLIENT_INFLIGHT: usize = 16;
/// Bytes the harness takes from the client per `poll_transmit`.
pub(crate) const CLIENT_TX: usize = 8192;
/// Bytes of the test client's buffer: QoS 1/2 PUBLISH packets kept for retransmission and
/// packets queued for transmission.
pub(crate) const CLIENT_BUF: usize = 24576;

/// The client session under test.
pub(crate) type TestClient = Client<'static, CLIENT_INFLIGHT, CLIENT_BUF>;

/// A bound on the steps of one `drive` / `advance` call: reaching it means the two sides
/// keep talking without end (a livelock), which is a bug worth a loud failure.
const MAX_STEPS: usize = 2_000_000;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness

/// A xorshift64 generator: tiny, seeded, and the same on every machine.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value; zero is remapped, xorshift must not start at 0).
    pub(crate) fn new(seed: u64) -> Self {
        XorShift((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `1..=max` (`max` at least 1).
    pub(crate) fn between_one_and(&mut self, max: usize) -> usize {
        let max = max.max(1) as u64;
        (self.next_u64() % max) as usize + 1
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// How transmitted bytes are cut before they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkMode {
    /// Each `poll_transmit` output arrives in one piece (several packets at once: a burst).
    Whole,
    /// Every byte arrives on its own.
    OneByte,
    /// Pieces of 1 to 32 bytes, their sizes drawn from a xorshift generator with this seed.
    Random(u64),
}

/// Longest piece [`ChunkMode::Random`] cuts.
const RANDOM_CHUNK_MAX: usize = 32;

/// How a [`Pair`] is built.
#[derive(Debug, Clone)]
pub(crate) struct PairConfig {
    /// The protocol the client speaks.
    pub(crate) version: ProtocolVersion,
    /// The client identifier.
    pub(crate) client_id: &'static str,
    /// The client's keep-alive, in seconds.
    pub(crate) keep_alive: u16,
    /// 5.0: the session expiry interval the client asks for (0: the session ends with the
    /// connection). 3.1.1 sessions persist exactly when clean session is 0.
    pub(crate) session_expiry_interval: u32,
    /// The Receive Maximum the client asks for (clamped by the client to
    /// `1..=CLIENT_INFLIGHT`; only 5.0 can announce it).
    pub(crate) client_receive_maximum: u16,
    /// The clean start flag of the very first connection. Later [`Pair::reconnect`] calls
    /// send 0 to resume.
    pub(crate) first_clean_start: bool,
    /// The server connection's configuration.
    pub(crate) server: ServerConfig,
    /// One-way latency, client to server.
    pub(crate) latency_to_server: Duration,
    /// One-way latency, server to client.
    pub(crate) latency_to_client: Duration,
    /// How bytes are cut on the way.
    pub(crate) chunk: ChunkMode,
    /// How long the server application takes to make an inbound QoS 1/2 message safe before
    /// it calls `complete_publish` (which sends PUBACK / PUBREC).
    pub(crate) complete_delay: Duration,
}

impl PairConfig {
    /// A persistent session over `version`: keep-alive 60 s; over 5.0, clean start with a
    /// session expiry of one hour; over 3.1.1, clean session 0 from the start (3.1.1 has no
    /// other way to keep a session). No latency, whole chunks, immediate completion.
    pub(crate) fn new(version: ProtocolVersion) -> Self {
        PairConfig {
            version,
            client_id: "pair-client",
            keep_alive: 60,
            session_expiry_interval: 3600,
            client_receive_maximum: u16::MAX,
            first_clean_start: version == ProtocolVersion::V5,
            server: ServerConfig::default(),
            latency_to_server: Duration::ZERO,
            latency_to_client: Duration::ZERO,
            chunk: ChunkMode::Whole,
            complete_delay: Duration::ZERO,
        }
    }

    /// The same latency in both directions.
    pub(crate) fn with_latency(mut self, latency: Duration) -> Self {
        self.latency_to_server = latency;
        self.latency_to_client = latency;
        self
    }

    /// Another chunking of the byte streams.
    pub(crate) fn with_chunk(mut self, chunk: ChunkMode) -> Self {
        self.chunk = chunk;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Logs

/// One side of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client session.
    Client,
    /// The server connection.
    Server,
}

/// Whether a wire record is about bytes leaving their sender or reaching their receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Returned by the sender's `poll_transmit` (it may still be lost on the way).
    Sent,
    /// Handed, completely, to the receiver's `handle_bytes`.
    Delivered,
}

/// An application message as one side's application saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppMessage {
    /// The topic name.
    pub(crate) topic: String,
    /// The payload.
    pub(crate) payload: Vec<u8>,
    /// The QoS it arrived with.
    pub(crate) qos: QoS,
    /// The RETAIN flag.
    pub(crate) retain: bool,
    /// The DUP flag of the PUBLISH that delivered it. The server's event does not carry it,
    /// so it is always `false` in [`ServerApp::received`]; see [`Pair::wire`] for the flag
    /// on the wire.
    pub(crate) dup: bool,
}

/// A client event, owned, or a transport change the harness made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientLog {
    /// CONNACK accepted the connection.
    Connected {
        /// Whether the server resumed the session.
        session_present: bool,
    },
    /// CONNACK refused the connection.
    Refused(ReasonCode),
    /// An application message from the server.
    Message(AppMessage),
    /// A QoS 1/2 publish completed (PUBACK / PUBCOMP).
    Published(u16),
    /// The server refused a publish.
    PublishFailed(u16, ReasonCode),
    /// SUBACK.
    Subscribed {
        /// The SUBSCRIBE's packet identifier.
        packet_id: u16,
        /// One code per filter.
        reason_codes: Vec<ReasonCode>,
    },
    /// UNSUBACK.
    Unsubscribed {
        /// The UNSUBSCRIBE's packet identifier.
        packet_id: u16,
        /// One code per filter over 5.0; empty over 3.1.1.
        reason_codes: Vec<ReasonCode>,
    },
    /// A 5.0 DISCONNECT from the server.
    Disconnected(ReasonCode),
    /// A request dropped with the session or the connection.
    SessionLost(u16),
    /// PINGRESP.
    Pong,
    /// An error from `handle_bytes` or `handle_timeout`.
    Error(ClientError),
    /// The harness closed the transport (loss, or the end of a closing connection) and
    /// called `connection_lost`.
    TransportClosed,
}

impl ClientLog {
    fn of(event: ClientEvent<'_>) -> ClientLog {
        match event {
            ClientEvent::Connected { session_present } => ClientLog::Connected { session_present },
            ClientEvent::Refused(reason) => ClientLog::Refused(reason),
            ClientEvent::Message(publish) => ClientLog::Message(AppMessage {
                topic: publish.topic.to_owned(),
                payload: publish.payload.to_vec(),
                qos: publish.qos,
                retain: publish.retain,
                dup: publish.dup,
            }),
            ClientEvent::Published { packet_id } => ClientLog::Published(packet_id.get()),
            ClientEvent::PublishFailed { packet_id, reason } => {
                ClientLog::PublishFailed(packet_id.get(), reason)
            }
            ClientEvent::Subscribed {
                packet_id,
                reason_codes,
            } => ClientLog::Subscribed {
                packet_id: packet_id.get(),
                reason_codes: reason_codes.iter().collect(),
            },
            ClientEvent::Unsubscribed {
                packet_id,
                reason_codes,
            } => ClientLog::Unsubscribed {
                packet_id: packet_id.get(),
                reason_codes: reason_codes.iter().collect(),
            },
            ClientEvent::Disconnected { reason, .. } => ClientLog::Disconnected(reason),
            ClientEvent::SessionLost { packet_id } => ClientLog::SessionLost(packet_id.get()),
            ClientEvent::Pong => ClientLog::Pong,
        }
    }
}

/// A control packet seen on the wire, reduced to what the tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WirePacket {
    /// CONNECT.
    Connect {
        /// Clean start / clean session.
        clean_start: bool,
    },
    /// CONNACK.
    ConnAck {
        /// Session Present.
        session_present: bool,
        /// The reason / return code.
        reason: ReasonCode,
    },
    /// PUBLISH.
    Publish {
        /// The topic name (empty when a 5.0 topic alias stands for it).
        topic: String,
        /// The payload.
        payload: Vec<u8>,
        /// QoS.
        qos: QoS,
        /// The DUP flag.
        dup: bool,
        /// The packet identifier (QoS 1/2).
        packet_id: Option<u16>,
        /// The 5.0 Topic Alias property.
        topic_alias: Option<u16>,
    },
    /// PUBACK.
    PubAck(u16),
    /// PUBREC.
    PubRec(u16),
    /// PUBREL.
    PubRel(u16),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBSCRIBE.
    Subscribe(u16),
    /// SUBACK.
    SubAck(u16),
    /// UNSUBSCRIBE.
    Unsubscribe(u16),
    /// UNSUBACK.
    UnsubAck(u16),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(ReasonCode),
    /// AUTH.
    Auth(ReasonCode),
    /// Bytes the tap could not decode (the receiver will have said so too).
    Malformed,
}

impl WirePacket {
    fn of(packet: &Packet<'_>) -> WirePacket {
        match packet {
            Packet::Connect(c) => WirePacket::Connect {
                clean_start: c.clean_start,
            },
            Packet::ConnAck(c) => WirePacket::ConnAck {
                session_present: c.session_present,
                reason: c.reason_code,
            },
            Packet::Publish(p) => WirePacket::Publish {
                topic: p.topic.to_owned(),
                payload: p.payload.to_vec(),
                qos: p.qos,
                dup: p.dup,
                packet_id: p.packet_id.map(PacketId::get),
                topic_alias: p.properties.topic_alias,
            },
            Packet::PubAck(r) => WirePacket::PubAck(r.packet_id.get()),
            Packet::PubRec(r) => WirePacket::PubRec(r.packet_id.get()),
            Packet::PubRel(r) => WirePacket::PubRel(r.packet_id.get()),
            Packet::PubComp(r) => WirePacket::PubComp(r.packet_id.get()),
            Packet::Subscribe(s) => WirePacket::Subscribe(s.packet_id.get()),
            Packet::SubAck(s) => WirePacket::SubAck(s.packet_id.get()),
            Packet::Unsubscribe(u) => WirePacket::Unsubscribe(u.packet_id.get()),
            Packet::UnsubAck(u) => WirePacket::UnsubAck(u.packet_id.get()),
            Packet::PingReq => WirePacket::PingReq,
            Packet::PingResp => WirePacket::PingResp,
            Packet::Disconnect(d) => WirePacket::Disconnect(d.reason_code),
            Packet::Auth(a) => WirePacket::Auth(a.reason_code),
        }
    }
}

/// One packet on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireEvent {
    /// When it was sent or delivered.
    pub(crate) at: Instant,
    /// Which connection (1 for the first, counting every `connect` / `reconnect`).
    pub(crate) connection: u32,
    /// Who sent it.
    pub(crate) from: Side,
    /// Whether this records its sending or its arrival.
    pub(crate) stage: Stage,
    /// The packet.
    pub(crate) packet: WirePacket,
}

/// Something the server application saw, other than application messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerLog {
    /// A CONNECT was accepted.
    Accepted {
        /// Whether it asked for a clean start.
        clean_start: bool,
        /// Whether the kept session was resumed.
        session_present: bool,
    },
    /// The client acknowledged an outbound QoS 1/2 message (PUBACK / PUBCOMP).
    Delivered(u16),
    /// A SUBSCRIBE was granted: filters and granted QoS.
    Subscribed(Vec<(String, QoS)>),
    /// An UNSUBSCRIBE was answered.
    Unsubscribed(Vec<String>),
    /// The connection ended.
    Closed(CloseInfo),
}

/// What became of a [`Pair::server_publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Encoded for the client now.
    Sent,
    /// Queued behind the client's in-flight window or a full transmit buffer.
    Queued,
    /// Queued in the detached session for the client's return.
    QueuedOffline,
    /// Dropped by the connection (counted in the session).
    Dropped(DropReason),
    /// Dropped because the client is offline: QoS 0, or no session kept.
    DroppedOffline,
}

impl Offered {
    /// Whether the message will reach the client if the session survives.
    pub(crate) fn accepted(self) -> bool {
        matches!(
            self,
            Offered::Sent | Offered::Queued | Offered::QueuedOffline
        )
    }
}

/// High-water marks, sampled after every step of the harness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PairStats {
    /// Most client QoS 1/2 publishes in flight ([`Client::inflight`]).
    pub(crate) max_client_inflight: usize,
    /// Most server QoS 1/2 deliveries in flight on the attached session.
    pub(crate) max_server_inflight: usize,
    /// Most bytes waiting in the client's transmit queue.
    pub(crate) max_client_pending_tx: usize,
    /// Most bytes in the client's retransmission store.
    pub(crate) max_client_stored: usize,
    /// Most bytes waiting in the server connection's transmit buffer.
    pub(crate) max_server_pending_tx: usize,
    /// Most messages queued in the attached server session.
    pub(crate) max_server_queue: usize,
    /// Times the client's `handle_bytes` said `BufferFull` and the harness drained and
    /// retried.
    pub(crate) client_buffer_full: usize,
}

// ---------------------------------------------------------------------------------------------
// The server application

/// An acknowledgement the application still holds back.
#[derive(Debug, Clone)]
struct PendingCompletion {
    due: Instant,
    packet_id: PacketId,
}

/// A deterministic stand-in for the broker: it answers every [`ServerEvent`] of the
/// connection and keeps the session across connections.
#[derive(Debug, Default)]
pub(crate) struct ServerApp {
    /// Application messages from the client, in order of arrival. Like the broker core,
    /// the application takes (and would route) a message as soon as its event arrives; only
    /// the acknowledgement waits for `complete_delay` (the broker's store commit).
    pub(crate) received: Vec<AppMessage>,
    /// Every other event, in order.
    pub(crate) log: Vec<ServerLog>,
    /// The client's subscriptions and their granted QoS.
    pub(crate) subscriptions: BTreeMap<String, QoS>,
    /// The session kept while no connection has it (only when its expiry is non-zero).
    pub(crate) detached: Option<Session>,
    /// How long the application holds the acknowledgement (`complete_publish`) of an
    /// inbound QoS 1/2 message back.
    pub(crate) complete_delay: Duration,
    pending: VecDeque<PendingCompletion>,
}

impl ServerApp {
    fn owned(message: &Message) -> AppMessage {
        AppMessage {
            topic: message.topic.to_string(),
            payload: message.payload.to_vec(),
            qos: message.qos,
            retain: message.retain,
            dup: false,
        }
    }

    /// Answers one event.
    fn handle(&mut self, now: Instant, conn: &mut ServerConnection, event: ServerEvent) {
        match event {
            ServerEvent::Connect(request) => {
                // A kept session is resumed unless the client asks for a clean start
                // [MQTT-3.1.2-4] / [MQTT-3.1.2-5]; a clean start discards it.
                let kept = self
                    .detached
                    .take()
                    .filter(|s| !request.clean_start && s.client_id == request.client_id);
                let session_present = kept.is_some();
                let session = kept.unwrap_or_else(|| {
                    Session::new(request.client_id.clone(), request.session_expiry_interval)
                });
                if !session_present {
                    // The subscriptions belong to the session.
                    self.subscriptions.clear();
                }
                let accept = Accept {
                    session,
                    session_present,
                    assigned_client_id: None,
                    authentication_data: None,
                };
                conn.accept(now, accept).expect("accept a pending CONNECT");
                self.log.push(ServerLog::Accepted {
                    clean_start: request.clean_start,
                    session_present,
                });
            }
            ServerEvent::Publish(publish) => {
                self.received.push(Self::owned(&publish.message));
                match publish.packet_id {
                    None => {}
                    Some(packet_id) if self.complete_delay == Duration::ZERO => {
                        // The connection may have closed behind the PUBLISH (a DISCONNECT
                        // in the same read): then no acknowledgement can go out, which the
                        // connection reports as an error.
                        let _ = conn.complete_publish(now, packet_id, ReasonCode::Success);
                    }
                    Some(packet_id) => self.pending.push_back(PendingCompletion {
                        due: now + self.complete_delay,
                        packet_id,
                    }),
                }
            }
            ServerEvent::Subscribe(request) => {
                let mut granted = Vec::new();
                let codes: Vec<ReasonCode> = request
                    .filters
                    .iter()
                    .map(|f| match f.refusal {
                        Some(refusal) => refusal,
                        None => {
                            self.subscriptions.insert(f.filter.clone(), f.options.qos);
                            granted.push((f.filter.clone(), f.options.qos));
                            granted_code(f.options.qos)
                        }
                    })
                    .collect();
                conn.complete_subscribe(now, request.packet_id, &codes)
                    .expect("complete a SUBSCRIBE");
                self.log.push(ServerLog::Subscribed(granted));
            }
            ServerEvent::Unsubscribe(request) => {
                let codes: Vec<ReasonCode> = request
                    .filters
                    .iter()
                    .map(|f| match self.subscriptions.remove(f) {
                        Some(_) => ReasonCode::Success,
                        None => ReasonCode::NoSubscriptionExisted,
                    })
                    .collect();
                conn.complete_unsubscribe(now, request.packet_id, &codes)
                    .expect("complete an UNSUBSCRIBE");
                self.log.push(ServerLog::Unsubscribed(request.filters));
            }
            ServerEvent::Delivered { packet_id } => {
                self.log.push(ServerLog::Delivered(packet_id.get()));
            }
            ServerEvent::Closed(info) => {
                // Acknowledgements still held back die with the connection: the client
                // re-sends those messages after resuming.
                self.pending.clear();
                if let Some(session) = conn.take_session() {
                    self.detached = (session.expiry_interval > 0).then_some(session);
                }
                self.log.push(ServerLog::Closed(info));
            }
            ServerEvent::Auth(_) => {
                // The test client never uses enhanced authentication.
                conn.close(now, ReasonCode::BadAuthenticationMethod);
            }
            // The harness never turns the packet trace on.
            ServerEvent::Received(_) => {}
        }
    }

    /// Sends the acknowledgements whose delay is over; returns whether it sent any.
    fn complete_due(&mut self, now: Instant, conn: &mut ServerConnection) -> bool {
        let mut any = false;
        while let Some(pending) = self.pending.pop_front() {
            if pending.due > now {
                self.pending.push_front(pending);
                break;
            }
            conn.complete_publish(now, pending.packet_id, ReasonCode::Success)
                .expect("complete an inbound publish on an open connection");
            any = true;
        }
        any
    }

    fn next_completion(&self) -> Option<Instant> {
        self.pending.front().map(|p| p.due)
    }

    /// Acknowledgements held back.
    pub(crate) fn pending_completions(&self) -> usize {
        self.pending.len()
    }
}

/// The SUBACK code granting `qos`.
pub(crate) fn granted_code(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

// ---------------------------------------------------------------------------------------------
// Links

/// A piece of a byte stream on its way.
#[derive(Debug, Clone)]
struct Segment {
    arrives: Instant,
    bytes: Vec<u8>,
}

/// One direction of the transport: bytes in flight, and the taps that decode what was sent
/// and what arrived.
#[derive(Debug, Default)]
struct Link {
    in_flight: VecDeque<Segment>,
    sent_tap: Vec<u8>,
    delivered_tap: Vec<u8>,
}

/// Decodes the complete packets at the start of `buf`, removing them.
fn tap(buf: &mut Vec<u8>, version: ProtocolVersion) -> Vec<WirePacket> {
    let decoder = Decoder::new(version);
    let mut packets = Vec::new();
    loop {
        let (packet, len) = match decoder.decode(buf) {
            Ok(Decoded::Packet { packet, len }) => (WirePacket::of(&packet), len),
            Ok(Decoded::Incomplete { .. }) => break,
            Err(_) => (WirePacket::Malformed, buf.len()),
        };
        buf.drain(..len);
        packets.push(packet);
    }
    packets
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// No transport: before the first connect, and after a loss or a close.
    Down,
    /// Bytes flow.
    Up,
}

// ---------------------------------------------------------------------------------------------
// The pair

/// A client and a server connection wired in memory (see the [module documentation](self)).
pub(crate) struct Pair {
    /// The virtual clock.
    pub(crate) now: Instant,
    /// The client session.
    pub(crate) client: TestClient,
    /// The server side of the current (or last) connection.
    pub(crate) server: ServerConnection,
    /// The broker stand-in.
    pub(crate) app: ServerApp,
    /// Whether the harness calls the client's `handle_timeout` at its deadlines. Turn it
    /// off to play a client that stopped sending (keep-alive tests).
    pub(crate) client_timers: bool,
    /// One-way latency, client to server; changes apply to bytes sent afterwards.
    pub(crate) latency_to_server: Duration,
    /// One-way latency, server to client.
    pub(crate) latency_to_client: Duration,
    /// Every client event, in order.
    pub(crate) client_log: Vec<ClientLog>,
    /// Every packet sent and delivered, in order.
    pub(crate) wire: Vec<WireEvent>,
    /// High-water marks.
    pub(crate) stats: PairStats,
    config: PairConfig,
    server_config: Arc<ServerConfig>,
    chunk: ChunkMode,
    rng: XorShift,
    to_server: Link,
    to_client: Link,
    /// Bytes that reached the client and that it has not consumed yet.
    client_rx: Vec<u8>,
    transport: Transport,
    connection: u32,
    /// How far `drive_until` has looked into `wire`.
    wire_checked: usize,
}

impl Pair {
    /// A pair with no connection yet: call [`Pair::connect`].
    pub(crate) fn new(config: PairConfig) -> Self {
        let mut options = ClientOptions::new(config.version, config.client_id);
        options.keep_alive = config.keep_alive;
        options.session_expiry_interval = config.session_expiry_interval;
        options.receive_maximum = config.client_receive_maximum;
        options.clean_start = config.first_clean_start;
        let server_config = Arc::new(config.server.clone());
        let app = ServerApp {
            complete_delay: config.complete_delay,
            ..ServerApp::default()
        };
        let chunk = config.chunk;
        Pair {
            now: Instant::ZERO,
            client: TestClient::new(options),
            server: ServerConnection::new(server_config.clone(), Instant::ZERO),
            app,
            client_timers: true,
            latency_to_server: config.latency_to_server,
            latency_to_client: config.latency_to_client,
            client_log: Vec::new(),
            wire: Vec::new(),
            stats: PairStats::default(),
            rng: XorShift::new(chunk_seed(chunk)),
            chunk,
            config,
            server_config,
            to_server: Link::default(),
            to_client: Link::default(),
            client_rx: Vec::new(),
            transport: Transport::Down,
            connection: 0,
            wire_checked: 0,
        }
    }

    /// A pair whose first connection is established (CONNACK received).
    pub(crate) fn connected(config: PairConfig) -> Self {
        let mut pair = Pair::new(config);
        let clean_start = pair.config.first_clean_start;
        pair.connect(clean_start);
        pair.drive();
        assert_eq!(
            pair.client.state(),
            ConnectionState::Connected,
            "{:#?}",
            pair.client_log
        );
        pair
    }

    // -----------------------------------------------------------------------------------------
    // Knobs

    /// The configuration the pair was built with.
    pub(crate) fn config(&self) -> &PairConfig {
        &self.config
    }

    /// The server configuration every connection uses.
    pub(crate) fn server_config(&self) -> &ServerConfig {
        &self.server_config
    }

    /// Changes how bytes sent from now on are cut.
    pub(crate) fn set_chunk(&mut self, chunk: ChunkMode) {
        self.chunk = chunk;
        self.rng = XorShift::new(chunk_seed(chunk));
    }

    /// Sets the one-way latency of both directions, for bytes sent from now on. Bytes never
    /// overtake each other: a segment arrives no earlier than the one before it.
    pub(crate) fn set_latency(&mut self, latency: Duration) {
        self.latency_to_server = latency;
        self.latency_to_client = latency;
    }

    /// Whether a transport is up (it may be closing).
    pub(crate) fn is_up(&self) -> bool {
        self.transport == Transport::Up
    }

    /// Which connection is the current (or last) one, counting from 1.
    pub(crate) fn connection(&self) -> u32 {
        self.connection
    }

    /// Bytes in flight in both directions.
    pub(crate) fn bytes_in_flight(&self) -> usize {
        [&self.to_server, &self.to_client]
            .iter()
            .flat_map(|l| l.in_flight.iter())
            .map(|s| s.bytes.len())
            .sum()
    }

    // -----------------------------------------------------------------------------------------
    // Connection lifecycle

    /// Opens a new transport: a new server connection, and the client's CONNECT with this
    /// clean start flag. Call [`Pair::drive`] to let the handshake happen.
    ///
    /// # Panics
    ///
    /// If a transport is still up: lose or close it first.
    pub(crate) fn connect(&mut self, clean_start: bool) {
        assert!(
            self.transport == Transport::Down,
            "connect with a transport still up; call lose_connection first"
        );
        self.connection += 1;
        self.server = ServerConnection::new(self.server_config.clone(), self.now);
        self.client.set_clean_start(clean_start);
        self.client.connect(self.now).expect("client connect");
        self.transport = Transport::Up;
    }

    /// Reconnects resuming the session (clean start 0). See [`Pair::connect`].
    pub(crate) fn reconnect(&mut self) {
        self.connect(false);
    }

    /// The transport fails, now: bytes in flight either way are lost, both sides are told
    /// (`connection_lost`), and the server application takes the session back.
    pub(crate) fn lose_connection(&mut self) {
        if self.transport == Transport::Up {
            self.close_transport();
        }
    }

    /// The server closes the connection with `reason` (a 5.0 client is sent DISCONNECT
    /// with it, for example 0x8E "session taken over"). Call [`Pair::drive`] to deliver it.
    pub(crate) fn server_close(&mut self, reason: ReasonCode) {
        self.server.close(self.now, reason);
    }

    fn close_transport(&mut self) {
        self.to_server = Link::default();
        self.to_client = Link::default();
        self.client_rx.clear();
        if self.client.state() != ConnectionState::Disconnected {
            self.client.connection_lost(self.now);
        }
        self.server.connection_lost(self.now);
        self.transport = Transport::Down;
        self.client_log.push(ClientLog::TransportClosed);
        self.drain_events();
    }

    // -----------------------------------------------------------------------------------------
    // Commands

    /// Publishes from the client (no properties, no retain).
    pub(crate) fn client_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
    ) -> Result<Option<PacketId>, ClientError> {
        self.client.publish(self.now, topic, payload, qos, false)
    }

    /// Delivers a message from the server to the client at `qos`, as the broker would after
    /// routing it: through `deliver` while connected, into the detached session (QoS 1/2,
    /// or QoS 0 if the queue limits say so) while not.
    pub(crate) fn server_publish(&mut self, topic: &str, payload: &[u8], qos: QoS) -> Offered {
        let mut message = Message::new(topic, Bytes::copy_from_slice(payload));
        message.qos = qos;
        let delivery = Delivery::new(Arc::new(message));
        let delivery = if self.transport == Transport::Up && self.server.is_connected() {
            match self.server.deliver(self.now, delivery) {
                DeliveryOutcome::Sent => return Offered::Sent,
                DeliveryOutcome::Queued => return Offered::Queued,
                DeliveryOutcome::Dropped(reason) => return Offered::Dropped(reason),
                DeliveryOutcome::NotConnected(delivery) => delivery,
            }
        } else {
            delivery
        };
        let limits = self.server_config.queue;
        match self.app.detached.as_mut() {
            Some(session) if qos != QoS::AtMostOnce || limits.queue_qos0_offline => {
                if session.enqueue(delivery, &limits) {
                    Offered::QueuedOffline
                } else {
                    Offered::Dropped(DropReason::QueueFull)
                }
            }
            _ => Offered::DroppedOffline,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Running

    /// Runs until nothing is left to do: no bytes in flight, no delayed completion. The
    /// clock moves only as far as the last arrival; timers that fall before it fire on the
    /// way (keep-alive timers alone do not keep it running).
    pub(crate) fn drive(&mut self) {
        self.run(None, None);
    }

    /// Runs for `by` of virtual time, firing every timer that falls due (keep-alive pings,
    /// the server's keep-alive check, response timeouts).
    pub(crate) fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        self.run(Some(until), None);
    }

    /// Runs like [`Pair::drive`] but stops right after the first new wire event that
    /// matches `stop`, once the receiver (for a delivery) has handled it and both
    /// applications have reacted; what they sent in reply is still in flight, so a
    /// [`Pair::lose_connection`] now loses it. Returns whether the event happened.
    pub(crate) fn drive_until(&mut self, mut stop: impl FnMut(&WireEvent) -> bool) -> bool {
        self.wire_checked = self.wire.len();
        self.run(None, Some(&mut stop))
    }

    fn run(
        &mut self,
        until: Option<Instant>,
        mut stop: Option<&mut dyn FnMut(&WireEvent) -> bool>,
    ) -> bool {
        for _ in 0..MAX_STEPS {
            self.settle();
            if let Some(stop) = stop.as_mut() {
                let new = self.wire.get(self.wire_checked..).unwrap_or(&[]);
                let hit = new.iter().any(&mut **stop);
                self.wire_checked = self.wire.len();
                if hit {
                    return true;
                }
            }
            if self.deliver_one() {
                continue;
            }
            // Nothing more happens at `now`: move the clock to the next thing that does.
            let work = self
                .next_arrival()
                .into_iter()
                .chain(self.app.next_completion())
                .min();
            let next = match until {
                None => match (work, self.next_timer()) {
                    (None, _) => return false,
                    (Some(work), Some(timer)) => work.min(timer),
                    (Some(work), None) => work,
                },
                Some(until) => {
                    let next = work.into_iter().chain(self.next_timer()).min();
                    match next {
                        Some(next) if next <= until => next,
                        _ if self.now >= until => return false,
                        _ => until,
                    }
                }
            };
            self.now = self.now.max(next);
        }
        panic!("the pair did not settle in {MAX_STEPS} steps: a livelock");
    }

    /// The earliest arrival of bytes in flight.
    fn next_arrival(&self) -> Option<Instant> {
        [&self.to_server, &self.to_client]
            .iter()
            .filter_map(|l| l.in_flight.front().map(|s| s.arrives))
            .min()
    }

    /// The earliest timer deadline still ahead of `now`.
    fn next_timer(&self) -> Option<Instant> {
        if self.transport != Transport::Up {
            return None;
        }
        let client = self
            .client_timers
            .then(|| self.client.poll_timeout())
            .flatten();
        [client, self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .filter(|&t| t > self.now)
            .min()
    }

    /// Fires the timers that are due (each side once per call, so a deadline the side does
    /// not move cannot spin the harness).
    fn fire_timers(&mut self) {
        if self.transport != Transport::Up {
            return;
        }
        let now = self.now;
        if self.client_timers && self.client.poll_timeout().is_some_and(|t| t <= now) {
            if let Err(e) = self.client.handle_timeout(now) {
                self.client_log.push(ClientLog::Error(e));
            }
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
    }

    /// Delivers the earliest segment that has arrived by `now`; returns whether there was one.
    fn deliver_one(&mut self) -> bool {
        let to_server = self.to_server.in_flight.front().map(|s| s.arrives);
        let to_client = self.to_client.in_flight.front().map(|s| s.arrives);
        let side = match (to_server, to_client) {
            (Some(s), Some(c)) if s <= self.now && s <= c => Side::Server,
            (_, Some(c)) if c <= self.now => Side::Client,
            (Some(s), _) if s <= self.now => Side::Server,
            _ => return false,
        };
        let version = self.config.version;
        let (link, from) = match side {
            Side::Server => (&mut self.to_server, Side::Client),
            Side::Client => (&mut self.to_client, Side::Server),
        };
        let Some(segment) = link.in_flight.pop_front() else {
            return false;
        };
        link.delivered_tap.extend_from_slice(&segment.bytes);
        let packets = tap(&mut link.delivered_tap, version);
        self.record(from, Stage::Delivered, packets);
        match side {
            Side::Server => self.server.handle_bytes(self.now, &segment.bytes),
            Side::Client => {
                self.client_rx.extend_from_slice(&segment.bytes);
                self.client_read();
            }
        }
        true
    }

    /// Feeds the client what it has received, one packet per `handle_bytes` call.
    fn client_read(&mut self) {
        let mut retries = 0;
        while !self.client_rx.is_empty() {
            let (entry, consumed) = match self.client.handle_bytes(self.now, &self.client_rx) {
                Ok(received) if received.needs_more() => break,
                Ok(received) => (received.event.map(ClientLog::of), received.consumed),
                Err(ClientError::BufferFull) => {
                    // Not fatal, nothing consumed: make room and offer the packet again.
                    self.stats.client_buffer_full += 1;
                    retries += 1;
                    assert!(retries < 100, "the client's transmit queue never drains");
                    self.flush_client();
                    continue;
                }
                Err(e) => {
                    self.client_log.push(ClientLog::Error(e));
                    break;
                }
            };
            self.client_rx.drain(..consumed.min(self.client_rx.len()));
            self.client_log.extend(entry);
            if consumed == 0 {
                break;
            }
        }
    }

    /// Sends what the client has queued; returns whether there was anything.
    fn flush_client(&mut self) -> bool {
        let mut buf = [0u8; CLIENT_TX];
        let mut any = false;
        loop {
            let n = self.client.poll_transmit(self.now, &mut buf);
            if n == 0 {
                return any;
            }
            any = true;
            if self.transport == Transport::Up {
                self.transmit(Side::Client, &buf[..n]);
            }
        }
    }

    /// Sends what the server has queued; returns whether there was anything.
    fn flush_server(&mut self) -> bool {
        let mut any = false;
        loop {
            self.stats.max_server_pending_tx = self
                .stats
                .max_server_pending_tx
                .max(self.server.pending_transmit());
            let mut out = BytesMut::new();
            if self.server.poll_transmit(self.now, &mut out) == 0 {
                return any;
            }
            any = true;
            if self.transport == Transport::Up {
                self.transmit(Side::Server, &out);
            }
        }
    }

    /// Puts bytes `from` one side on the wire, cut per the chunk mode.
    fn transmit(&mut self, from: Side, bytes: &[u8]) {
        let version = self.config.version;
        let (link, latency) = match from {
            Side::Client => (&mut self.to_server, self.latency_to_server),
            Side::Server => (&mut self.to_client, self.latency_to_client),
        };
        link.sent_tap.extend_from_slice(bytes);
        let packets = tap(&mut link.sent_tap, version);
        // A stream never reorders: no segment arrives before the one sent ahead of it.
        let arrives = link.in_flight.back().map_or(self.now + latency, |last| {
            last.arrives.max(self.now + latency)
        });
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = match self.chunk {
                ChunkMode::Whole => rest.len(),
                ChunkMode::OneByte => 1,
                ChunkMode::Random(_) => self.rng.between_one_and(RANDOM_CHUNK_MAX),
            }
            .min(rest.len());
            let (piece, tail) = rest.split_at(len);
            link.in_flight.push_back(Segment {
                arrives,
                bytes: piece.to_vec(),
            });
            rest = tail;
        }
        self.record(from, Stage::Sent, packets);
    }

    fn record(&mut self, from: Side, stage: Stage, packets: Vec<WirePacket>) {
        let (at, connection) = (self.now, self.connection);
        self.wire
            .extend(packets.into_iter().map(|packet| WireEvent {
                at,
                connection,
                from,
                stage,
                packet,
            }));
    }

    /// Drains the events of both sides into the logs and the server application.
    fn drain_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.client.poll_event() {
            self.client_log.push(ClientLog::of(event));
            any = true;
        }
        while let Some(event) = self.server.poll_event() {
            self.app.handle(self.now, &mut self.server, event);
            any = true;
        }
        any
    }

    /// Everything that happens at `now` without anything arriving: timers, transmissions,
    /// events, delayed completions, and the end of a closing transport.
    fn settle(&mut self) {
        self.fire_timers();
        loop {
            let mut progress = self.flush_client();
            progress |= self.drain_events();
            progress |= self.app.complete_due(self.now, &mut self.server);
            progress |= self.flush_server();
            progress |= self.drain_events();
            progress |= self.finish_closing();
            self.sample();
            if !progress {
                return;
            }
        }
    }

    /// Closes the transport once a side that ended the connection has had all its bytes
    /// delivered (its last words, such as DISCONNECT, reach the peer first).
    fn finish_closing(&mut self) -> bool {
        if self.transport != Transport::Up {
            return false;
        }
        let server_done = self.server.is_closed();
        let client_done = self.client.state() == ConnectionState::Closing;
        if !server_done && !client_done {
            return false;
        }
        let flushed = (!server_done || self.to_client.in_flight.is_empty())
            && (!client_done || self.to_server.in_flight.is_empty());
        if flushed {
            self.close_transport();
        }
        flushed
    }

    fn sample(&mut self) {
        let s = &mut self.stats;
        s.max_client_inflight = s.max_client_inflight.max(self.client.inflight());
        s.max_client_pending_tx = s.max_client_pending_tx.max(self.client.pending_transmit());
        s.max_client_stored = s.max_client_stored.max(self.client.stored_bytes());
        if let Some(session) = self.server.session() {
            s.max_server_inflight = s.max_server_inflight.max(session.inflight());
            s.max_server_queue = s.max_server_queue.max(session.queue.len());
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reading the logs

    /// The application messages the client received, in order.
    pub(crate) fn client_messages(&self) -> Vec<&AppMessage> {
        self.client_log
            .iter()
            .filter_map(|e| match e {
                ClientLog::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The packet identifiers of the client's completed publishes, in order.
    pub(crate) fn client_published(&self) -> Vec<u16> {
        self.client_log
            .iter()
            .filter_map(|e| match e {
                ClientLog::Published(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// The errors the client reported.
    pub(crate) fn client_errors(&self) -> Vec<ClientError> {
        self.client_log
            .iter()
            .filter_map(|e| match e {
                ClientLog::Error(err) => Some(*err),
                _ => None,
            })
            .collect()
    }

    /// How the server's connections ended, in order.
    pub(crate) fn server_closes(&self) -> Vec<&CloseInfo> {
        self.app
            .log
            .iter()
            .filter_map(|e| match e {
                ServerLog::Closed(info) => Some(info),
                _ => None,
            })
            .collect()
    }

    /// The packet identifiers the server saw acknowledged by the client, in order.
    pub(crate) fn server_delivered(&self) -> Vec<u16> {
        self.app
            .log
            .iter()
            .filter_map(|e| match e {
                ServerLog::Delivered(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// The packets `from` one side at one stage, in order.
    pub(crate) fn packets(&self, from: Side, stage: Stage) -> Vec<&WirePacket> {
        self.wire
            .iter()
            .filter(|e| e.from == from && e.stage == stage)
            .map(|e| &e.packet)
            .collect()
    }
}

fn chunk_seed(chunk: ChunkMode) -> u64 {
    match chunk {
        ChunkMode::Random(seed) => seed,
        ChunkMode::Whole | ChunkMode::OneByte => 0,
    }
}
