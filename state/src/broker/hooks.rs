//! Extension points: authenticate, authorize and rewrite what clients send, and observe
//! their lifecycle. One trait serves the broker, the proxy and embedders; every method has a
//! default that allows everything, so an implementation overrides only what it needs.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use bytes::Bytes;
use petrel_codec::{Packet, PacketId, ProtocolVersion, ReasonCode, SubscriptionOptions};

use crate::message::Message;
use crate::server::{AuthRequest, CloseInfo, ConnectRequest};

use super::ConnectionId;

/// Who a hook is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo<'a> {
    /// The connection.
    pub connection: ConnectionId,
    /// The client identifier (the assigned one, once assigned).
    pub client_id: &'a str,
    /// The user name the client authenticated with.
    pub username: Option<&'a str>,
    /// The protocol the client speaks.
    pub version: ProtocolVersion,
    /// The remote address, as the transport reported it (`None` for in-process clients).
    pub remote: Option<&'a str>,
    /// Who the transport proved the peer to be before MQTT began: the subject of a verified
    /// TLS client certificate (RFC 4514, `CN=sensor-7,O=Acme`). `None` when the transport
    /// proved nothing; an authenticator may accept such a client without a password.
    pub identity: Option<&'a str>,
}

/// What the transport proved about a peer before its CONNECT: the verified client
/// certificate of an mTLS connection. Given to [`Broker::open_with_identity`].
///
/// [`Broker::open_with_identity`]: super::Broker::open_with_identity
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate subject (RFC 4514), shown to hooks as [`ClientInfo::identity`].
    pub subject: String,
    /// When set, the user name of the connection, in place of whatever the CONNECT carries
    /// (mosquitto's `use_identity_as_username`): hooks and the session see this name.
    pub username: Option<String>,
}

/// The answer to a CONNECT or an AUTH step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// Let the client in (or end a re-authentication successfully), with optional final
    /// enhanced-authentication data.
    Accept(Option<Bytes>),
    /// Send this challenge (AUTH 0x18) and wait for the client's answer.
    Continue(Bytes),
    /// Refuse with this reason code (a 3.1.1 client gets the nearest return code).
    Reject(ReasonCode),
}

/// The answer to a PUBLISH or one SUBSCRIBE filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (the hook may have rewritten what it was given).
    Allow,
    /// Refuse with this reason code: the PUBLISH is acknowledged with it (5.0) or
    /// acknowledged and dropped (3.1.1); the SUBSCRIBE filter gets it in SUBACK.
    Deny(ReasonCode),
}

/// Which way a packet crossed a client's connection, for [`Hooks::on_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketDirection {
    /// From the client: decoded by the server connection.
    Received,
    /// To the client: encoded by the server connection and handed to the transport.
    Sent,
}

impl PacketDirection {
    /// The arrow a packet log shows for this direction, seen from the broker: `<-` for a
    /// packet received from the client, `->` for one sent to it.
    pub fn arrow(self) -> &'static str {
        match self {
            PacketDirection::Received => "<-",
            PacketDirection::Sent => "->",
        }
    }
}

/// Hooks into the broker. The union of what mochi-mqtt, gmqtt and mProxy offer: decide on
/// CONNECT and AUTH, authorize and rewrite PUBLISH and SUBSCRIBE, and observe connections,
/// subscriptions, messages and session expiry.
///
/// Hooks run inside the broker's single-threaded core: they must not block. An
/// authenticator that needs I/O can answer [`AuthDecision::Continue`]-free by rejecting
/// fast, or the runtime can resolve credentials before the core sees them.
pub trait Hooks {
    /// A client asks to connect. Called with the CONNECT; the default accepts everyone.
    fn on_connect(&mut self, client: &ClientInfo<'_>, request: &ConnectRequest) -> AuthDecision {
        let _ = (client, request);
        AuthDecision::Accept(None)
    }

