//! One proxied client: its connection and the proxy's connection to the upstream broker,
//! with every packet of both directions decoded, shown to the hooks and forwarded.
//!
//! The frame that arrived is what leaves, byte for byte (a `Bytes` slice of the read buffer,
//! never copied), unless a hook changed the packet; only then is it encoded again. While
//! the hooks say they leave a client's messages alone ([`Hooks::passes_messages`], the
//! proxy's default configuration), PUBLISH, its acknowledgements and the pings are decoded
//! only to be checked, not shown to the hooks, and a run of them leaves as one slice of the
//! read buffer: one write for a whole read, however many packets it held. The
//! exceptions are CONNECT and a CONNACK that grants topic aliases: the proxy turns topic
//! aliases off in both directions (Topic Alias Maximum 0), because an alias set up by a
//! frame that a hook rewrote would mean one topic to the client and another upstream.
//!
//! Refusals are answered by the proxy itself, so the upstream never sees what a hook
//! refused: a denied QoS 1 PUBLISH is acknowledged with the hook's reason code (5.0) or
//! acknowledged and dropped (3.1.1, which has no way to say no), a denied QoS 2 PUBLISH gets
//! its PUBREC (and later its PUBCOMP) from the proxy, and a denied SUBSCRIBE filter gets the
//! hook's code in the SUBACK, spliced between the codes the upstream gave the others.
//! Messages the hooks keep from the client are acknowledged to the upstream the same way.
//!
//! Bad input from either side closes the pair: the side at fault gets a DISCONNECT with the
//! codec's reason code (5.0), the other side a DISCONNECT "unspecified error" (client) or
//! nothing (upstream, so that the client's will is published).

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use bytes::{Buf, Bytes, BytesMut};
use petrel_codec::{
    ConnAck, Connect, DecodeError, Decoded, Decoder, Disconnect, List, Packet, PacketId,
    ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, SubAck, Subscribe, SubscribeFilter,
    Unsubscribe, UserProperty, Will, EMPTY_PROPERTIES,
};

use crate::broker::{
    describe_packet, AuthDecision, ClientInfo, ConnectionId, Hooks, PeerIdentity, Verdict,
};
use crate::message::{Message, MessageProperties};
use crate::server::ConnectRequest;
use crate::time::Instant;

/// Which connection of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The device's connection to the proxy.
    Client = 0,
    /// The proxy's connection to the upstream broker.
    Upstream = 1,
}

impl Side {
    /// The other connection of the pair.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }
}

/// Settings shared by every pipe of a proxy.
#[derive(Debug, Clone, Default)]
pub struct PipeConfig {
    /// The largest packet accepted from either side (0: the protocol's maximum).
    pub max_packet_size: u32,
    /// Client ids whose every packet is traced ([`PipeEvent::Trace`]).
    pub trace_clients: Arc<[String]>,
}

/// What the pipe tells the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeEvent {
    /// The CONNECT was accepted: connect to the upstream chosen for this client id and send
    /// what [`Pipe::poll_transmit`] has for [`Side::Upstream`] once connected.
    OpenUpstream {
        /// The client id the device gave (empty if it asked the upstream to assign one).
        client_id: String,
    },
    /// A traced client's packet passed (or was answered) in the `to` direction.
    Trace {
        /// The client id.
        client_id: String,
        /// Where the packet goes.
        to: Side,
        /// One line describing it.
        line: String,
    },
    /// The pair is finished: send what is queued, then close both connections.
    Close {
        /// The side whose packet (or refusal) ended it.
        by: Side,
        /// Why.
        reason: ReasonCode,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingConnect,
    AwaitingConnAck,
    Open,
    Closed,
}

/// One client and its upstream connection, sans I/O.
///
/// Feed bytes in with [`handle_client`](Self::handle_client) and
/// [`handle_upstream`](Self::handle_upstream); after each call drain
/// [`poll_transmit`](Self::poll_transmit) for both sides and [`poll_event`](Self::poll_event).
#[derive(Debug)]
pub struct Pipe {
    connection: ConnectionId,
    config: PipeConfig,
    remote: Option<String>,
    identity: Option<PeerIdentity>,
    state: State,
    version: ProtocolVersion,
    client_id: String,
    username: Option<String>,
    tracing: bool,
    to_client: VecDeque<Bytes>,
    to_upstream: VecDeque<Bytes>,
    /// Bytes in `to_client` and `to_upstream`: the runtime stops reading a side while the
    /// other one cannot take more.
    queued: [usize; 2],
    /// The start of a packet cut by the end of a read, per side.
    pending: [BytesMut; 2],
    events: VecDeque<PipeEvent>,
    /// QoS 2 PUBLISHes from the client that a hook refused: their PUBREL is answered here.
    refused_from_client: Vec<PacketId>,
    /// QoS 2 PUBLISHes from the upstream that a hook kept from the client.
    refused_from_upstream: Vec<PacketId>,
    /// SUBSCRIBEs some of whose filters a hook refused: their codes, by position, for the
    /// upstream's SUBACK (`None` where the upstream's code goes).
    pending_subacks: Vec<(PacketId, Vec<Option<ReasonCode>>)>,
}

