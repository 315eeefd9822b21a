//! The server side of one client connection.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use bytes::{Bytes, BytesMut};
use petrel_codec::topic::{has_wildcard, SharedFilter};
use petrel_codec::{
    Auth, ConnAck, Connect, DecodeError, Decoder, Disconnect, List, Packet, PacketId, Properties,
    ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, SubAck, Subscribe, SubscriptionId,
    UnsubAck, Unsubscribe,
};

use super::config::ServerConfig;
use super::events::{
    Accept, AuthRequest, CloseInfo, CloseInitiator, ConnectRequest, InboundPublish, ServerEvent,
    SubscribeRequest, SubscriptionRequest, UnsubscribeRequest, Will,
};
use super::session::{Delivery, Outbound, OutboundState, Session};
use crate::message::{publish_properties, share, user_property_views, Message, MessageProperties};
use crate::time::{Duration, Instant};

/// A command the connection cannot carry out in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// The command does not fit the connection's state (accepting twice, completing a
    /// publish before the connection was accepted, …).
    InvalidState,
    /// No pending request has this packet identifier.
    UnknownPacketId,
    /// A SUBACK or UNSUBACK needs exactly one reason code per filter.
    ReasonCodeCount,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommandError::InvalidState => "command not valid in the connection's state",
            CommandError::UnknownPacketId => "no pending request has this packet identifier",
            CommandError::ReasonCodeCount => "one reason code per filter is required",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CommandError {}

/// What became of a delivery handed to [`ServerConnection::deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Encoded and waiting in the transmit buffer.
    Sent,
    /// Held in the session queue until the in-flight window or the socket has room.
    Queued,
    /// Dropped and counted in the session's [`DropCounters`](super::DropCounters).
    Dropped(DropReason),
    /// The connection has no accepted session; the delivery is handed back so the broker
    /// can queue it in the detached session.
    NotConnected(Delivery),
}

/// Why a delivery was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// QoS 0 and the transmit buffer is full (a slow reader).
    BufferFull,
    /// The session queue is at its limit.
    QueueFull,
    /// Larger than the client's maximum packet size [MQTT-3.1.2-25].
    TooLarge,
    /// Its message expiry interval has passed.
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing received yet; the first packet must be CONNECT [MQTT-3.1.0-1].
    AwaitingConnect,
    /// The server sent AUTH "continue" and waits for the client's AUTH.
    Authenticating,
    /// The broker holds the CONNECT (or an AUTH step) and has not answered yet; further
    /// packets wait in the receive buffer.
    PendingAccept,
    /// CONNACK sent; the session is attached.
    Connected,
    /// Over; only `poll_transmit` and `poll_event` still have something to give.
    Closed,
}

/// Counters of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionStats {
    /// Control packets received.
    pub packets_received: u64,
    /// Control packets sent.
    pub packets_sent: u64,
    /// PUBLISH packets received.
    pub publishes_received: u64,
    /// PUBLISH packets sent (re-sends included).
    pub publishes_sent: u64,
}

/// What only some 5.0 connections use: enhanced authentication and topic aliases. Boxed and
/// made on first use, so that a connection using none of it (every 3.1.1 one) keeps a
/// pointer for it rather than about 80 bytes.
#[derive(Debug, Default)]
struct Extras {
    authentication_method: Option<String>,
    reauthenticating: bool,
    inbound_aliases: Vec<Option<Arc<str>>>,
    /// The topic aliases the server gives the client's outbound messages: the first topics
    /// up to the client's Topic Alias Maximum keep their alias for the connection's life.
    outbound_aliases: BTreeMap<Arc<str>, u16>,
}

/// The enhanced authentication method the connection began with (a field borrow, so that
/// the other fields stay free).
fn authentication_method(extras: &Option<Box<Extras>>) -> Option<&str> {
    extras.as_deref()?.authentication_method.as_deref()
}

/// The server side of one client connection: CONNECT to DISCONNECT, for MQTT 3.1.1 and 5.0.
///
/// Feed it bytes with [`handle_bytes`](Self::handle_bytes) and time with
/// [`handle_timeout`](Self::handle_timeout); answer its [`ServerEvent`]s with the command
/// methods (`accept`, `complete_publish`, `deliver`, …); after each of these, drain
/// [`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event) and
/// [`poll_timeout`](Self::poll_timeout).
pub struct ServerConnection {
    config: Arc<ServerConfig>,
    state: State,
    version: ProtocolVersion,
    decoder: Decoder,
    rx: BytesMut,
    tx: BytesMut,
    /// The length of `tx` when [`take_binding_output`](Self::take_binding_output) last
    /// looked at it (0 once drained).
    tx_checked: usize,
    /// Bytes appended to `tx` since then that promise nothing: QoS 1 PUBLISH packets, and
    /// QoS 0 ones not taken from the session queue.
    tx_unbinding: usize,
    events: VecDeque<ServerEvent>,
    session: Option<Session>,
    was_connected: bool,
    clean_start: bool,
    keep_alive: u16,
    last_received: Instant,
    connect_deadline: Instant,
    session_expiry_interval: u32,
    client_receive_maximum: u16,
    /// Packet identifiers from the session's next one on known not to be in flight
    /// ([`Session::allocate_packet_id_from`]); 0 when a session is handed over.
    free_packet_ids: u16,
    client_max_packet_size: u32,
    client_topic_alias_maximum: u16,
    request_response_information: bool,
    extras: Option<Box<Extras>>,
    /// Inbound QoS 1/2 publications handed to the broker and not yet completed.
    inbound_pending: Vec<(PacketId, QoS)>,
    pending_subscribes: Vec<(PacketId, usize)>,
    pending_unsubscribes: Vec<(PacketId, usize)>,
    stats: ConnectionStats,
    /// Whether every decoded packet is reported as [`ServerEvent::Received`].
    trace_packets: bool,
}

impl ServerConnection {
    /// A re-authentication (AUTH 0x19) is under way.
    fn reauthenticating(&self) -> bool {
        self.extras.as_deref().is_some_and(|e| e.reauthenticating)
    }
}

impl fmt::Debug for ServerConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConnection")
            .field("state", &self.state)
            .field("version", &self.version)
            .field("client_id", &self.session.as_ref().map(|s| &s.client_id))
            .finish_non_exhaustive()
    }
}

impl ServerConnection {
    /// A connection accepted by the transport at `now`, waiting for CONNECT.
    pub fn new(config: Arc<ServerConfig>, now: Instant) -> Self {
        // Until CONNECT says otherwise, read with 5.0 rules, the superset.
        let decoder =
            Decoder::new(ProtocolVersion::V5).with_max_packet_size(config.max_packet_size);
        ServerConnection {
            connect_deadline: now + config.connect_timeout,
            config,
            state: State::AwaitingConnect,
            version: ProtocolVersion::V5,
            decoder,
            rx: BytesMut::new(),
            tx: BytesMut::new(),
            tx_checked: 0,
            tx_unbinding: 0,
            events: VecDeque::new(),
            session: None,
            was_connected: false,
            clean_start: true,
            keep_alive: 0,
            last_received: now,
            session_expiry_interval: 0,
            client_receive_maximum: u16::MAX,
            free_packet_ids: 0,
            client_max_packet_size: u32::MAX,
            client_topic_alias_maximum: 0,
            request_response_information: false,
            extras: None,
            inbound_pending: Vec::new(),
            pending_subscribes: Vec::new(),
            pending_unsubscribes: Vec::new(),
            stats: ConnectionStats::default(),
            trace_packets: false,
        }
    }

