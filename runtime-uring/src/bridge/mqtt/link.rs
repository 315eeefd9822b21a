//! One bridge's decisions, without I/O: which local messages go out and under what topic,
//! the bounded queue while the remote broker is away, what comes in, and what must not loop.
//!
//! The protocol itself is [`petrel_state::client::Client`]; a [`Link`] wraps it in the same
//! shape (inputs with `now`, outputs drained after each: [`Link::poll_transmit`],
//! [`Link::poll_local`], [`Link::poll_timeout`]), and the runtime only moves bytes and time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use petrel_codec::{
    List, PacketId, Properties, Publish, QoS, RetainHandling, SubscribeFilter, SubscriptionOptions,
    UserProperty,
};
use petrel_state::client::{Client, ClientError, ClientEvent, ClientOptions, ConnectionState};
use petrel_state::message::Message;
use petrel_state::{Duration, Instant};
use tracing::{debug, info, warn};

use super::config::{MqttBridgeConfig, Protocol};
use super::BridgeStats;

/// Outbound QoS 1/2 publishes in flight at once (and the Receive Maximum advertised).
const INFLIGHT: usize = 64;
/// Bytes of the client's buffer: QoS 1/2 PUBLISH packets kept for retransmission after a
/// reconnect (2 MiB), and room for the largest message that can cross, the broker's default
/// 1 MiB packet limit, plus acknowledgements.
const BUF: usize = (2 << 20) + (1 << 20) + (64 << 10);

type RemoteClient<'a> = Client<'a, INFLIGHT, BUF>;

/// How long a message the bridge brought in is remembered, so that it is not sent back out
/// when the broker hands it to the bridge's own tap (which happens at once, so this is only
/// a bound on memory if it somehow does not).
const MARK_LIFETIME: Duration = Duration::from_secs(60);
/// Over 3.1.1 (no No Local), how long a message sent out on a topic the bridge also
/// subscribes to is remembered, so that the remote broker's echo of it is dropped.
const ECHO_LIFETIME: Duration = Duration::from_secs(30);
/// At most this many of either are remembered.
const MAX_REMEMBERED: usize = 100_000;

/// A local message on its way to the remote broker.
#[derive(Debug)]
struct Outgoing {
    /// The remote topic.
    topic: String,
    /// The QoS it goes with: the message's, capped by its bridged topic's.
    qos: QoS,
    message: Arc<Message>,
    /// Arrival order, to put messages a lost remote session dropped back in order.
    seq: u64,
}

/// What [`Link::received`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Every complete packet was taken: read more.
    NeedBytes,
    /// The transmit queue is full: write what [`Link::poll_transmit`] holds, then call again
    /// with the same input.
    Flush,
}

/// One bridge connection's state (see the [module documentation](self)).
pub(crate) struct Link<'a> {
    config: &'a MqttBridgeConfig,
    client: Box<RemoteClient<'a>>,
    stats: Arc<BridgeStats>,
    queue: VecDeque<Outgoing>,
    inflight: HashMap<PacketId, Outgoing>,
    next_seq: u64,
    /// Topics of messages the bridge published locally (the `Arc` itself identifies the
    /// message: the broker hands the tap the same one).
    marks: VecDeque<(Instant, Arc<str>)>,
    /// 3.1.1: remote topic and payload of messages sent out that the remote broker will
    /// send back.
    echoes: VecDeque<(Instant, (String, Bytes))>,
    /// The last message a tap delivered: a message matching several bridged filters comes
    /// once per filter, one right after the other.
    last_local: Option<Arc<Message>>,
    to_local: VecDeque<Message>,
    subscribe_due: bool,
    delay: std::time::Duration,
}