impl Pipe {
    /// A pipe for a client that just connected from `remote`; `index` names it to the hooks
    /// ([`ClientInfo::connection`]) and must be unique among the proxy's live pipes.
    pub fn new(index: u32, config: PipeConfig, remote: Option<String>) -> Self {
        Pipe {
            connection: ConnectionId::detached(index),
            config,
            remote,
            identity: None,
            state: State::AwaitingConnect,
            version: ProtocolVersion::V5,
            client_id: String::new(),
            username: None,
            tracing: false,
            to_client: VecDeque::new(),
            to_upstream: VecDeque::new(),
            queued: [0; 2],
            pending: [BytesMut::new(), BytesMut::new()],
            events: VecDeque::new(),
            refused_from_client: Vec::new(),
            refused_from_upstream: Vec::new(),
            pending_subacks: Vec::new(),
        }
    }

    /// The same pipe for a client the transport identified (a verified TLS client
    /// certificate): hooks see the subject as [`ClientInfo::identity`], and a user name
    /// the certificate gives as the client's user name.
    pub fn with_identity(mut self, identity: Option<PeerIdentity>) -> Self {
        self.identity = identity;
        self
    }

    /// The client id (empty before CONNECT, or until the upstream assigns one).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The user name of the CONNECT.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The client's protocol version (5.0 until its CONNECT arrives).
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Whether the pair is finished.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes read from the client. Every complete packet is split off `data` (without
    /// copying: the frames share its storage) and handled; the bytes of a packet cut by
    /// the end of the read are kept, and only its missing bytes are copied from the next
    /// read.
    pub fn handle_client(&mut self, now: Instant, data: BytesMut, hooks: &mut dyn Hooks) {
        self.handle(now, Side::Client, data, hooks);
    }

    /// Bytes read from the upstream, as [`handle_client`](Self::handle_client).
    pub fn handle_upstream(&mut self, now: Instant, data: BytesMut, hooks: &mut dyn Hooks) {
        self.handle(now, Side::Upstream, data, hooks);
    }

    /// The upstream could not be reached or its connection ended: the pair closes. A 5.0
    /// client that was told nothing yet gets CONNACK "server unavailable"; a connected one
    /// a DISCONNECT "unspecified error" unless the upstream sent its own DISCONNECT.
    pub fn upstream_lost(&mut self) {
        match self.state {
            State::AwaitingConnAck => {
                self.send_client_packet(Packet::ConnAck(ConnAck {
                    reason_code: ReasonCode::ServerUnavailable,
                    ..ConnAck::default()
                }));
                self.close(Side::Upstream, ReasonCode::ServerUnavailable);
            }
            State::Open => {
                self.disconnect_client(ReasonCode::UnspecifiedError);
                self.close(Side::Upstream, ReasonCode::UnspecifiedError);
            }
            State::AwaitingConnect | State::Closed => {}
        }
    }

    /// The proxy ends the pair on its own (its upstream was declared down or removed, or
    /// it shuts down): the client gets DISCONNECT `reason` (5.0), or CONNACK "server
    /// unavailable" if its CONNACK has not come yet.
    pub fn shut(&mut self, reason: ReasonCode) {
        match self.state {
            State::Closed => return,
            State::AwaitingConnAck => self.send_client_packet(Packet::ConnAck(ConnAck {
                reason_code: ReasonCode::ServerUnavailable,
                ..ConnAck::default()
            })),
            State::AwaitingConnect | State::Open => self.disconnect_client(reason),
        }
        self.close(Side::Upstream, reason);
    }

    /// The next frame to write to `side`.
    pub fn poll_transmit(&mut self, side: Side) -> Option<Bytes> {
        let frame = match side {
            Side::Client => self.to_client.pop_front(),
            Side::Upstream => self.to_upstream.pop_front(),
        }?;
        self.queued[side as usize] -= frame.len();
        Some(frame)
    }

    /// The frames waiting for `side`, in order, without taking them: the first slice, then
    /// the second. For a writer that tries to send in place and then reports with
    /// [`transmitted`](Self::transmitted) how many bytes went.
    pub fn frames(&self, side: Side) -> (&[Bytes], &[Bytes]) {
        match side {
            Side::Client => self.to_client.as_slices(),
            Side::Upstream => self.to_upstream.as_slices(),
        }
    }

    /// `written` bytes of the frames waiting for `side` (as [`frames`](Self::frames)
    /// showed them) are out: those frames are dropped, and one written in part keeps its
    /// tail. More than is queued counts as everything.
    pub fn transmitted(&mut self, side: Side, mut written: usize) {
        let queue = match side {
            Side::Client => &mut self.to_client,
            Side::Upstream => &mut self.to_upstream,
        };
        while written > 0 {
            let Some(front) = queue.front_mut() else {
                break;
            };
            let n = written.min(front.len());
            if n == front.len() {
                queue.pop_front();
            } else {
                front.advance(n);
            }
            self.queued[side as usize] -= n;
            written -= n;
        }
    }

    /// The bytes waiting to be written to `side`.
    pub fn queued(&self, side: Side) -> usize {
        self.queued[side as usize]
    }

    fn push(&mut self, to: Side, frame: Bytes) {
        self.queued[to as usize] += frame.len();
        match to {
            Side::Client => self.to_client.push_back(frame),
            Side::Upstream => self.to_upstream.push_back(frame),
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<PipeEvent> {
        let event = self.events.pop_front();
        // Events are rare (the upstream to open, the close, lines for a traced client):
        // an idle pair should not keep room for them.
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        event
    }

    fn decoder(&self) -> Decoder {
        let decoder = Decoder::new(self.version);
        match self.config.max_packet_size {
            0 => decoder,
            max => decoder.with_max_packet_size(max),
        }
    }

    fn handle(&mut self, now: Instant, from: Side, mut data: BytesMut, hooks: &mut dyn Hooks) {
        let mut pending = core::mem::take(&mut self.pending[from as usize]);
        // First the packet the last read cut: copy just the bytes it misses (its fixed
        // header first, a byte at a time), so the rest of `data` stays uncopied.
        while !pending.is_empty() && !data.is_empty() && self.state != State::Closed {
            let missing = match self.decoder().header(&pending) {
                Ok(Some(header)) => header.packet_len().saturating_sub(pending.len()),
                Ok(None) => 1,
                Err(_) => 0,
            };
            let take = missing.min(data.len());
            pending.extend_from_slice(&data.split_to(take));
            self.handle_frames(now, from, &mut pending, hooks);
            if missing == 0 {
                break;
            }
        }
        if pending.is_empty() {
            self.handle_frames(now, from, &mut data, hooks);
            pending = data;
        }
        // An empty remainder still holds the whole read buffer (the frames split off it
        // share its storage): let it go with the last frame, not with the next read.
        if pending.is_empty() {
            pending = BytesMut::new();
        }
        self.pending[from as usize] = pending;
    }

    fn handle_frames(
        &mut self,
        now: Instant,
        from: Side,
        buf: &mut BytesMut,
        hooks: &mut dyn Hooks,
    ) {
        // While the hooks leave this client's messages alone, a packet that asks nothing of
        // the proxy is only checked: a run of them goes on as one slice of the read buffer,
        // with no frame of its own and no message built for the hooks.
        let through =
            self.state == State::Open && !self.tracing && hooks.passes_messages(&self.info());
        let mut run = 0;
        while self.state != State::Closed {
            let decoder = self.decoder();
            let rest = &buf[run..];
            // The fixed header says where the packet ends: it is split off first, so the
            // decoded packet borrows from the frame that is forwarded.
            let len = match decoder.header(rest) {
                Ok(Some(header)) if rest.len() >= header.packet_len() => header.packet_len(),
                Ok(_) => break,
                Err(e) => {
                    self.pass_run(from, buf, run);
                    return self.bad_input(from, &e);
                }
            };
            if through {
                if let Ok(Decoded::Packet { packet, .. }) = decoder.decode(&rest[..len]) {
                    if self.asks_nothing(from, &packet) {
                        run += len;
                        continue;
                    }
                }
            }
            self.pass_run(from, buf, run);
            run = 0;
            let frame = buf.split_to(len).freeze();
            match decoder.decode(&frame) {
                Ok(Decoded::Packet { packet, .. }) => match from {
                    Side::Client => self.client_packet(now, packet, &frame, hooks),
                    Side::Upstream => self.upstream_packet(now, packet, &frame, hooks),
                },
                Ok(Decoded::Incomplete { .. }) => {
                    return self.bad_input(from, &DecodeError::UnexpectedEnd)
                }
                Err(e) => return self.bad_input(from, &e),
            }
        }
        self.pass_run(from, buf, run);
    }

    /// Whether `packet` from `from` of an open pair, whose hooks pass messages, is
    /// forwarded as it came whatever the proxy knows: what [`client_packet`](Self::client_packet)
    /// and [`upstream_packet`](Self::upstream_packet) would forward untouched.
    fn asks_nothing(&self, from: Side, packet: &Packet<'_>) -> bool {
        match (from, packet) {
            // A topic alias is an error the slow path reports.
            (_, Packet::Publish(p)) => p.properties.topic_alias.is_none() && !p.topic.is_empty(),
            (_, Packet::PubAck(_) | Packet::PubRec(_))
            | (Side::Client, Packet::PingReq)
            | (Side::Upstream, Packet::PingResp | Packet::PubComp(_) | Packet::UnsubAck(_)) => true,
            // Unless the proxy answers some of them itself.
            (Side::Client, Packet::PubRel(_)) => self.refused_from_client.is_empty(),
            (Side::Client, Packet::PubComp(_)) | (Side::Upstream, Packet::PubRel(_)) => {
                self.refused_from_upstream.is_empty()
            }
            _ => false,
        }
    }

    /// Forwards the first `run` bytes of `buf`, packets [`asks_nothing`](Self::asks_nothing)
    /// passed, as one frame.
    fn pass_run(&mut self, from: Side, buf: &mut BytesMut, run: usize) {
        if run > 0 {
            let frames = buf.split_to(run).freeze();
            self.push(from.other(), frames);
        }
    }

    fn bad_input(&mut self, from: Side, error: &DecodeError) {
        if from == Side::Client && self.state == State::AwaitingConnect {
            // 3.1.1 answers only an unknown protocol level, with return code 1.
            let refusal = error
                .v311_connack_code()
                .and_then(ReasonCode::from_v311_connack);
            if let Some(reason) = refusal {
                self.send_client_packet(Packet::ConnAck(ConnAck {
                    reason_code: reason,
                    ..ConnAck::default()
                }));
            }
        }
        self.fail(from, error.reason_code());
    }

    /// Closes the pair because `from` broke the protocol: it hears why (5.0), and a client
    /// whose upstream failed is told "unspecified error".
    fn fail(&mut self, from: Side, reason: ReasonCode) {
        match from {
            Side::Client => self.disconnect_client(reason),
            Side::Upstream => {
                if self.version.is_v5() && self.state != State::AwaitingConnect {
                    self.send_upstream_packet(Packet::Disconnect(Disconnect {
                        reason_code: reason,
                        properties: EMPTY_PROPERTIES,
                    }));
                }
                if self.state == State::AwaitingConnAck {
                    self.send_client_packet(Packet::ConnAck(ConnAck {
                        reason_code: ReasonCode::ServerUnavailable,
                        ..ConnAck::default()
                    }));
                } else {
                    self.disconnect_client(ReasonCode::UnspecifiedError);
                }
            }
        }
        self.close(from, reason);
    }

    fn close(&mut self, by: Side, reason: ReasonCode) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.events.push_back(PipeEvent::Close { by, reason });
        }
    }

    /// Tells a 5.0 client why the pair ends; before its CONNACK only a CONNACK may do that.
    fn disconnect_client(&mut self, reason: ReasonCode) {
        if self.version.is_v5() && self.state == State::Open {
            self.send_client_packet(Packet::Disconnect(Disconnect {
                reason_code: reason,
                properties: EMPTY_PROPERTIES,
            }));
        }
    }

    fn info(&self) -> ClientInfo<'_> {
        ClientInfo {
            connection: self.connection,
            client_id: &self.client_id,
            username: self.username.as_deref(),
            version: self.version,
            remote: self.remote.as_deref(),
            identity: self.identity.as_ref().map(|i| i.subject.as_str()),
        }
    }