    /// Reports every packet decoded from now on as a [`ServerEvent::Received`] ahead of
    /// the events it raises (a packet trace; the broker turns it on when its hooks observe
    /// packets). What is sent needs no such help: it is the bytes of
    /// [`poll_transmit`](Self::poll_transmit), whole packets back to back.
    pub fn set_packet_trace(&mut self, on: bool) {
        self.trace_packets = on;
    }

    // -----------------------------------------------------------------------------------------
    // Getters

    /// The protocol version (5.0 until CONNECT arrives).
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Whether a CONNACK accepting the connection was sent and the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether the connection is over (the transport may still have bytes to flush).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The attached session, while connected.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Detaches the session once the connection is closed, for the broker to keep (or
    /// discard) according to its expiry interval.
    pub fn take_session(&mut self) -> Option<Session> {
        if self.state == State::Closed {
            self.session.take()
        } else {
            None
        }
    }

    /// Whether the CONNECT asked for a clean start.
    pub fn clean_start(&self) -> bool {
        self.clean_start
    }

    /// The keep-alive in force, in seconds (0: none).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// Counters.
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }

    /// Bytes encoded and not yet taken by `poll_transmit`.
    pub fn pending_transmit(&self) -> usize {
        self.tx.len()
    }

    /// Whether bytes encoded since the last call tell the client something that holds only
    /// once the state behind it is stored, and must wait for the store: an acknowledgement,
    /// a CONNACK or SUBACK, a QoS 2 PUBLISH or a PUBREL, a QoS 0 PUBLISH taken from the
    /// session queue (sent twice if a restart finds it still queued); anything but a QoS 1
    /// PUBLISH or a QoS 0 one routed straight to the client. A QoS 1 PUBLISH may go before
    /// the store has its in-flight entry: a restart that loses the entry sends the message
    /// again, or, if nothing of it was durable, its publisher (never acknowledged) sends it
    /// again, which at least once allows. A QoS 2 PUBLISH may not: after such a restart the
    /// same packet identifier could carry another message, which the client would take for
    /// the first one's duplicate (`docs/PERSISTENCE.md`, "What waits for the store").
    pub fn take_binding_output(&mut self) -> bool {
        let binding = self.tx.len() > self.tx_checked + self.tx_unbinding;
        self.tx_checked = self.tx.len();
        self.tx_unbinding = 0;
        binding
    }

