//! MQTT 5.0 properties (section 2.2.2): one struct for every packet, with the rules of which
//! property may appear where, and how often, enforced on decode and on encode.

#[cfg(feature = "v5")]
use nom::bytes::complete::take;
#[cfg(feature = "v5")]
use nom::Parser;

use crate::error::{DecodeError, EncodeError};
#[cfg(feature = "v5")]
use crate::list::{List, ListItem};
#[cfg(feature = "v5")]
use crate::topic::validate_topic_name;
use crate::types::PacketType;
#[cfg(feature = "v5")]
use crate::types::QoS;
#[cfg(feature = "v5")]
use crate::wire::VBI_MAX;
use crate::wire::{self, fail, PResult, Writer};

macro_rules! property_ids {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// A property identifier (MQTT 5.0 table 2-4).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[repr(u8)]
        pub enum PropertyId {
            $($(#[$doc])* $name = $value,)*
        }

        impl PropertyId {
            /// Every property identifier, in ascending order.
            pub const ALL: &'static [PropertyId] = &[$(PropertyId::$name,)*];

            /// The property with this identifier, if the specification defines one.
            pub const fn from_u32(value: u32) -> Option<PropertyId> {
                match value {
                    $($value => Some(PropertyId::$name),)*
                    _ => None,
                }
            }
        }
    };
}

property_ids! {
    /// Byte: 1 if the payload is UTF-8 text.
    PayloadFormatIndicator = 0x01,
    /// Four-byte integer: lifetime of the message in seconds.
    MessageExpiryInterval = 0x02,
    /// UTF-8 string: the payload's content type.
    ContentType = 0x03,
    /// UTF-8 string: topic name for a response.
    ResponseTopic = 0x08,
    /// Binary data: correlates a response with its request.
    CorrelationData = 0x09,
    /// Variable byte integer: identifies the subscription(s) a message matched.
    SubscriptionIdentifier = 0x0B,
    /// Four-byte integer: seconds the session outlives the connection.
    SessionExpiryInterval = 0x11,
    /// UTF-8 string: client identifier the server assigned.
    AssignedClientIdentifier = 0x12,
    /// Two-byte integer: keep-alive the server imposes.
    ServerKeepAlive = 0x13,
    /// UTF-8 string: name of the extended authentication method.
    AuthenticationMethod = 0x15,
    /// Binary data: authentication exchange data.
    AuthenticationData = 0x16,
    /// Byte: whether reason strings and user properties may be sent on failures.
    RequestProblemInformation = 0x17,
    /// Four-byte integer: seconds to wait before publishing the will.
    WillDelayInterval = 0x18,
    /// Byte: whether the client wants response information in CONNACK.
    RequestResponseInformation = 0x19,
    /// UTF-8 string: basis for response topics.
    ResponseInformation = 0x1A,
    /// UTF-8 string: another server to use.
    ServerReference = 0x1C,
    /// UTF-8 string: human-readable diagnostic.
    ReasonString = 0x1F,
    /// Two-byte integer: QoS 1/2 publications the sender accepts concurrently.
    ReceiveMaximum = 0x21,
    /// Two-byte integer: highest topic alias the sender accepts.
    TopicAliasMaximum = 0x22,
    /// Two-byte integer: a topic alias.
    TopicAlias = 0x23,
    /// Byte: the highest QoS the server supports (0 or 1; absent means 2).
    MaximumQoS = 0x24,
    /// Byte: whether the server supports retained messages.
    RetainAvailable = 0x25,
    /// UTF-8 string pair: an application-defined name and value.
    UserProperty = 0x26,
    /// Four-byte integer: the largest packet the sender accepts.
    MaximumPacketSize = 0x27,
    /// Byte: whether the server supports wildcard subscriptions.
    WildcardSubscriptionAvailable = 0x28,
    /// Byte: whether the server supports subscription identifiers.
    SubscriptionIdentifierAvailable = 0x29,
    /// Byte: whether the server supports shared subscriptions.
    SharedSubscriptionAvailable = 0x2A,
}

/// Where a property block stands; each place allows a different set (MQTT 5.0 table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    PubResponse(PacketType),
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

#[cfg(feature = "v5")]
impl PropertyContext {
    fn packet_type(self) -> PacketType {
        match self {
            PropertyContext::Connect | PropertyContext::Will => PacketType::Connect,
            PropertyContext::ConnAck => PacketType::ConnAck,
            PropertyContext::Publish => PacketType::Publish,
            PropertyContext::PubResponse(t) => t,
            PropertyContext::Subscribe => PacketType::Subscribe,
            PropertyContext::SubAck => PacketType::SubAck,
            PropertyContext::Unsubscribe => PacketType::Unsubscribe,
            PropertyContext::UnsubAck => PacketType::UnsubAck,
            PropertyContext::Disconnect => PacketType::Disconnect,
            PropertyContext::Auth => PacketType::Auth,
        }
    }

    /// This place's bit in [`Spec::places`].
    const fn bit(self) -> u16 {
        1 << match self {
            PropertyContext::Connect => 0,
            PropertyContext::Will => 1,
            PropertyContext::ConnAck => 2,
            PropertyContext::Publish => 3,
            PropertyContext::PubResponse(_) => 4,
            PropertyContext::Subscribe => 5,
            PropertyContext::SubAck => 6,
            PropertyContext::Unsubscribe => 7,
            PropertyContext::UnsubAck => 8,
            PropertyContext::Disconnect => 9,
            PropertyContext::Auth => 10,
        }
    }

    fn allows(self, id: PropertyId) -> bool {
        id.spec().places & self.bit() != 0
    }

    /// User properties may repeat anywhere; subscription identifiers only in PUBLISH, where
    /// a server forwards one for each matching subscription.
    fn allows_repeat(self, id: PropertyId) -> bool {
        id == PropertyId::UserProperty
            || (id == PropertyId::SubscriptionIdentifier && self == PropertyContext::Publish)
    }
}

/// How a property's value stands on the wire, and which values of it are valid.
#[cfg(feature = "v5")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A byte that is 0 or 1: the yes/no properties, and Maximum QoS.
    Flag,
    /// A two-byte integer.
    Two,
    /// A two-byte integer other than 0.
    NonZeroTwo,
    /// A four-byte integer.
    Four,
    /// A four-byte integer other than 0.
    NonZeroFour,
    /// A variable byte integer other than 0 (the subscription identifier).
    NonZeroVbi,
    /// A UTF-8 string.
    Str,
    /// Binary data.
    Bin,
    /// A UTF-8 string pair.
    Pair,
}