    fn trace(&mut self, to: Side, packet: &Packet<'_>, note: &str) {
        if self.tracing {
            self.events.push_back(PipeEvent::Trace {
                client_id: self.client_id.clone(),
                to,
                line: format!("{}{note}", describe_packet(packet)),
            });
        }
    }

    fn forward(&mut self, to: Side, packet: &Packet<'_>, frame: &Bytes) {
        self.trace(to, packet, "");
        self.push(to, frame.clone());
    }

    fn encode(&self, packet: &Packet<'_>) -> Option<Bytes> {
        let mut out = BytesMut::new();
        packet.encode_to_bytes(self.version, &mut out).ok()?;
        Some(out.freeze())
    }

    fn send_client_packet(&mut self, packet: Packet<'_>) {
        self.trace(Side::Client, &packet, " (from the proxy)");
        if let Some(bytes) = self.encode(&packet) {
            self.push(Side::Client, bytes);
        }
    }

    fn send_upstream_packet(&mut self, packet: Packet<'_>) {
        self.trace(Side::Upstream, &packet, " (from the proxy)");
        if let Some(bytes) = self.encode(&packet) {
            self.push(Side::Upstream, bytes);
        }
    }

    /// Sends a packet that replaces one a hook changed; a packet that no longer encodes (a
    /// hook made it too large) closes the pair rather than reaching the other side half-made.
    fn send_rewritten(&mut self, to: Side, packet: Packet<'_>) {
        self.trace(to, &packet, " (rewritten)");
        match self.encode(&packet) {
            Some(bytes) => self.push(to, bytes),
            None => {
                self.disconnect_client(ReasonCode::ImplementationSpecificError);
                self.close(to, ReasonCode::ImplementationSpecificError);
            }
        }
    }