    /// Whether the transport should read more now. False while the broker has not answered
    /// the CONNECT (the client may pipeline packets behind it) and once the receive buffer
    /// holds a whole maximum-size packet, so a flood waits in the socket, not in memory.
    ///
    /// A 3.1.1 client, which cannot be told a receive maximum, is also held back while the
    /// broker has that many of its QoS 1/2 messages unanswered.
    pub fn wants_read(&self) -> bool {
        match self.state {
            State::Closed => false,
            State::PendingAccept => self.rx.len() < self.config.max_packet_size as usize,
            _ if !self.version.is_v5()
                && self.inbound_pending.len() >= usize::from(self.config.receive_maximum) =>
            {
                false
            }
            _ => self.rx.len() <= self.config.max_packet_size as usize,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Inputs

    /// Bytes read from the transport.
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.rx.extend_from_slice(data);
        self.process(now);
    }

    /// The transport closed or failed.
    pub fn connection_lost(&mut self, _now: Instant) {
        if self.state != State::Closed {
            self.finish(
                ReasonCode::UnspecifiedError,
                CloseInitiator::Transport,
                self.was_connected,
            );
        }
    }

    /// Time passed: closes a connection that did not send CONNECT in time or went silent for
    /// one and a half keep-alive periods [MQTT-3.1.2-24].
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::AwaitingConnect | State::Authenticating if now >= self.connect_deadline => {
                self.finish(ReasonCode::UnspecifiedError, CloseInitiator::Server, false);
            }
            State::Connected => {
                if let Some(deadline) = self.keep_alive_deadline() {
                    if now >= deadline {
                        self.close(now, ReasonCode::KeepAliveTimeout);
                    }
                }
            }
            _ => {}
        }
    }

    fn keep_alive_deadline(&self) -> Option<Instant> {
        if self.keep_alive == 0 {
            return None;
        }
        // One and a half times the keep-alive, in milliseconds to keep the half second.
        let grace = Duration::from_millis(u64::from(self.keep_alive) * 1500);
        Some(self.last_received + grace)
    }

    // -----------------------------------------------------------------------------------------
    // Outputs

    /// Moves the bytes to send into `out` (swapping buffers when `out` is empty, so the
    /// common case copies nothing), then refills the in-flight window from the session queue
    /// for the next call. Returns the number of bytes added.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut BytesMut) -> usize {
        let n = self.tx.len();
        if out.is_empty() {
            core::mem::swap(out, &mut self.tx);
        } else {
            out.extend_from_slice(&self.tx);
            self.tx.clear();
        }
        self.tx_checked = 0;
        self.tx_unbinding = 0;
        // Refill for the next call: what the queue held back waited for this room. The
        // bytes stay here until then, so that the broker stores the new in-flight state
        // first (and holds a QoS 2 PUBLISH until that is durable).
        self.pump(now);
        n
    }

    /// The next event for the broker.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Gives back the room that buffers kept after a burst (the event queue holds four
    /// events, about 1.5 KB, once it was used). Call when the connection goes quiet: kept
    /// between the inputs of a busy connection, that room saves an allocation per input;
    /// kept by an idle one, it would make every idle connection pay for its busiest moment.
    pub fn release_spare_capacity(&mut self) {
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        if self.rx.is_empty() {
            self.rx = BytesMut::new();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitingConnect | State::Authenticating => Some(self.connect_deadline),
            State::Connected => self.keep_alive_deadline(),
            State::PendingAccept | State::Closed => None,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Commands

    /// Accepts the connection: sends CONNACK, attaches the session, re-sends what the
    /// session had in flight, and goes on with any packets the client sent meanwhile.
    pub fn accept(&mut self, now: Instant, accept: Accept) -> Result<(), CommandError> {
        if self.state != State::PendingAccept || self.was_connected {
            return Err(CommandError::InvalidState);
        }
        let mut session = accept.session;
        if let Some(id) = &accept.assigned_client_id {
            session.client_id.clone_from(id);
        }
        session.expiry_interval = self.session_expiry_interval;
        session.expires_at = None;
        // [MQTT-3.2.2-2]: a clean start never reports a session.
        let session_present = accept.session_present && !self.clean_start;
        let config = self.config.clone();
        let requested_keep_alive = self.keep_alive;
        let mut properties = Properties::default();
        if self.version.is_v5() {
            properties.session_expiry_interval = Some(self.session_expiry_interval);
            if config.receive_maximum != u16::MAX {
                properties.receive_maximum = Some(config.receive_maximum.max(1));
            }
            if config.maximum_qos != QoS::ExactlyOnce {
                properties.maximum_qos = Some(config.maximum_qos);
            }
            if !config.retain_available {
                properties.retain_available = Some(false);
            }
            properties.maximum_packet_size = Some(config.max_packet_size);
            properties.assigned_client_identifier = accept.assigned_client_id.as_deref();
            if config.topic_alias_maximum > 0 {
                properties.topic_alias_maximum = Some(config.topic_alias_maximum);
            }
            if !config.wildcard_subscription_available {
                properties.wildcard_subscription_available = Some(false);
            }
            if !config.subscription_identifiers_available {
                properties.subscription_identifier_available = Some(false);
            }
            if !config.shared_subscription_available {
                properties.shared_subscription_available = Some(false);
            }
            if config.max_keep_alive > 0
                && (requested_keep_alive == 0 || requested_keep_alive > config.max_keep_alive)
            {
                properties.server_keep_alive = Some(config.max_keep_alive);
                self.keep_alive = config.max_keep_alive;
            }
            if self.request_response_information {
                properties.response_information = config.response_information.as_deref();
            }
            properties.authentication_method = authentication_method(&self.extras);
            properties.authentication_data = accept.authentication_data.as_deref();
        }
        let connack = Packet::ConnAck(ConnAck {
            session_present,
            reason_code: ReasonCode::Success,
            properties,
        });
        send_packet(
            &mut self.tx,
            &mut self.stats,
            self.version,
            u32::MAX,
            &connack,
        );
        self.state = State::Connected;
        self.was_connected = true;
        self.last_received = now;
        if !session_present {
            session.outbound.clear();
            session.inbound_qos2.clear();
        }
        self.session = Some(session);
        self.free_packet_ids = 0;
        if session_present {
            self.resend_inflight(now);
        }
        self.pump(now);
        self.process(now);
        Ok(())
    }

    /// Refuses the connection with `reason` (sent as the nearest 3.1.1 return code to a
    /// 3.1.1 client) and closes it. The will is discarded.
    pub fn reject(&mut self, _now: Instant, reason: ReasonCode) -> Result<(), CommandError> {
        if !matches!(self.state, State::PendingAccept | State::Authenticating) {
            return Err(CommandError::InvalidState);
        }
        let reason = if reason.is_error() {
            reason
        } else {
            ReasonCode::UnspecifiedError
        };
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: reason,
            properties: Properties::default(),
        });
        send_packet(
            &mut self.tx,
            &mut self.stats,
            self.version,
            u32::MAX,
            &connack,
        );
        self.finish(reason, CloseInitiator::Server, false);
        Ok(())
    }

    /// Sends the next enhanced-authentication challenge (AUTH 0x18) and waits for the
    /// client's answer, which arrives as [`ServerEvent::Auth`].
    pub fn auth_continue(&mut self, _now: Instant, data: &[u8]) -> Result<(), CommandError> {
        let during_connect = self.state == State::PendingAccept && !self.was_connected;
        let during_reauth = self.state == State::Connected && self.reauthenticating();
        if !(during_connect || during_reauth) || authentication_method(&self.extras).is_none() {
            return Err(CommandError::InvalidState);
        }
        self.send_auth(ReasonCode::ContinueAuthentication, Some(data));
        if during_connect {
            self.state = State::Authenticating;
        }
        Ok(())
    }

    /// Ends a successful re-authentication with AUTH 0x00.
    pub fn auth_success(&mut self, _now: Instant, data: Option<&[u8]>) -> Result<(), CommandError> {
        match self.extras.as_deref_mut() {
            Some(extras) if self.state == State::Connected && extras.reauthenticating => {
                extras.reauthenticating = false;
            }
            _ => return Err(CommandError::InvalidState),
        }
        self.send_auth(ReasonCode::Success, data);
        Ok(())
    }

    fn send_auth(&mut self, reason_code: ReasonCode, data: Option<&[u8]>) {
        let packet = Packet::Auth(Auth {
            reason_code,
            properties: Properties {
                authentication_method: authentication_method(&self.extras),
                authentication_data: data,
                ..Properties::default()
            },
        });
        send_packet(
            &mut self.tx,
            &mut self.stats,
            self.version,
            self.client_max_packet_size,
            &packet,
        );
    }

    /// Answers an inbound QoS 1 or 2 publication once the broker has made it safe: PUBACK
    /// (QoS 1) or PUBREC (QoS 2) with `reason`. A success PUBREC records the exactly-once
    /// marker; an error ends the QoS 2 flow [MQTT-4.3.3-*]. Over 3.1.1 the reason cannot be
    /// sent: a refused message is acknowledged and dropped, as 3.1.1 allows.
    pub fn complete_publish(
        &mut self,
        _now: Instant,
        packet_id: PacketId,
        reason: ReasonCode,
    ) -> Result<(), CommandError> {
        if self.state != State::Connected {
            return Err(CommandError::InvalidState);
        }
        let index = self
            .inbound_pending
            .iter()
            .position(|&(id, _)| id == packet_id)
            .ok_or(CommandError::UnknownPacketId)?;
        let (_, qos) = self.inbound_pending.remove(index);
        let response = PubResponse {
            packet_id,
            reason_code: reason,
            properties: Properties::default(),
        };
        let packet = if qos == QoS::ExactlyOnce {
            if !reason.is_error() {
                if let Some(session) = self.session.as_mut() {
                    session.inbound_qos2.insert(packet_id.get());
                }
            }
            Packet::PubRec(response)
        } else {
            Packet::PubAck(response)
        };
        self.send(&packet);
        Ok(())
    }

    /// Answers a SUBSCRIBE with one reason code per filter, in order.
    pub fn complete_subscribe(
        &mut self,
        _now: Instant,
        packet_id: PacketId,
        reason_codes: &[ReasonCode],
    ) -> Result<(), CommandError> {
        take_pending(&mut self.pending_subscribes, packet_id, reason_codes.len())?;
        let packet = Packet::SubAck(SubAck {
            packet_id,
            properties: Properties::default(),
            reason_codes: List::new(reason_codes),
        });
        self.send(&packet);
        Ok(())
    }

    /// Answers an UNSUBSCRIBE with one reason code per filter (sent to 5.0 clients only).
    pub fn complete_unsubscribe(
        &mut self,
        _now: Instant,
        packet_id: PacketId,
        reason_codes: &[ReasonCode],
    ) -> Result<(), CommandError> {
        take_pending(
            &mut self.pending_unsubscribes,
            packet_id,
            reason_codes.len(),
        )?;
        let packet = Packet::UnsubAck(UnsubAck {
            packet_id,
            properties: Properties::default(),
            reason_codes: List::new(reason_codes),
        });
        self.send(&packet);
        Ok(())
    }

    /// Sends a message to the client, or queues it behind the in-flight window and a full
    /// transmit buffer, or drops it (counted) when it cannot be sent: QoS 0 behind a full
    /// buffer, anything past the queue limits, larger than the client accepts, or expired.
    pub fn deliver(&mut self, now: Instant, delivery: Delivery) -> DeliveryOutcome {
        self.deliver_shared(now, delivery, None)
    }

    /// [`deliver`](Self::deliver), taking the PUBLISH from `encoded` when another
    /// connection already encoded the same bytes for this message (or leaving them there for
    /// the next one): a message routed to many subscribers is encoded once per distinct
    /// encoding, not once per subscriber.
    pub fn deliver_encoded(
        &mut self,
        now: Instant,
        delivery: Delivery,
        encoded: &mut SharedPublish,
    ) -> DeliveryOutcome {
        self.deliver_shared(now, delivery, Some(encoded))
    }

    fn deliver_shared(
        &mut self,
        now: Instant,
        delivery: Delivery,
        encoded: Option<&mut SharedPublish>,
    ) -> DeliveryOutcome {
        if self.state == State::Closed {
            // Closed, but the broker has not taken the session back yet: it is still handling
            // the events that came before the close (a client's own publish followed by
            // DISCONNECT in one read). The message waits in the session, as for any offline
            // client; handed back, it would find no detached session to go to.
            if let Some(session) = self.session.as_mut() {
                let limits = self.config.queue;
                if delivery.qos != QoS::AtMostOnce || limits.queue_qos0_offline {
                    return if session.enqueue(delivery, &limits) {
                        DeliveryOutcome::Queued
                    } else {
                        DeliveryOutcome::Dropped(DropReason::QueueFull)
                    };
                }
            }
        }
        if self.state != State::Connected {
            return DeliveryOutcome::NotConnected(delivery);
        }
        let buffer_full = self.tx.len() >= self.config.max_outbound_buffer;
        let Some(session) = self.session.as_mut() else {
            return DeliveryOutcome::NotConnected(delivery);
        };
        if delivery.message.is_expired(now) {
            session.dropped.expired += 1;
            return DeliveryOutcome::Dropped(DropReason::Expired);
        }
        if delivery.qos == QoS::AtMostOnce {
            if buffer_full {
                session.dropped.qos0_buffer_full += 1;
                return DeliveryOutcome::Dropped(DropReason::BufferFull);
            }
            // A QoS 0 message queued while the client was away (`queue_qos0_offline`) and
            // still waiting behind the in-flight window goes out first [MQTT-4.6.0-6].
            if !session.queue.is_empty() && session.queue.iter().any(|d| d.qos == QoS::AtMostOnce) {
                let limits = self.config.queue;
                return if session.enqueue(delivery, &limits) {
                    DeliveryOutcome::Queued
                } else {
                    DeliveryOutcome::Dropped(DropReason::QueueFull)
                };
            }
            return self.send_delivery(now, delivery, encoded, false);
        }
        let window_full = session.outbound.len() >= usize::from(self.client_receive_maximum);
        if buffer_full || window_full || !session.queue.is_empty() {
            let limits = self.config.queue;
            return if session.enqueue(delivery, &limits) {
                DeliveryOutcome::Queued
            } else {
                DeliveryOutcome::Dropped(DropReason::QueueFull)
            };
        }
        self.send_delivery(now, delivery, encoded, false)
    }

    /// Closes the connection from the server side with `reason` (for example 0x8E when a new
    /// connection takes the session over, 0x8B at shutdown), telling a 5.0 client why
    /// [MQTT-3.14.0-1]. The will is published, as after any end but a normal DISCONNECT
    /// from the client.
    pub fn close(&mut self, _now: Instant, reason: ReasonCode) {
        if self.state == State::Closed {
            return;
        }
        if self.was_connected && self.version.is_v5() {
            let packet = Packet::Disconnect(Disconnect {
                reason_code: reason,
                properties: Properties::default(),
            });
            self.send(&packet);
        }
        self.finish(reason, CloseInitiator::Server, self.was_connected);
    }

    // -----------------------------------------------------------------------------------------
    // Internals

    fn finish(&mut self, reason: ReasonCode, initiator: CloseInitiator, publish_will: bool) {
        self.state = State::Closed;
        self.rx = BytesMut::new();
        // The broker has already been handed these QoS 2 messages (their Publish events are
        // queued ahead of Closed) and may have sent them on; only the PUBREC can no longer
        // go out. Keep their exactly-once markers with the session, or the client's re-send
        // after a resume would be delivered onward again [MQTT-4.3.3-9].
        if let Some(session) = self.session.as_mut() {
            for &(packet_id, qos) in &self.inbound_pending {
                if qos == QoS::ExactlyOnce {
                    session.inbound_qos2.insert(packet_id.get());
                }
            }
        }
        self.inbound_pending.clear();
        self.events.push_back(ServerEvent::Closed(CloseInfo {
            reason,
            initiator,
            publish_will,
            session_expiry_interval: self.session_expiry_interval,
            was_connected: self.was_connected,
        }));
    }

    /// A protocol violation or malformed packet: tell a connected 5.0 client why, then close.
    fn fail(&mut self, now: Instant, reason: ReasonCode) {
        self.close(now, reason);
    }

    fn send(&mut self, packet: &Packet<'_>) -> bool {
        send_packet(
            &mut self.tx,
            &mut self.stats,
            self.version,
            self.client_max_packet_size,
            packet,
        )
    }

    /// Decodes and handles every complete packet in the receive buffer, as long as the state
    /// lets packets through.
    fn process(&mut self, now: Instant) {
        loop {
            if !matches!(
                self.state,
                State::AwaitingConnect | State::Authenticating | State::Connected
            ) {
                return;
            }
            let header = match self.decoder.header(&self.rx) {
                Ok(Some(header)) if header.packet_len() <= self.rx.len() => header,
                Ok(_) => return,
                Err(e) => return self.malformed(now, e, None),
            };
            let frame = self.rx.split_to(header.packet_len()).freeze();
            let packet = match self.decoder.decode(&frame) {
                Ok(petrel_codec::Decoded::Packet { packet, .. }) => packet,
                Ok(petrel_codec::Decoded::Incomplete { .. }) => return,
                Err(e) => return self.malformed(now, e, Some(&frame)),
            };
            self.stats.packets_received += 1;
            self.last_received = now;
            if self.trace_packets {
                self.events.push_back(ServerEvent::Received(frame.clone()));
            }
            self.handle_packet(now, packet, &frame);
        }
    }

    /// Closes on a malformed packet with its reason code: in CONNACK before the connection is
    /// accepted (only where the client's protocol has a code for it), in DISCONNECT after.
    fn malformed(&mut self, now: Instant, error: DecodeError, frame: Option<&Bytes>) {
        if self.state == State::AwaitingConnect {
            if let Some(level) = frame.and_then(|f| connect_protocol_level(f)) {
                let reply = if level >= 5 {
                    Some((ProtocolVersion::V5, error.reason_code()))
                } else {
                    error
                        .v311_connack_code()
                        .and_then(ReasonCode::from_v311_connack)
                        .map(|code| (ProtocolVersion::V311, code))
                };
                if let Some((version, reason_code)) = reply {
                    let connack = Packet::ConnAck(ConnAck {
                        session_present: false,
                        reason_code,
                        properties: Properties::default(),
                    });
                    send_packet(&mut self.tx, &mut self.stats, version, u32::MAX, &connack);
                }
            }
            self.finish(error.reason_code(), CloseInitiator::Server, false);
            return;
        }
        self.fail(now, error.reason_code());
    }

    fn handle_packet(&mut self, now: Instant, packet: Packet<'_>, frame: &Bytes) {
        match (self.state, packet) {
            (State::AwaitingConnect, Packet::Connect(connect)) => {
                self.handle_connect(now, &connect, frame)
            }
            // [MQTT-3.1.0-1]: anything else first closes the connection, without CONNACK.
            (State::AwaitingConnect, _) => {
                self.finish(ReasonCode::ProtocolError, CloseInitiator::Server, false)
            }
            (State::Authenticating, Packet::Auth(auth)) => self.handle_auth(now, &auth),
            (State::Authenticating, Packet::Disconnect(_)) => {
                self.finish(ReasonCode::Success, CloseInitiator::Client, false)
            }
            (State::Authenticating, _) => {
                self.finish(ReasonCode::ProtocolError, CloseInitiator::Server, false)
            }
            (State::Connected, packet) => self.handle_connected(now, packet, frame),
            _ => {}
        }
    }

    fn handle_connect(&mut self, now: Instant, connect: &Connect<'_>, frame: &Bytes) {
        let v5 = connect.protocol_version.is_v5();
        self.version = connect.protocol_version;
        self.decoder.version = connect.protocol_version;
        self.clean_start = connect.clean_start;
        self.keep_alive = connect.keep_alive;
        let props = &connect.properties;
        if connect.client_id.is_empty() && !connect.clean_start && !v5 {
            // [MQTT-3.1.3-8]: a 3.1.1 client without an identifier must ask for a clean
            // session; otherwise the answer is "identifier rejected".
            self.state = State::PendingAccept;
            let _ = self.reject(now, ReasonCode::ClientIdentifierNotValid);
            return;
        }
        let requested_expiry = if v5 {
            props.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        self.session_expiry_interval = requested_expiry.min(self.config.max_session_expiry);
        // The outbound window: what a 5.0 client says it can take at once [MQTT-4.9.0-2],
        // within the server's own cap (mosquitto's `max_inflight_messages`), which is all a
        // 3.1.1 client, with no way to say, gets.
        let cap = self.config.max_inflight.max(1);
        self.client_receive_maximum = if v5 {
            props.receive_maximum.unwrap_or(u16::MAX).min(cap)
        } else {
            cap
        };
        self.client_max_packet_size = props.maximum_packet_size.unwrap_or(u32::MAX);
        self.client_topic_alias_maximum = props.topic_alias_maximum.unwrap_or(0);
        self.request_response_information = props.request_response_information.unwrap_or(false);
        // The aliases are made on first use: most clients never use one.
        self.extras = props.authentication_method.map(|method| {
            Box::new(Extras {
                authentication_method: Some(String::from(method)),
                ..Extras::default()
            })
        });
        let will = connect.will.as_ref().map(|w| {
            let mut properties = MessageProperties::from_properties(&w.properties, frame, now);
            properties.expires_at = None;
            Will {
                message: Message {
                    topic: Arc::from(w.topic),
                    payload: share(frame, w.payload),
                    qos: w.qos,
                    retain: w.retain,
                    properties,
                },
                delay_interval: w.properties.will_delay_interval.unwrap_or(0),
                message_expiry_interval: w.properties.message_expiry_interval,
            }
        });
        let request = ConnectRequest {
            version: connect.protocol_version,
            client_id: String::from(connect.client_id),
            clean_start: connect.clean_start,
            keep_alive: connect.keep_alive,
            session_expiry_interval: self.session_expiry_interval,
            username: connect.username.map(String::from),
            password: connect.password.map(|p| share(frame, p)),
            will,
            authentication_method: props.authentication_method.map(String::from),
            authentication_data: props.authentication_data.map(|d| share(frame, d)),
            user_properties: owned_user_properties(props),
        };
        self.state = State::PendingAccept;
        self.events.push_back(ServerEvent::Connect(request));
    }

    fn handle_auth(&mut self, now: Instant, auth: &Auth<'_>) {
        let method = auth.properties.authentication_method;
        // The method must stay the one the exchange began with (section 4.12).
        let expected = authentication_method(&self.extras);
        if expected.is_none() || method != expected {
            return self.fail_auth(now);
        }
        let reauthenticate = match (self.state, auth.reason_code) {
            (State::Authenticating, ReasonCode::ContinueAuthentication) => {
                self.state = State::PendingAccept;
                false
            }
            (State::Connected, ReasonCode::ReAuthenticate) if !self.reauthenticating() => {
                // Some: the method was checked above.
                if let Some(extras) = self.extras.as_deref_mut() {
                    extras.reauthenticating = true;
                }
                true
            }
            (State::Connected, ReasonCode::ContinueAuthentication) if self.reauthenticating() => {
                true
            }
            _ => return self.fail_auth(now),
        };
        self.events.push_back(ServerEvent::Auth(AuthRequest {
            method: String::from(method.unwrap_or_default()),
            data: auth
                .properties
                .authentication_data
                .map(Bytes::copy_from_slice),
            reauthenticate,
        }));
    }

    fn fail_auth(&mut self, now: Instant) {
        if self.was_connected {
            self.fail(now, ReasonCode::ProtocolError);
        } else {
            self.state = State::PendingAccept;
            let _ = self.reject(now, ReasonCode::ProtocolError);
        }
    }

    fn handle_connected(&mut self, now: Instant, packet: Packet<'_>, frame: &Bytes) {
        match packet {
            Packet::Publish(publish) => self.handle_publish(now, &publish, frame),
            Packet::PubAck(ack) => {
                self.complete_outbound(ack.packet_id, OutboundState::AwaitingPubAck);
            }
            Packet::PubRec(rec) => self.handle_pubrec(&rec),
            Packet::PubRel(rel) => self.handle_pubrel(now, &rel),
            Packet::PubComp(comp) => {
                self.complete_outbound(comp.packet_id, OutboundState::AwaitingPubComp);
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(now, &subscribe),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(&unsubscribe),
            Packet::PingReq => {
                self.send(&Packet::PingResp);
            }
            Packet::Disconnect(disconnect) => self.handle_disconnect(now, &disconnect),
            Packet::Auth(auth) => self.handle_auth(now, &auth),
            // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation; so is any packet only
            // a server sends.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => self.fail(now, ReasonCode::ProtocolError),
        }
        if self.state == State::Connected {
            self.pump(now);
        }
    }

    fn inbound_inflight(&self) -> usize {
        self.inbound_pending.len() + self.session.as_ref().map_or(0, |s| s.inbound_qos2.len())
    }

    fn handle_publish(&mut self, now: Instant, publish: &Publish<'_>, frame: &Bytes) {
        self.stats.publishes_received += 1;
        let topic: Arc<str> = match publish.properties.topic_alias {
            None => Arc::from(publish.topic),
            Some(alias) => {
                // [MQTT-3.3.2-9]: an alias above the maximum we announced.
                if alias == 0 || alias > self.config.topic_alias_maximum {
                    return self.fail(now, ReasonCode::TopicAliasInvalid);
                }
                let index = usize::from(alias) - 1;
                let aliases = &mut self.extras.get_or_insert_with(Box::default).inbound_aliases;
                if index >= aliases.len() {
                    aliases.resize(index + 1, None);
                }
                let slot = &mut aliases[index];
                if publish.topic.is_empty() {
                    match slot {
                        Some(topic) => topic.clone(),
                        // An alias that was never given a topic.
                        None => return self.fail(now, ReasonCode::ProtocolError),
                    }
                } else {
                    let topic: Arc<str> = Arc::from(publish.topic);
                    *slot = Some(topic.clone());
                    topic
                }
            }
        };
        if publish.qos > self.config.maximum_qos {
            // [MQTT-3.2.2-11]
            return self.fail(now, ReasonCode::QoSNotSupported);
        }
        if publish.retain && !self.config.retain_available {
            // [MQTT-3.2.2-14]
            return self.fail(now, ReasonCode::RetainNotSupported);
        }
        let payload_invalid = publish.properties.payload_format_indicator == Some(true)
            && core::str::from_utf8(publish.payload).is_err();
        let message = || Message {
            topic: topic.clone(),
            payload: share(frame, publish.payload),
            qos: publish.qos,
            retain: publish.retain,
            properties: MessageProperties::from_properties(&publish.properties, frame, now),
        };
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => {
                if !payload_invalid {
                    self.events.push_back(ServerEvent::Publish(InboundPublish {
                        packet_id: None,
                        message: message(),
                    }));
                }
            }
            (qos, Some(packet_id)) => {
                if self.inbound_pending.iter().any(|&(id, _)| id == packet_id) {
                    // Already with the broker: the answer will come once.
                    return;
                }
                let marked = qos == QoS::ExactlyOnce
                    && self
                        .session
                        .as_ref()
                        .is_some_and(|s| s.inbound_qos2.contains(&packet_id.get()));
                if marked {
                    // [MQTT-4.3.3-10]: a re-sent QoS 2 PUBLISH is acknowledged again but not
                    // delivered again.
                    self.send(&Packet::PubRec(PubResponse::new(packet_id)));
                    return;
                }
                if self.version.is_v5()
                    && self.inbound_inflight() >= usize::from(self.config.receive_maximum)
                {
                    // [MQTT-3.3.4-7]. A 3.1.1 client was never told a limit: it is slowed
                    // down instead ([`Self::wants_read`]), not disconnected.
                    return self.fail(now, ReasonCode::ReceiveMaximumExceeded);
                }
                if payload_invalid {
                    // The receiver may refuse a payload that breaks its format indicator
                    // with 0x99 in the acknowledgement (section 3.3.2.3.2).
                    self.inbound_pending.push((packet_id, qos));
                    let _ = self.complete_publish(now, packet_id, ReasonCode::PayloadFormatInvalid);
                    return;
                }
                self.inbound_pending.push((packet_id, qos));
                self.events.push_back(ServerEvent::Publish(InboundPublish {
                    packet_id: Some(packet_id),
                    message: message(),
                }));
            }
        }
    }

    fn handle_pubrec(&mut self, rec: &PubResponse<'_>) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let position = session
            .outbound
            .iter()
            .position(|o| o.packet_id == rec.packet_id && o.state == OutboundState::AwaitingPubRec);
        match position {
            Some(index) if rec.reason_code.is_error() => {
                // An error PUBREC ends the flow [MQTT-4.3.3-*]: nothing more is sent for it.
                session.outbound.remove(index);
                self.events.push_back(ServerEvent::Delivered {
                    packet_id: rec.packet_id,
                });
            }
            Some(index) => {
                if let Some(outbound) = session.outbound.get_mut(index) {
                    outbound.state = OutboundState::AwaitingPubComp;
                }
                self.send(&Packet::PubRel(PubResponse::new(rec.packet_id)));
            }
            None => {
                // A PUBREC for a flow we do not know: release it so the client can forget it.
                let reason = if session
                    .outbound
                    .iter()
                    .any(|o| o.packet_id == rec.packet_id)
                {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.send(&Packet::PubRel(PubResponse {
                    packet_id: rec.packet_id,
                    reason_code: reason,
                    properties: Properties::default(),
                }));
            }
        }
    }

    fn handle_pubrel(&mut self, now: Instant, rel: &PubResponse<'_>) {
        if self
            .inbound_pending
            .iter()
            .any(|&(id, _)| id == rel.packet_id)
        {
            // PUBREL before our PUBREC: the client skipped a step.
            return self.fail(now, ReasonCode::ProtocolError);
        }
        let known = self
            .session
            .as_mut()
            .is_some_and(|s| s.inbound_qos2.remove(&rel.packet_id.get()));
        // [MQTT-4.3.3-11]: PUBCOMP even for an unknown identifier, so the client can finish.
        self.send(&Packet::PubComp(PubResponse {
            packet_id: rel.packet_id,
            reason_code: if known {
                ReasonCode::Success
            } else {
                ReasonCode::PacketIdentifierNotFound
            },
            properties: Properties::default(),
        }));
    }

    fn complete_outbound(&mut self, packet_id: PacketId, expected: OutboundState) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        // An acknowledgement for an identifier not in that state is ignored: after a
        // resume the client may acknowledge twice.
        if let Some(index) = session
            .outbound
            .iter()
            .position(|o| o.packet_id == packet_id && o.state == expected)
        {
            session.outbound.remove(index);
            self.events.push_back(ServerEvent::Delivered { packet_id });
        }
    }

    fn handle_subscribe(&mut self, now: Instant, subscribe: &Subscribe<'_>) {
        let subscription_id = subscribe
            .properties
            .subscription_identifier()
            .map(|id| id.0);
        if subscription_id.is_some() && !self.config.subscription_identifiers_available {
            // Section 3.8.2.1.2: 0xA1 when they are not supported.
            return self.fail(now, ReasonCode::SubscriptionIdentifiersNotSupported);
        }
        let filters: Vec<SubscriptionRequest> = subscribe
            .filters
            .iter()
            .map(|f| {
                let shared = SharedFilter::parse(f.filter).ok().flatten();
                let inner = shared.map_or(f.filter, |s| s.filter);
                let refusal = if shared.is_some() && !self.config.shared_subscription_available {
                    Some(ReasonCode::SharedSubscriptionsNotSupported)
                } else if has_wildcard(inner) && !self.config.wildcard_subscription_available {
                    Some(ReasonCode::WildcardSubscriptionsNotSupported)
                } else {
                    None
                };
                SubscriptionRequest {
                    filter: String::from(f.filter),
                    options: f.options,
                    refusal,
                }
            })
            .collect();
        self.pending_subscribes
            .push((subscribe.packet_id, filters.len()));
        self.events
            .push_back(ServerEvent::Subscribe(SubscribeRequest {
                packet_id: subscribe.packet_id,
                subscription_id,
                filters,
                user_properties: owned_user_properties(&subscribe.properties),
            }));
    }

    fn handle_unsubscribe(&mut self, unsubscribe: &Unsubscribe<'_>) {
        let filters: Vec<String> = unsubscribe.filters.iter().map(String::from).collect();
        self.pending_unsubscribes
            .push((unsubscribe.packet_id, filters.len()));
        self.events
            .push_back(ServerEvent::Unsubscribe(UnsubscribeRequest {
                packet_id: unsubscribe.packet_id,
                filters,
            }));
    }

    fn handle_disconnect(&mut self, now: Instant, disconnect: &Disconnect<'_>) {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            // [MQTT-3.14.2-2]: a session that was to end with the connection cannot be
            // extended at DISCONNECT.
            if self.session_expiry_interval == 0 && expiry != 0 {
                return self.fail(now, ReasonCode::ProtocolError);
            }
            self.session_expiry_interval = expiry.min(self.config.max_session_expiry);
            if let Some(session) = self.session.as_mut() {
                session.expiry_interval = self.session_expiry_interval;
            }
        }
        // [MQTT-3.14.4-3]: a normal DISCONNECT discards the will; 0x04 asks for it.
        let publish_will = disconnect.reason_code == ReasonCode::DisconnectWithWillMessage;
        self.finish(disconnect.reason_code, CloseInitiator::Client, publish_will);
    }

    /// Refills the in-flight window from the session queue while the window and the transmit
    /// buffer have room.
    fn pump(&mut self, now: Instant) {
        if self.state != State::Connected {
            return;
        }
        loop {
            let Some(session) = self.session.as_mut() else {
                return;
            };
            if self.tx.len() >= self.config.max_outbound_buffer
                || session.outbound.len() >= usize::from(self.client_receive_maximum)
            {
                return;
            }
            let Some(delivery) = session.dequeue() else {
                return;
            };
            if delivery.message.is_expired(now) {
                session.dropped.expired += 1;
                continue;
            }
            self.send_delivery(now, delivery, None, true);
        }
    }

    /// Encodes a delivery: a packet identifier and an in-flight entry for QoS 1 and 2.
    /// `queued`: it comes from the session queue.
    fn send_delivery(
        &mut self,
        now: Instant,
        delivery: Delivery,
        encoded: Option<&mut SharedPublish>,
        queued: bool,
    ) -> DeliveryOutcome {
        let Some(session) = self.session.as_mut() else {
            return DeliveryOutcome::NotConnected(delivery);
        };
        let packet_id = if delivery.qos == QoS::AtMostOnce {
            None
        } else {
            match session.allocate_packet_id_from(&mut self.free_packet_ids) {
                Some(id) => Some(id),
                None => {
                    session.requeue_front(delivery);
                    return DeliveryOutcome::Queued;
                }
            }
        };
        let alias = self.outbound_alias(&delivery.message.topic);
        let before = self.tx.len();
        let sent = match encoded {
            Some(shared) if alias.is_none() && is_plain(self.version, &delivery) => {
                let sent = shared.write(
                    &mut self.tx,
                    self.version,
                    self.client_max_packet_size,
                    &delivery,
                    packet_id,
                );
                if sent {
                    self.stats.packets_sent += 1;
                    self.stats.publishes_sent += 1;
                }
                sent
            }
            _ => encode_publish(
                &mut self.tx,
                &mut self.stats,
                self.version,
                self.client_max_packet_size,
                &delivery,
                packet_id,
                false,
                alias,
                now,
            ),
        };
        let Some(session) = self.session.as_mut() else {
            return DeliveryOutcome::NotConnected(delivery);
        };
        if !sent {
            // [MQTT-3.1.2-25]: too large for the client: dropped as if sent.
            session.dropped.too_large += 1;
            return DeliveryOutcome::Dropped(DropReason::TooLarge);
        }
        // A QoS 0 message taken from the queue waits until the store no longer holds it
        // there, or a restart would send it a second time.
        let binding = match delivery.qos {
            QoS::AtMostOnce => queued,
            QoS::AtLeastOnce => false,
            QoS::ExactlyOnce => true,
        };
        if !binding {
            self.tx_unbinding += self.tx.len().saturating_sub(before);
        }
        if let Some(packet_id) = packet_id {
            let state = if delivery.qos == QoS::AtLeastOnce {
                OutboundState::AwaitingPubAck
            } else {
                OutboundState::AwaitingPubRec
            };
            session.outbound.push_back(Outbound {
                packet_id,
                delivery,
                state,
            });
        }
        DeliveryOutcome::Sent
    }

    /// The alias to use for `topic`, and whether the topic must still be sent with it (the
    /// first use of an alias carries both).
    fn outbound_alias(&mut self, topic: &Arc<str>) -> Option<(u16, bool)> {
        if !self.version.is_v5()
            || !self.config.outbound_topic_aliases
            || self.client_topic_alias_maximum == 0
        {
            return None;
        }
        let aliases = &mut self
            .extras
            .get_or_insert_with(Box::default)
            .outbound_aliases;
        if let Some(&alias) = aliases.get(topic) {
            return Some((alias, false));
        }
        let next = aliases.len();
        if next >= usize::from(self.client_topic_alias_maximum) {
            return None;
        }
        let alias = next as u16 + 1;
        aliases.insert(topic.clone(), alias);
        Some((alias, true))
    }

    /// Re-sends, in their original order, every publication the resumed session had in
    /// flight: PUBLISH with DUP for those not yet acknowledged, PUBREL for those past PUBREC
    /// [MQTT-4.4.0-1].
    fn resend_inflight(&mut self, now: Instant) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let outbound = core::mem::take(&mut session.outbound);
        for entry in &outbound {
            match entry.state {
                OutboundState::AwaitingPubComp => {
                    send_packet(
                        &mut self.tx,
                        &mut self.stats,
                        self.version,
                        self.client_max_packet_size,
                        &Packet::PubRel(PubResponse::new(entry.packet_id)),
                    );
                }
                _ => {
                    encode_publish(
                        &mut self.tx,
                        &mut self.stats,
                        self.version,
                        self.client_max_packet_size,
                        &entry.delivery,
                        Some(entry.packet_id),
                        true,
                        None,
                        now,
                    );
                }
            }
        }
        if let Some(session) = self.session.as_mut() {
            session.outbound = outbound;
        }
    }
}

