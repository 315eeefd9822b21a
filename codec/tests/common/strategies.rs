//! proptest strategies for well-formed MQTT packets, shared by the round-trip and
//! cross-check tests.
//!
//! The strategies produce *owned* models ([`OwnedPacket`]): proptest needs `'static` values it
//! can clone and shrink, while a [`Packet`] borrows. [`OwnedPacket::with`] lends a model out as a
//! `Packet` built over caller slices, the way an application builds one for encoding.
//!
//! Which property and which reason code may appear where is written out again here from the
//! specification's tables (MQTT 5.0 table 2-4 and section 2.4) instead of being taken from the
//! codec, so that these strategies are an oracle independent of the code under test.

// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use petrel_codec::{
    Auth, ConnAck, Connect, Disconnect, List, Packet, PacketId, PacketType, Properties,
    ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscribeFilter, SubscriptionId, SubscriptionOptions, UnsubAck, Unsubscribe, UserProperty,
    Will, VBI_MAX,
};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use ProtocolVersion::{V311, V5};

/// The configuration of every property test: 256 cases, enough for each test file to run in a
/// few seconds in a debug build; and no regression files, since a failure prints its minimal
/// input, which belongs in a named test of its own.
pub(crate) fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Owned models

/// Every property of every packet, owned. Fields a packet may not carry stay empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OwnedProps {
    pub(crate) payload_format_indicator: Option<bool>,
    pub(crate) message_expiry_interval: Option<u32>,
    pub(crate) content_type: Option<String>,
    pub(crate) response_topic: Option<String>,
    pub(crate) correlation_data: Option<Vec<u8>>,
    pub(crate) subscription_identifiers: Vec<u32>,
    pub(crate) session_expiry_interval: Option<u32>,
    pub(crate) assigned_client_identifier: Option<String>,
    pub(crate) server_keep_alive: Option<u16>,
    pub(crate) authentication_method: Option<String>,
    pub(crate) authentication_data: Option<Vec<u8>>,
    pub(crate) request_problem_information: Option<bool>,
    pub(crate) will_delay_interval: Option<u32>,
    pub(crate) request_response_information: Option<bool>,
    pub(crate) response_information: Option<String>,
    pub(crate) server_reference: Option<String>,
    pub(crate) reason_string: Option<String>,
    pub(crate) receive_maximum: Option<u16>,
    pub(crate) topic_alias_maximum: Option<u16>,
    pub(crate) topic_alias: Option<u16>,
    pub(crate) maximum_qos: Option<QoS>,
    pub(crate) retain_available: Option<bool>,
    pub(crate) user_properties: Vec<(String, String)>,
    pub(crate) maximum_packet_size: Option<u32>,
    pub(crate) wildcard_subscription_available: Option<bool>,
    pub(crate) subscription_identifier_available: Option<bool>,
    pub(crate) shared_subscription_available: Option<bool>,
}

impl OwnedProps {
    pub(crate) fn is_empty(&self) -> bool {
        *self == OwnedProps::default()
    }

    /// The element storage a borrowed [`Properties`] needs for its lists.
    pub(crate) fn view(&self) -> PropsView<'_> {
        PropsView {
            owned: self,
            users: self
                .user_properties
                .iter()
                .map(|(name, value)| UserProperty { name, value })
                .collect(),
            ids: self
                .subscription_identifiers
                .iter()
                .map(|&id| SubscriptionId(id))
                .collect(),
        }
    }
}

/// An [`OwnedProps`] with its lists converted to the codec's element types.
pub(crate) struct PropsView<'a> {
    owned: &'a OwnedProps,
    users: Vec<UserProperty<'a>>,
    ids: Vec<SubscriptionId>,
}

