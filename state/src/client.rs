//! The MQTT client session: 3.1.1 or 5.0, without I/O, clock, heap or `unsafe`.
//!
//! A [`Client`] holds everything a client must remember about its session and its current
//! connection, in fixed-capacity storage sized by two const generics:
//!
//! - `INFLIGHT`: packet identifiers in use at once, outbound (QoS 1/2 publishes awaiting
//!   their acknowledgement, subscribes and unsubscribes awaiting theirs) and, separately,
//!   inbound QoS 2 messages awaiting PUBREL. The client never has more than
//!   `min(INFLIGHT, server's Receive Maximum)` QoS 1/2 publishes outstanding
//!   [MQTT-3.3.4-7], and it advertises a Receive Maximum of at most `INFLIGHT`.
//! - `BUF`: bytes of the one packet buffer. It holds the QoS 1/2 PUBLISH packets kept for
//!   retransmission until acknowledged ([MQTT-4.4.0-1]) and, in the room they leave, the
//!   other packets waiting for [`Client::poll_transmit`]. A QoS 1/2 PUBLISH is encoded
//!   once, into the store, and sent from there, so it takes its room once, not twice. The
//!   store always leaves room for the next CONNECT (and so for any acknowledgement). Every
//!   command encodes its packet at once; no room is [`ClientError::BufferFull`] (for
//!   packets waiting to be sent) or [`ClientError::StoreFull`] (for stored publishes).
//!
//! The caller owns the transport and the clock:
//!
//! 1. open a transport, call [`Client::connect`], and write out [`Client::poll_transmit`];
//! 2. feed received bytes to [`Client::handle_bytes`], which takes at most one packet per
//!    call and reports how many bytes it consumed and the [`ClientEvent`] the packet caused;
//!    after each call, drain [`Client::poll_transmit`] and [`Client::poll_event`];
//! 3. call [`Client::handle_timeout`] when [`Client::poll_timeout`] says so (keep-alive
//!    pings, CONNACK / PINGRESP timeouts);
//! 4. when the transport fails or any fatal error ([`ClientError::is_fatal`]) comes back,
//!    send what [`Client::poll_transmit`] still holds if you can, close the transport, call
//!    [`Client::connection_lost`], and later [`Client::connect`] again: with
//!    `clean_start == false` the session resumes and unacknowledged messages are
//!    retransmitted.
//!
//! # Example
//!
//! A client against hand-encoded server packets:
//!
//! ```
//! use petrel_codec::{ConnAck, Decoded, Decoder, Packet, ProtocolVersion, PubResponse, QoS};
//! use petrel_state::client::{Client, ClientEvent, ClientOptions, ConnectionState};
//! use petrel_state::Instant;
//!
//! let v5 = ProtocolVersion::V5;
//! let mut client: Client<'_, 8, 3072> = Client::new(ClientOptions::new(v5, "sensor-1"));
//! let now = Instant::ZERO;
//! let mut out = [0u8; 256];
//! let mut wire = [0u8; 64];
//!
//! // CONNECT goes out...
//! client.connect(now)?;
//! let n = client.poll_transmit(now, &mut out);
//! let Decoded::Packet { packet: Packet::Connect(connect), .. } = Decoder::new(v5).decode(&out[..n])?
//! else { unreachable!() };
//! assert_eq!(connect.client_id, "sensor-1");
//!
//! // ...and the server accepts.
//! let len = Packet::ConnAck(ConnAck::default()).encode(v5, &mut wire)?;
//! let received = client.handle_bytes(now, &wire[..len])?;
//! assert_eq!(received.consumed, len);
//! assert!(matches!(received.event, Some(ClientEvent::Connected { session_present: false })));
//! assert_eq!(client.state(), ConnectionState::Connected);
//!
//! // A QoS 1 publish stays in flight until its PUBACK.
//! let id = client.publish(now, "sensors/1/temp", b"21.5", QoS::AtLeastOnce, false)?.unwrap();
//! let n = client.poll_transmit(now, &mut out);
//! let Decoded::Packet { packet: Packet::Publish(publish), .. } = Decoder::new(v5).decode(&out[..n])?
//! else { unreachable!() };
//! assert_eq!((publish.topic, publish.payload), ("sensors/1/temp", &b"21.5"[..]));
//! assert_eq!(client.inflight(), 1);
//!
//! let len = Packet::PubAck(PubResponse::new(id)).encode(v5, &mut wire)?;
//! let received = client.handle_bytes(now, &wire[..len])?;
//! assert!(matches!(received.event, Some(ClientEvent::Published { packet_id }) if packet_id == id));
//! assert_eq!(client.inflight(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;

use petrel_codec::topic::{validate_topic_filter, validate_topic_name, SharedFilter};
#[cfg(feature = "v5")]
use petrel_codec::PropertyId;
use petrel_codec::{
    Connect, DecodeError, Decoded, Decoder, EncodeError, Packet, PacketType, PubResponse, Publish,
    Subscribe, Unsubscribe, MAX_PACKET_SIZE,
};

pub use petrel_codec::{
    List, PacketId, Properties, ProtocolVersion, QoS, ReasonCode, SubscribeFilter,
    SubscriptionOptions,
};

use crate::time::{Duration, Instant};

/// The will message sent in CONNECT: published by the server if the connection ends without
/// a normal DISCONNECT. Its `properties` (will delay, expiry, …) are only sent over 5.0.
pub type LastWill<'a> = petrel_codec::Will<'a>;

/// The longest server-assigned client identifier the client keeps for later reconnects.
/// A longer one is not kept: a later reconnect then sends an empty identifier again and gets
/// a new session.
pub const MAX_ASSIGNED_CLIENT_ID: usize = 64;

/// The first byte of a DISCONNECT.
const DISCONNECT: u8 = (PacketType::Disconnect as u8) << 4;

/// A whole PINGREQ.
const PINGREQ: [u8; 2] = [(PacketType::PingReq as u8) << 4, 0];

/// The DUP bit of a PUBLISH fixed header [MQTT-3.3.1-1].
const DUP_FLAG: u8 = 0b1000;

// ---------------------------------------------------------------------------------------------
// Options

/// What the client asks for when it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions<'a> {
    /// The protocol the client speaks.
    pub version: ProtocolVersion,
    /// The client identifier. Empty asks the server to assign one (5.0: the assigned one is
    /// kept and used on later reconnects, see [`Client::assigned_client_id`]).
    pub client_id: &'a str,
    /// Keep-alive in seconds; 0 disables it. Over 5.0 the server may impose another value.
    pub keep_alive: u16,
    /// Clean start (5.0) / clean session (3.1.1): discard any session, on both sides, at
    /// every [`Client::connect`] [MQTT-3.1.2-4]. Set it to `false` to resume a session
    /// (see [`Client::set_clean_start`]).
    pub clean_start: bool,
    /// 5.0: seconds the server keeps the session after the connection ends (0: none).
    pub session_expiry_interval: u32,
    /// 5.0: how many inbound QoS 1/2 publishes the server may have unacknowledged. The
    /// value advertised is clamped to `1..=INFLIGHT`.
    pub receive_maximum: u16,
    /// The largest packet the client accepts (advertised over 5.0, enforced in both
    /// versions: a larger packet closes the connection with reason 0x95).
    pub max_packet_size: u32,
    /// The user name.
    pub username: Option<&'a str>,
    /// The password; 3.1.1 requires a user name with it [MQTT-3.1.2-22].
    pub password: Option<&'a [u8]>,
    /// The will message.
    pub will: Option<LastWill<'a>>,
    /// How long to wait for CONNACK after [`Client::connect`], and for PINGRESP after a
    /// PINGREQ, before [`Client::handle_timeout`] reports [`ClientError::Timeout`].
    pub response_timeout: Duration,
}

impl<'a> ClientOptions<'a> {
    /// Options with sensible defaults: keep-alive 60 s, clean start, no session expiry, the
    /// largest receive maximum the client can track, no packet size limit, no credentials,
    /// no will, and a 10 s response timeout.
    pub const fn new(version: ProtocolVersion, client_id: &'a str) -> Self {
        ClientOptions {
            version,
            client_id,
            keep_alive: 60,
            clean_start: true,
            session_expiry_interval: 0,
            receive_maximum: u16::MAX,
            max_packet_size: MAX_PACKET_SIZE,
            username: None,
            password: None,
            will: None,
            response_timeout: Duration::from_secs(10),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public state, events and errors

/// Where the client's current connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConnectionState {
    /// No transport: before the first [`Client::connect`] or after
    /// [`Client::connection_lost`].
    Disconnected,
    /// CONNECT queued, CONNACK not yet received.
    Connecting,
    /// CONNACK accepted the connection.
    Connected,
    /// The connection is over (DISCONNECT sent or received, connection refused, error or
    /// timeout): send what [`Client::poll_transmit`] still holds, close the transport and call
    /// [`Client::connection_lost`]. Input is ignored in this state.
    Closing,
}

/// Where an outbound QoS 1/2 publish stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InflightState {
    /// QoS 1, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2, waiting for PUBREC.
    AwaitPubRec,
    /// QoS 2, PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

/// What the server told the client about itself in its CONNACK (5.0; the defaults stand
/// for 3.1.1 and for properties the server left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerLimits {
    /// How many QoS 1/2 publishes the server accepts unacknowledged (default 65,535).
    pub receive_maximum: u16,
    /// The largest packet the server accepts (default: no limit).
    pub maximum_packet_size: u32,
    /// The highest QoS the server supports (default 2).
    pub maximum_qos: QoS,
    /// Whether the server supports retained messages (default `true`).
    pub retain_available: bool,
    /// The highest topic alias the server accepts (default 0; this client sends none).
    pub topic_alias_maximum: u16,
    /// Whether wildcard subscriptions are supported (default `true`).
    pub wildcard_subscription_available: bool,
    /// Whether subscription identifiers are supported (default `true`).
    pub subscription_identifier_available: bool,
    /// Whether shared subscriptions are supported (default `true`).
    pub shared_subscription_available: bool,
    /// The keep-alive the server imposed with Server Keep Alive, if it did.
    pub server_keep_alive: Option<u16>,
}

impl ServerLimits {
    /// The limits that hold until a CONNACK says otherwise.
    pub const DEFAULT: ServerLimits = ServerLimits {
        receive_maximum: u16::MAX,
        maximum_packet_size: MAX_PACKET_SIZE,
        maximum_qos: QoS::ExactlyOnce,
        retain_available: true,
        topic_alias_maximum: 0,
        wildcard_subscription_available: true,
        subscription_identifier_available: true,
        shared_subscription_available: true,
        server_keep_alive: None,
    };
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits::DEFAULT
    }
}