fn take_pending(
    pending: &mut Vec<(PacketId, usize)>,
    packet_id: PacketId,
    codes: usize,
) -> Result<(), CommandError> {
    let index = pending
        .iter()
        .position(|&(id, _)| id == packet_id)
        .ok_or(CommandError::UnknownPacketId)?;
    if pending[index].1 != codes {
        return Err(CommandError::ReasonCodeCount);
    }
    pending.remove(index);
    Ok(())
}

/// Appends `packet` to `tx` unless it is larger than `max_size`; returns whether it went.
fn send_packet(
    tx: &mut BytesMut,
    stats: &mut ConnectionStats,
    version: ProtocolVersion,
    max_size: u32,
    packet: &Packet<'_>,
) -> bool {
    let Ok(len) = packet.encoded_len(version) else {
        return false;
    };
    if len > max_size as usize {
        return false;
    }
    if packet.encode_to_bytes(version, tx).is_err() {
        return false;
    }
    stats.packets_sent += 1;
    true
}

#[allow(clippy::too_many_arguments)] // the pieces of one PUBLISH; a struct would only rename them
fn encode_publish(
    tx: &mut BytesMut,
    stats: &mut ConnectionStats,
    version: ProtocolVersion,
    max_size: u32,
    delivery: &Delivery,
    packet_id: Option<PacketId>,
    dup: bool,
    alias: Option<(u16, bool)>,
    now: Instant,
) -> bool {
    let message = &delivery.message;
    let plain = !version.is_v5() || (alias.is_none() && is_plain(version, delivery));
    if plain {
        let sent = encode_plain_publish(tx, version, max_size, delivery, packet_id, dup);
        if sent {
            stats.packets_sent += 1;
            stats.publishes_sent += 1;
        }
        return sent;
    }
    let users = if version.is_v5() {
        user_property_views(&message.properties)
    } else {
        Vec::new()
    };
    let ids: Vec<SubscriptionId> = delivery.subscription_ids.clone();
    let mut properties = publish_properties(message, &users, &ids, now);
    let mut topic: &str = &message.topic;
    if let Some((alias, with_topic)) = alias {
        properties.topic_alias = Some(alias);
        if !with_topic {
            topic = "";
        }
    }
    let packet = Packet::Publish(Publish {
        dup,
        qos: delivery.qos,
        retain: delivery.retain,
        topic,
        packet_id,
        properties,
        payload: &message.payload,
    });
    let sent = send_packet(tx, stats, version, max_size, &packet);
    if sent {
        stats.publishes_sent += 1;
    }
    sent
}