/// One row of table 2-4: a property's value kind and the places it may appear in.
///
/// The decoder reads every property through this row instead of through one match arm per
/// property, which keeps the code a 5.0 client links small (a firmware image's largest
/// single cost was the per-property decoding).
#[cfg(feature = "v5")]
#[derive(Clone, Copy)]
struct Spec {
    kind: Kind,
    /// One bit per [`PropertyContext`], as [`PropertyContext::bit`] numbers them.
    places: u16,
}

#[cfg(feature = "v5")]
impl PropertyId {
    /// Its row of table 2-4. Every arm is a constant, so this compiles to a table lookup.
    const fn spec(self) -> Spec {
        use Kind as K;
        use PropertyId as P;
        const CONNECT: u16 = 1 << 0;
        const WILL: u16 = 1 << 1;
        const CONNACK: u16 = 1 << 2;
        const PUBLISH: u16 = 1 << 3;
        const PUB_RESPONSE: u16 = 1 << 4;
        const SUBSCRIBE: u16 = 1 << 5;
        const SUBACK: u16 = 1 << 6;
        const UNSUBACK: u16 = 1 << 8;
        const DISCONNECT: u16 = 1 << 9;
        const AUTH: u16 = 1 << 10;
        const ANYWHERE: u16 = (1 << 11) - 1;
        const MESSAGE: u16 = PUBLISH | WILL;
        let (kind, places) = match self {
            P::PayloadFormatIndicator => (K::Flag, MESSAGE),
            P::MessageExpiryInterval => (K::Four, MESSAGE),
            P::ContentType | P::ResponseTopic => (K::Str, MESSAGE),
            P::CorrelationData => (K::Bin, MESSAGE),
            P::SubscriptionIdentifier => (K::NonZeroVbi, PUBLISH | SUBSCRIBE),
            P::SessionExpiryInterval => (K::Four, CONNECT | CONNACK | DISCONNECT),
            P::AssignedClientIdentifier | P::ResponseInformation => (K::Str, CONNACK),
            P::ServerKeepAlive => (K::Two, CONNACK),
            P::AuthenticationMethod => (K::Str, CONNECT | CONNACK | AUTH),
            P::AuthenticationData => (K::Bin, CONNECT | CONNACK | AUTH),
            P::RequestProblemInformation | P::RequestResponseInformation => (K::Flag, CONNECT),
            P::WillDelayInterval => (K::Four, WILL),
            P::ServerReference => (K::Str, CONNACK | DISCONNECT),
            P::ReasonString => (
                K::Str,
                CONNACK | PUB_RESPONSE | SUBACK | UNSUBACK | DISCONNECT | AUTH,
            ),
            P::ReceiveMaximum => (K::NonZeroTwo, CONNECT | CONNACK),
            P::TopicAliasMaximum => (K::Two, CONNECT | CONNACK),
            P::TopicAlias => (K::NonZeroTwo, PUBLISH),
            P::MaximumQoS
            | P::RetainAvailable
            | P::WildcardSubscriptionAvailable
            | P::SubscriptionIdentifierAvailable
            | P::SharedSubscriptionAvailable => (K::Flag, CONNACK),
            P::UserProperty => (K::Pair, ANYWHERE),
            P::MaximumPacketSize => (K::NonZeroFour, CONNECT | CONNACK),
        };
        Spec { kind, places }
    }
}