/// Something the application should know about, caused by a received packet (from
/// [`Client::handle_bytes`], borrowing its input) or by a session change (from
/// [`Client::poll_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ClientEvent<'b> {
    /// CONNACK accepted the connection. Without `session_present`, the session state the
    /// client had is gone: [`ClientEvent::SessionLost`] events follow from
    /// [`Client::poll_event`].
    Connected {
        /// Whether the server resumed an existing session.
        session_present: bool,
    },
    /// CONNACK refused the connection with this reason (3.1.1 return codes are mapped to
    /// their 5.0 equivalents). The state is now [`ConnectionState::Closing`].
    Refused(ReasonCode),
    /// An application message from the server, borrowing the input buffer. Its
    /// acknowledgement (QoS 1 PUBACK, QoS 2 PUBREC) is already queued.
    Message(Publish<'b>),
    /// A QoS 1 publish got its PUBACK, or a QoS 2 publish its PUBCOMP.
    Published {
        /// The publish's packet identifier.
        packet_id: PacketId,
    },
    /// 5.0: the server refused a publish with a PUBACK or PUBREC reason code of 0x80 or
    /// above; the flow is over.
    PublishFailed {
        /// The publish's packet identifier.
        packet_id: PacketId,
        /// The server's reason.
        reason: ReasonCode,
    },
    /// SUBACK: one reason code per filter, in order (the granted QoS, or a failure).
    Subscribed {
        /// The SUBSCRIBE's packet identifier.
        packet_id: PacketId,
        /// The codes, borrowing the input buffer.
        reason_codes: List<'b, ReasonCode>,
    },
    /// UNSUBACK.
    Unsubscribed {
        /// The UNSUBSCRIBE's packet identifier.
        packet_id: PacketId,
        /// 5.0: one code per filter; empty over 3.1.1.
        reason_codes: List<'b, ReasonCode>,
    },
    /// 5.0: the server sent DISCONNECT. The state is now [`ConnectionState::Closing`].
    Disconnected {
        /// The server's reason.
        reason: ReasonCode,
        /// Its properties (reason string, server reference, …).
        properties: Properties<'b>,
    },
    /// A request that will never complete: a QoS 1/2 publish discarded with the session
    /// (the server had none, or the client connected with clean start), or a subscribe or
    /// unsubscribe whose connection ended before its acknowledgement (those are not
    /// retransmitted). Its packet identifier is free again.
    SessionLost {
        /// The request's packet identifier.
        packet_id: PacketId,
    },
    /// PINGRESP.
    Pong,
}

/// The result of [`Client::handle_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Received<'b> {
    /// How many bytes of the input were used: drop them before the next call. Zero (with no
    /// event) means the input holds no complete packet yet: read more and call again.
    pub consumed: usize,
    /// What the packet meant to the application, if anything.
    pub event: Option<ClientEvent<'b>>,
}

impl Received<'_> {
    /// Whether the input held no complete packet.
    pub fn needs_more(&self) -> bool {
        self.consumed == 0 && self.event.is_none()
    }
}

/// Why a command or an input failed.
///
/// Commands (`connect`, `publish`, `subscribe`, …) change nothing when they fail. Inputs
/// fail for good when [`ClientError::is_fatal`] says so: the connection is then
/// [`ConnectionState::Closing`] (with a 5.0 DISCONNECT queued where the specification gives
/// a reason code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ClientError {
    /// The command needs a connection in the [`ConnectionState::Connected`] state (or, for
    /// `disconnect`, at least [`ConnectionState::Connecting`]); for `handle_bytes`, there is
    /// no transport.
    NotConnected,
    /// No packet identifier slot is free, or the QoS 1/2 publishes in flight have reached
    /// `min(INFLIGHT, server's Receive Maximum)` [MQTT-3.3.4-7]. Wait for acknowledgements.
    InflightFull,
    /// The buffer has no room for the packet beside the packets waiting to be sent: drain
    /// [`Client::poll_transmit`] and try again. From `handle_bytes`, nothing was consumed.
    BufferFull,
    /// The store has no room for the QoS 1/2 publish (it leaves room for a CONNECT): wait
    /// for acknowledgements.
    StoreFull,
    /// The packet exceeds the server's Maximum Packet Size [MQTT-3.2.2-15], or can never fit
    /// the client's buffer (for a QoS 1/2 publish, beside the room kept for a CONNECT; for
    /// CONNECT, beside the stored publishes).
    PacketTooLarge,
    /// The QoS exceeds the server's Maximum QoS [MQTT-3.2.2-11] (a client may not
    /// downgrade its own publish).
    QoSNotSupported,
    /// The server does not support retained messages [MQTT-3.2.2-14].
    RetainNotSupported,
    /// A topic name or filter is not valid: empty, a wildcard in a topic name
    /// [MQTT-3.3.2-2], a misplaced wildcard in a filter [MQTT-4.7.1-1], U+0000, or No Local
    /// on a shared subscription [MQTT-3.8.3-4].
    InvalidTopic,
    /// A subscribe or unsubscribe without any filter [MQTT-3.8.3-3], [MQTT-3.10.3-2].
    NoFilters,
    /// The [`ClientOptions`] cannot be sent: a zero maximum packet size, a 3.1.1 password
    /// without user name [MQTT-3.1.2-22], U+0000 in the client identifier, or an invalid will
    /// topic.
    InvalidOptions,
    /// The packet cannot be encoded (a field too long, a property not allowed, …).
    Encode(EncodeError),
    /// Fatal: the server sent bytes that are not a well-formed packet.
    Decode(DecodeError),
    /// Fatal: the server broke the protocol; the reason code says how.
    Protocol(ReasonCode),
    /// Fatal: CONNACK or PINGRESP did not arrive within the response timeout.
    Timeout,
}

impl ClientError {
    /// Whether the connection is over: close the transport, call
    /// [`Client::connection_lost`], and reconnect later.
    pub const fn is_fatal(&self) -> bool {
        matches!(
            self,
            ClientError::Decode(_) | ClientError::Protocol(_) | ClientError::Timeout
        )
    }