    fn protocol_error(&mut self, from: Side) {
        self.fail(from, ReasonCode::ProtocolError);
    }

    fn client_packet(
        &mut self,
        now: Instant,
        packet: Packet<'_>,
        frame: &Bytes,
        hooks: &mut dyn Hooks,
    ) {
        match (self.state, packet) {
            (State::AwaitingConnect, Packet::Connect(connect)) => {
                self.handle_connect(now, &connect, frame, hooks)
            }
            (State::AwaitingConnect, _) | (_, Packet::Connect(_)) => {
                self.protocol_error(Side::Client)
            }
            (_, Packet::Publish(publish)) => self.client_publish(now, &publish, frame, hooks),
            (_, Packet::PubRel(rel)) if self.refused_from_client.contains(&rel.packet_id) => {
                self.refused_from_client.retain(|id| *id != rel.packet_id);
                self.trace(Side::Upstream, &packet, " (answered by the proxy)");
                self.send_client_packet(Packet::PubComp(PubResponse::new(rel.packet_id)));
            }
            (_, Packet::PubComp(comp)) if self.refused_from_upstream.contains(&comp.packet_id) => {
                // Cannot happen: the client never saw that identifier. Dropped, not forwarded.
                self.trace(Side::Upstream, &packet, " (dropped)");
            }
            (_, Packet::Subscribe(subscribe)) => self.client_subscribe(&subscribe, frame, hooks),
            (_, Packet::Unsubscribe(unsubscribe)) => {
                self.client_unsubscribe(&unsubscribe, frame, hooks)
            }
            (
                _,
                Packet::PubAck(_)
                | Packet::PubRec(_)
                | Packet::PubRel(_)
                | Packet::PubComp(_)
                | Packet::PingReq
                | Packet::Auth(_),
            ) => self.forward(Side::Upstream, &packet, frame),
            (_, Packet::Disconnect(_)) => {
                self.forward(Side::Upstream, &packet, frame);
                self.close(Side::Client, ReasonCode::NORMAL_DISCONNECTION);
            }
            (
                _,
                Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp,
            ) => self.protocol_error(Side::Client),
        }
    }