/// A user property: an application-defined name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UserProperty<'a> {
    /// The name.
    pub name: &'a str,
    /// The value.
    pub value: &'a str,
}

/// A subscription identifier: 1 to 268,435,455.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubscriptionId(pub u32);

/// The properties of one packet. Fields a packet may not carry must stay `None` (or empty);
/// the encoder refuses them and the decoder never sets them.
///
/// Over MQTT 3.1.1 there are no properties: the decoder leaves this empty and the encoder
/// ignores it, which is what a broker forwarding a 5.0 message to a 3.1.1 client needs.
#[cfg(feature = "v5")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Properties<'a> {
    /// PUBLISH, will: `true` if the payload is UTF-8 text.
    pub payload_format_indicator: Option<bool>,
    /// PUBLISH, will: lifetime in seconds.
    pub message_expiry_interval: Option<u32>,
    /// PUBLISH, will: content type of the payload.
    pub content_type: Option<&'a str>,
    /// PUBLISH, will: topic for the response (a topic name, no wildcards).
    pub response_topic: Option<&'a str>,
    /// PUBLISH, will: correlation data.
    pub correlation_data: Option<&'a [u8]>,
    /// PUBLISH (any number), SUBSCRIBE (at most one).
    pub subscription_identifiers: List<'a, SubscriptionId>,
    /// CONNECT, CONNACK, DISCONNECT: seconds the session outlives the connection.
    pub session_expiry_interval: Option<u32>,
    /// CONNACK: the client identifier the server assigned.
    pub assigned_client_identifier: Option<&'a str>,
    /// CONNACK: the keep-alive the server imposes.
    pub server_keep_alive: Option<u16>,
    /// CONNECT, CONNACK, AUTH: extended authentication method.
    pub authentication_method: Option<&'a str>,
    /// CONNECT, CONNACK, AUTH: extended authentication data.
    pub authentication_data: Option<&'a [u8]>,
    /// CONNECT: whether failures may carry reason strings and user properties.
    pub request_problem_information: Option<bool>,
    /// Will: seconds to wait before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// CONNECT: whether the client wants response information.
    pub request_response_information: Option<bool>,
    /// CONNACK: basis for response topics.
    pub response_information: Option<&'a str>,
    /// CONNACK, DISCONNECT: another server to use.
    pub server_reference: Option<&'a str>,
    /// Acknowledgements, DISCONNECT, AUTH: a diagnostic for humans.
    pub reason_string: Option<&'a str>,
    /// CONNECT, CONNACK: concurrent QoS 1/2 publications accepted (non-zero).
    pub receive_maximum: Option<u16>,
    /// CONNECT, CONNACK: highest topic alias accepted.
    pub topic_alias_maximum: Option<u16>,
    /// PUBLISH: topic alias (non-zero).
    pub topic_alias: Option<u16>,
    /// CONNACK: highest QoS supported (0 or 1; absent means 2).
    pub maximum_qos: Option<QoS>,
    /// CONNACK: whether retained messages are supported.
    pub retain_available: Option<bool>,
    /// Any packet: application-defined name/value pairs, in order.
    pub user_properties: List<'a, UserProperty<'a>>,
    /// CONNECT, CONNACK: largest packet accepted (non-zero).
    pub maximum_packet_size: Option<u32>,
    /// CONNACK: whether wildcard subscriptions are supported.
    pub wildcard_subscription_available: Option<bool>,
    /// CONNACK: whether subscription identifiers are supported.
    pub subscription_identifier_available: Option<bool>,
    /// CONNACK: whether shared subscriptions are supported.
    pub shared_subscription_available: Option<bool>,
}