impl<'a> Link<'a> {
    /// A link that is not connected yet, refusing remote packets over `max_packet_size`
    /// bytes (the broker's own limit: a remote broker cannot make it buffer more).
    pub(crate) fn new(
        config: &'a MqttBridgeConfig,
        stats: Arc<BridgeStats>,
        max_packet_size: u32,
    ) -> Self {
        let version = config.protocol.version();
        let persistent = config.protocol == Protocol::V5 && !config.clean_start;
        let options = ClientOptions {
            keep_alive: config.keep_alive,
            clean_start: config.clean_start,
            session_expiry_interval: if persistent { config.session_expiry } else { 0 },
            receive_maximum: INFLIGHT as u16,
            max_packet_size,
            username: config.username.as_deref(),
            password: config.password.as_deref().map(str::as_bytes),
            ..ClientOptions::new(version, &config.client_id)
        };
        Link {
            config,
            client: Box::new(Client::new(options)),
            stats,
            queue: VecDeque::new(),
            inflight: HashMap::new(),
            next_seq: 0,
            marks: VecDeque::new(),
            echoes: VecDeque::new(),
            last_local: None,
            to_local: VecDeque::new(),
            subscribe_due: false,
            delay: std::time::Duration::from_millis(config.reconnect_min_ms),
        }
    }