    fn handle_connect(
        &mut self,
        now: Instant,
        connect: &Connect<'_>,
        frame: &Bytes,
        hooks: &mut dyn Hooks,
    ) {
        self.version = connect.protocol_version;
        self.client_id = String::from(connect.client_id);
        // A certificate that names the user wins over the CONNECT, as in the broker; the
        // CONNECT still goes upstream as the device sent it.
        self.username = self
            .identity
            .as_ref()
            .and_then(|i| i.username.clone())
            .or_else(|| connect.username.map(String::from));
        self.tracing = self.config.trace_clients.contains(&self.client_id);
        self.trace(Side::Upstream, &Packet::Connect(*connect), " (received)");
        let mut request = connect_request(connect, frame);
        request.username.clone_from(&self.username);
        let refuse = |pipe: &mut Pipe, reason: ReasonCode| {
            pipe.send_client_packet(Packet::ConnAck(ConnAck {
                reason_code: reason,
                ..ConnAck::default()
            }));
            pipe.close(Side::Client, reason);
        };
        match hooks.on_connect(&self.info(), &request) {
            AuthDecision::Accept(_) => {}
            // Enhanced authentication is the upstream's business; the proxy's own hooks
            // decide yes or no on the CONNECT alone.
            AuthDecision::Continue(_) => return refuse(self, ReasonCode::BadAuthenticationMethod),
            AuthDecision::Reject(reason) => return refuse(self, reason),
        }
        let mut will = connect.will;
        let will_message = connect.will.as_ref().map(|w| {
            let mut message = Message {
                topic: Arc::from(w.topic),
                payload: crate::message::share(frame, w.payload),
                qos: w.qos,
                retain: w.retain,
                properties: MessageProperties::from_properties(&w.properties, frame, now),
            };
            let verdict = hooks.authorize_publish(&self.info(), &mut message);
            (message, verdict)
        });
        let users;
        if let Some((message, verdict)) = &will_message {
            if let Verdict::Deny(reason) = verdict {
                return refuse(self, *reason);
            }
            users = user_views(&message.properties);
            let original = connect.will.as_ref().map(|w| w.properties);
            will = Some(Will {
                topic: &message.topic,
                payload: &message.payload,
                qos: message.qos,
                retain: message.retain,
                properties: petrel_codec::Properties {
                    user_properties: List::new(&users),
                    content_type: message.properties.content_type.as_deref(),
                    response_topic: message.properties.response_topic.as_deref(),
                    correlation_data: message.properties.correlation_data.as_deref(),
                    payload_format_indicator: message.properties.payload_format_indicator,
                    ..original.unwrap_or_default()
                },
            });
        }
        let mut properties = connect.properties;
        properties.topic_alias_maximum = None;
        let upstream_connect = Connect {
            will,
            properties,
            ..*connect
        };
        self.state = State::AwaitingConnAck;
        self.send_rewritten(Side::Upstream, Packet::Connect(upstream_connect));
        if self.state != State::Closed {
            self.events.push_back(PipeEvent::OpenUpstream {
                client_id: self.client_id.clone(),
            });
        }
    }