/// The properties of one packet: none, since without the `v5` feature the codec speaks only
/// MQTT 3.1.1, which has no properties. The type stays so that packets keep their shape; it
/// takes no room, which keeps every `Packet` small on a microcontroller.
#[cfg(not(feature = "v5"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Properties<'a> {
    pub(crate) borrow: core::marker::PhantomData<&'a ()>,
}

#[cfg(all(not(feature = "v5"), feature = "defmt"))]
impl defmt::Format for Properties<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Properties")
    }
}

/// Without the `v5` feature nothing calls these on a connection's packets (they are reached
/// only when [`ProtocolVersion::is_v5`](crate::ProtocolVersion::is_v5) holds); they encode
/// and accept only the empty block, which is all this build can express.
#[cfg(not(feature = "v5"))]
impl Properties<'_> {
    /// Whether no property is set: always, in this build.
    pub fn is_empty(&self) -> bool {
        true
    }

    /// The first subscription identifier: never one, in this build.
    pub fn subscription_identifier(&self) -> Option<SubscriptionId> {
        None
    }

    /// The encoded size of the empty block: its zero length prefix.
    pub(crate) fn encoded_len(&self, _context: PropertyContext) -> Result<usize, EncodeError> {
        Ok(1)
    }

    /// Writes the empty block.
    pub(crate) fn write(
        &self,
        w: &mut Writer<'_>,
        _context: PropertyContext,
    ) -> Result<(), EncodeError> {
        w.u8(0)
    }
}

/// Reads an empty property block; a property in it is one this build does not know.
#[cfg(not(feature = "v5"))]
pub(crate) fn decode_properties<'a>(
    input: &'a [u8],
    _context: PropertyContext,
    _props: &mut Properties<'a>,
) -> PResult<'a, ()> {
    let (rest, len) = wire::vbi(input)?;
    if len == 0 {
        return Ok((rest, ()));
    }
    let (_, id) = wire::vbi(rest)?;
    fail(DecodeError::UnknownProperty(id))
}

/// A property value as it stands on the wire.
#[cfg(feature = "v5")]
#[derive(Clone, Copy)]
enum Value<'a> {
    Byte(u8),
    Two(u16),
    Four(u32),
    Vbi(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    Pair(&'a str, &'a str),
}

