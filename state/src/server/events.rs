//! What a server connection tells the broker, and what the broker answers.

use alloc::string::String;
use alloc::vec::Vec;

use bytes::Bytes;
use petrel_codec::{PacketId, ProtocolVersion, ReasonCode, SubscriptionOptions};

use super::session::Session;
use crate::message::Message;

/// Something the broker must act on. Drain with
/// [`ServerConnection::poll_event`](super::ServerConnection::poll_event) after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client asks to connect: authenticate it, find its session, then call `accept`,
    /// `reject` or (enhanced authentication) `auth_continue`.
    Connect(ConnectRequest),
    /// An AUTH packet: the next step of enhanced authentication, or a re-authentication
    /// when `reauthenticate` is set. Answer with `auth_continue`, `auth_success`, or
    /// `reject` / `close`.
    Auth(AuthRequest),
    /// An application message arrived. QoS 0 needs nothing more; QoS 1 and 2 wait for
    /// `complete_publish` with the packet identifier, which sends PUBACK or PUBREC once the
    /// broker has made the message safe.
    Publish(InboundPublish),
    /// A SUBSCRIBE: answer with `complete_subscribe`, one reason code per filter.
    Subscribe(SubscribeRequest),
    /// An UNSUBSCRIBE: answer with `complete_unsubscribe`, one reason code per filter.
    Unsubscribe(UnsubscribeRequest),
    /// The client acknowledged an outbound QoS 1 (PUBACK) or QoS 2 (PUBCOMP) publication:
    /// the broker can forget it (and a store can delete it).
    Delivered {
        /// The publication's packet identifier.
        packet_id: PacketId,
    },
    /// The connection is over. Flush what `poll_transmit` still gives, then close the socket.
    Closed(CloseInfo),
    /// A packet was decoded: its whole frame, reported ahead of whatever event the packet
    /// raises. Only after
    /// [`ServerConnection::set_packet_trace`](super::ServerConnection::set_packet_trace).
    Received(Bytes),
}

/// A CONNECT, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The protocol the client speaks.
    pub version: ProtocolVersion,
    /// The client identifier; empty when the client asks the server to assign one (the
    /// broker then passes one in [`Accept::assigned_client_id`]).
    pub client_id: String,
    /// Clean start (5.0) / clean session (3.1.1).
    pub clean_start: bool,
    /// The keep-alive in force, after the server's cap.
    pub keep_alive: u16,
    /// The session expiry interval asked for (3.1.1: 0 with clean session, else never).
    pub session_expiry_interval: u32,
    /// The user name.
    pub username: Option<String>,
    /// The password.
    pub password: Option<Bytes>,
    /// The will, to publish if the connection ends abnormally.
    pub will: Option<Will>,
    /// The enhanced authentication method (5.0).
    pub authentication_method: Option<String>,
    /// The first enhanced authentication data (5.0).
    pub authentication_data: Option<Bytes>,
    /// User properties of the CONNECT (5.0).
    pub user_properties: Vec<(String, String)>,
}

/// A will message with its delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The message to publish. Its expiry is not set: the will's lifetime starts when it is
    /// published, see `message_expiry_interval`.
    pub message: Message,
    /// Seconds to wait after the connection ends before publishing it (5.0).
    pub delay_interval: u32,
    /// The will's Message Expiry Interval, counted from its publication (5.0).
    pub message_expiry_interval: Option<u32>,
}

impl Will {
    /// The message as published at `now`, its expiry counted from then.
    pub fn into_message(self, now: crate::time::Instant) -> Message {
        let mut message = self.message;
        message.properties.expires_at = self
            .message_expiry_interval
            .map(|secs| now + crate::time::Duration::from_secs(u64::from(secs)));
        message
    }
}

/// An AUTH packet from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The authentication method; it must match the one the exchange began with.
    pub method: String,
    /// The authentication data.
    pub data: Option<Bytes>,
    /// True for a re-authentication of a connected client (reason code 0x19).
    pub reauthenticate: bool,
}

/// An inbound PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPublish {
    /// The packet identifier, for QoS 1 and 2.
    pub packet_id: Option<PacketId>,
    /// The message, its topic alias resolved.
    pub message: Message,
}

/// One filter of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest {
    /// The topic filter (possibly `$share/{group}/…`).
    pub filter: String,
    /// The subscription options.
    pub options: SubscriptionOptions,
    /// A refusal the connection already decided from the server's capabilities (shared or
    /// wildcard subscriptions not supported); the broker should answer with it.
    pub refusal: Option<ReasonCode>,
}

/// A SUBSCRIBE, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// Its packet identifier.
    pub packet_id: PacketId,
    /// The subscription identifier (5.0).
    pub subscription_id: Option<u32>,
    /// The filters, in order.
    pub filters: Vec<SubscriptionRequest>,
    /// User properties (5.0).
    pub user_properties: Vec<(String, String)>,
}

/// An UNSUBSCRIBE, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeRequest {
    /// Its packet identifier.
    pub packet_id: PacketId,
    /// The filters, in order.
    pub filters: Vec<String>,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The reason: the client's DISCONNECT reason, the code the server sent, or
    /// [`ReasonCode::UnspecifiedError`] when the transport was lost.
    pub reason: ReasonCode,
    /// Who ended it.
    pub initiator: CloseInitiator,
    /// Whether the will must be published: every end but a normal DISCONNECT from the client
    /// [MQTT-3.14.4-3], and DISCONNECT 0x04 asks for it explicitly.
    pub publish_will: bool,
    /// The session expiry interval in force at the end (a 5.0 DISCONNECT may change it).
    pub session_expiry_interval: u32,
    /// Whether a CONNACK accepting the connection was ever sent.
    pub was_connected: bool,
}

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseInitiator {
    /// The client sent DISCONNECT.
    Client,
    /// The server decided (protocol error, keep-alive timeout, takeover, shutdown, …).
    Server,
    /// The transport closed or failed.
    Transport,
}

/// The broker's answer to a [`ConnectRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    /// The session to attach: a resumed one or a new one.
    pub session: Session,
    /// Whether `session` was resumed (CONNACK Session Present).
    pub session_present: bool,
    /// The identifier the server assigned, when the client sent an empty one (5.0 tells the
    /// client; a 3.1.1 client is simply known by it).
    pub assigned_client_id: Option<String>,
    /// Final enhanced authentication data to send in CONNACK.
    pub authentication_data: Option<Bytes>,
}

impl Accept {
    /// Accepts with a new session.
    pub fn new_session(session: Session) -> Self {
        Accept {
            session,
            session_present: false,
            assigned_client_id: None,
            authentication_data: None,
        }
    }
}