    /// Whether the remote broker accepted the connection.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.state() == ConnectionState::Connected
    }

    /// Outgoing messages not yet handed to the remote broker.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    // -----------------------------------------------------------------------------------------
    // Inputs

    /// A transport to the remote broker is open: CONNECT goes out.
    pub(crate) fn open(&mut self, now: Instant) -> Result<(), ClientError> {
        self.client.connect(now)
    }

    /// A local message matching one of the bridge's filters, from its tap.
    pub(crate) fn local(&mut self, now: Instant, message: Arc<Message>) {
        if self
            .last_local
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, &message))
        {
            return;
        }
        self.last_local = Some(message.clone());
        if let Some(i) = self
            .marks
            .iter()
            .position(|(_, topic)| Arc::ptr_eq(topic, &message.topic))
        {
            // The bridge brought this one in: it does not go back out.
            self.marks.remove(i);
            return;
        }
        let Some((topic, cap)) = self.config.outbound(&message.topic) else {
            return;
        };
        let qos = message.qos.min(cap);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.enqueue(Outgoing {
            topic,
            qos,
            message,
            seq,
        });
        self.pump(now);
    }

    /// Bytes from the remote broker: takes every complete packet at the start of `input`
    /// and removes it.
    pub(crate) fn received(
        &mut self,
        now: Instant,
        input: &mut Vec<u8>,
    ) -> Result<Progress, String> {
        loop {
            let received = match self.client.handle_bytes(now, input) {
                Ok(received) => received,
                Err(ClientError::BufferFull) => return Ok(Progress::Flush),
                Err(e) => return Err(e.to_string()),
            };
            if received.needs_more() {
                return Ok(Progress::NeedBytes);
            }
            let consumed = received.consumed;
            if let Some(event) = received.event {
                self.on_event(now, event)?;
            }
            input.drain(..consumed);
            self.session_events();
            self.pump(now);
        }
    }

    /// The deadline of [`Link::poll_timeout`] has passed: keep-alive and response timeouts.
    pub(crate) fn timeout(&mut self, now: Instant) -> Result<(), String> {
        match self.client.handle_timeout(now) {
            // The PINGREQ found no room: the deadline stays, and comes again after a flush.
            Ok(()) | Err(ClientError::BufferFull) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends DISCONNECT (the bridge is stopping); write [`Link::poll_transmit`] out, then
    /// close.
    pub(crate) fn disconnect(&mut self, now: Instant) {
        let _ = self.client.disconnect(now);
    }

    /// The transport is gone. The session and the queue stay for the next connection.
    pub(crate) fn lost(&mut self, now: Instant) {
        let was_connected = self.is_connected();
        self.client.connection_lost(now);
        self.session_events();
        if was_connected {
            self.stats.connected.store(false, Ordering::Relaxed);
            self.to_local.push_back(self.state_message(false));
        }
    }

    /// How long to wait before the next connection attempt: doubling from
    /// `reconnect_min_ms` to `reconnect_max_ms`, and back to the minimum once a connection
    /// is accepted.
    pub(crate) fn next_delay(&mut self) -> std::time::Duration {
        let delay = self.delay;
        let max = std::time::Duration::from_millis(self.config.reconnect_max_ms);
        self.delay = (delay * 2).min(max);
        delay
    }

    // -----------------------------------------------------------------------------------------
    // Outputs

    /// Copies bytes for the remote broker into `buf`; returns how many.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> usize {
        let n = self.client.poll_transmit(now, buf);
        // Room freed in the transmit queue may take more of the queue.
        self.pump(now);
        n
    }

    /// A message to publish on this broker.
    pub(crate) fn poll_local(&mut self) -> Option<Message> {
        self.to_local.pop_front()
    }

    /// When [`Link::timeout`] is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    // -----------------------------------------------------------------------------------------
    // Internals

    fn on_event(&mut self, now: Instant, event: ClientEvent<'_>) -> Result<(), String> {
        match event {
            ClientEvent::Connected { session_present } => {
                info!(
                    bridge = self.config.name,
                    address = self.config.address,
                    session_present,
                    "bridge connected"
                );
                self.delay = std::time::Duration::from_millis(self.config.reconnect_min_ms);
                self.stats.connected.store(true, Ordering::Relaxed);
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                self.to_local.push_back(self.state_message(true));
                // Subscribed at every connection: a session the remote broker lost has
                // lost its subscriptions too.
                self.subscribe_due = self.config.topics.iter().any(|t| t.direction.inward());
            }
            ClientEvent::Refused(reason) => {
                return Err(format!(
                    "the remote broker refused the connection: {reason:?}"
                ))
            }
            ClientEvent::Message(publish) => self.inbound(now, &publish),
            ClientEvent::Published { packet_id } => {
                if self.inflight.remove(&packet_id).is_some() {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            ClientEvent::PublishFailed { packet_id, reason } => {
                if let Some(out) = self.inflight.remove(&packet_id) {
                    warn!(
                        bridge = self.config.name,
                        topic = out.topic,
                        ?reason,
                        "the remote broker refused a message"
                    );
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            ClientEvent::Subscribed { reason_codes, .. } => {
                let inward = self.config.topics.iter().filter(|t| t.direction.inward());
                let mut refused = 0;
                for (topic, code) in inward.zip(reason_codes.iter()) {
                    if code.is_error() {
                        warn!(
                            bridge = self.config.name,
                            filter = topic.remote_filter(),
                            ?code,
                            "the remote broker refused a subscription"
                        );
                        refused += 1;
                    }
                }
                // From here on the remote's messages come in: operators (and tests) can
                // tell "connected" from "receiving".
                info!(bridge = self.config.name, refused, "bridge subscribed");
            }
            ClientEvent::Disconnected { reason, .. } => {
                return Err(format!("the remote broker disconnected: {reason:?}"))
            }
            ClientEvent::Unsubscribed { .. }
            | ClientEvent::SessionLost { .. }
            | ClientEvent::Pong => {}
        }
        Ok(())
    }

    /// Publishes the remote broker's session dropped go back at the head of the queue, in
    /// their original order: they are sent again, not lost.
    fn session_events(&mut self) {
        let mut lost = Vec::new();
        while let Some(event) = self.client.poll_event() {
            if let ClientEvent::SessionLost { packet_id } = event {
                if let Some(out) = self.inflight.remove(&packet_id) {
                    lost.push(out);
                }
            }
        }
        lost.sort_by_key(|out| out.seq);
        for out in lost.into_iter().rev() {
            self.queue.push_front(out);
        }
        self.stats
            .queued
            .store(self.queue.len() as u64, Ordering::Relaxed);
    }

    fn inbound(&mut self, now: Instant, publish: &Publish<'_>) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if self.config.protocol == Protocol::V311 {
            if let Some(i) = self.echoes.iter().position(|(_, (topic, payload))| {
                topic == publish.topic && payload[..] == *publish.payload
            }) {
                // Our own message, sent back by a broker that has no No Local in 3.1.1.
                self.echoes.remove(i);
                return;
            }
        }
        let Some((topic, cap)) = self.config.inbound(publish.topic) else {
            debug!(
                bridge = self.config.name,
                topic = publish.topic,
                "a remote message no bridged topic maps"
            );
            return;
        };
        let mut message = Message::from_publish(publish, &topic, &Bytes::new(), now);
        message.qos = message.qos.min(cap);
        if self.config.outbound(&topic).is_some() {
            remember(&mut self.marks, now, MARK_LIFETIME, message.topic.clone());
        }
        self.to_local.push_back(message);
    }

    fn enqueue(&mut self, out: Outgoing) {
        if self.queue.len() >= self.config.max_queued {
            // A QoS 1/2 message takes the place of the oldest QoS 0 one, if there is one.
            let victim = (out.qos != QoS::AtMostOnce)
                .then(|| self.queue.iter().position(|o| o.qos == QoS::AtMostOnce))
                .flatten();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            match victim {
                Some(i) => {
                    self.queue.remove(i);
                }
                None => {
                    debug!(
                        bridge = self.config.name,
                        topic = out.topic,
                        "bridge queue full: message dropped"
                    );
                    return;
                }
            }
        }
        self.queue.push_back(out);
        self.stats
            .queued
            .store(self.queue.len() as u64, Ordering::Relaxed);
    }

    /// Hands queued messages to the client while it takes them.
    fn pump(&mut self, now: Instant) {
        if !self.is_connected() {
            return;
        }
        if self.subscribe_due {
            self.subscribe(now);
        }
        while let Some(out) = self.queue.front() {
            if out.message.is_expired(now) {
                self.queue.pop_front();
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let limits = *self.client.server_limits();
            // The remote broker's limits downgrade; they never make us skip a message.
            let qos = out.qos.min(limits.maximum_qos);
            let retain = out.message.retain && limits.retain_available;
            let m = &out.message;
            let p = &m.properties;
            let users: Vec<UserProperty<'_>> = p
                .user_properties
                .iter()
                .map(|(name, value)| UserProperty { name, value })
                .collect();
            let properties = Properties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.remaining_expiry(now),
                content_type: p.content_type.as_deref(),
                response_topic: p.response_topic.as_deref(),
                correlation_data: p.correlation_data.as_deref(),
                user_properties: List::new(&users),
                ..Properties::default()
            };
            let result =
                self.client
                    .publish_with(now, &out.topic, &m.payload, qos, retain, &properties);
            match result {
                Ok(packet_id) => {
                    let Some(out) = self.queue.pop_front() else {
                        break;
                    };
                    if self.config.protocol == Protocol::V311 && self.config.comes_back(&out.topic)
                    {
                        let echo = (out.topic.clone(), out.message.payload.clone());
                        remember(&mut self.echoes, now, ECHO_LIFETIME, echo);
                    }
                    match packet_id {
                        Some(id) => {
                            self.inflight.insert(id, out);
                        }
                        None => {
                            self.stats.sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(
                    ClientError::InflightFull
                    | ClientError::BufferFull
                    | ClientError::StoreFull
                    | ClientError::NotConnected,
                ) => break,
                Err(e) => {
                    warn!(
                        bridge = self.config.name,
                        topic = out.topic,
                        "message not bridged: {e}"
                    );
                    self.queue.pop_front();
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.stats
            .queued
            .store(self.queue.len() as u64, Ordering::Relaxed);
        self.stats
            .inflight
            .store(self.inflight.len() as u64, Ordering::Relaxed);
    }

    fn subscribe(&mut self, now: Instant) {
        let v5 = self.config.protocol == Protocol::V5;
        let filters: Vec<SubscribeFilter<'_>> = self
            .config
            .topics
            .iter()
            .filter(|t| t.direction.inward())
            .map(|t| SubscribeFilter {
                filter: t.remote_filter(),
                options: SubscriptionOptions {
                    qos: t.qos,
                    // The bridge's own messages do not come back to it.
                    no_local: v5,
                    retain_as_published: v5,
                    retain_handling: RetainHandling::SendIfNew,
                },
            })
            .collect();
        match self.client.subscribe(now, &filters) {
            Ok(_) => self.subscribe_due = false,
            // Tried again when the transmit queue or a packet identifier frees up.
            Err(ClientError::BufferFull | ClientError::InflightFull) => {}
            Err(e) => {
                warn!(bridge = self.config.name, "cannot subscribe: {e}");
                self.subscribe_due = false;
            }
        }
    }

    /// `$SYS/broker/connection/NAME/state`, retained: 1 connected, 0 not (mosquitto's).
    fn state_message(&self, connected: bool) -> Message {
        let topic = format!("$SYS/broker/connection/{}/state", self.config.name);
        let mut message = Message::new(&topic, if connected { &b"1"[..] } else { &b"0"[..] });
        message.retain = true;
        message
    }
}

/// Remembers `item` for `lifetime`, forgetting what is older and the oldest past
/// [`MAX_REMEMBERED`].
fn remember<T>(list: &mut VecDeque<(Instant, T)>, now: Instant, lifetime: Duration, item: T) {
    while list.front().is_some_and(|(at, _)| {
        now.saturating_duration_since(*at) > lifetime || list.len() >= MAX_REMEMBERED
    }) {
        list.pop_front();
    }
    list.push_back((now, item));
}

#[cfg(test)]
mod tests {
    use petrel_codec::{ConnAck, Decoded, Decoder, Packet, ProtocolVersion, PubResponse, SubAck};

    use super::*;

    /// Runs a test on a thread with the stack the bridges' thread has: a debug build builds
    /// the client's megabytes of buffers on the stack before boxing them.
    fn on_a_big_stack(test: impl FnOnce() + Send + 'static) {
        let thread = std::thread::Builder::new()
            .stack_size(32 << 20)
            .spawn(test)
            .unwrap();
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    fn config(protocol: &str, topics: &str, extra: &str) -> MqttBridgeConfig {
        toml::from_str(&format!(
            "name = \"t\"\naddress = \"127.0.0.1:1\"\nprotocol = \"{protocol}\"\n{extra}\n\
             topics = [{topics}]\n"
        ))
        .unwrap()
    }

    fn stats() -> Arc<BridgeStats> {
        Arc::new(BridgeStats::default())
    }

    fn message(topic: &str, payload: &'static [u8], qos: QoS) -> Arc<Message> {
        let mut m = Message::new(topic, payload);
        m.qos = qos;
        Arc::new(m)
    }

    /// The packets the link wants to send, one line each.
    fn sent(link: &mut Link<'_>, version: ProtocolVersion) -> Vec<String> {
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = link.poll_transmit(Instant::ZERO, &mut buf);
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        let mut lines = Vec::new();
        let mut rest = &bytes[..];
        while let Ok(Decoded::Packet { packet, len }) = Decoder::new(version).decode(rest) {
            lines.push(match packet {
                Packet::Publish(p) => format!(
                    "PUBLISH {} q{} dup{} r{} {}",
                    p.topic,
                    p.qos as u8,
                    u8::from(p.dup),
                    u8::from(p.retain),
                    String::from_utf8_lossy(p.payload)
                ),
                Packet::Subscribe(s) => {
                    let filters: Vec<String> = s
                        .filters
                        .iter()
                        .map(|f| {
                            format!(
                                "{}:q{}:nl{}",
                                f.filter,
                                f.options.qos as u8,
                                u8::from(f.options.no_local)
                            )
                        })
                        .collect();
                    format!("SUBSCRIBE {}", filters.join(" "))
                }
                other => format!("{:?}", other.packet_type()),
            });
            rest = &rest[len..];
        }
        lines
    }

    fn feed(link: &mut Link<'_>, version: ProtocolVersion, packet: Packet<'_>) {
        let mut bytes = vec![0u8; 1024];
        let len = packet.encode(version, &mut bytes).unwrap();
        bytes.truncate(len);
        assert_eq!(
            link.received(Instant::ZERO, &mut bytes),
            Ok(Progress::NeedBytes)
        );
        assert!(bytes.is_empty());
    }

    fn connack(session_present: bool) -> Packet<'static> {
        Packet::ConnAck(ConnAck {
            session_present,
            ..ConnAck::default()
        })
    }

    fn publish<'p>(topic: &'p str, payload: &'p [u8], qos: QoS, id: u16) -> Packet<'p> {
        Packet::Publish(Publish {
            topic,
            payload,
            qos,
            packet_id: PacketId::new(id),
            ..Publish::default()
        })
    }

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    const V5: ProtocolVersion = ProtocolVersion::V5;
    const V311: ProtocolVersion = ProtocolVersion::V311;

    #[test]
    fn queues_while_away_and_sends_with_the_remote_prefix() {
        on_a_big_stack(|| {
            let config = config(
                "5.0",
                "{ filter = \"sensors/#\", qos = 1, local_prefix = \"site/\", \
                 remote_prefix = \"plant/\" }",
                "",
            );
            let stats = stats();
            let mut link = Link::new(&config, stats.clone(), 1 << 20);
            link.local(
                Instant::ZERO,
                message("site/sensors/a", b"2", QoS::ExactlyOnce),
            );
            link.local(
                Instant::ZERO,
                message("site/sensors/b", b"0", QoS::AtMostOnce),
            );
            link.local(Instant::ZERO, message("elsewhere", b"x", QoS::AtMostOnce));
            assert_eq!(link.queued(), 2);
            assert_eq!(stats.queued.load(Ordering::Relaxed), 2);

            link.open(Instant::ZERO).unwrap();
            assert_eq!(sent(&mut link, V5), ["Connect"]);
            feed(&mut link, V5, connack(false));
            // QoS 2 capped at the topic's 1; QoS 0 kept.
            assert_eq!(
                sent(&mut link, V5),
                [
                    "PUBLISH plant/sensors/a q1 dup0 r0 2",
                    "PUBLISH plant/sensors/b q0 dup0 r0 0"
                ]
            );
            assert_eq!(link.queued(), 0);
            assert_eq!(stats.inflight.load(Ordering::Relaxed), 1);
            feed(&mut link, V5, Packet::PubAck(PubResponse::new(id(1))));
            assert_eq!(stats.sent.load(Ordering::Relaxed), 2);
            assert!(stats.connected.load(Ordering::Relaxed));
            let state = link.poll_local().unwrap();
            assert_eq!(&*state.topic, "$SYS/broker/connection/t/state");
            assert_eq!(&state.payload[..], b"1");
        });
    }

    #[test]
    fn a_full_queue_drops_qos0_first() {
        on_a_big_stack(|| {
            let config = config("3.1.1", "{ filter = \"#\", qos = 2 }", "max_queued = 2");
            let stats = stats();
            let mut link = Link::new(&config, stats.clone(), 1 << 20);
            link.local(Instant::ZERO, message("a", b"0", QoS::AtMostOnce));
            link.local(Instant::ZERO, message("b", b"1", QoS::AtLeastOnce));
            // Full: a QoS 1 message takes the QoS 0 one's place...
            link.local(Instant::ZERO, message("c", b"1", QoS::AtLeastOnce));
            // ...and past that, new messages are dropped.
            link.local(Instant::ZERO, message("d", b"0", QoS::AtMostOnce));
            link.local(Instant::ZERO, message("e", b"2", QoS::ExactlyOnce));
            assert_eq!(link.queued(), 2);
            assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
            link.open(Instant::ZERO).unwrap();
            feed(&mut link, V311, connack(false));
            let lines = sent(&mut link, V311);
            assert_eq!(
                lines[1..],
                ["PUBLISH b q1 dup0 r0 1", "PUBLISH c q1 dup0 r0 1"]
            );
        });
    }

    #[test]
    fn a_message_matching_several_filters_goes_once() {
        on_a_big_stack(|| {
            let config = config(
                "3.1.1",
                "{ filter = \"a/#\", qos = 1 }, { filter = \"a/b\", qos = 0 }",
                "",
            );
            let mut link = Link::new(&config, stats(), 1 << 20);
            let m = message("a/b", b"x", QoS::AtLeastOnce);
            // The broker hands the same message to each matching tap.
            link.local(Instant::ZERO, m.clone());
            link.local(Instant::ZERO, m);
            assert_eq!(link.queued(), 1);
        });
    }

    #[test]
    fn remote_messages_come_in_and_do_not_go_back_out() {
        on_a_big_stack(|| {
            let config = config(
                "5.0",
                "{ filter = \"x/#\", direction = \"both\", qos = 1, local_prefix = \"l/\", \
                 remote_prefix = \"r/\" }",
                "",
            );
            let stats = stats();
            let mut link = Link::new(&config, stats.clone(), 1 << 20);
            link.open(Instant::ZERO).unwrap();
            sent(&mut link, V5);
            feed(&mut link, V5, connack(false));
            assert_eq!(sent(&mut link, V5), ["SUBSCRIBE r/x/#:q1:nl1"]);
            feed(
                &mut link,
                V5,
                Packet::SubAck(SubAck {
                    packet_id: id(1),
                    properties: Properties::default(),
                    reason_codes: List::new(&[petrel_codec::ReasonCode::GrantedQoS1]),
                }),
            );
            link.poll_local(); // the connection state
            feed(&mut link, V5, publish("r/x/1", b"hi", QoS::AtLeastOnce, 9));
            assert_eq!(sent(&mut link, V5), ["PubAck"]);
            let local = link.poll_local().unwrap();
            assert_eq!((&*local.topic, &local.payload[..]), ("l/x/1", &b"hi"[..]));
            assert_eq!(local.qos, QoS::AtLeastOnce);
            assert_eq!(stats.received.load(Ordering::Relaxed), 1);
            // The broker routes it and hands it to the bridge's tap: it stays here.
            link.local(Instant::ZERO, Arc::new(local.clone()));
            assert!(sent(&mut link, V5).is_empty());
            // The same topic published by a local client goes out.
            link.local(Instant::ZERO, message("l/x/1", b"hi", QoS::AtMostOnce));
            assert_eq!(sent(&mut link, V5), ["PUBLISH r/x/1 q0 dup0 r0 hi"]);
        });
    }

    #[test]
    fn over_3_1_1_the_remote_echo_is_dropped() {
        on_a_big_stack(|| {
            let config = config("3.1.1", "{ filter = \"x/#\", direction = \"both\" }", "");
            let mut link = Link::new(&config, stats(), 1 << 20);
            link.open(Instant::ZERO).unwrap();
            sent(&mut link, V311);
            feed(&mut link, V311, connack(false));
            assert_eq!(sent(&mut link, V311), ["SUBSCRIBE x/#:q0:nl0"]);
            link.poll_local();
            link.local(Instant::ZERO, message("x/1", b"p", QoS::AtMostOnce));
            assert_eq!(sent(&mut link, V311), ["PUBLISH x/1 q0 dup0 r0 p"]);
            // The remote broker sends our message back once: dropped; a second copy is
            // someone else's.
            feed(&mut link, V311, publish("x/1", b"p", QoS::AtMostOnce, 0));
            assert!(link.poll_local().is_none());
            feed(&mut link, V311, publish("x/1", b"p", QoS::AtMostOnce, 0));
            assert_eq!(&*link.poll_local().unwrap().topic, "x/1");
        });
    }

    #[test]
    fn in_flight_messages_survive_reconnects() {
        on_a_big_stack(|| {
            let config = config("3.1.1", "{ filter = \"#\", qos = 1 }", "");
            let mut link = Link::new(&config, stats(), 1 << 20);
            link.open(Instant::ZERO).unwrap();
            feed(&mut link, V311, connack(false));
            link.local(Instant::ZERO, message("a", b"1", QoS::AtLeastOnce));
            link.local(Instant::ZERO, message("b", b"2", QoS::AtLeastOnce));
            assert_eq!(sent(&mut link, V311).len(), 3);
            // The remote broker kept the session: the client retransmits with DUP.
            link.lost(Instant::ZERO);
            link.open(Instant::ZERO).unwrap();
            feed(&mut link, V311, connack(true));
            assert_eq!(
                sent(&mut link, V311)[1..],
                ["PUBLISH a q1 dup1 r0 1", "PUBLISH b q1 dup1 r0 2"]
            );
            // It lost the session (restarted without persistence): the bridge sends them
            // again as new messages, in order.
            link.lost(Instant::ZERO);
            link.open(Instant::ZERO).unwrap();
            feed(&mut link, V311, connack(false));
            assert_eq!(
                sent(&mut link, V311)[1..],
                ["PUBLISH a q1 dup0 r0 1", "PUBLISH b q1 dup0 r0 2"]
            );
        });
    }

    #[test]
    fn reconnect_delay_doubles_to_the_maximum_and_resets() {
        on_a_big_stack(|| {
            let config = config(
                "3.1.1",
                "{ filter = \"#\" }",
                "reconnect_min_ms = 100\nreconnect_max_ms = 350",
            );
            let mut link = Link::new(&config, stats(), 1 << 20);
            let delays: Vec<u64> = (0..4)
                .map(|_| link.next_delay().as_millis() as u64)
                .collect();
            assert_eq!(delays, [100, 200, 350, 350]);
            link.open(Instant::ZERO).unwrap();
            feed(&mut link, V311, connack(false));
            assert_eq!(link.next_delay().as_millis(), 100);
        });
    }
}