#[cfg(feature = "v5")]
impl Value<'_> {
    fn encoded_len(self) -> Result<usize, EncodeError> {
        Ok(match self {
            Value::Byte(_) => 1,
            Value::Two(_) => 2,
            Value::Four(_) => 4,
            Value::Vbi(v) => {
                if v > VBI_MAX {
                    return Err(EncodeError::ValueTooLarge);
                }
                wire::vbi_len(v)
            }
            Value::Str(s) => wire::field_len(s.as_bytes())?,
            Value::Bin(b) => wire::field_len(b)?,
            Value::Pair(k, v) => wire::field_len(k.as_bytes())? + wire::field_len(v.as_bytes())?,
        })
    }

    fn write(self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match self {
            Value::Byte(v) => w.u8(v),
            Value::Two(v) => w.u16(v),
            Value::Four(v) => w.u32(v),
            Value::Vbi(v) => w.vbi(v),
            Value::Str(s) => w.field(s.as_bytes()),
            Value::Bin(b) => w.field(b),
            Value::Pair(k, v) => {
                w.field(k.as_bytes())?;
                w.field(v.as_bytes())
            }
        }
    }
}

/// Reads a property block (its length, then its properties) into `props`, which must be
/// empty, and checks every rule: known identifiers, allowed in this packet, at most once
/// unless repeatable, and valid values.
///
/// The properties are written in place, into the packet being decoded, rather than
/// returned: a returned `Properties` is copied at each step up to the packet, and those
/// copies were most of a 5.0 client's stack.
#[cfg(feature = "v5")]
pub(crate) fn decode_properties<'a>(
    input: &'a [u8],
    context: PropertyContext,
    props: &mut Properties<'a>,
) -> PResult<'a, ()> {
    let (input, len) = wire::vbi(input)?;
    let (rest, block) = take(len).parse(input)?;
    match parse_block(block, context, props) {
        Ok(()) => Ok((rest, ())),
        Err(e) => fail(e),
    }
}

/// Takes `n` bytes off the front of `input`.
#[cfg(feature = "v5")]
fn take_front<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    let (head, rest) = input
        .split_at_checked(n)
        .ok_or(DecodeError::UnexpectedEnd)?;
    *input = rest;
    Ok(head)
}

/// Takes a two-byte length and that many bytes off the front of `input`: the bytes of a
/// string or of binary data.
#[cfg(feature = "v5")]
fn field<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = take_front(input, 2)?
        .iter()
        .fold(0, |n, &byte| n << 8 | usize::from(byte));
    take_front(input, len)
}

