//! Extension points: authenticate, authorize and rewrite what clients send, and observe
//! their lifecycle. One trait serves the broker, the proxy and embedders; every method has a
//! default that allows everything, so an implementation overrides only what it needs.

use alloc::string::String;

use bytes::Bytes;
use petrel_codec::{ProtocolVersion, ReasonCode, SubscriptionOptions};

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
}

/// Hooks that allow everything and observe nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Hooks for AllowAll {}