    /// The next step of enhanced authentication, or a re-authentication. The default
    /// refuses, since only an authenticator that began an exchange can go on with it.
    fn on_auth(&mut self, client: &ClientInfo<'_>, request: &AuthRequest) -> AuthDecision {
        let _ = (client, request);
        AuthDecision::Reject(ReasonCode::BadAuthenticationMethod)
    }

    /// A client publishes `message`; the hook may rewrite its topic, payload or properties.
    fn authorize_publish(&mut self, client: &ClientInfo<'_>, message: &mut Message) -> Verdict {
        let _ = (client, message);
        Verdict::Allow
    }

    /// A client subscribes to `filter`; the hook may rewrite the filter (for example to add
    /// a tenant prefix) or lower the options' QoS.
    fn authorize_subscribe(
        &mut self,
        client: &ClientInfo<'_>,
        filter: &mut String,
        options: &mut SubscriptionOptions,
    ) -> Verdict {
        let _ = (client, filter, options);
        Verdict::Allow
    }

    /// A message is about to be sent to `client`; returning false skips this subscriber
    /// (per-subscriber read authorization).
    fn authorize_delivery(&mut self, client: &ClientInfo<'_>, message: &Message) -> bool {
        let _ = (client, message);
        true
    }

    /// A client unsubscribes from `filter`; the hook rewrites it the way
    /// [`authorize_subscribe`](Hooks::authorize_subscribe) rewrote the subscription, so
    /// the right one is removed. Called by the proxy (the broker core keeps filters as the
    /// hook left them at SUBSCRIBE time and needs no second rewrite).
    fn rewrite_unsubscribe(&mut self, client: &ClientInfo<'_>, filter: &mut String) {
        let _ = (client, filter);
    }

    /// A message from the upstream broker is about to reach `client` through the proxy,
    /// after [`authorize_delivery`](Hooks::authorize_delivery) let it through: the hook
    /// undoes what [`authorize_publish`](Hooks::authorize_publish) did on the way up (a
    /// tenant prefix comes off again), so the device never sees the upstream's topics.
    fn rewrite_delivery(&mut self, client: &ClientInfo<'_>, message: &mut Message) {
        let _ = (client, message);
    }

    /// Whether the hooks leave every message of `client` alone, both ways: each PUBLISH
    /// allowed unchanged by [`authorize_publish`](Hooks::authorize_publish), each delivery
    /// let through by [`authorize_delivery`](Hooks::authorize_delivery) and left unchanged
    /// by [`rewrite_delivery`](Hooks::rewrite_delivery). The proxy asks at each read of a
    /// connected client: while the answer is yes it checks PUBLISH frames and their
    /// acknowledgements and passes them on as they came, without calling those three
    /// hooks. The default, no, is always correct; yes is only a saving.
    fn passes_messages(&mut self, client: &ClientInfo<'_>) -> bool {
        let _ = client;
        false
    }

    /// A connection was accepted.
    fn on_connected(&mut self, client: &ClientInfo<'_>, session_present: bool) {
        let _ = (client, session_present);
    }

    /// A connection ended.
    fn on_disconnected(&mut self, client: &ClientInfo<'_>, info: &CloseInfo) {
        let _ = (client, info);
    }

    /// A subscription was made (after authorization).
    fn on_subscribed(&mut self, client: &ClientInfo<'_>, filter: &str, granted: ReasonCode) {
        let _ = (client, filter, granted);
    }

    /// A subscription was removed by UNSUBSCRIBE.
    fn on_unsubscribed(&mut self, client: &ClientInfo<'_>, filter: &str) {
        let _ = (client, filter);
    }

    /// A message was accepted from a client (or the inline client) and routed.
    fn on_published(
        &mut self,
        client: Option<&ClientInfo<'_>>,
        message: &Message,
        receivers: usize,
    ) {
        let _ = (client, message, receivers);
    }

    /// A will message is being published.
    fn on_will(&mut self, client_id: &str, message: &Message) {
        let _ = (client_id, message);
    }