#[cfg(feature = "v5")]
fn parse_block<'a>(
    block: &'a [u8],
    context: PropertyContext,
    props: &mut Properties<'a>,
) -> Result<(), DecodeError> {
    use PropertyId as P;
    let mut seen: u64 = 0;
    let mut has_user_properties = false;
    let mut has_subscription_ids = false;
    let mut cursor = block;
    while !cursor.is_empty() {
        let (after, raw_id) = wire::finish(wire::vbi(cursor))?;
        let Some(id) = PropertyId::from_u32(raw_id) else {
            return Err(DecodeError::UnknownProperty(raw_id));
        };
        cursor = after;
        let spec = id.spec();
        // The value is read whole before any rule is checked: a property cut short is
        // malformed, whatever else is wrong with it. Read with plain slices rather than nom
        // parsers, whose results are larger than the values.
        let mut number = 0u32;
        let mut text = "";
        let mut data: &[u8] = &[];
        match spec.kind {
            Kind::NonZeroVbi => {
                let (rest, value) = wire::finish(wire::vbi(cursor))?;
                cursor = rest;
                number = value;
            }
            Kind::Str | Kind::Bin | Kind::Pair => {
                data = field(&mut cursor)?;
                if spec.kind != Kind::Bin {
                    text = wire::validate_utf8(data)?;
                }
                if spec.kind == Kind::Pair {
                    wire::validate_utf8(field(&mut cursor)?)?;
                }
            }
            Kind::Flag | Kind::Two | Kind::NonZeroTwo | Kind::Four | Kind::NonZeroFour => {
                let width = match spec.kind {
                    Kind::Flag => 1,
                    Kind::Two | Kind::NonZeroTwo => 2,
                    _ => 4,
                };
                number = take_front(&mut cursor, width)?
                    .iter()
                    .fold(0, |n, &byte| n << 8 | u32::from(byte));
            }
        }
        if spec.places & context.bit() == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                property: id,
                packet_type: context.packet_type(),
            });
        }
        let bit = 1u64 << (id as u8);
        if seen & bit != 0 && !context.allows_repeat(id) {
            return Err(DecodeError::DuplicateProperty(id));
        }
        seen |= bit;
        let valid = match spec.kind {
            Kind::Flag => number <= 1,
            Kind::NonZeroTwo | Kind::NonZeroFour | Kind::NonZeroVbi => number != 0,
            Kind::Two | Kind::Four | Kind::Str | Kind::Bin | Kind::Pair => true,
        };
        if !valid {
            return Err(if id == P::TopicAlias {
                DecodeError::ZeroTopicAlias
            } else {
                DecodeError::InvalidPropertyValue(id)
            });
        }
        let flag = number != 0;
        // Two-byte kinds were read from two bytes: the narrowing keeps every bit.
        let two = number as u16;
        match id {
            P::PayloadFormatIndicator => props.payload_format_indicator = Some(flag),
            P::MessageExpiryInterval => props.message_expiry_interval = Some(number),
            P::ContentType => props.content_type = Some(text),
            P::ResponseTopic => {
                // [MQTT-3.3.2-14]: a response topic is a topic name.
                validate_topic_name(text)?;
                props.response_topic = Some(text)
            }
            P::CorrelationData => props.correlation_data = Some(data),
            P::SubscriptionIdentifier => has_subscription_ids = true,
            P::SessionExpiryInterval => props.session_expiry_interval = Some(number),
            P::AssignedClientIdentifier => props.assigned_client_identifier = Some(text),
            P::ServerKeepAlive => props.server_keep_alive = Some(two),
            P::AuthenticationMethod => props.authentication_method = Some(text),
            P::AuthenticationData => props.authentication_data = Some(data),
            P::RequestProblemInformation => props.request_problem_information = Some(flag),
            P::WillDelayInterval => props.will_delay_interval = Some(number),
            P::RequestResponseInformation => props.request_response_information = Some(flag),
            P::ResponseInformation => props.response_information = Some(text),
            P::ServerReference => props.server_reference = Some(text),
            P::ReasonString => props.reason_string = Some(text),
            P::ReceiveMaximum => props.receive_maximum = Some(two),
            P::TopicAliasMaximum => props.topic_alias_maximum = Some(two),
            P::TopicAlias => props.topic_alias = Some(two),
            P::MaximumQoS => {
                props.maximum_qos = Some(if flag {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                })
            }
            P::RetainAvailable => props.retain_available = Some(flag),
            P::UserProperty => has_user_properties = true,
            P::MaximumPacketSize => props.maximum_packet_size = Some(number),
            P::WildcardSubscriptionAvailable => props.wildcard_subscription_available = Some(flag),
            P::SubscriptionIdentifierAvailable => {
                props.subscription_identifier_available = Some(flag)
            }
            P::SharedSubscriptionAvailable => props.shared_subscription_available = Some(flag),
        }
    }
    if props.authentication_data.is_some() && props.authentication_method.is_none() {
        return Err(DecodeError::AuthenticationDataWithoutMethod);
    }
    if has_user_properties {
        props.user_properties = List::from_wire(block);
    }
    if has_subscription_ids {
        props.subscription_identifiers = List::from_wire(block);
    }
    Ok(())
}

/// The empty set, built out of line: written inline, it is some thirty stores at each of
/// the dozen places that make one (every packet decoder, every client command), 1.5 KB of
/// a Cortex-M4 image, where a call is four bytes.
#[cfg(feature = "v5")]
impl Default for Properties<'_> {
    #[inline(never)]
    fn default() -> Self {
        crate::EMPTY_PROPERTIES
    }
}