impl PropsView<'_> {
    pub(crate) fn get(&self) -> Properties<'_> {
        let o = self.owned;
        // A full literal, not `..Default::default()`: a property added to the codec must be
        // added to the strategies too, or this stops compiling.
        Properties {
            payload_format_indicator: o.payload_format_indicator,
            message_expiry_interval: o.message_expiry_interval,
            content_type: o.content_type.as_deref(),
            response_topic: o.response_topic.as_deref(),
            correlation_data: o.correlation_data.as_deref(),
            subscription_identifiers: List::new(&self.ids),
            session_expiry_interval: o.session_expiry_interval,
            assigned_client_identifier: o.assigned_client_identifier.as_deref(),
            server_keep_alive: o.server_keep_alive,
            authentication_method: o.authentication_method.as_deref(),
            authentication_data: o.authentication_data.as_deref(),
            request_problem_information: o.request_problem_information,
            will_delay_interval: o.will_delay_interval,
            request_response_information: o.request_response_information,
            response_information: o.response_information.as_deref(),
            server_reference: o.server_reference.as_deref(),
            reason_string: o.reason_string.as_deref(),
            receive_maximum: o.receive_maximum,
            topic_alias_maximum: o.topic_alias_maximum,
            topic_alias: o.topic_alias,
            maximum_qos: o.maximum_qos,
            retain_available: o.retain_available,
            user_properties: List::new(&self.users),
            maximum_packet_size: o.maximum_packet_size,
            wildcard_subscription_available: o.wildcard_subscription_available,
            subscription_identifier_available: o.subscription_identifier_available,
            shared_subscription_available: o.shared_subscription_available,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedWill {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) properties: OwnedProps,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedConnect {
    pub(crate) protocol_version: ProtocolVersion,
    pub(crate) clean_start: bool,
    pub(crate) keep_alive: u16,
    pub(crate) properties: OwnedProps,
    pub(crate) client_id: String,
    pub(crate) will: Option<OwnedWill>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedConnAck {
    pub(crate) session_present: bool,
    pub(crate) reason_code: ReasonCode,
    pub(crate) properties: OwnedProps,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedPublish {
    pub(crate) dup: bool,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) topic: String,
    pub(crate) packet_id: Option<PacketId>,
    pub(crate) properties: OwnedProps,
    pub(crate) payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedPubResponse {
    pub(crate) packet_id: PacketId,
    pub(crate) reason_code: ReasonCode,
    pub(crate) properties: OwnedProps,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedSubscribe {
    pub(crate) packet_id: PacketId,
    pub(crate) properties: OwnedProps,
    pub(crate) filters: Vec<(String, SubscriptionOptions)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedSubAck {
    pub(crate) packet_id: PacketId,
    pub(crate) properties: OwnedProps,
    pub(crate) reason_codes: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedUnsubscribe {
    pub(crate) packet_id: PacketId,
    pub(crate) properties: OwnedProps,
    pub(crate) filters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedUnsubAck {
    pub(crate) packet_id: PacketId,
    pub(crate) properties: OwnedProps,
    pub(crate) reason_codes: Vec<ReasonCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedReasoned {
    pub(crate) reason_code: ReasonCode,
    pub(crate) properties: OwnedProps,
}

// Mirrors `Packet` variant for variant; a few hundred bytes per test case do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnedPacket {
    Connect(OwnedConnect),
    ConnAck(OwnedConnAck),
    Publish(OwnedPublish),
    PubAck(OwnedPubResponse),
    PubRec(OwnedPubResponse),
    PubRel(OwnedPubResponse),
    PubComp(OwnedPubResponse),
    Subscribe(OwnedSubscribe),
    SubAck(OwnedSubAck),
    Unsubscribe(OwnedUnsubscribe),
    UnsubAck(OwnedUnsubAck),
    PingReq,
    PingResp,
    Disconnect(OwnedReasoned),
    Auth(OwnedReasoned),
}

impl OwnedPacket {
    pub(crate) fn packet_type(&self) -> PacketType {
        match self {
            OwnedPacket::Connect(_) => PacketType::Connect,
            OwnedPacket::ConnAck(_) => PacketType::ConnAck,
            OwnedPacket::Publish(_) => PacketType::Publish,
            OwnedPacket::PubAck(_) => PacketType::PubAck,
            OwnedPacket::PubRec(_) => PacketType::PubRec,
            OwnedPacket::PubRel(_) => PacketType::PubRel,
            OwnedPacket::PubComp(_) => PacketType::PubComp,
            OwnedPacket::Subscribe(_) => PacketType::Subscribe,
            OwnedPacket::SubAck(_) => PacketType::SubAck,
            OwnedPacket::Unsubscribe(_) => PacketType::Unsubscribe,
            OwnedPacket::UnsubAck(_) => PacketType::UnsubAck,
            OwnedPacket::PingReq => PacketType::PingReq,
            OwnedPacket::PingResp => PacketType::PingResp,
            OwnedPacket::Disconnect(_) => PacketType::Disconnect,
            OwnedPacket::Auth(_) => PacketType::Auth,
        }
    }

    /// Lends the model out as a [`Packet`] over slices of it.
    pub(crate) fn with<R>(&self, f: impl FnOnce(Packet<'_>) -> R) -> R {
        match self {
            OwnedPacket::Connect(c) => {
                let props = c.properties.view();
                let will_props = c.will.as_ref().map(|w| w.properties.view());
                let will = c.will.as_ref().zip(will_props.as_ref()).map(|(w, p)| Will {
                    topic: &w.topic,
                    payload: &w.payload,
                    qos: w.qos,
                    retain: w.retain,
                    properties: p.get(),
                });
                f(Packet::Connect(Connect {
                    protocol_version: c.protocol_version,
                    clean_start: c.clean_start,
                    keep_alive: c.keep_alive,
                    properties: props.get(),
                    client_id: &c.client_id,
                    will,
                    username: c.username.as_deref(),
                    password: c.password.as_deref(),
                }))
            }
            OwnedPacket::ConnAck(c) => {
                let props = c.properties.view();
                f(Packet::ConnAck(ConnAck {
                    session_present: c.session_present,
                    reason_code: c.reason_code,
                    properties: props.get(),
                }))
            }
            OwnedPacket::Publish(p) => {
                let props = p.properties.view();
                f(Packet::Publish(Publish {
                    dup: p.dup,
                    qos: p.qos,
                    retain: p.retain,
                    topic: &p.topic,
                    packet_id: p.packet_id,
                    properties: props.get(),
                    payload: &p.payload,
                }))
            }
            OwnedPacket::PubAck(r)
            | OwnedPacket::PubRec(r)
            | OwnedPacket::PubRel(r)
            | OwnedPacket::PubComp(r) => {
                let props = r.properties.view();
                let response = PubResponse {
                    packet_id: r.packet_id,
                    reason_code: r.reason_code,
                    properties: props.get(),
                };
                f(match self {
                    OwnedPacket::PubAck(_) => Packet::PubAck(response),
                    OwnedPacket::PubRec(_) => Packet::PubRec(response),
                    OwnedPacket::PubRel(_) => Packet::PubRel(response),
                    _ => Packet::PubComp(response),
                })
            }
            OwnedPacket::Subscribe(s) => {
                let props = s.properties.view();
                let filters: Vec<SubscribeFilter<'_>> = s
                    .filters
                    .iter()
                    .map(|(filter, options)| SubscribeFilter {
                        filter,
                        options: *options,
                    })
                    .collect();
                f(Packet::Subscribe(Subscribe {
                    packet_id: s.packet_id,
                    properties: props.get(),
                    filters: List::new(&filters),
                }))
            }
            OwnedPacket::SubAck(s) => {
                let props = s.properties.view();
                f(Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    properties: props.get(),
                    reason_codes: List::new(&s.reason_codes),
                }))
            }
            OwnedPacket::Unsubscribe(u) => {
                let props = u.properties.view();
                let filters: Vec<&str> = u.filters.iter().map(String::as_str).collect();
                f(Packet::Unsubscribe(Unsubscribe {
                    packet_id: u.packet_id,
                    properties: props.get(),
                    filters: List::new(&filters),
                }))
            }
            OwnedPacket::UnsubAck(u) => {
                let props = u.properties.view();
                f(Packet::UnsubAck(UnsubAck {
                    packet_id: u.packet_id,
                    properties: props.get(),
                    reason_codes: List::new(&u.reason_codes),
                }))
            }
            OwnedPacket::PingReq => f(Packet::PingReq),
            OwnedPacket::PingResp => f(Packet::PingResp),
            OwnedPacket::Disconnect(d) => {
                let props = d.properties.view();
                f(Packet::Disconnect(Disconnect {
                    reason_code: d.reason_code,
                    properties: props.get(),
                }))
            }
            OwnedPacket::Auth(a) => {
                let props = a.properties.view();
                f(Packet::Auth(Auth {
                    reason_code: a.reason_code,
                    properties: props.get(),
                }))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strings, topics, binary data

/// A character allowed in an MQTT UTF-8 string: anything but U+0000 [MQTT-1.5.4-2] (a Rust
/// `char` is never a surrogate). Mostly ASCII, with multi-byte characters and U+FEFF, which
/// receivers must not strip [MQTT-1.5.4-3].
pub(crate) fn text_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => prop::char::range(' ', '~'),
        2 => prop::sample::select(vec!['é', 'ü', 'ß', '日', '本', '€', '𝄞', '\u{FEFF}', '\u{7F}']),
        1 => any::<char>(),
    ]
    .prop_filter("U+0000 is not allowed in MQTT strings", |&c| c != '\0')
}

/// Any MQTT UTF-8 string, empty included.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(text_char(), 0..12).prop_map(String::from_iter)
}

/// Binary data of up to `max` bytes.
pub(crate) fn binary(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

/// A message payload: usually short, now and then long enough for a three-byte remaining
/// length (16,384 bytes and more).
pub(crate) fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => prop::collection::vec(any::<u8>(), 0..300),
        1 => (any::<u8>(), 16_380usize..16_500).prop_map(|(byte, len)| vec![byte; len]),
    ]
}

/// A character of a topic level: no separator, no wildcard.
fn level_char() -> impl Strategy<Value = char> {
    text_char().prop_filter("not a separator or wildcard", |&c| {
        !matches!(c, '/' | '+' | '#')
    })
}

/// One topic level; it may be empty ("a//b" has an empty middle level).
fn topic_level() -> impl Strategy<Value = String> {
    prop::collection::vec(level_char(), 0..6).prop_map(String::from_iter)
}

/// A topic name: non-empty, no wildcard [MQTT-4.7.3-1], [MQTT-3.3.2-2].
pub(crate) fn topic_name() -> impl Strategy<Value = String> {
    let samples = prop::sample::select(vec![
        "é/ü/日本",
        "$SYS/broker/clients/connected",
        "$SYS",
        "/",
        "//",
        "a//b",
        "/finance",
        "sport/tennis/player1",
        " ",
        "\u{FEFF}",
    ])
    .prop_map(String::from);
    let generated = (
        prop::option::of(prop::sample::select(vec!["$SYS", "$", "$internal"])),
        prop::collection::vec(topic_level(), 1..5),
    )
        .prop_map(|(dollar, levels)| {
            let mut all: Vec<String> = dollar.into_iter().map(String::from).collect();
            all.extend(levels);
            all.join("/")
        })
        .prop_filter("a topic name is never empty", |t| !t.is_empty());
    prop_oneof![1 => samples, 4 => generated]
}

/// A topic filter that is not a shared subscription: `+` as whole levels, `#` only as the
/// whole last level [MQTT-4.7.1-2], [MQTT-4.7.1-3].
pub(crate) fn plain_filter() -> impl Strategy<Value = String> {
    let samples = prop::sample::select(vec![
        "#",
        "+",
        "+/+",
        "/+",
        "sport/#",
        "sport/tennis/+",
        "+/tennis/#",
        "$SYS/#",
        "é/+/ü",
        "a//b",
        "sport/",
    ])
    .prop_map(String::from);
    let level = prop_oneof![3 => topic_level(), 1 => Just("+".to_string())];
    let generated = (prop::collection::vec(level, 0..5), any::<bool>())
        .prop_map(|(levels, hash)| {
            if levels.is_empty() {
                "#".to_string()
            } else if hash {
                format!("{}/#", levels.join("/"))
            } else {
                levels.join("/")
            }
        })
        // "$share/…" would make it a shared filter, with a grammar of its own.
        .prop_filter("non-empty, not shared", |f| {
            !f.is_empty() && !f.starts_with("$share/")
        });
    prop_oneof![1 => samples, 4 => generated]
}

/// A shared subscription filter: `$share/{name}/{filter}` with a non-empty share name free of
/// `/`, `+` and `#` [MQTT-4.8.2-1], [MQTT-4.8.2-2].
pub(crate) fn shared_filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(level_char(), 1..6).prop_map(String::from_iter),
        plain_filter(),
    )
        .prop_map(|(group, filter)| format!("$share/{group}/{filter}"))
}

/// Any valid topic filter, shared ones included.
pub(crate) fn topic_filter() -> impl Strategy<Value = String> {
    prop_oneof![4 => plain_filter(), 1 => shared_filter()]
}

/// A client identifier: the 3.1.1 "safe" form, or any string (empty asks for one).
pub(crate) fn client_id() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9a-zA-Z]{1,23}", Just(String::new()), text(),]
}

pub(crate) fn qos() -> impl Strategy<Value = QoS> {
    prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

pub(crate) fn packet_id() -> impl Strategy<Value = PacketId> {
    prop_oneof![
        prop::sample::select(vec![1u16, 2, 255, 256, u16::MAX]),
        1..=u16::MAX,
    ]
    .prop_map(|id| PacketId::new(id).expect("the range excludes zero"))
}

/// A subscription identifier, 1 to 268,435,455, with the variable byte integer boundaries
/// well represented.
pub(crate) fn subscription_identifier() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(vec![
            1u32, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VBI_MAX
        ]),
        1..=VBI_MAX,
    ]
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Where a property block stands; each place allows its own properties (MQTT 5.0 table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

fn maybe<T, S>(allowed: bool, strategy: S) -> BoxedStrategy<Option<T>>
where
    T: std::fmt::Debug + Clone + 'static,
    S: Strategy<Value = T> + 'static,
{
    if allowed {
        prop::option::of(strategy).boxed()
    } else {
        Just(None).boxed()
    }
}

/// A random subset of the properties `place` allows, each with a valid value.
pub(crate) fn properties(place: Place) -> BoxedStrategy<OwnedProps> {
    use Place as P;
    let at = |places: &[Place]| places.contains(&place);
    let message = at(&[P::Publish, P::Will]);
    let connack = place == P::ConnAck;
    let reason_string = at(&[
        P::ConnAck,
        P::PubAck,
        P::PubRec,
        P::PubRel,
        P::PubComp,
        P::SubAck,
        P::UnsubAck,
        P::Disconnect,
        P::Auth,
    ]);
    let limits = at(&[P::Connect, P::ConnAck]);
    let auth = at(&[P::Connect, P::ConnAck, P::Auth]);
    let subscription_ids = match place {
        // A server forwards one identifier per matching subscription.
        P::Publish => prop::collection::vec(subscription_identifier(), 0..=4).boxed(),
        // A SUBSCRIBE carries at most one.
        P::Subscribe => prop::collection::vec(subscription_identifier(), 0..=1).boxed(),
        _ => Just(Vec::new()).boxed(),
    };
    let nonzero_u16 = || 1..=u16::MAX;
    let messages = (
        maybe(message, any::<bool>()),
        maybe(message, any::<u32>()),
        maybe(message, text()),
        // [MQTT-3.3.2-14]: a response topic is a topic name.
        maybe(message, topic_name()),
        maybe(message, binary(16)),
        subscription_ids,
        maybe(at(&[P::Connect, P::ConnAck, P::Disconnect]), any::<u32>()),
        maybe(connack, client_id()),
        maybe(connack, any::<u16>()),
    );
    let sessions = (
        maybe(auth, text()),
        maybe(auth, binary(16)),
        maybe(place == P::Connect, any::<bool>()),
        maybe(place == P::Will, any::<u32>()),
        maybe(place == P::Connect, any::<bool>()),
        maybe(connack, text()),
        maybe(at(&[P::ConnAck, P::Disconnect]), text()),
        maybe(reason_string, text()),
        maybe(limits, nonzero_u16()),
    );
    let capabilities = (
        maybe(limits, any::<u16>()),
        maybe(place == P::Publish, nonzero_u16()),
        maybe(
            connack,
            prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce]),
        ),
        maybe(connack, any::<bool>()),
        prop::collection::vec((text(), text()), 0..=4),
        maybe(limits, 1..=u32::MAX),
        maybe(connack, any::<bool>()),
        maybe(connack, any::<bool>()),
        maybe(connack, any::<bool>()),
    );
    (messages, sessions, capabilities)
        .prop_map(move |(m, s, c)| {
            let mut props = OwnedProps {
                payload_format_indicator: m.0,
                message_expiry_interval: m.1,
                content_type: m.2,
                response_topic: m.3,
                correlation_data: m.4,
                subscription_identifiers: m.5,
                session_expiry_interval: m.6,
                assigned_client_identifier: m.7,
                server_keep_alive: m.8,
                authentication_method: s.0,
                authentication_data: s.1,
                request_problem_information: s.2,
                will_delay_interval: s.3,
                request_response_information: s.4,
                response_information: s.5,
                server_reference: s.6,
                reason_string: s.7,
                receive_maximum: s.8,
                topic_alias_maximum: c.0,
                topic_alias: c.1,
                maximum_qos: c.2,
                retain_available: c.3,
                user_properties: c.4,
                maximum_packet_size: c.5,
                wildcard_subscription_available: c.6,
                subscription_identifier_available: c.7,
                shared_subscription_available: c.8,
            };
            // Authentication data means nothing without its method; AUTH must always name
            // the method (MQTT 5.0 section 3.15.2.2.2).
            if props.authentication_method.is_none()
                && (props.authentication_data.is_some() || place == P::Auth)
            {
                props.authentication_method = Some("SCRAM-SHA-256".to_string());
            }
            props
        })
        .boxed()
}

fn properties_for(version: ProtocolVersion, place: Place) -> BoxedStrategy<OwnedProps> {
    match version {
        V5 => properties(place),
        V311 => Just(OwnedProps::default()).boxed(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reason codes (MQTT 5.0 section 2.4, and the 3.1.1 return codes they translate to)

pub(crate) const CONNACK_CODES: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::UnspecifiedError,
    ReasonCode::MalformedPacket,
    ReasonCode::ProtocolError,
    ReasonCode::ImplementationSpecificError,
    ReasonCode::UnsupportedProtocolVersion,
    ReasonCode::ClientIdentifierNotValid,
    ReasonCode::BadUserNameOrPassword,
    ReasonCode::NotAuthorized,
    ReasonCode::ServerUnavailable,
    ReasonCode::ServerBusy,
    ReasonCode::Banned,
    ReasonCode::BadAuthenticationMethod,
    ReasonCode::TopicNameInvalid,
    ReasonCode::PacketTooLarge,
    ReasonCode::QuotaExceeded,
    ReasonCode::PayloadFormatInvalid,
    ReasonCode::RetainNotSupported,
    ReasonCode::QoSNotSupported,
    ReasonCode::UseAnotherServer,
    ReasonCode::ServerMoved,
    ReasonCode::ConnectionRateExceeded,
];

/// The 3.1.1 CONNACK return codes 0 to 5, as the reason codes they are carried as.
pub(crate) const CONNACK_CODES_V311: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::UnsupportedProtocolVersion,
    ReasonCode::ClientIdentifierNotValid,
    ReasonCode::ServerUnavailable,
    ReasonCode::BadUserNameOrPassword,
    ReasonCode::NotAuthorized,
];

/// PUBACK and PUBREC.
pub(crate) const PUBACK_CODES: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::NoMatchingSubscribers,
    ReasonCode::UnspecifiedError,
    ReasonCode::ImplementationSpecificError,
    ReasonCode::NotAuthorized,
    ReasonCode::TopicNameInvalid,
    ReasonCode::PacketIdentifierInUse,
    ReasonCode::QuotaExceeded,
    ReasonCode::PayloadFormatInvalid,
];

/// PUBREL and PUBCOMP.
pub(crate) const PUBREL_CODES: &[ReasonCode] =
    &[ReasonCode::Success, ReasonCode::PacketIdentifierNotFound];

pub(crate) const SUBACK_CODES: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::GrantedQoS1,
    ReasonCode::GrantedQoS2,
    ReasonCode::UnspecifiedError,
    ReasonCode::ImplementationSpecificError,
    ReasonCode::NotAuthorized,
    ReasonCode::TopicFilterInvalid,
    ReasonCode::PacketIdentifierInUse,
    ReasonCode::QuotaExceeded,
    ReasonCode::SharedSubscriptionsNotSupported,
    ReasonCode::SubscriptionIdentifiersNotSupported,
    ReasonCode::WildcardSubscriptionsNotSupported,
];