    fn client_publish(
        &mut self,
        now: Instant,
        publish: &Publish<'_>,
        frame: &Bytes,
        hooks: &mut dyn Hooks,
    ) {
        if publish.properties.topic_alias.is_some() || publish.topic.is_empty() {
            // The client was told Topic Alias Maximum 0.
            return self.fail(Side::Client, ReasonCode::TopicAliasInvalid);
        }
        let mut message = Message::from_publish(publish, publish.topic, frame, now);
        let before = message.properties.clone();
        match hooks.authorize_publish(&self.info(), &mut message) {
            Verdict::Allow => {
                self.pass_publish(Side::Upstream, now, publish, frame, &message, &before)
            }
            Verdict::Deny(reason) => {
                self.trace(Side::Upstream, &Packet::Publish(*publish), " (refused)");
                let code = if self.version.is_v5() {
                    reason
                } else {
                    ReasonCode::Success
                };
                match (publish.qos, publish.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => {
                        self.send_client_packet(Packet::PubAck(response(id, code)))
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        // A 5.0 PUBREC with an error ends the exchange; a 3.1.1 one is
                        // followed by PUBREL, which the proxy answers.
                        if !code.is_error() && !self.refused_from_client.contains(&id) {
                            self.refused_from_client.push(id);
                        }
                        self.send_client_packet(Packet::PubRec(response(id, code)))
                    }
                    _ => {}
                }
            }
        }
    }

    /// Forwards a PUBLISH the hooks allowed: the original frame if they changed nothing,
    /// else the packet encoded again with their topic, payload and properties.
    fn pass_publish(
        &mut self,
        to: Side,
        now: Instant,
        publish: &Publish<'_>,
        frame: &Bytes,
        message: &Message,
        before: &MessageProperties,
    ) {
        let same_payload = (message.payload.as_ptr() == publish.payload.as_ptr()
            && message.payload.len() == publish.payload.len())
            || message.payload[..] == *publish.payload;
        let same_properties = message.properties == *before;
        if *message.topic == *publish.topic
            && same_payload
            && same_properties
            && message.retain == publish.retain
        {
            return self.forward(to, &Packet::Publish(*publish), frame);
        }
        let users = user_views(&message.properties);
        let properties = if same_properties {
            publish.properties
        } else {
            petrel_codec::Properties {
                payload_format_indicator: message.properties.payload_format_indicator,
                message_expiry_interval: message.properties.remaining_expiry(now),
                content_type: message.properties.content_type.as_deref(),
                response_topic: message.properties.response_topic.as_deref(),
                correlation_data: message.properties.correlation_data.as_deref(),
                user_properties: List::new(&users),
                ..publish.properties
            }
        };
        self.send_rewritten(
            to,
            Packet::Publish(Publish {
                topic: &message.topic,
                payload: &message.payload,
                retain: message.retain,
                properties,
                ..*publish
            }),
        );
    }