/// Whether the delivery's PUBLISH carries no properties (when no topic alias is added):
/// every 3.1.1 one, and a 5.0 one without subscription identifiers or message properties.
fn is_plain(version: ProtocolVersion, delivery: &Delivery) -> bool {
    !version.is_v5()
        || (delivery.subscription_ids.is_empty() && delivery.message.properties.is_empty())
}

/// PUBLISH packets encoded for one message, kept while it is routed so that every
/// subscriber that gets the same bytes (same protocol version, QoS and RETAIN flag, no
/// properties) shares one encoding: the broker copies it into each connection's buffer,
/// patching in the packet identifier for QoS 1 and 2.
///
/// Holds the message it was filled for; a delivery of another message starts it afresh, so
/// a stale encoding is never written.
#[derive(Debug, Default)]
pub struct SharedPublish {
    message: Option<Arc<Message>>,
    /// Each encoding, with the offset of its packet identifier (0 for QoS 0); the first
    /// `valid` are the message's, the rest keep their buffers for the next message.
    encodings: Vec<(bool, QoS, bool, BytesMut, usize)>,
    valid: usize,
}

impl SharedPublish {
    /// Forgets the message and its encodings (keeping the room they took).
    pub fn clear(&mut self) {
        self.message = None;
        self.valid = 0;
    }