/// The 3.1.1 SUBACK return codes 0, 1, 2 and 0x80.
pub(crate) const SUBACK_CODES_V311: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::GrantedQoS1,
    ReasonCode::GrantedQoS2,
    ReasonCode::UnspecifiedError,
];

pub(crate) const UNSUBACK_CODES: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::NoSubscriptionExisted,
    ReasonCode::UnspecifiedError,
    ReasonCode::ImplementationSpecificError,
    ReasonCode::NotAuthorized,
    ReasonCode::TopicFilterInvalid,
    ReasonCode::PacketIdentifierInUse,
];

pub(crate) const DISCONNECT_CODES: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::DisconnectWithWillMessage,
    ReasonCode::UnspecifiedError,
    ReasonCode::MalformedPacket,
    ReasonCode::ProtocolError,
    ReasonCode::ImplementationSpecificError,
    ReasonCode::NotAuthorized,
    ReasonCode::ServerBusy,
    ReasonCode::ServerShuttingDown,
    ReasonCode::KeepAliveTimeout,
    ReasonCode::SessionTakenOver,
    ReasonCode::TopicFilterInvalid,
    ReasonCode::TopicNameInvalid,
    ReasonCode::ReceiveMaximumExceeded,
    ReasonCode::TopicAliasInvalid,
    ReasonCode::PacketTooLarge,
    ReasonCode::MessageRateTooHigh,
    ReasonCode::QuotaExceeded,
    ReasonCode::AdministrativeAction,
    ReasonCode::PayloadFormatInvalid,
    ReasonCode::RetainNotSupported,
    ReasonCode::QoSNotSupported,
    ReasonCode::UseAnotherServer,
    ReasonCode::ServerMoved,
    ReasonCode::SharedSubscriptionsNotSupported,
    ReasonCode::ConnectionRateExceeded,
    ReasonCode::MaximumConnectTime,
    ReasonCode::SubscriptionIdentifiersNotSupported,
    ReasonCode::WildcardSubscriptionsNotSupported,
];