    /// A detached session expired and was removed.
    fn on_session_expired(&mut self, client_id: &str) {
        let _ = client_id;
    }

    /// Whether [`on_packet`](Hooks::on_packet) wants to see every packet. Asked once, when
    /// the broker is built: while it answers false (the default), packets are neither kept
    /// nor decoded a second time for the hook, so tracing costs nothing unless it is used.
    fn observes_packets(&self) -> bool {
        false
    }

    /// Every packet of a client's connection, both ways: each one the server connection
    /// decodes (PINGREQ, PUBACK, PUBREL, DISCONNECT as much as PUBLISH), in order, and each
    /// one it encodes, when the broker hands it to the transport (after the store made
    /// what it depends on durable). `frame` is the packet's bytes on the wire (inside any
    /// TLS or WebSocket framing). Called only when
    /// [`observes_packets`](Hooks::observes_packets) says so; for logging and metering,
    /// not for decisions, which the other hooks make. [`describe_packet`] gives one line
    /// per packet. The broker calls it; the proxy traces its clients' packets its own way
    /// ([`PipeEvent::Trace`](crate::proxy::PipeEvent::Trace)).
    fn on_packet(
        &mut self,
        client: &ClientInfo<'_>,
        direction: PacketDirection,
        packet: &Packet<'_>,
        frame: &[u8],
    ) {
        let _ = (client, direction, packet, frame);
    }
}

/// One line for a trace: the packet type and the fields that identify it (never the
/// payload, which may be large or private; its size instead), for example
/// `PUBACK id=7 Success` or `PUBLISH topic="a/b" qos=1 retain=false dup=false id=Some(7)
/// payload=5B`.
pub fn describe_packet(packet: &Packet<'_>) -> String {
    match packet {
        Packet::Connect(c) => format!(
            "CONNECT v{} client_id={:?} username={:?} clean_start={} keep_alive={}",
            c.protocol_version.level(),
            c.client_id,
            c.username,
            c.clean_start,
            c.keep_alive
        ),
        Packet::ConnAck(c) => format!(
            "CONNACK {:?} session_present={}",
            c.reason_code, c.session_present
        ),
        Packet::Publish(p) => format!(
            "PUBLISH topic={:?} qos={} retain={} dup={} id={:?} payload={}B",
            p.topic,
            p.qos as u8,
            p.retain,
            p.dup,
            p.packet_id.map(PacketId::get),
            p.payload.len()
        ),
        Packet::PubAck(r) => format!("PUBACK id={} {:?}", r.packet_id.get(), r.reason_code),
        Packet::PubRec(r) => format!("PUBREC id={} {:?}", r.packet_id.get(), r.reason_code),
        Packet::PubRel(r) => format!("PUBREL id={} {:?}", r.packet_id.get(), r.reason_code),
        Packet::PubComp(r) => format!("PUBCOMP id={} {:?}", r.packet_id.get(), r.reason_code),
        Packet::Subscribe(s) => {
            let filters: Vec<&str> = s.filters.iter().map(|f| f.filter).collect();
            format!("SUBSCRIBE id={} {:?}", s.packet_id.get(), filters)
        }
        Packet::SubAck(s) => format!("SUBACK id={} {:?}", s.packet_id.get(), s.reason_codes),
        Packet::Unsubscribe(u) => format!("UNSUBSCRIBE id={} {:?}", u.packet_id.get(), u.filters),
        Packet::UnsubAck(u) => format!("UNSUBACK id={} {:?}", u.packet_id.get(), u.reason_codes),
        Packet::PingReq => String::from("PINGREQ"),
        Packet::PingResp => String::from("PINGRESP"),
        Packet::Disconnect(d) => format!("DISCONNECT {:?}", d.reason_code),
        Packet::Auth(a) => format!("AUTH {:?}", a.reason_code),
    }
}

/// Hooks that allow everything and observe nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Hooks for AllowAll {
    fn passes_messages(&mut self, _: &ClientInfo<'_>) -> bool {
        true
    }
}