    fn client_subscribe(
        &mut self,
        subscribe: &Subscribe<'_>,
        frame: &Bytes,
        hooks: &mut dyn Hooks,
    ) {
        let mut filters: Vec<(String, petrel_codec::SubscriptionOptions)> = Vec::new();
        let mut codes: Vec<Option<ReasonCode>> = Vec::new();
        let mut changed = false;
        for f in subscribe.filters.iter() {
            let mut filter = String::from(f.filter);
            let mut options = f.options;
            match hooks.authorize_subscribe(&self.info(), &mut filter, &mut options) {
                Verdict::Allow => {
                    changed |= filter != f.filter || options != f.options;
                    filters.push((filter, options));
                    codes.push(None);
                }
                Verdict::Deny(reason) => {
                    changed = true;
                    let reason = if self.version.is_v5() {
                        reason
                    } else {
                        ReasonCode::UnspecifiedError
                    };
                    codes.push(Some(reason));
                }
            }
        }
        if !changed {
            return self.forward(Side::Upstream, &Packet::Subscribe(*subscribe), frame);
        }
        if filters.is_empty() {
            self.trace(Side::Upstream, &Packet::Subscribe(*subscribe), " (refused)");
            let codes: Vec<ReasonCode> = codes.into_iter().flatten().collect();
            return self.send_client_packet(Packet::SubAck(SubAck {
                packet_id: subscribe.packet_id,
                properties: EMPTY_PROPERTIES,
                reason_codes: List::new(&codes),
            }));
        }
        if codes.iter().any(Option::is_some) {
            self.pending_subacks
                .retain(|(id, _)| *id != subscribe.packet_id);
            self.pending_subacks.push((subscribe.packet_id, codes));
        }
        let views: Vec<SubscribeFilter<'_>> = filters
            .iter()
            .map(|(filter, options)| SubscribeFilter {
                filter,
                options: *options,
            })
            .collect();
        self.send_rewritten(
            Side::Upstream,
            Packet::Subscribe(Subscribe {
                filters: List::new(&views),
                ..*subscribe
            }),
        );
    }

    fn client_unsubscribe(
        &mut self,
        unsubscribe: &Unsubscribe<'_>,
        frame: &Bytes,
        hooks: &mut dyn Hooks,
    ) {
        let mut filters = Vec::new();
        for f in unsubscribe.filters.iter() {
            let mut filter = String::from(f);
            hooks.rewrite_unsubscribe(&self.info(), &mut filter);
            filters.push(filter);
        }
        if filters
            .iter()
            .zip(unsubscribe.filters.iter())
            .all(|(a, b)| a == b)
        {
            return self.forward(Side::Upstream, &Packet::Unsubscribe(*unsubscribe), frame);
        }
        let views: Vec<&str> = filters.iter().map(String::as_str).collect();
        self.send_rewritten(
            Side::Upstream,
            Packet::Unsubscribe(Unsubscribe {
                filters: List::new(&views),
                ..*unsubscribe
            }),
        );
    }

    fn upstream_packet(
        &mut self,
        now: Instant,
        packet: Packet<'_>,
        frame: &Bytes,
        hooks: &mut dyn Hooks,
    ) {
        match (self.state, packet) {
            (State::AwaitingConnAck, Packet::ConnAck(connack)) => {
                self.upstream_connack(&connack, frame)
            }
            (State::AwaitingConnAck, _) | (_, Packet::ConnAck(_)) => {
                self.protocol_error(Side::Upstream)
            }
            (_, Packet::Publish(publish)) => self.upstream_publish(now, &publish, frame, hooks),
            (_, Packet::PubRel(rel)) if self.refused_from_upstream.contains(&rel.packet_id) => {
                self.refused_from_upstream.retain(|id| *id != rel.packet_id);
                self.trace(Side::Client, &packet, " (answered by the proxy)");
                self.send_upstream_packet(Packet::PubComp(PubResponse::new(rel.packet_id)));
            }
            (_, Packet::SubAck(suback)) => self.upstream_suback(&suback, frame),
            (
                _,
                Packet::PubAck(_)
                | Packet::PubRec(_)
                | Packet::PubRel(_)
                | Packet::PubComp(_)
                | Packet::UnsubAck(_)
                | Packet::PingResp
                | Packet::Auth(_),
            ) => self.forward(Side::Client, &packet, frame),
            (_, Packet::Disconnect(disconnect)) => {
                self.forward(Side::Client, &packet, frame);
                self.close(Side::Upstream, disconnect.reason_code);
            }
            (
                _,
                Packet::Connect(_)
                | Packet::Subscribe(_)
                | Packet::Unsubscribe(_)
                | Packet::PingReq,
            ) => self.protocol_error(Side::Upstream),
        }
    }