pub(crate) const AUTH_CODES: &[ReasonCode] = &[
    ReasonCode::Success,
    ReasonCode::ContinueAuthentication,
    ReasonCode::ReAuthenticate,
];

fn code(codes: &'static [ReasonCode]) -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(codes)
}

// ---------------------------------------------------------------------------------------------
// Packets

pub(crate) fn will(version: ProtocolVersion) -> impl Strategy<Value = OwnedWill> {
    (
        topic_name(),
        binary(32),
        qos(),
        any::<bool>(),
        properties_for(version, Place::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| OwnedWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

pub(crate) fn connect(version: ProtocolVersion) -> impl Strategy<Value = OwnedPacket> {
    (
        any::<bool>(),
        any::<u16>(),
        properties_for(version, Place::Connect),
        client_id(),
        prop::option::of(will(version)),
        prop::option::of(text()),
        prop::option::of(binary(16)),
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
                // 3.1.1 forbids a password without a user name [MQTT-3.1.2-22]; 5.0 allows it.
                let password = match (version, &username) {
                    (V311, None) => None,
                    _ => password,
                };
                OwnedPacket::Connect(OwnedConnect {
                    protocol_version: version,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                })
            },
        )
}

pub(crate) fn connack(version: ProtocolVersion) -> impl Strategy<Value = OwnedPacket> {
    let codes = match version {
        V5 => CONNACK_CODES,
        V311 => CONNACK_CODES_V311,
    };
    (
        any::<bool>(),
        code(codes),
        properties_for(version, Place::ConnAck),
    )
        .prop_map(|(session_present, reason_code, properties)| {
            OwnedPacket::ConnAck(OwnedConnAck {
                // A refusal never has a session [MQTT-3.2.2-6] (3.1.1: [MQTT-3.2.2-4]).
                session_present: session_present && !reason_code.is_error(),
                reason_code,
                properties,
            })
        })
}

pub(crate) fn publish(version: ProtocolVersion) -> impl Strategy<Value = OwnedPacket> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        properties_for(version, Place::Publish),
        payload(),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, id, mut properties, payload, aliased)| {
                // In 5.0 the topic may be empty, but only when a topic alias stands for it
                // (section 3.3.2.3.4).
                let topic = if version == V5 && aliased {
                    properties.topic_alias.get_or_insert(1);
                    String::new()
                } else {
                    topic
                };
                let has_id = qos != QoS::AtMostOnce;
                OwnedPacket::Publish(OwnedPublish {
                    // DUP is only for QoS 1 and 2 [MQTT-3.3.1-2].
                    dup: dup && has_id,
                    qos,
                    retain,
                    topic,
                    packet_id: has_id.then_some(id),
                    properties,
                    payload,
                })
            },
        )
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP, as `kind` says.
pub(crate) fn pub_response(
    version: ProtocolVersion,
    kind: PacketType,
) -> impl Strategy<Value = OwnedPacket> {
    let (codes, place) = match kind {
        PacketType::PubAck => (PUBACK_CODES, Place::PubAck),
        PacketType::PubRec => (PUBACK_CODES, Place::PubRec),
        PacketType::PubRel => (PUBREL_CODES, Place::PubRel),
        PacketType::PubComp => (PUBREL_CODES, Place::PubComp),
        other => panic!("{other:?} is not a publish response"),
    };
    let reason = match version {
        V5 => code(codes).boxed(),
        V311 => Just(ReasonCode::Success).boxed(),
    };
    (packet_id(), reason, properties_for(version, place)).prop_map(
        move |(packet_id, reason_code, properties)| {
            let r = OwnedPubResponse {
                packet_id,
                reason_code,
                properties,
            };
            match kind {
                PacketType::PubAck => OwnedPacket::PubAck(r),
                PacketType::PubRec => OwnedPacket::PubRec(r),
                PacketType::PubRel => OwnedPacket::PubRel(r),
                _ => OwnedPacket::PubComp(r),
            }
        },
    )
}