    /// Appends the delivery's PUBLISH to `tx`, encoding it only if no earlier delivery of
    /// the same message needed the same bytes. `false` when it would exceed `max_size`.
    fn write(
        &mut self,
        tx: &mut BytesMut,
        version: ProtocolVersion,
        max_size: u32,
        delivery: &Delivery,
        packet_id: Option<PacketId>,
    ) -> bool {
        if !self
            .message
            .as_ref()
            .is_some_and(|m| Arc::ptr_eq(m, &delivery.message))
        {
            self.message = Some(delivery.message.clone());
            self.valid = 0;
        }
        let key = (version.is_v5(), delivery.qos, delivery.retain);
        let found = self.encodings[..self.valid]
            .iter()
            .position(|(v5, qos, retain, _, _)| (*v5, *qos, *retain) == key);
        let index = match found {
            Some(index) => index,
            None => {
                let mut bytes = match self.encodings.get_mut(self.valid) {
                    Some(spare) => core::mem::take(&mut spare.3),
                    None => BytesMut::new(),
                };
                bytes.clear();
                // The largest size: the check against the client's limit is made below.
                // A placeholder identifier marks where each delivery's goes.
                let placeholder = PacketId::new(1).filter(|_| delivery.qos != QoS::AtMostOnce);
                if !encode_plain_publish(
                    &mut bytes,
                    version,
                    u32::MAX,
                    delivery,
                    placeholder,
                    false,
                ) {
                    return false;
                }
                // The identifier comes before the payload and, over 5.0, the empty
                // property block's length byte.
                let id_at = if placeholder.is_some() {
                    bytes.len() - delivery.message.payload.len() - usize::from(key.0) - 2
                } else {
                    0
                };
                let entry = (key.0, key.1, key.2, bytes, id_at);
                match self.encodings.get_mut(self.valid) {
                    Some(spare) => *spare = entry,
                    None => self.encodings.push(entry),
                }
                self.valid += 1;
                self.valid - 1
            }
        };
        let (_, _, _, bytes, id_at) = &self.encodings[index];
        if bytes.len() > max_size as usize {
            return false;
        }
        match packet_id {
            Some(id) if *id_at > 0 => {
                let (head, rest) = bytes.split_at(*id_at);
                tx.reserve(bytes.len());
                tx.extend_from_slice(head);
                tx.extend_from_slice(&id.get().to_be_bytes());
                tx.extend_from_slice(rest.get(2..).unwrap_or_default());
            }
            _ => tx.extend_from_slice(bytes),
        }
        true
    }
}