    fn upstream_connack(&mut self, connack: &ConnAck<'_>, frame: &Bytes) {
        if let Some(assigned) = connack.properties.assigned_client_identifier {
            self.client_id = String::from(assigned);
        }
        if connack.properties.topic_alias_maximum.is_some() {
            let mut properties = connack.properties;
            properties.topic_alias_maximum = None;
            self.send_rewritten(
                Side::Client,
                Packet::ConnAck(ConnAck {
                    properties,
                    ..*connack
                }),
            );
        } else {
            self.forward(Side::Client, &Packet::ConnAck(*connack), frame);
        }
        if connack.reason_code.is_error() {
            self.close(Side::Upstream, connack.reason_code);
        } else if self.state != State::Closed {
            self.state = State::Open;
        }
    }

    fn upstream_publish(
        &mut self,
        now: Instant,
        publish: &Publish<'_>,
        frame: &Bytes,
        hooks: &mut dyn Hooks,
    ) {
        if publish.properties.topic_alias.is_some() || publish.topic.is_empty() {
            // The upstream was told Topic Alias Maximum 0.
            return self.fail(Side::Upstream, ReasonCode::TopicAliasInvalid);
        }
        let mut message = Message::from_publish(publish, publish.topic, frame, now);
        let before = message.properties.clone();
        if !hooks.authorize_delivery(&self.info(), &message) {
            self.trace(Side::Client, &Packet::Publish(*publish), " (withheld)");
            match (publish.qos, publish.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => {
                    self.send_upstream_packet(Packet::PubAck(PubResponse::new(id)))
                }
                (QoS::ExactlyOnce, Some(id)) => {
                    if !self.refused_from_upstream.contains(&id) {
                        self.refused_from_upstream.push(id);
                    }
                    self.send_upstream_packet(Packet::PubRec(PubResponse::new(id)))
                }
                _ => {}
            }
            return;
        }
        hooks.rewrite_delivery(&self.info(), &mut message);
        self.pass_publish(Side::Client, now, publish, frame, &message, &before);
    }

    fn upstream_suback(&mut self, suback: &SubAck<'_>, frame: &Bytes) {
        let Some(at) = self
            .pending_subacks
            .iter()
            .position(|(id, _)| *id == suback.packet_id)
        else {
            return self.forward(Side::Client, &Packet::SubAck(*suback), frame);
        };
        let (_, slots) = self.pending_subacks.swap_remove(at);
        let mut upstream = suback.reason_codes.iter();
        let codes: Vec<ReasonCode> = slots
            .into_iter()
            .map(|slot| {
                slot.or_else(|| upstream.next())
                    .unwrap_or(ReasonCode::UnspecifiedError)
            })
            .collect();
        self.send_rewritten(
            Side::Client,
            Packet::SubAck(SubAck {
                reason_codes: List::new(&codes),
                ..*suback
            }),
        );
    }
}

fn response(packet_id: PacketId, reason_code: ReasonCode) -> PubResponse<'static> {
    PubResponse {
        packet_id,
        reason_code,
        properties: EMPTY_PROPERTIES,
    }
}

fn user_views(properties: &MessageProperties) -> Vec<UserProperty<'_>> {
    properties
        .user_properties
        .iter()
        .map(|(name, value)| UserProperty { name, value })
        .collect()
}

/// The CONNECT as the hooks see it (the broker builds the same from its own decode).
fn connect_request(connect: &Connect<'_>, frame: &Bytes) -> ConnectRequest {
    let props = &connect.properties;
    let v5 = connect.protocol_version.is_v5();
    ConnectRequest {
        version: connect.protocol_version,
        client_id: String::from(connect.client_id),
        clean_start: connect.clean_start,
        keep_alive: connect.keep_alive,
        session_expiry_interval: if v5 {
            props.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        },
        username: connect.username.map(String::from),
        password: connect.password.map(|p| crate::message::share(frame, p)),
        // The will goes to `authorize_publish` as a message of its own.
        will: None,
        authentication_method: props.authentication_method.map(String::from),
        authentication_data: props
            .authentication_data
            .map(|d| crate::message::share(frame, d)),
        user_properties: props
            .user_properties
            .iter()
            .map(|p| (String::from(p.name), String::from(p.value)))
            .collect(),
    }
}

#[cfg(test)]
#[path = "pipe_tests.rs"]
mod tests;