#[cfg(feature = "v5")]
impl<'a> Properties<'a> {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        // Through `for_each` rather than comparing all 27 fields with a default, which took
        // 0.4 KB of a Cortex-M4 image.
        let mut empty = true;
        self.for_each(&mut |_, _| empty = false);
        empty
    }

    /// The first subscription identifier, the only one a SUBSCRIBE may carry.
    pub fn subscription_identifier(&self) -> Option<SubscriptionId> {
        self.subscription_identifiers.iter().next()
    }

    /// Calls `f` with every property set, in ascending identifier order (the canonical order
    /// the encoder writes); repeated properties in their own order.
    ///
    /// `f` is a trait object, not a generic: `block_len` and `write` then share one copy of
    /// this long function instead of each inlining its own (1.3 KB of a Cortex-M4 image),
    /// for one indirect call per property present. It returns nothing, and a caller that
    /// can fail keeps its first error itself: a result checked after each of the 27 calls
    /// took 0.3 KB more.
    #[inline(never)]
    fn for_each(&self, f: &mut dyn FnMut(PropertyId, Value<'a>)) {
        use PropertyId as P;
        let byte = |b: bool| Value::Byte(b as u8);
        if let Some(v) = self.payload_format_indicator {
            f(P::PayloadFormatIndicator, byte(v));
        }
        if let Some(v) = self.message_expiry_interval {
            f(P::MessageExpiryInterval, Value::Four(v));
        }
        if let Some(v) = self.content_type {
            f(P::ContentType, Value::Str(v));
        }
        if let Some(v) = self.response_topic {
            f(P::ResponseTopic, Value::Str(v));
        }
        if let Some(v) = self.correlation_data {
            f(P::CorrelationData, Value::Bin(v));
        }
        for id in self.subscription_identifiers.iter() {
            f(P::SubscriptionIdentifier, Value::Vbi(id.0));
        }
        if let Some(v) = self.session_expiry_interval {
            f(P::SessionExpiryInterval, Value::Four(v));
        }
        if let Some(v) = self.assigned_client_identifier {
            f(P::AssignedClientIdentifier, Value::Str(v));
        }
        if let Some(v) = self.server_keep_alive {
            f(P::ServerKeepAlive, Value::Two(v));
        }
        if let Some(v) = self.authentication_method {
            f(P::AuthenticationMethod, Value::Str(v));
        }
        if let Some(v) = self.authentication_data {
            f(P::AuthenticationData, Value::Bin(v));
        }
        if let Some(v) = self.request_problem_information {
            f(P::RequestProblemInformation, byte(v));
        }
        if let Some(v) = self.will_delay_interval {
            f(P::WillDelayInterval, Value::Four(v));
        }
        if let Some(v) = self.request_response_information {
            f(P::RequestResponseInformation, byte(v));
        }
        if let Some(v) = self.response_information {
            f(P::ResponseInformation, Value::Str(v));
        }
        if let Some(v) = self.server_reference {
            f(P::ServerReference, Value::Str(v));
        }
        if let Some(v) = self.reason_string {
            f(P::ReasonString, Value::Str(v));
        }
        if let Some(v) = self.receive_maximum {
            f(P::ReceiveMaximum, Value::Two(v));
        }
        if let Some(v) = self.topic_alias_maximum {
            f(P::TopicAliasMaximum, Value::Two(v));
        }
        if let Some(v) = self.topic_alias {
            f(P::TopicAlias, Value::Two(v));
        }
        if let Some(v) = self.maximum_qos {
            f(P::MaximumQoS, Value::Byte(v as u8));
        }
        if let Some(v) = self.retain_available {
            f(P::RetainAvailable, byte(v));
        }
        for p in self.user_properties.iter() {
            f(P::UserProperty, Value::Pair(p.name, p.value));
        }
        if let Some(v) = self.maximum_packet_size {
            f(P::MaximumPacketSize, Value::Four(v));
        }
        if let Some(v) = self.wildcard_subscription_available {
            f(P::WildcardSubscriptionAvailable, byte(v));
        }
        if let Some(v) = self.subscription_identifier_available {
            f(P::SubscriptionIdentifierAvailable, byte(v));
        }
        if let Some(v) = self.shared_subscription_available {
            f(P::SharedSubscriptionAvailable, byte(v));
        }
    }

    /// The length of the property block's contents (without its own length prefix),
    /// refusing properties the packet may not carry.
    pub(crate) fn block_len(&self, context: PropertyContext) -> Result<usize, EncodeError> {
        let mut len = 0usize;
        let mut subscription_ids = 0usize;
        let mut count = |id: PropertyId, value: Value<'_>| {
            if !context.allows(id) {
                return Err(EncodeError::PropertyNotAllowed {
                    property: id,
                    packet_type: context.packet_type(),
                });
            }
            if id == PropertyId::SubscriptionIdentifier {
                subscription_ids += 1;
                if subscription_ids > 1 && !context.allows_repeat(id) {
                    return Err(EncodeError::PropertyNotAllowed {
                        property: id,
                        packet_type: context.packet_type(),
                    });
                }
            }
            len += 1 + value.encoded_len()?;
            Ok(())
        };
        let mut result = Ok(());
        self.for_each(&mut |id, value| {
            if result.is_ok() {
                result = count(id, value);
            }
        });
        result?;
        if len > VBI_MAX as usize {
            return Err(EncodeError::ValueTooLarge);
        }
        Ok(len)
    }

    /// The encoded size of the block: length prefix plus contents.
    pub(crate) fn encoded_len(&self, context: PropertyContext) -> Result<usize, EncodeError> {
        let len = self.block_len(context)?;
        Ok(wire::vbi_len(len as u32) + len)
    }

    /// Writes the block, prefix first. `block_len` must have accepted it.
    pub(crate) fn write(
        &self,
        w: &mut Writer<'_>,
        context: PropertyContext,
    ) -> Result<(), EncodeError> {
        let len = self.block_len(context)?;
        w.vbi(len as u32)?;
        let mut result = Ok(());
        self.for_each(&mut |id, value| {
            if result.is_ok() {
                result = w.u8(id as u8).and_then(|()| value.write(w));
            }
        });
        result
    }
}