    /// For a fatal protocol error, the reason code the client reports in its 5.0 DISCONNECT.
    pub const fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            ClientError::Decode(e) => Some(disconnect_reason(e.reason_code())),
            ClientError::Protocol(r) => Some(disconnect_reason(*r)),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotConnected => f.write_str("not connected"),
            ClientError::InflightFull => f.write_str("too many requests in flight"),
            ClientError::BufferFull => f.write_str("transmit queue full"),
            ClientError::StoreFull => f.write_str("retransmission store full"),
            ClientError::PacketTooLarge => f.write_str("packet too large"),
            ClientError::QoSNotSupported => f.write_str("QoS above the server's maximum"),
            ClientError::RetainNotSupported => f.write_str("server does not support retain"),
            ClientError::InvalidTopic => f.write_str("invalid topic name or filter"),
            ClientError::NoFilters => f.write_str("no topic filter given"),
            ClientError::InvalidOptions => f.write_str("invalid client options"),
            ClientError::Encode(e) => write!(f, "cannot encode packet: {e}"),
            ClientError::Decode(e) => write!(f, "malformed packet from server: {e}"),
            ClientError::Protocol(r) => write!(f, "protocol error by server: {r:?}"),
            ClientError::Timeout => f.write_str("server did not respond in time"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Encode(e) => Some(e),
            ClientError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

/// Whether a packet type (the high nibble of its first byte) is one only clients send: from
/// a server it is a protocol error.
fn sent_only_by_clients(nibble: u8) -> bool {
    matches!(
        PacketType::from_nibble(nibble),
        Some(
            PacketType::Connect
                | PacketType::Subscribe
                | PacketType::Unsubscribe
                | PacketType::PingReq
        )
    )
}

/// A client sends neither topic aliases nor subscription identifiers in a PUBLISH
/// [MQTT-3.3.4-6].
#[cfg(feature = "v5")]
fn refuse_alias_and_subscription_ids(properties: &Properties<'_>) -> Result<(), ClientError> {
    let not_allowed = |property| {
        Err(ClientError::Encode(EncodeError::PropertyNotAllowed {
            property,
            packet_type: PacketType::Publish,
        }))
    };
    if properties.topic_alias.is_some() {
        return not_allowed(PropertyId::TopicAlias);
    }
    if !properties.subscription_identifiers.is_empty() {
        return not_allowed(PropertyId::SubscriptionIdentifier);
    }
    Ok(())
}

/// The reason code for a client's DISCONNECT: codes that DISCONNECT cannot carry (a CONNECT
/// from the server fails as "unsupported protocol version") become "protocol error".
const fn disconnect_reason(code: ReasonCode) -> ReasonCode {
    match code {
        ReasonCode::MalformedPacket
        | ReasonCode::ProtocolError
        | ReasonCode::ImplementationSpecificError
        | ReasonCode::TopicFilterInvalid
        | ReasonCode::TopicNameInvalid
        | ReasonCode::ReceiveMaximumExceeded
        | ReasonCode::TopicAliasInvalid
        | ReasonCode::PacketTooLarge => code,
        _ => ReasonCode::ProtocolError,
    }
}

// ---------------------------------------------------------------------------------------------
// Internal storage

/// The client's one buffer of `N` bytes: the retransmission store at the front and, in the
/// room after it, the queue of bytes waiting for `poll_transmit`. Either side moves the
/// queue out of its way when it needs the room; the queue is short (acknowledgements and
/// the packets not yet sent), so the moves are too.
#[derive(Debug)]
struct Buffer<const N: usize> {
    /// Zero-filled up to the highest offset used so far and never shrunk: a `Vec` rather
    /// than an array so that a large client is not zero-filled when it is created.
    bytes: heapless::Vec<u8, N>,
    /// `bytes[..store]`: the stored PUBLISH packets, in slot order.
    store: usize,
    /// `bytes[head..end]`: the queue, with `store <= head <= end <= N`.
    head: usize,
    end: usize,
}

impl<const N: usize> Buffer<N> {
    const fn new() -> Self {
        Buffer {
            bytes: heapless::Vec::new(),
            store: 0,
            head: 0,
            end: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        self.bytes.get(self.head..self.end).unwrap_or(&[])
    }

    fn tx_len(&self) -> usize {
        self.end - self.head
    }

    fn free(&self) -> usize {
        N - self.store - self.tx_len()
    }

    fn clear_tx(&mut self) {
        self.head = self.store;
        self.end = self.store;
    }

    fn consume(&mut self, n: usize) {
        self.head = self.head.saturating_add(n).min(self.end);
        if self.head == self.end {
            self.clear_tx();
        }
    }

    fn grow_to(&mut self, end: usize) -> Result<(), ClientError> {
        if self.bytes.len() < end {
            self.bytes
                .resize_default(end)
                .map_err(|_| ClientError::BufferFull)?;
        }
        Ok(())
    }

    /// Moves the queue to start at `to`.
    fn move_tx(&mut self, to: usize) -> Result<(), ClientError> {
        let len = self.tx_len();
        self.grow_to(to + len)?;
        copy_bytes(&mut self.bytes, self.head..self.end, to);
        self.head = to;
        self.end = to + len;
        Ok(())
    }

    /// Encodes `packet` (`len` bytes) at `start`.
    fn write(
        &mut self,
        start: usize,
        len: usize,
        version: ProtocolVersion,
        packet: &Packet<'_>,
    ) -> Result<(), ClientError> {
        match self.bytes.get_mut(start..start + len) {
            Some(dst) => packet
                .encode(version, dst)
                .map(|_| ())
                .map_err(ClientError::Encode),
            None => Err(ClientError::BufferFull),
        }
    }

    /// Makes room for `len` bytes at the end of the queue; returns where they start.
    fn reserve(&mut self, len: usize) -> Result<usize, ClientError> {
        if self.free() < len {
            return Err(ClientError::BufferFull);
        }
        if N - self.end < len {
            self.move_tx(self.store)?;
        }
        let start = self.end;
        self.grow_to(start + len)?;
        Ok(start)
    }

    /// Appends an encoded packet to the queue.
    fn push_packet(
        &mut self,
        version: ProtocolVersion,
        packet: &Packet<'_>,
    ) -> Result<(), ClientError> {
        let len = packet.encoded_len(version).map_err(ClientError::Encode)?;
        let start = self.reserve(len)?;
        self.write(start, len, version, packet)?;
        self.end = start + len;
        Ok(())
    }

    /// Appends a packet made here rather than by the codec: an acknowledgement, PINGREQ or a
    /// DISCONNECT without properties. Not through a `Packet`: a 5.0 `Packet` takes hundreds
    /// of bytes of stack, which on a microcontroller is a lot for two to five bytes of output.
    fn push_raw(&mut self, packet: &[u8]) -> Result<(), ClientError> {
        let len = packet.len();
        let start = self.reserve(len)?;
        if let Some(dst) = self.bytes.get_mut(start..start + len) {
            dst.copy_from_slice(packet);
        }
        self.end = start + len;
        Ok(())
    }

    /// Appends a PUBACK, PUBREC, PUBREL or PUBCOMP without properties, as the codec would
    /// encode it: the fixed header, the identifier and, over 5.0, a reason code other than
    /// success.
    fn push_ack(
        &mut self,
        version: ProtocolVersion,
        kind: PacketType,
        id: PacketId,
        reason: ReasonCode,
    ) -> Result<(), ClientError> {
        let with_reason = version.is_v5() && reason != ReasonCode::Success;
        let len = if with_reason { 5 } else { 4 };
        let flags = if kind == PacketType::PubRel {
            0b0010
        } else {
            0
        };
        let [high, low] = id.get().to_be_bytes();
        let bytes = [
            (kind as u8) << 4 | flags,
            len as u8 - 2,
            high,
            low,
            reason as u8,
        ];
        self.push_raw(bytes.get(..len).unwrap_or(&bytes))
    }

    /// Appends an encoded packet of `len` bytes to the store, moving the queue up to the
    /// end of the buffer if it is in the way.
    fn push_stored(
        &mut self,
        version: ProtocolVersion,
        packet: &Packet<'_>,
        len: usize,
    ) -> Result<(), ClientError> {
        if self.free() < len {
            return Err(ClientError::BufferFull);
        }
        let start = self.store;
        if self.head < start + len {
            self.move_tx(N - self.tx_len())?;
        }
        self.grow_to(start + len)?;
        self.write(start, len, version, packet)?;
        self.store = start + len;
        Ok(())
    }

    /// Drops `len` stored bytes at `offset`, moving the ones after them down.
    fn release(&mut self, offset: usize, len: usize) {
        let end = offset + len;
        if len == 0 || end > self.store {
            return;
        }
        copy_bytes(&mut self.bytes, end..self.store, offset);
        self.store -= len;
    }
}

/// Whether `s` holds U+0000, which no MQTT string may [MQTT-1.5.4-2]. A byte loop rather than
/// `str::contains`, whose `memchr` costs 0.2 KB of a firmware image for strings this short.
fn has_null(s: &str) -> bool {
    s.bytes().any(|b| b == 0)
}

/// Copies `buf[from]` to start at `to`, a byte at a time, in the direction that survives the
/// overlap. Not `copy_within`: that links `memmove`, which takes 1.5 KB of a Cortex-M4
/// image, for moves of at most a buffer that happen once per acknowledged packet.
fn copy_bytes(buf: &mut [u8], from: core::ops::Range<usize>, to: usize) {
    let mut copy = |src: usize| {
        if let Some(&byte) = buf.get(src) {
            if let Some(dst) = buf.get_mut(src - from.start + to) {
                *dst = byte;
            }
        }
    };
    if to <= from.start {
        from.clone().for_each(&mut copy);
    } else {
        from.clone().rev().for_each(&mut copy);
    }
}

/// What a packet identifier in use is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    PubAck,
    PubRec,
    PubComp,
    /// The number of filters, to check the SUBACK against.
    SubAck(usize),
    /// The number of filters, to check a 5.0 UNSUBACK against.
    UnsubAck(usize),
    /// Discarded; reported by `poll_event` as `SessionLost`, then freed.
    Lost,
}

impl SlotKind {
    const fn is_publish(self) -> bool {
        matches!(
            self,
            SlotKind::PubAck | SlotKind::PubRec | SlotKind::PubComp
        )
    }
}

/// One packet identifier in use. Slots are kept in the order their packets were first sent;
/// the retransmission store holds, in the same order, `len` bytes for each slot (the PUBLISH
/// of a slot awaiting PUBACK or PUBREC; nothing for the others).
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: PacketId,
    kind: SlotKind,
    len: usize,
    /// Not yet (fully) sent on the current connection: a stored PUBLISH is sent from the
    /// store by `poll_transmit`, a PUBREL queued by `flush_resends`.
    resend: bool,
    /// Bytes of the queue to send before this slot's PUBLISH, so that packets go out in the
    /// order they were queued.
    ahead: usize,
}

// ---------------------------------------------------------------------------------------------
// The client

/// An MQTT client session (see the [module documentation](self)).
///
/// - `INFLIGHT`: packet identifiers in use at once (outbound publishes, subscribes and
///   unsubscribes), and inbound QoS 2 messages awaiting PUBREL;
/// - `BUF`: bytes of the buffer shared by the QoS 1/2 PUBLISH packets kept for
///   retransmission and the packets waiting for transmission.
#[derive(Debug)]
pub struct Client<'a, const INFLIGHT: usize, const BUF: usize> {
    options: ClientOptions<'a>,
    state: ConnectionState,
    buf: Buffer<BUF>,
    slots: heapless::Vec<Slot, INFLIGHT>,
    /// The stored PUBLISH being sent, and how many of its bytes are out: it is finished
    /// before anything else is sent.
    sending: Option<(PacketId, usize)>,
    /// DISCONNECT was queued by `disconnect`: the stored publishes queued before it still go
    /// out first.
    draining: bool,
    /// Bytes of the next CONNECT, which the store leaves room for.
    connect_len: usize,
    /// Inbound QoS 2 packet identifiers between PUBREC and PUBREL (method B).
    incoming_qos2: heapless::Vec<PacketId, INFLIGHT>,
    next_id: u16,
    server: ServerLimits,
    #[cfg(feature = "v5")]
    assigned_client_id: heapless::String<MAX_ASSIGNED_CLIENT_ID>,
    /// The clean start flag of the CONNECT on the current connection.
    sent_clean_start: bool,
    /// The keep-alive in force, in seconds.
    keep_alive: u16,
    /// When bytes were last handed to the transport.
    last_tx: Instant,
    connack_deadline: Option<Instant>,
    pingresp_deadline: Option<Instant>,
}

