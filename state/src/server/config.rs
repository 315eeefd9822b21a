//! What a server connection allows and announces.

use alloc::string::String;

use petrel_codec::QoS;

use super::session::QueueLimits;
use crate::time::Duration;

/// Limits and capabilities of the server side of a connection. The 5.0 values are announced
/// to the client in CONNACK; every limit is enforced whatever the protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// How long a new connection may take to send its CONNECT before it is closed.
    pub connect_timeout: Duration,
    /// The longest keep-alive accepted, in seconds; a 5.0 client asking for more (or for 0,
    /// "none") is told this value as Server Keep Alive. 0 means no cap. A 3.1.1 client cannot
    /// be told, so its own keep-alive is kept.
    pub max_keep_alive: u16,
    /// Inbound QoS 1 and 2 publications the client may have unacknowledged at once; one more
    /// closes the connection with 0x93 [MQTT-3.3.4-7].
    pub receive_maximum: u16,
    /// The largest packet accepted from the client (announced as Maximum Packet Size); a
    /// larger one closes the connection with 0x95.
    pub max_packet_size: u32,
    /// Outbound QoS 1 and 2 messages in flight at once to one client (mosquitto's
    /// `max_inflight_messages`): all a 3.1.1 client, which cannot announce a receive
    /// maximum, gets; a 5.0 client gets the lower of this and its own Receive Maximum. The
    /// rest wait in the session queue, within [`queue`](Self::queue). 100, as rumqttd:
    /// mosquitto's 20 caps one subscriber at 20 messages per round trip, a third of what
    /// the same broker delivers with 100 on loopback (see BENCHMARKS.md).
    pub max_inflight: u16,
    /// The highest topic alias the client may use; 0 refuses aliases.
    pub topic_alias_maximum: u16,
    /// Whether to give outbound topic aliases to 5.0 clients that accept them.
    pub outbound_topic_aliases: bool,
    /// The highest QoS the server supports (announced as Maximum QoS when below 2).
    pub maximum_qos: QoS,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Whether wildcard subscriptions are supported.
    pub wildcard_subscription_available: bool,
    /// Whether subscription identifiers are supported.
    pub subscription_identifiers_available: bool,
    /// Whether shared subscriptions are supported.
    pub shared_subscription_available: bool,
    /// The longest session expiry interval granted, in seconds.
    pub max_session_expiry: u32,
    /// Bytes of encoded packets waiting for the socket beyond which QoS 0 deliveries are
    /// dropped (and counted) and QoS 1/2 deliveries wait in the session queue: a slow
    /// subscriber never makes the broker buffer without bound.
    pub max_outbound_buffer: usize,
    /// Bounds on the session's queue.
    pub queue: QueueLimits,
    /// Response Information given to 5.0 clients that ask for it.
    pub response_information: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connect_timeout: Duration::from_secs(10),
            max_keep_alive: 0,
            receive_maximum: 1024,
            max_inflight: 100,
            max_packet_size: 1024 * 1024,
            topic_alias_maximum: 64,
            outbound_topic_aliases: true,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscription_available: true,
            subscription_identifiers_available: true,
            shared_subscription_available: true,
            max_session_expiry: u32::MAX,
            max_outbound_buffer: 1024 * 1024,
            queue: QueueLimits::default(),
            response_information: None,
        }
    }
}