/// Writes a PUBLISH that carries no properties (every 3.1.1 one, and a 5.0 one with an
/// empty property block) straight into `tx`: the routing hot path, where the general
/// encoder's sizing passes over the property block cost more than the copy itself.
/// `false` when it would exceed `max_size` (or MQTT's largest packet).
fn encode_plain_publish(
    tx: &mut BytesMut,
    version: ProtocolVersion,
    max_size: u32,
    delivery: &Delivery,
    packet_id: Option<PacketId>,
    dup: bool,
) -> bool {
    let topic = delivery.message.topic.as_bytes();
    let payload = &delivery.message.payload;
    let Ok(topic_len) = u16::try_from(topic.len()) else {
        return false;
    };
    let remaining = 2
        + topic.len()
        + if packet_id.is_some() { 2 } else { 0 }
        + usize::from(version.is_v5())
        + payload.len();
    let mut length = [0u8; 4];
    let mut length_len = 0;
    let mut rest = remaining;
    loop {
        let Some(slot) = length.get_mut(length_len) else {
            // More than four length bytes: beyond MQTT's largest packet.
            return false;
        };
        *slot = (rest % 128) as u8;
        rest /= 128;
        length_len += 1;
        if rest == 0 {
            break;
        }
        *slot |= 0x80;
    }
    if 1 + length_len + remaining > max_size as usize {
        return false;
    }
    let first =
        0x30 | (u8::from(dup) << 3) | ((delivery.qos as u8) << 1) | u8::from(delivery.retain);
    tx.reserve(1 + length_len + remaining);
    tx.extend_from_slice(&[first]);
    tx.extend_from_slice(&length[..length_len]);
    tx.extend_from_slice(&topic_len.to_be_bytes());
    tx.extend_from_slice(topic);
    if let Some(id) = packet_id {
        tx.extend_from_slice(&id.get().to_be_bytes());
    }
    if version.is_v5() {
        tx.extend_from_slice(&[0]);
    }
    tx.extend_from_slice(payload);
    true
}