impl<'a, const INFLIGHT: usize, const BUF: usize> Client<'a, INFLIGHT, BUF> {
    /// A client without a connection and with an empty session.
    pub const fn new(options: ClientOptions<'a>) -> Self {
        Client {
            keep_alive: options.keep_alive,
            options,
            state: ConnectionState::Disconnected,
            buf: Buffer::new(),
            slots: heapless::Vec::new(),
            sending: None,
            draining: false,
            connect_len: 0,
            incoming_qos2: heapless::Vec::new(),
            next_id: 1,
            server: ServerLimits::DEFAULT,
            #[cfg(feature = "v5")]
            assigned_client_id: heapless::String::new(),
            sent_clean_start: true,
            last_tx: Instant::ZERO,
            connack_deadline: None,
            pingresp_deadline: None,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Getters

    /// The options the client connects with.
    pub fn options(&self) -> &ClientOptions<'a> {
        &self.options
    }

    /// Changes the clean start flag of the next [`Client::connect`]: typically `true` for the
    /// first connection and `false` for reconnections that resume the session.
    pub fn set_clean_start(&mut self, clean_start: bool) {
        self.options.clean_start = clean_start;
    }

    /// Where the connection stands.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// QoS 1/2 publishes not yet completed (awaiting PUBACK, PUBREC or PUBCOMP).
    pub fn inflight(&self) -> usize {
        self.slots.iter().filter(|s| s.kind.is_publish()).count()
    }

    /// The most QoS 1/2 publishes that may be in flight: `min(INFLIGHT, server's Receive
    /// Maximum)`.
    pub fn inflight_limit(&self) -> usize {
        INFLIGHT.min(usize::from(self.server.receive_maximum))
    }

    /// Where the outbound publish with this packet identifier stands, if it is in flight.
    pub fn inflight_state(&self, packet_id: PacketId) -> Option<InflightState> {
        let slot = self.slots.iter().find(|s| s.id == packet_id)?;
        match slot.kind {
            SlotKind::PubAck => Some(InflightState::AwaitPubAck),
            SlotKind::PubRec => Some(InflightState::AwaitPubRec),
            SlotKind::PubComp => Some(InflightState::AwaitPubComp),
            _ => None,
        }
    }

    /// Packet identifiers in use: publishes in flight, subscribes and unsubscribes awaiting
    /// their acknowledgement, and lost requests not yet reported by [`Client::poll_event`].
    pub fn packet_ids_in_use(&self) -> usize {
        self.slots.len()
    }

    /// Inbound QoS 2 messages received (and delivered) whose PUBREL has not arrived yet.
    pub fn incoming_qos2(&self) -> usize {
        self.incoming_qos2.len()
    }

    /// Bytes of the buffer holding QoS 1/2 PUBLISH packets for retransmission.
    pub fn stored_bytes(&self) -> usize {
        self.buf.store
    }

    /// Bytes [`Client::poll_transmit`] would return now: queued packets, the rest of a stored
    /// publish being sent, and the stored publishes not yet sent on this connection that the
    /// server's Receive Maximum lets go.
    pub fn pending_transmit(&self) -> usize {
        let active = self
            .slots
            .iter()
            .filter(|s| s.kind.is_publish() && !s.resend)
            .count();
        let mut room = self.inflight_limit().saturating_sub(active);
        let open = self.may_send_stored();
        let mut total = self.buf.tx_len();
        for slot in self.slots.iter().filter(|s| s.resend && s.len > 0) {
            if let Some((_, sent)) = self.sending.filter(|&(id, _)| id == slot.id) {
                total += slot.len.saturating_sub(sent);
                room = room.saturating_sub(1);
            } else if open && room > 0 {
                total += slot.len;
                room -= 1;
            }
        }
        total
    }

    /// What the server's last CONNACK said about its limits.
    pub fn server_limits(&self) -> &ServerLimits {
        &self.server
    }

    /// The keep-alive in force, in seconds: the client's, or the server's Server Keep Alive
    /// [MQTT-3.1.2-21] (5.0).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// The client identifier a 5.0 server assigned, kept for later reconnects when the
    /// options' identifier is empty [MQTT-3.2.2-16].
    pub fn assigned_client_id(&self) -> Option<&str> {
        #[cfg(feature = "v5")]
        if !self.assigned_client_id.is_empty() {
            return Some(self.assigned_client_id.as_str());
        }
        None
    }

    /// The Receive Maximum the client advertises: the options' value clamped to
    /// `1..=INFLIGHT`, since that many inbound QoS 2 identifiers is all it can track.
    pub fn receive_maximum(&self) -> u16 {
        let capacity = u16::try_from(INFLIGHT).unwrap_or(u16::MAX);
        self.options.receive_maximum.min(capacity).max(1)
    }

    // -----------------------------------------------------------------------------------------
    // Commands

    /// Starts a connection on a new transport: drops any bytes not yet transmitted, and
    /// queues CONNECT. With `clean_start`, the session state is discarded first
    /// [MQTT-3.1.2-4] (the lost publishes are reported by [`Client::poll_event`]).
    // Never inlined, like the other commands that build a `Packet` and `handle_bytes`, which
    // decodes one: a `Packet` is over 600 bytes, and inlined into one caller their frames add
    // up and their code is copied (3 KB of flash and 1 KB of stack frame on a Cortex-M4).
    #[inline(never)]
    pub fn connect(&mut self, now: Instant) -> Result<(), ClientError> {
        let o = self.options;
        let invalid_will = o
            .will
            .is_some_and(|w| validate_topic_name(w.topic).is_err() || has_null(w.topic));
        if o.max_packet_size == 0
            || has_null(o.client_id)
            || o.username.is_some_and(has_null)
            || (o.version == ProtocolVersion::V311 && o.password.is_some() && o.username.is_none())
            || invalid_will
        {
            return Err(ClientError::InvalidOptions);
        }
        #[cfg(feature = "v5")]
        let client_id = if o.client_id.is_empty() {
            self.assigned_client_id.as_str()
        } else {
            o.client_id
        };
        #[cfg(not(feature = "v5"))]
        let client_id = o.client_id;
        #[cfg(feature = "v5")]
        let receive_maximum = self.receive_maximum();
        #[cfg_attr(not(feature = "v5"), allow(unused_mut))]
        let mut connect = Packet::Connect(Connect {
            protocol_version: o.version,
            clean_start: o.clean_start,
            keep_alive: o.keep_alive,
            properties: Properties::default(),
            client_id,
            will: o.will,
            username: o.username,
            password: o.password,
        });
        // Set in place: `..Properties::default()` would build the set apart and copy it in.
        #[cfg(feature = "v5")]
        if let Packet::Connect(Connect { properties: p, .. }) = &mut connect {
            p.session_expiry_interval = Some(o.session_expiry_interval).filter(|&s| s != 0);
            p.receive_maximum = Some(receive_maximum).filter(|&r| r != u16::MAX);
            p.maximum_packet_size = Some(o.max_packet_size).filter(|&m| m < MAX_PACKET_SIZE);
        }
        let len = connect
            .encoded_len(o.version)
            .map_err(ClientError::Encode)?;
        let store = if o.clean_start { 0 } else { self.buf.store };
        if len > BUF - store {
            return Err(ClientError::PacketTooLarge);
        }
        // Nothing can fail from here on. The packet borrows the assigned identifier, so the
        // buffer is emptied field by field first and the rest of the state after.
        if o.clean_start {
            self.buf.store = 0;
        }
        self.buf.clear_tx();
        self.buf
            .push_packet(o.version, &connect)
            .map_err(|_| ClientError::PacketTooLarge)?;
        self.forget_queue();
        if o.clean_start {
            self.discard_session();
        }
        self.connect_len = len;
        self.reset_connection();
        self.sent_clean_start = o.clean_start;
        self.keep_alive = o.keep_alive;
        self.state = ConnectionState::Connecting;
        self.last_tx = now;
        self.connack_deadline = Some(now + o.response_timeout);
        Ok(())
    }

    /// The transport is gone. Unsent bytes are dropped; the session (publishes in flight,
    /// inbound QoS 2 state) is kept for a later [`Client::connect`]. Subscribes and
    /// unsubscribes awaiting acknowledgement are reported lost by [`Client::poll_event`].
    pub fn connection_lost(&mut self, now: Instant) {
        let _ = now;
        self.clear_tx();
        self.reset_connection();
        self.state = ConnectionState::Disconnected;
    }

    /// Publishes an application message without properties; see [`Client::publish_with`].
    pub fn publish(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<Option<PacketId>, ClientError> {
        self.publish_with(now, topic, payload, qos, retain, &Properties::default())
    }

    /// Publishes an application message with 5.0 properties (ignored over 3.1.1). Returns the
    /// packet identifier of a QoS 1/2 publish, which [`ClientEvent::Published`] (or
    /// `PublishFailed` / `SessionLost`) reports later.
    ///
    /// The PUBLISH is queued for transmission with DUP 0 [MQTT-4.3.2-2], [MQTT-4.3.3-2] and,
    /// at QoS 1/2, kept in the retransmission store until acknowledged. Topic aliases and
    /// subscription identifiers are refused: this client sends neither [MQTT-3.3.4-6].
    #[inline(never)]
    pub fn publish_with(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        properties: &Properties<'_>,
    ) -> Result<Option<PacketId>, ClientError> {
        let _ = now;
        if self.state != ConnectionState::Connected {
            return Err(ClientError::NotConnected);
        }
        if validate_topic_name(topic).is_err() || has_null(topic) {
            return Err(ClientError::InvalidTopic);
        }
        #[cfg(feature = "v5")]
        refuse_alias_and_subscription_ids(properties)?;
        if qos > self.server.maximum_qos {
            return Err(ClientError::QoSNotSupported);
        }
        if retain && !self.server.retain_available {
            return Err(ClientError::RetainNotSupported);
        }
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            // Its slot goes after those of any retransmissions, which `poll_transmit` sends
            // first: they keep their original order [MQTT-4.6.0-1].
            if self.slots.is_full() || self.inflight() >= self.inflight_limit() {
                return Err(ClientError::InflightFull);
            }
            Some(self.free_packet_id().ok_or(ClientError::InflightFull)?)
        };
        let packet = Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id,
            properties: *properties,
            payload,
        });
        let version = self.options.version;
        let len = packet.encoded_len(version).map_err(ClientError::Encode)?;
        self.check_size(len)?;
        let Some(id) = packet_id else {
            self.buf.push_packet(version, &packet)?;
            return Ok(None);
        };
        // The store leaves room for the next CONNECT, so that a session full of
        // unacknowledged publishes can still reconnect (and acknowledge what it receives).
        let limit = BUF.saturating_sub(self.connect_len);
        if len > limit {
            return Err(ClientError::PacketTooLarge);
        }
        if self.buf.store + len > limit {
            return Err(ClientError::StoreFull);
        }
        self.buf.push_stored(version, &packet, len)?;
        let kind = if qos == QoS::AtLeastOnce {
            SlotKind::PubAck
        } else {
            SlotKind::PubRec
        };
        let slot = Slot {
            id,
            kind,
            len,
            resend: true,
            ahead: self.buf.tx_len(),
        };
        if self.slots.push(slot).is_err() {
            // Checked above; undo rather than panic.
            self.buf.store -= len;
            return Err(ClientError::InflightFull);
        }
        Ok(packet_id)
    }

    /// Subscribes to topic filters; see [`Client::subscribe_with`].
    pub fn subscribe(
        &mut self,
        now: Instant,
        filters: &[SubscribeFilter<'_>],
    ) -> Result<PacketId, ClientError> {
        self.subscribe_with(now, filters, &Properties::default())
    }

    /// Subscribes to topic filters, with 5.0 properties (a subscription identifier, user
    /// properties). [`ClientEvent::Subscribed`] reports the SUBACK.
    #[inline(never)]
    pub fn subscribe_with(
        &mut self,
        now: Instant,
        filters: &[SubscribeFilter<'_>],
        properties: &Properties<'_>,
    ) -> Result<PacketId, ClientError> {
        let _ = now;
        self.check_request(filters.len())?;
        for f in filters {
            let shared = SharedFilter::parse(f.filter).map_err(|_| ClientError::InvalidTopic)?;
            if validate_topic_filter(f.filter).is_err()
                || has_null(f.filter)
                || (f.options.no_local && shared.is_some())
            {
                return Err(ClientError::InvalidTopic);
            }
        }
        let id = self.free_packet_id().ok_or(ClientError::InflightFull)?;
        let packet = Packet::Subscribe(Subscribe {
            packet_id: id,
            properties: *properties,
            filters: List::new(filters),
        });
        self.queue_request(&packet, id, SlotKind::SubAck(filters.len()))
    }

    /// Unsubscribes from topic filters; [`ClientEvent::Unsubscribed`] reports the UNSUBACK.
    #[inline(never)]
    pub fn unsubscribe(&mut self, now: Instant, filters: &[&str]) -> Result<PacketId, ClientError> {
        let _ = now;
        self.check_request(filters.len())?;
        if filters
            .iter()
            .any(|f| validate_topic_filter(f).is_err() || has_null(f))
        {
            return Err(ClientError::InvalidTopic);
        }
        let id = self.free_packet_id().ok_or(ClientError::InflightFull)?;
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            properties: Properties::default(),
            filters: List::new(filters),
        });
        self.queue_request(&packet, id, SlotKind::UnsubAck(filters.len()))
    }

    /// Queues DISCONNECT (normal disconnection: the server discards the will) and moves to
    /// [`ConnectionState::Closing`]: once [`Client::poll_transmit`] has returned it, close
    /// the transport [MQTT-3.14.4-1] and call [`Client::connection_lost`]. The session is
    /// kept.
    pub fn disconnect(&mut self, now: Instant) -> Result<(), ClientError> {
        let _ = now;
        if !matches!(
            self.state,
            ConnectionState::Connected | ConnectionState::Connecting
        ) {
            return Err(ClientError::NotConnected);
        }
        // Normal disconnection, no properties: the same two bytes in both versions.
        self.buf.push_raw(&[DISCONNECT, 0])?;
        // Before CONNACK nothing stored may go, so nothing waits for the DISCONNECT.
        self.draining = self.state == ConnectionState::Connected;
        self.state = ConnectionState::Closing;
        self.connack_deadline = None;
        self.pingresp_deadline = None;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Inputs

    /// Takes at most one packet from the start of `input`.
    ///
    /// Returns how many bytes it consumed and the event the packet caused; `consumed == 0`
    /// without an event means `input` holds no complete packet yet. Acknowledgements the
    /// packet calls for are queued for [`Client::poll_transmit`].
    ///
    /// A malformed packet ([`ClientError::Decode`]) or a protocol violation
    /// ([`ClientError::Protocol`]) is fatal: over 5.0 a DISCONNECT with the reason code is
    /// queued (section 4.13), and the state becomes [`ConnectionState::Closing`].
    /// [`ClientError::BufferFull`] is not fatal: nothing was consumed; drain
    /// [`Client::poll_transmit`] and call again with the same input.
    #[inline(never)]
    pub fn handle_bytes<'b>(
        &mut self,
        now: Instant,
        input: &'b [u8],
    ) -> Result<Received<'b>, ClientError> {
        let _ = now;
        match self.state {
            ConnectionState::Disconnected => return Err(ClientError::NotConnected),
            ConnectionState::Closing => {
                return Ok(Received {
                    consumed: input.len(),
                    event: None,
                })
            }
            ConnectionState::Connecting | ConnectionState::Connected => {}
        }
        let decoder =
            Decoder::new(self.options.version).with_max_packet_size(self.options.max_packet_size);
        // Only the packets a server sends are decoded, which keeps the decoders of CONNECT,
        // SUBSCRIBE and UNSUBSCRIBE out of a firmware image.
        let (packet, len) = match decoder.decode_from_server(input) {
            Ok(Decoded::Packet { packet, len }) => (packet, len),
            Ok(Decoded::Incomplete { .. }) => {
                return Ok(Received {
                    consumed: 0,
                    event: None,
                })
            }
            Err(DecodeError::InvalidPacketType(nibble)) if sent_only_by_clients(nibble) => {
                return Err(self.fail(ClientError::Protocol(ReasonCode::ProtocolError)))
            }
            Err(e) => return Err(self.fail(ClientError::Decode(e))),
        };
        match self.on_packet(&packet) {
            Ok(event) => {
                // Any packet shows the server is alive.
                self.pingresp_deadline = None;
                Ok(Received {
                    consumed: len,
                    event,
                })
            }
            Err(ClientError::BufferFull) => Err(ClientError::BufferFull),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Sends PINGREQ when nothing was transmitted for the keep-alive period
    /// ([MQTT-3.1.2-23] in 3.1.1, [MQTT-3.1.2-20] in 5.0), and reports
    /// [`ClientError::Timeout`] (fatal) when CONNACK or PINGRESP is overdue. Calling it early
    /// is harmless. [`ClientError::BufferFull`] (not fatal) means the PINGREQ found no room:
    /// drain [`Client::poll_transmit`] and call again.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        match self.state {
            ConnectionState::Connecting => {
                if self.connack_deadline.is_some_and(|d| now >= d) {
                    return Err(self.time_out());
                }
            }
            ConnectionState::Connected => {
                if let Some(deadline) = self.pingresp_deadline {
                    if now >= deadline {
                        return Err(self.time_out());
                    }
                } else if let Some(due) = self.keep_alive_due() {
                    if now >= due {
                        self.buf.push_raw(&PINGREQ)?;
                        self.pingresp_deadline = Some(now + self.options.response_timeout);
                    }
                }
            }
            ConnectionState::Disconnected | ConnectionState::Closing => {}
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Outputs

    /// Copies bytes to transmit into `buf` and returns how many. The output is a byte stream:
    /// a short `buf` takes part of a packet and the next call continues it. Retransmissions
    /// waiting for room are queued as room frees up. Packets go out in the order they were
    /// queued; a QoS 1/2 PUBLISH is copied straight from the store.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> usize {
        let mut written = 0;
        while let Some(out) = buf.get_mut(written..).filter(|out| !out.is_empty()) {
            if let Some((id, sent)) = self.sending {
                written += self.send_stored(id, sent, out);
                continue;
            }
            let next = self.next_stored();
            let queued = self.buf.tx_len();
            let allowed = next.map_or(queued, |(_, ahead)| ahead.min(queued));
            if allowed > 0 {
                let n = allowed.min(out.len());
                if let (Some(dst), Some(src)) = (out.get_mut(..n), self.buf.pending().get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.buf.consume(n);
                for slot in self.slots.iter_mut() {
                    slot.ahead = slot.ahead.saturating_sub(n);
                }
                written += n;
            } else if let Some((id, _)) = next {
                self.sending = Some((id, 0));
            } else if self.state != ConnectionState::Connected || !self.flush_resends() {
                break;
            }
        }
        if written > 0 {
            self.last_tx = now;
        }
        written
    }

    /// Returns the next session event not tied to a received packet: a
    /// [`ClientEvent::SessionLost`] for each request discarded (after a CONNACK without
    /// session, a clean-start connect, or a lost connection for subscribes and
    /// unsubscribes). Call it until `None` after each input; the packet identifier is freed
    /// when its event is returned.
    pub fn poll_event(&mut self) -> Option<ClientEvent<'static>> {
        let index = self.slots.iter().position(|s| s.kind == SlotKind::Lost)?;
        let packet_id = self.slots.get(index)?.id;
        self.remove_slot(index);
        Some(ClientEvent::SessionLost { packet_id })
    }

    /// When [`Client::handle_timeout`] should be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ConnectionState::Connecting => self.connack_deadline,
            ConnectionState::Connected => self.pingresp_deadline.or(self.keep_alive_due()),
            ConnectionState::Disconnected | ConnectionState::Closing => None,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Internals: commands

    /// The first stored PUBLISH not yet sent on this connection, with the queued bytes to
    /// send before it, if it may go now: on an open connection (or one closing by
    /// `disconnect`), within the server's Receive Maximum [MQTT-3.3.4-7].
    fn next_stored(&self) -> Option<(PacketId, usize)> {
        let open = self.may_send_stored();
        let active = self
            .slots
            .iter()
            .filter(|s| s.kind.is_publish() && !s.resend)
            .count();
        if !open || active >= self.inflight_limit() {
            return None;
        }
        let slot = self
            .slots
            .iter()
            .find(|s| s.resend && matches!(s.kind, SlotKind::PubAck | SlotKind::PubRec))?;
        Some((slot.id, slot.ahead))
    }

    /// Whether stored publishes may be sent: on an open connection, or one closing by
    /// `disconnect` (those queued before the DISCONNECT go first).
    fn may_send_stored(&self) -> bool {
        match self.state {
            ConnectionState::Connected => true,
            ConnectionState::Closing => self.draining,
            ConnectionState::Connecting | ConnectionState::Disconnected => false,
        }
    }

    /// Copies the stored PUBLISH `id` from its byte `sent` on into `out`; returns how many
    /// bytes. Once its first byte is out, any later copy is a retransmission: its DUP flag
    /// is set in the store [MQTT-3.3.1-1].
    fn send_stored(&mut self, id: PacketId, sent: usize, out: &mut [u8]) -> usize {
        let Some((index, _)) = self.slot_index(id) else {
            // Acknowledgements never remove a slot being sent; stop rather than spin.
            self.sending = None;
            return 0;
        };
        let start = self.store_offset(index);
        let len = self.slots.get(index).map_or(0, |s| s.len);
        let n = len.saturating_sub(sent).min(out.len());
        let from = start + sent;
        if let (Some(dst), Some(src)) = (out.get_mut(..n), self.buf.bytes.get(from..from + n)) {
            dst.copy_from_slice(src);
        }
        if let Some(first) = self.buf.bytes.get_mut(start) {
            *first |= DUP_FLAG;
        }
        if sent + n >= len {
            self.sending = None;
            if let Some(slot) = self.slots.get_mut(index) {
                slot.resend = false;
            }
        } else {
            self.sending = Some((id, sent + n));
        }
        n
    }

    /// Forgets the queued bytes (not the stored publishes, which are sent again from their
    /// start).
    fn clear_tx(&mut self) {
        self.buf.clear_tx();
        self.forget_queue();
    }

    /// Forgets what was being sent, once the queue is gone.
    fn forget_queue(&mut self) {
        self.sending = None;
        self.draining = false;
        for slot in self.slots.iter_mut() {
            slot.ahead = 0;
        }
    }

    fn keep_alive_due(&self) -> Option<Instant> {
        if self.keep_alive == 0 {
            return None;
        }
        Some(self.last_tx + Duration::from_secs(u64::from(self.keep_alive)))
    }

    fn time_out(&mut self) -> ClientError {
        self.state = ConnectionState::Closing;
        self.connack_deadline = None;
        self.pingresp_deadline = None;
        ClientError::Timeout
    }

    /// Forgets the connection (not the session): timers, the server's limits, and the
    /// requests that are not retransmitted; every publish in flight is to be resent.
    fn reset_connection(&mut self) {
        self.connack_deadline = None;
        self.pingresp_deadline = None;
        self.server = ServerLimits::DEFAULT;
        self.keep_alive = self.options.keep_alive;
        // What is queued (the CONNECT) goes before any retransmission.
        let queued = self.buf.tx_len();
        for slot in self.slots.iter_mut() {
            slot.ahead = queued;
            match slot.kind {
                SlotKind::SubAck(_) | SlotKind::UnsubAck(_) => slot.kind = SlotKind::Lost,
                SlotKind::PubAck | SlotKind::PubRec | SlotKind::PubComp => slot.resend = true,
                SlotKind::Lost => {}
            }
        }
    }

    /// Discards the session state: every request in flight is lost, and the inbound QoS 2
    /// identifiers are forgotten [MQTT-3.1.2-4], [MQTT-3.2.2-5].
    fn discard_session(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.kind = SlotKind::Lost;
            slot.len = 0;
            slot.resend = false;
        }
        self.sending = None;
        self.buf.store = 0;
        self.incoming_qos2.clear();
    }

    /// A non-zero packet identifier not in use [MQTT-2.2.1-3].
    fn free_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            let candidate = PacketId::new(self.next_id);
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if let Some(id) = candidate {
                if !self.slots.iter().any(|s| s.id == id) {
                    return Some(id);
                }
            }
        }
        None
    }

    fn push_slot(&mut self, id: PacketId, kind: SlotKind, len: usize) -> Result<(), ClientError> {
        self.slots
            .push(Slot {
                id,
                kind,
                len,
                resend: false,
                ahead: 0,
            })
            .map_err(|_| ClientError::InflightFull)
    }

    fn check_size(&self, len: usize) -> Result<(), ClientError> {
        if len > self.server.maximum_packet_size as usize || len > BUF {
            return Err(ClientError::PacketTooLarge);
        }
        Ok(())
    }

    fn check_request(&self, filters: usize) -> Result<(), ClientError> {
        if self.state != ConnectionState::Connected {
            return Err(ClientError::NotConnected);
        }
        if filters == 0 {
            return Err(ClientError::NoFilters);
        }
        if self.slots.is_full() {
            return Err(ClientError::InflightFull);
        }
        Ok(())
    }

    fn queue_request(
        &mut self,
        packet: &Packet<'_>,
        id: PacketId,
        kind: SlotKind,
    ) -> Result<PacketId, ClientError> {
        let len = packet
            .encoded_len(self.options.version)
            .map_err(ClientError::Encode)?;
        self.check_size(len)?;
        self.buf.push_packet(self.options.version, packet)?;
        self.push_slot(id, kind, 0)?;
        Ok(id)
    }

    /// The offset in the store of the slot at `index`.
    fn store_offset(&self, index: usize) -> usize {
        self.slots.iter().take(index).map(|s| s.len).sum()
    }

    /// Frees the store bytes of the slot at `index`.
    fn release_store(&mut self, index: usize) {
        let offset = self.store_offset(index);
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let len = slot.len;
        slot.len = 0;
        self.buf.release(offset, len);
    }

    /// Removes the slot at `index` with its stored bytes.
    fn remove_slot(&mut self, index: usize) {
        if index < self.slots.len() {
            self.release_store(index);
            // By hand rather than `heapless::Vec::remove`, which formats its panic message
            // and moves with `memmove` (see `copy_bytes`).
            for i in index + 1..self.slots.len() {
                if let Some(&next) = self.slots.get(i) {
                    if let Some(prev) = self.slots.get_mut(i - 1) {
                        *prev = next;
                    }
                }
            }
            self.slots.pop();
        }
    }

    /// Queues the PUBREL of each QoS 2 flow past PUBREC [MQTT-4.4.0-1], in order, while the
    /// server's Receive Maximum [MQTT-3.3.4-7] and the buffer allow (the stored PUBLISH
    /// packets to resend are sent by `poll_transmit` from the store). A stored PUBLISH
    /// larger than this server's Maximum Packet Size can no longer be sent [MQTT-3.2.2-15]:
    /// it is discarded and reported lost. Returns whether anything changed.
    fn flush_resends(&mut self) -> bool {
        let limit = self.inflight_limit();
        let max_size = self.server.maximum_packet_size as usize;
        let mut active = self
            .slots
            .iter()
            .filter(|s| s.kind.is_publish() && !s.resend)
            .count();
        let version = self.options.version;
        let mut index = 0;
        let mut progress = false;
        while let Some(slot) = self.slots.get(index).copied() {
            index += 1;
            if !slot.resend || self.sending.is_some_and(|(id, _)| id == slot.id) {
                continue;
            }
            let stored_publish = matches!(slot.kind, SlotKind::PubAck | SlotKind::PubRec);
            if stored_publish && slot.len > max_size {
                self.release_store(index - 1);
                if let Some(s) = self.slots.get_mut(index - 1) {
                    s.kind = SlotKind::Lost;
                    s.resend = false;
                }
                progress = true;
                continue;
            }
            if slot.kind != SlotKind::PubComp {
                continue;
            }
            if active >= limit {
                break;
            }
            let success = ReasonCode::Success;
            let queued = self
                .buf
                .push_ack(version, PacketType::PubRel, slot.id, success);
            if queued.is_err() {
                break;
            }
            if let Some(s) = self.slots.get_mut(index - 1) {
                s.resend = false;
            }
            // The publishes to resend after it wait for it: the original order.
            let queued = self.buf.tx_len();
            for later in self.slots.iter_mut().skip(index) {
                later.ahead = later.ahead.max(queued);
            }
            active += 1;
            progress = true;
        }
        progress
    }

    // -----------------------------------------------------------------------------------------
    // Internals: inputs

    /// Ends the connection after a fatal error: over 5.0, queue a DISCONNECT with the reason
    /// code (section 4.13); 3.1.1 has nothing to send.
    fn fail(&mut self, error: ClientError) -> ClientError {
        #[cfg(feature = "v5")]
        if self.options.version.is_v5() {
            if let Some(reason) = error.reason_code() {
                let packet = [DISCONNECT, 1, reason as u8];
                if self.buf.push_raw(&packet).is_err() {
                    // The connection is over anyway: make sure the reason gets out (after
                    // the rest of a stored publish being sent, which cannot be cut).
                    self.buf.clear_tx();
                    let _ = self.buf.push_raw(&packet);
                }
            }
        }
        self.state = ConnectionState::Closing;
        self.connack_deadline = None;
        self.pingresp_deadline = None;
        error
    }

    /// Out of line: inlined into `handle_bytes`, the events it builds took room in that
    /// frame beside the decoder's packet, on the deepest call chain of a 5.0 firmware.
    #[inline(never)]
    fn on_packet<'b>(
        &mut self,
        packet: &Packet<'b>,
    ) -> Result<Option<ClientEvent<'b>>, ClientError> {
        let protocol_error = Err(ClientError::Protocol(ReasonCode::ProtocolError));
        if self.state == ConnectionState::Connecting {
            // The first packet from the server is CONNACK [MQTT-3.2.0-1].
            return match packet {
                Packet::ConnAck(connack) => self.on_connack(connack),
                _ => protocol_error,
            };
        }
        match packet {
            Packet::Publish(publish) => self.on_publish(publish),
            Packet::PubAck(ack) => Ok(self.on_puback(ack)),
            Packet::PubRec(rec) => self.on_pubrec(rec),
            Packet::PubRel(rel) => self.on_pubrel(rel),
            Packet::PubComp(comp) => Ok(self.on_pubcomp(comp)),
            Packet::SubAck(suback) => {
                self.on_request_ack(suback.packet_id, suback.reason_codes, true)
            }
            Packet::UnsubAck(unsuback) => {
                self.on_request_ack(unsuback.packet_id, unsuback.reason_codes, false)
            }
            Packet::PingResp => Ok(Some(ClientEvent::Pong)),
            Packet::Disconnect(disconnect) if self.options.version.is_v5() => {
                self.state = ConnectionState::Closing;
                Ok(Some(ClientEvent::Disconnected {
                    reason: disconnect.reason_code,
                    properties: disconnect.properties,
                }))
            }
            // A second CONNACK [MQTT-3.2.0-2], packets only a client sends, DISCONNECT over
            // 3.1.1, and AUTH without an authentication method.
            Packet::ConnAck(_)
            | Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Disconnect(_)
            | Packet::Auth(_) => protocol_error,
        }
    }

    fn on_connack<'b>(
        &mut self,
        connack: &petrel_codec::ConnAck<'b>,
    ) -> Result<Option<ClientEvent<'b>>, ClientError> {
        if connack.reason_code.is_error() {
            self.state = ConnectionState::Closing;
            self.connack_deadline = None;
            return Ok(Some(ClientEvent::Refused(connack.reason_code)));
        }
        if connack.session_present && self.sent_clean_start {
            // A server must not resume a session after a clean start [MQTT-3.2.2-2]; the
            // client had none to resume [MQTT-3.2.2-4].
            return Err(ClientError::Protocol(ReasonCode::ProtocolError));
        }
        // Over 3.1.1 the limits stay the defaults `reset_connection` set.
        #[cfg(feature = "v5")]
        self.apply_connack_properties(&connack.properties);
        if !connack.session_present {
            // [MQTT-3.2.2-5]: the client discards its session state.
            self.discard_session();
        }
        self.state = ConnectionState::Connected;
        self.connack_deadline = None;
        // [MQTT-4.4.0-1]: resend unacknowledged PUBLISH and PUBREL packets.
        self.flush_resends();
        Ok(Some(ClientEvent::Connected {
            session_present: connack.session_present,
        }))
    }

    /// Takes in what a 5.0 CONNACK's properties say: the server's limits, the keep-alive it
    /// imposes and the client identifier it assigned.
    #[cfg(feature = "v5")]
    fn apply_connack_properties(&mut self, p: &Properties<'_>) {
        let d = ServerLimits::DEFAULT;
        self.server = ServerLimits {
            receive_maximum: p.receive_maximum.unwrap_or(d.receive_maximum),
            maximum_packet_size: p.maximum_packet_size.unwrap_or(d.maximum_packet_size),
            maximum_qos: p.maximum_qos.unwrap_or(d.maximum_qos),
            retain_available: p.retain_available.unwrap_or(d.retain_available),
            topic_alias_maximum: p.topic_alias_maximum.unwrap_or(d.topic_alias_maximum),
            wildcard_subscription_available: p
                .wildcard_subscription_available
                .unwrap_or(d.wildcard_subscription_available),
            subscription_identifier_available: p
                .subscription_identifier_available
                .unwrap_or(d.subscription_identifier_available),
            shared_subscription_available: p
                .shared_subscription_available
                .unwrap_or(d.shared_subscription_available),
            server_keep_alive: p.server_keep_alive,
        };
        if let Some(keep_alive) = p.server_keep_alive {
            // [MQTT-3.1.2-21], [MQTT-3.2.2-21].
            self.keep_alive = keep_alive;
        }
        if let Some(assigned) = p.assigned_client_identifier {
            self.assigned_client_id.clear();
            if self.assigned_client_id.push_str(assigned).is_err() {
                self.assigned_client_id.clear();
            }
            if self.options.client_id.is_empty() {
                // The next CONNECT carries it: keep room for it.
                self.connect_len += self.assigned_client_id.len();
            }
        }
    }

    fn on_publish<'b>(
        &mut self,
        publish: &Publish<'b>,
    ) -> Result<Option<ClientEvent<'b>>, ClientError> {
        // The client advertises no Topic Alias Maximum, so the server sends no alias
        // [MQTT-3.1.2-27].
        #[cfg(feature = "v5")]
        if publish.properties.topic_alias.is_some() {
            return Err(ClientError::Protocol(ReasonCode::TopicAliasInvalid));
        }
        let version = self.options.version;
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => Ok(Some(ClientEvent::Message(*publish))),
            (QoS::AtLeastOnce, Some(id)) => {
                // [MQTT-4.3.2-4] (5.0) / [MQTT-4.3.2-2] (3.1.1): acknowledge with PUBACK.
                self.buf
                    .push_ack(version, PacketType::PubAck, id, ReasonCode::Success)?;
                Ok(Some(ClientEvent::Message(*publish)))
            }
            (QoS::ExactlyOnce, Some(id)) => {
                let success = ReasonCode::Success;
                if self.incoming_qos2.contains(&id) {
                    // Until PUBREL, a PUBLISH with the same identifier is acknowledged again
                    // and not delivered again [MQTT-4.3.3-10] (5.0) / [MQTT-4.3.3-2] (3.1.1).
                    self.buf
                        .push_ack(version, PacketType::PubRec, id, success)?;
                    return Ok(None);
                }
                // The server may not exceed our Receive Maximum [MQTT-3.3.4-9]. A 3.1.1
                // server was never told one: only the capacity limits it there.
                let limit = if version.is_v5() {
                    usize::from(self.receive_maximum())
                } else {
                    INFLIGHT
                };
                if self.incoming_qos2.len() >= limit || self.incoming_qos2.is_full() {
                    return Err(ClientError::Protocol(ReasonCode::ReceiveMaximumExceeded));
                }
                // [MQTT-4.3.3-8]: PUBREC, having accepted ownership.
                self.buf
                    .push_ack(version, PacketType::PubRec, id, success)?;
                if self.incoming_qos2.push(id).is_err() {
                    return Err(ClientError::Protocol(ReasonCode::ReceiveMaximumExceeded));
                }
                Ok(Some(ClientEvent::Message(*publish)))
            }
            // The decoder guarantees an identifier at QoS 1/2.
            (_, None) => Err(ClientError::Protocol(ReasonCode::MalformedPacket)),
        }
    }

    fn slot_index(&self, id: PacketId) -> Option<(usize, SlotKind)> {
        self.slots
            .iter()
            .position(|s| s.id == id)
            .and_then(|i| self.slots.get(i).map(|s| (i, s.kind)))
    }

    /// Like `slot_index`, for an acknowledgement: a publish not yet (fully) sent on this
    /// connection awaits none, and its slot must stay while `poll_transmit` sends it.
    fn acked_slot(&self, id: PacketId) -> Option<(usize, SlotKind)> {
        let (index, kind) = self.slot_index(id)?;
        let unsent = self.slots.get(index).is_some_and(|s| s.resend);
        (!unsent).then_some((index, kind))
    }

    fn on_puback<'b>(&mut self, ack: &PubResponse<'b>) -> Option<ClientEvent<'b>> {
        let id = ack.packet_id;
        // An acknowledgement for an identifier not awaiting it is ignored [MQTT-2.2.1-5].
        let (index, SlotKind::PubAck) = self.acked_slot(id)? else {
            return None;
        };
        self.remove_slot(index);
        self.flush_resends();
        Some(if ack.reason_code.is_error() {
            ClientEvent::PublishFailed {
                packet_id: id,
                reason: ack.reason_code,
            }
        } else {
            ClientEvent::Published { packet_id: id }
        })
    }

    fn on_pubrec<'b>(
        &mut self,
        rec: &PubResponse<'b>,
    ) -> Result<Option<ClientEvent<'b>>, ClientError> {
        let id = rec.packet_id;
        let version = self.options.version;
        if self
            .slots
            .iter()
            .any(|s| s.id == id && s.resend && s.len > 0)
        {
            // Its PUBLISH is not (fully) sent yet: there is nothing to acknowledge.
            return Ok(None);
        }
        match self.slot_index(id) {
            Some((index, SlotKind::PubRec)) => {
                if rec.reason_code.is_error() {
                    // 5.0: the server refused the message; the flow ends here.
                    self.remove_slot(index);
                    self.flush_resends();
                    return Ok(Some(ClientEvent::PublishFailed {
                        packet_id: id,
                        reason: rec.reason_code,
                    }));
                }
                // [MQTT-4.3.3-4]: PUBREL; the PUBLISH is never sent again [MQTT-4.3.3-6].
                self.buf
                    .push_ack(version, PacketType::PubRel, id, ReasonCode::Success)?;
                self.release_store(index);
                if let Some(slot) = self.slots.get_mut(index) {
                    slot.kind = SlotKind::PubComp;
                }
                Ok(None)
            }
            Some((_, SlotKind::PubComp)) => {
                // A repeated PUBREC: repeat the PUBREL.
                self.buf
                    .push_ack(version, PacketType::PubRel, id, ReasonCode::Success)?;
                Ok(None)
            }
            _ if rec.reason_code.is_error() => Ok(None),
            _ => {
                // Unknown identifier: PUBREL "packet identifier not found" (5.0), so that
                // the server can complete its side [MQTT-2.2.1-5].
                let not_found = ReasonCode::PacketIdentifierNotFound;
                self.buf
                    .push_ack(version, PacketType::PubRel, id, not_found)?;
                Ok(None)
            }
        }
    }

    fn on_pubrel<'b>(
        &mut self,
        rel: &PubResponse<'b>,
    ) -> Result<Option<ClientEvent<'b>>, ClientError> {
        let id = rel.packet_id;
        let known = self.incoming_qos2.iter().position(|&i| i == id);
        // [MQTT-4.3.3-11]: PUBCOMP with the same identifier; 5.0 says "not found" for an
        // identifier the client does not know (a PUBREL repeated after reconnecting).
        let reason_code = if known.is_some() {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.buf
            .push_ack(self.options.version, PacketType::PubComp, id, reason_code)?;
        if let Some(index) = known {
            // [MQTT-4.3.3-12]: the identifier is new again.
            self.incoming_qos2.swap_remove(index);
        }
        Ok(None)
    }

    fn on_pubcomp<'b>(&mut self, comp: &PubResponse<'b>) -> Option<ClientEvent<'b>> {
        let id = comp.packet_id;
        let (index, SlotKind::PubComp) = self.acked_slot(id)? else {
            return None;
        };
        self.remove_slot(index);
        self.flush_resends();
        Some(ClientEvent::Published { packet_id: id })
    }

    fn on_request_ack<'b>(
        &mut self,
        id: PacketId,
        reason_codes: List<'b, ReasonCode>,
        subscribe: bool,
    ) -> Result<Option<ClientEvent<'b>>, ClientError> {
        let Some((index, kind)) = self.slot_index(id) else {
            return Ok(None);
        };
        let expected = match (kind, subscribe) {
            (SlotKind::SubAck(n), true) => n,
            (SlotKind::UnsubAck(n), false) => n,
            _ => return Ok(None),
        };
        // One reason code per filter [MQTT-3.8.4-6] (UNSUBACK: 5.0 only).
        let counted = subscribe || self.options.version.is_v5();
        if counted && reason_codes.len() != expected {
            return Err(ClientError::Protocol(ReasonCode::ProtocolError));
        }
        self.remove_slot(index);
        Ok(Some(if subscribe {
            ClientEvent::Subscribed {
                packet_id: id,
                reason_codes,
            }
        } else {
            ClientEvent::Unsubscribed {
                packet_id: id,
                reason_codes,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestClient = Client<'static, 4, 512>;

    #[test]
    fn buffer_moves_the_queue_out_of_the_way_and_refuses_overflow() {
        let v3 = ProtocolVersion::V311;
        let mut b = Buffer::<16>::new();
        // PINGREQ is 2 bytes, a PUBLISH to "t" with payload "xy" 7.
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t",
            packet_id: PacketId::new(1),
            properties: Properties::default(),
            payload: b"x",
        });
        b.push_packet(v3, &Packet::PingReq).unwrap();
        b.push_packet(v3, &Packet::PingReq).unwrap();
        b.consume(2);
        assert_eq!(b.pending(), &[0xc0, 0]);
        // The store grows under the queue, which moves to the end of the buffer.
        b.push_stored(v3, &publish, 8).unwrap();
        assert_eq!((b.store, b.head, b.end), (8, 14, 16));
        assert_eq!(b.pending(), &[0xc0, 0]);
        // An append finds no room after the queue: the queue moves down to the store.
        b.push_packet(v3, &Packet::PingReq).unwrap();
        assert_eq!((b.head, b.end), (8, 12));
        assert_eq!(b.pending(), &[0xc0, 0, 0xc0, 0]);
        assert_eq!(b.push_stored(v3, &publish, 8), Err(ClientError::BufferFull));
        b.consume(100);
        assert_eq!(b.tx_len(), 0);
        b.push_stored(v3, &publish, 8).unwrap();
        assert_eq!(b.free(), 0);
        assert_eq!(
            b.push_packet(v3, &Packet::PingReq),
            Err(ClientError::BufferFull)
        );
        b.release(0, 8);
        assert_eq!(b.store, 8);
        assert_eq!(b.bytes.get(..2), Some(&[0x32, 6][..]));
    }

    #[test]
    fn acknowledgements_are_encoded_as_the_codec_encodes_them() {
        use petrel_codec::PubResponse;
        type Make = fn(PubResponse<'static>) -> Packet<'static>;
        let kinds: [(PacketType, Make); 4] = [
            (PacketType::PubAck, Packet::PubAck),
            (PacketType::PubRec, Packet::PubRec),
            (PacketType::PubRel, Packet::PubRel),
            (PacketType::PubComp, Packet::PubComp),
        ];
        let reasons = [ReasonCode::Success, ReasonCode::PacketIdentifierNotFound];
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for (kind, make) in kinds {
                for reason in reasons {
                    let id = PacketId::new(0x1234).unwrap();
                    if kind != PacketType::PubRel
                        && kind != PacketType::PubComp
                        && reason != ReasonCode::Success
                    {
                        continue;
                    }
                    let packet = make(PubResponse {
                        reason_code: reason,
                        ..PubResponse::new(id)
                    });
                    let mut expected = [0u8; 8];
                    let len = packet.encode(version, &mut expected).unwrap();
                    let mut b = Buffer::<8>::new();
                    b.push_ack(version, kind, id, reason).unwrap();
                    assert_eq!(
                        b.pending(),
                        &expected[..len],
                        "{kind:?} {reason:?} {version:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn raw_packets_are_encoded_as_the_codec_encodes_them() {
        use petrel_codec::Disconnect;
        let check = |version: ProtocolVersion, packet: Packet<'_>, raw: &[u8]| {
            let mut expected = [0u8; 8];
            let len = packet.encode(version, &mut expected).unwrap();
            assert_eq!(raw, &expected[..len], "{packet:?} {version:?}");
        };
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            check(version, Packet::PingReq, &PINGREQ);
            check(
                version,
                Packet::Disconnect(Disconnect::default()),
                &[DISCONNECT, 0],
            );
        }
        #[cfg(feature = "v5")]
        for reason in [
            ReasonCode::ProtocolError,
            ReasonCode::ReceiveMaximumExceeded,
        ] {
            let packet = Packet::Disconnect(Disconnect {
                reason_code: reason,
                properties: Properties::default(),
            });
            check(ProtocolVersion::V5, packet, &[DISCONNECT, 1, reason as u8]);
        }
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_use() {
        // [MQTT-2.2.1-3]: non-zero and unused.
        let mut c = TestClient::new(ClientOptions::new(ProtocolVersion::V5, "c"));
        c.next_id = u16::MAX;
        let first = c.free_packet_id().unwrap();
        assert_eq!(first.get(), u16::MAX);
        c.push_slot(PacketId::new(1).unwrap(), SlotKind::PubAck, 0)
            .unwrap();
        assert_eq!(c.free_packet_id().unwrap().get(), 2);
    }

    #[test]
    fn store_is_compacted_on_removal() {
        let mut c = TestClient::new(ClientOptions::new(ProtocolVersion::V5, "c"));
        for (i, bytes) in [&[1u8, 1][..], &[2, 2, 2], &[3]].iter().enumerate() {
            let start = c.buf.store;
            c.buf.grow_to(start + bytes.len()).unwrap();
            c.buf.bytes[start..start + bytes.len()].copy_from_slice(bytes);
            c.buf.store += bytes.len();
            c.push_slot(
                PacketId::new(i as u16 + 1).unwrap(),
                SlotKind::PubAck,
                bytes.len(),
            )
            .unwrap();
        }
        c.remove_slot(1);
        assert_eq!(&c.buf.bytes[..c.buf.store], &[1, 1, 3]);
        assert_eq!(c.store_offset(1), 2);
        c.release_store(0);
        assert_eq!(&c.buf.bytes[..c.buf.store], &[3]);
    }

    #[test]
    fn receive_maximum_is_clamped_to_capacity() {
        let mut options = ClientOptions::new(ProtocolVersion::V5, "c");
        assert_eq!(TestClient::new(options).receive_maximum(), 4);
        options.receive_maximum = 2;
        assert_eq!(TestClient::new(options).receive_maximum(), 2);
        options.receive_maximum = 0;
        assert_eq!(TestClient::new(options).receive_maximum(), 1);
    }
}