fn subscription_options(
    version: ProtocolVersion,
    shared: bool,
) -> BoxedStrategy<SubscriptionOptions> {
    match version {
        V311 => qos().prop_map(SubscriptionOptions::qos).boxed(),
        V5 => (
            qos(),
            any::<bool>(),
            any::<bool>(),
            prop::sample::select(vec![
                RetainHandling::SendOnSubscribe,
                RetainHandling::SendIfNew,
                RetainHandling::DoNotSend,
            ]),
        )
            .prop_map(
                move |(qos, no_local, retain_as_published, retain_handling)| {
                    SubscriptionOptions {
                        qos,
                        // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
                        no_local: no_local && !shared,
                        retain_as_published,
                        retain_handling,
                    }
                },
            )
            .boxed(),
    }
}

fn subscribe_filter(
    version: ProtocolVersion,
) -> impl Strategy<Value = (String, SubscriptionOptions)> {
    prop_oneof![4 => Just(false), 1 => Just(true)].prop_flat_map(move |shared| {
        let filter = if shared {
            shared_filter().boxed()
        } else {
            plain_filter().boxed()
        };
        (filter, subscription_options(version, shared))
    })
}

pub(crate) fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = OwnedPacket> {
    (
        packet_id(),
        properties_for(version, Place::Subscribe),
        prop::collection::vec(subscribe_filter(version), 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            OwnedPacket::Subscribe(OwnedSubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

pub(crate) fn suback(version: ProtocolVersion) -> impl Strategy<Value = OwnedPacket> {
    let codes = match version {
        V5 => SUBACK_CODES,
        V311 => SUBACK_CODES_V311,
    };
    (
        packet_id(),
        properties_for(version, Place::SubAck),
        prop::collection::vec(code(codes), 1..6),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            OwnedPacket::SubAck(OwnedSubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
}

pub(crate) fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = OwnedPacket> {
    (
        packet_id(),
        properties_for(version, Place::Unsubscribe),
        prop::collection::vec(topic_filter(), 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            OwnedPacket::Unsubscribe(OwnedUnsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

pub(crate) fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = OwnedPacket> {
    // 3.1.1 UNSUBACK carries no codes at all.
    let codes = match version {
        V5 => prop::collection::vec(code(UNSUBACK_CODES), 1..6).boxed(),
        V311 => Just(Vec::new()).boxed(),
    };
    (packet_id(), properties_for(version, Place::UnsubAck), codes).prop_map(
        |(packet_id, properties, reason_codes)| {
            OwnedPacket::UnsubAck(OwnedUnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        },
    )
}

pub(crate) fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = OwnedPacket> {
    let reason = match version {
        V5 => code(DISCONNECT_CODES).boxed(),
        V311 => Just(ReasonCode::Success).boxed(),
    };
    (reason, properties_for(version, Place::Disconnect)).prop_map(|(reason_code, properties)| {
        OwnedPacket::Disconnect(OwnedReasoned {
            reason_code,
            properties,
        })
    })
}

/// AUTH exists in 5.0 only.
pub(crate) fn auth() -> impl Strategy<Value = OwnedPacket> {
    prop_oneof![
        // The bare form: remaining length 0 means success without properties.
        1 => Just(OwnedReasoned {
            reason_code: ReasonCode::Success,
            properties: OwnedProps::default(),
        }),
        4 => (code(AUTH_CODES), properties(Place::Auth)).prop_map(|(reason_code, properties)| {
            OwnedReasoned {
                reason_code,
                properties,
            }
        }),
    ]
    .prop_map(OwnedPacket::Auth)
}

/// Any packet that exists in `version`.
pub(crate) fn any_packet(version: ProtocolVersion) -> BoxedStrategy<OwnedPacket> {
    let common = prop_oneof![
        connect(version),
        connack(version),
        publish(version),
        pub_response(version, PacketType::PubAck),
        pub_response(version, PacketType::PubRec),
        pub_response(version, PacketType::PubRel),
        pub_response(version, PacketType::PubComp),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(OwnedPacket::PingReq),
        Just(OwnedPacket::PingResp),
        disconnect(version),
    ];
    match version {
        V5 => prop_oneof![14 => common, 1 => auth()].boxed(),
        V311 => common.boxed(),
    }
}