fn owned_user_properties(properties: &Properties<'_>) -> Vec<(String, String)> {
    properties
        .user_properties
        .iter()
        .map(|p| (String::from(p.name), String::from(p.value)))
        .collect()
}

/// The protocol level of a CONNECT frame whose protocol name is "MQTT" or "MQIsdp", read
/// without decoding the rest, so a refusal can be answered in the client's own protocol.
fn connect_protocol_level(frame: &[u8]) -> Option<u8> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    let header_len = 1 + frame[1..].iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let body = frame.get(header_len..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let name = body.get(2..2 + name_len)?;
    if name != b"MQTT" && name != b"MQIsdp" {
        return None;
    }
    body.get(2 + name_len).copied()
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::string::ToString;

    use proptest::prelude::*;

    use super::*;

    fn general(
        version: ProtocolVersion,
        delivery: &Delivery,
        id: Option<PacketId>,
        dup: bool,
    ) -> BytesMut {
        let packet = Packet::Publish(Publish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: &delivery.message.topic,
            packet_id: id,
            properties: Properties::default(),
            payload: &delivery.message.payload,
        });
        let mut out = BytesMut::new();
        packet.encode_to_bytes(version, &mut out).unwrap();
        out
    }

    proptest! {
        /// The hot-path PUBLISH writer gives the general encoder's bytes, and refuses
        /// exactly the packets above the size limit.
        #[test]
        fn plain_publish_matches_the_general_encoder(
            v5 in any::<bool>(),
            topic in "[a-z/]{1,40}",
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            qos in 0u8..3,
            retain in any::<bool>(),
            dup in any::<bool>(),
            id in 1u16..,
            max_size in 0u32..400,
        ) {
            let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
            let qos = QoS::from_bits(qos).unwrap();
            let packet_id = (qos != QoS::AtMostOnce).then(|| PacketId::new(id).unwrap());
            let dup = dup && packet_id.is_some();
            let delivery = Delivery {
                message: Arc::new(Message::new(&topic.to_string(), payload)),
                qos,
                retain,
                subscription_ids: Vec::new(),
                shared_group: None,
            };
            let expected = general(version, &delivery, packet_id, dup);
            let mut fast = BytesMut::new();
            prop_assert!(encode_plain_publish(&mut fast, version, u32::MAX, &delivery, packet_id, dup));
            prop_assert_eq!(&fast[..], &expected[..]);
            let mut limited = BytesMut::new();
            let fits = encode_plain_publish(&mut limited, version, max_size, &delivery, packet_id, dup);
            prop_assert_eq!(fits, expected.len() <= max_size as usize);
        }

        /// Deliveries of one message through a shared encoding, in any mix of versions,
        /// QoS, RETAIN flags and packet identifiers (and then of another message), give each
        /// the bytes of its own encoding, and refuse exactly the packets above each
        /// client's size limit.
        #[test]
        fn shared_publish_gives_each_delivery_its_own_bytes(
            topic in "[a-z/]{1,40}",
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            deliveries in proptest::collection::vec(
                (any::<bool>(), 0u8..3, any::<bool>(), 1u16.., 0u32..400, any::<bool>()),
                1..12,
            ),
        ) {
            let first = Arc::new(Message::new(&topic.to_string(), payload.clone()));
            let second = Arc::new(Message::new("other/topic", payload));
            let mut shared = SharedPublish::default();
            for (i, (v5, qos, retain, id, max_size, limited)) in deliveries.into_iter().enumerate() {
                let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
                let qos = QoS::from_bits(qos).unwrap();
                let packet_id = (qos != QoS::AtMostOnce).then(|| PacketId::new(id).unwrap());
                let message = if i < 6 { &first } else { &second };
                let delivery = Delivery {
                    message: message.clone(),
                    qos,
                    retain,
                    subscription_ids: Vec::new(),
                    shared_group: None,
                };
                let max_size = if limited { max_size } else { u32::MAX };
                let expected = general(version, &delivery, packet_id, false);
                // Bytes already in the buffer stay in front.
                let mut tx = BytesMut::from(&b"ahead"[..]);
                let sent = shared.write(&mut tx, version, max_size, &delivery, packet_id);
                prop_assert_eq!(sent, expected.len() <= max_size as usize);
                if sent {
                    prop_assert_eq!(&tx[..5], b"ahead");
                    prop_assert_eq!(&tx[5..], &expected[..]);
                } else {
                    prop_assert_eq!(&tx[..], b"ahead");
                }
            }
            shared.clear();
            prop_assert!(shared.message.is_none() && shared.valid == 0);
        }
    }
}