/// Moves `rest`, a property block the decoder has already validated, to the value of the
/// next `wanted` property; `None` at the end. User properties and subscription identifiers
/// are found by walking the block again on each iteration, so the other properties are
/// stepped over by their length rather than read (and their strings re-validated).
#[cfg(feature = "v5")]
fn seek(rest: &mut &[u8], wanted: PropertyId) -> Option<()> {
    let field = |input: &[u8]| -> Option<usize> {
        let (len, _) = input.split_first_chunk::<2>()?;
        Some(2 + usize::from(u16::from_be_bytes(*len)))
    };
    while !rest.is_empty() {
        let (after, raw_id) = wire::vbi(rest).ok()?;
        let id = PropertyId::from_u32(raw_id)?;
        if id == wanted {
            *rest = after;
            return Some(());
        }
        let skip = match id.spec().kind {
            Kind::Flag => 1,
            Kind::Two | Kind::NonZeroTwo => 2,
            Kind::Four | Kind::NonZeroFour => 4,
            Kind::NonZeroVbi => after.len() - wire::vbi(after).ok()?.0.len(),
            Kind::Str | Kind::Bin => field(after)?,
            Kind::Pair => {
                let name = field(after)?;
                name + field(after.get(name..)?)?
            }
        };
        *rest = after.get(skip..)?;
    }
    None
}

#[cfg(feature = "v5")]
impl crate::list::sealed::Sealed for UserProperty<'_> {}
#[cfg(feature = "v5")]
impl<'a> ListItem<'a> for UserProperty<'a> {
    fn read_next(rest: &mut &'a [u8]) -> Option<Self> {
        seek(rest, PropertyId::UserProperty)?;
        let (after, name) = wire::validated_utf8(rest)?;
        let (after, value) = wire::validated_utf8(after)?;
        *rest = after;
        Some(UserProperty { name, value })
    }
}

#[cfg(feature = "v5")]
impl crate::list::sealed::Sealed for SubscriptionId {}
#[cfg(feature = "v5")]
impl<'a> ListItem<'a> for SubscriptionId {
    fn read_next(rest: &mut &'a [u8]) -> Option<Self> {
        seek(rest, PropertyId::SubscriptionIdentifier)?;
        let (after, value) = wire::vbi(rest).ok()?;
        *rest = after;
        Some(SubscriptionId(value))
    }
}
