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

    fn allows(self, id: PropertyId) -> bool {
        use PropertyContext as C;
        use PropertyId as P;
        match id {
            P::UserProperty => true,
            P::PayloadFormatIndicator
            | P::MessageExpiryInterval
            | P::ContentType
            | P::ResponseTopic
            | P::CorrelationData => matches!(self, C::Publish | C::Will),
            P::SubscriptionIdentifier => matches!(self, C::Publish | C::Subscribe),
            P::SessionExpiryInterval => matches!(self, C::Connect | C::ConnAck | C::Disconnect),
            P::AssignedClientIdentifier
            | P::ServerKeepAlive
            | P::ResponseInformation
            | P::MaximumQoS
            | P::RetainAvailable
            | P::WildcardSubscriptionAvailable
            | P::SubscriptionIdentifierAvailable
            | P::SharedSubscriptionAvailable => self == C::ConnAck,
            P::AuthenticationMethod | P::AuthenticationData => {
                matches!(self, C::Connect | C::ConnAck | C::Auth)
            }
            P::RequestProblemInformation | P::RequestResponseInformation => self == C::Connect,
            P::WillDelayInterval => self == C::Will,
            P::ServerReference => matches!(self, C::ConnAck | C::Disconnect),
            P::ReasonString => matches!(
                self,
                C::ConnAck | C::PubResponse(_) | C::SubAck | C::UnsubAck | C::Disconnect | C::Auth
            ),
            P::ReceiveMaximum | P::TopicAliasMaximum | P::MaximumPacketSize => {
                matches!(self, C::Connect | C::ConnAck)
            }
            P::TopicAlias => self == C::Publish,
        }
    }

    /// User properties may repeat anywhere; subscription identifiers only in PUBLISH, where
    /// a server forwards one for each matching subscription.
    fn allows_repeat(self, id: PropertyId) -> bool {
        id == PropertyId::UserProperty
            || (id == PropertyId::SubscriptionIdentifier && self == PropertyContext::Publish)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
pub(crate) fn decode_properties(
    input: &[u8],
    _context: PropertyContext,
) -> PResult<'_, Properties<'_>> {
    let (rest, len) = wire::vbi(input)?;
    if len == 0 {
        return Ok((rest, Properties::default()));
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

/// Reads one property: its identifier, then a value of the identifier's type.
#[cfg(feature = "v5")]
fn read_property(input: &[u8]) -> PResult<'_, (PropertyId, Value<'_>)> {
    use PropertyId as P;
    let (input, raw_id) = wire::vbi(input)?;
    let Some(id) = PropertyId::from_u32(raw_id) else {
        return fail(DecodeError::UnknownProperty(raw_id));
    };
    let (input, value) = match id {
        P::PayloadFormatIndicator
        | P::RequestProblemInformation
        | P::RequestResponseInformation
        | P::MaximumQoS
        | P::RetainAvailable
        | P::WildcardSubscriptionAvailable
        | P::SubscriptionIdentifierAvailable
        | P::SharedSubscriptionAvailable => wire::u8_.map(Value::Byte).parse(input)?,
        P::ServerKeepAlive | P::ReceiveMaximum | P::TopicAliasMaximum | P::TopicAlias => {
            wire::u16_.map(Value::Two).parse(input)?
        }
        P::MessageExpiryInterval
        | P::SessionExpiryInterval
        | P::WillDelayInterval
        | P::MaximumPacketSize => wire::u32_.map(Value::Four).parse(input)?,
        P::SubscriptionIdentifier => wire::vbi.map(Value::Vbi).parse(input)?,
        P::ContentType
        | P::ResponseTopic
        | P::AssignedClientIdentifier
        | P::AuthenticationMethod
        | P::ResponseInformation
        | P::ServerReference
        | P::ReasonString => wire::utf8.map(Value::Str).parse(input)?,
        P::CorrelationData | P::AuthenticationData => wire::binary.map(Value::Bin).parse(input)?,
        P::UserProperty => {
            let (input, name) = wire::utf8(input)?;
            let (input, value) = wire::utf8(input)?;
            (input, Value::Pair(name, value))
        }
    };
    Ok((input, (id, value)))
}

#[cfg(feature = "v5")]
fn boolean(id: PropertyId, value: u8) -> Result<bool, DecodeError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue(id)),
    }
}

#[cfg(feature = "v5")]
fn non_zero_u16(id: PropertyId, value: u16) -> Result<u16, DecodeError> {
    if value == 0 {
        return Err(DecodeError::InvalidPropertyValue(id));
    }
    Ok(value)
}

/// Reads a property block (its length, then its properties) and checks every rule: known
/// identifiers, allowed in this packet, at most once unless repeatable, and valid values.
#[cfg(feature = "v5")]
pub(crate) fn decode_properties(
    input: &[u8],
    context: PropertyContext,
) -> PResult<'_, Properties<'_>> {
    let (input, len) = wire::vbi(input)?;
    let (rest, block) = take(len).parse(input)?;
    match parse_block(block, context) {
        Ok(properties) => Ok((rest, properties)),
        Err(e) => fail(e),
    }
}

#[cfg(feature = "v5")]
fn parse_block(block: &[u8], context: PropertyContext) -> Result<Properties<'_>, DecodeError> {
    use PropertyId as P;
    let mut props = Properties::default();
    let mut seen: u64 = 0;
    let mut has_user_properties = false;
    let mut has_subscription_ids = false;
    let mut cursor = block;
    while !cursor.is_empty() {
        let (after, (id, value)) = wire::finish(read_property(cursor))?;
        cursor = after;
        if !context.allows(id) {
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
        match (id, value) {
            (P::PayloadFormatIndicator, Value::Byte(v)) => {
                props.payload_format_indicator = Some(boolean(id, v)?)
            }
            (P::MessageExpiryInterval, Value::Four(v)) => props.message_expiry_interval = Some(v),
            (P::ContentType, Value::Str(s)) => props.content_type = Some(s),
            (P::ResponseTopic, Value::Str(s)) => {
                // [MQTT-3.3.2-14]: a response topic is a topic name.
                validate_topic_name(s)?;
                props.response_topic = Some(s)
            }
            (P::CorrelationData, Value::Bin(b)) => props.correlation_data = Some(b),
            (P::SubscriptionIdentifier, Value::Vbi(v)) => {
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue(id));
                }
                has_subscription_ids = true;
            }
            (P::SessionExpiryInterval, Value::Four(v)) => props.session_expiry_interval = Some(v),
            (P::AssignedClientIdentifier, Value::Str(s)) => {
                props.assigned_client_identifier = Some(s)
            }
            (P::ServerKeepAlive, Value::Two(v)) => props.server_keep_alive = Some(v),
            (P::AuthenticationMethod, Value::Str(s)) => props.authentication_method = Some(s),
            (P::AuthenticationData, Value::Bin(b)) => props.authentication_data = Some(b),
            (P::RequestProblemInformation, Value::Byte(v)) => {
                props.request_problem_information = Some(boolean(id, v)?)
            }
            (P::WillDelayInterval, Value::Four(v)) => props.will_delay_interval = Some(v),
            (P::RequestResponseInformation, Value::Byte(v)) => {
                props.request_response_information = Some(boolean(id, v)?)
            }
            (P::ResponseInformation, Value::Str(s)) => props.response_information = Some(s),
            (P::ServerReference, Value::Str(s)) => props.server_reference = Some(s),
            (P::ReasonString, Value::Str(s)) => props.reason_string = Some(s),
            (P::ReceiveMaximum, Value::Two(v)) => {
                props.receive_maximum = Some(non_zero_u16(id, v)?)
            }
            (P::TopicAliasMaximum, Value::Two(v)) => props.topic_alias_maximum = Some(v),
            (P::TopicAlias, Value::Two(v)) => {
                if v == 0 {
                    return Err(DecodeError::ZeroTopicAlias);
                }
                props.topic_alias = Some(v)
            }
            (P::MaximumQoS, Value::Byte(v)) => {
                props.maximum_qos = Some(match v {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(DecodeError::InvalidPropertyValue(id)),
                })
            }
            (P::RetainAvailable, Value::Byte(v)) => props.retain_available = Some(boolean(id, v)?),
            (P::UserProperty, Value::Pair(..)) => has_user_properties = true,
            (P::MaximumPacketSize, Value::Four(v)) => {
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue(id));
                }
                props.maximum_packet_size = Some(v)
            }
            (P::WildcardSubscriptionAvailable, Value::Byte(v)) => {
                props.wildcard_subscription_available = Some(boolean(id, v)?)
            }
            (P::SubscriptionIdentifierAvailable, Value::Byte(v)) => {
                props.subscription_identifier_available = Some(boolean(id, v)?)
            }
            (P::SharedSubscriptionAvailable, Value::Byte(v)) => {
                props.shared_subscription_available = Some(boolean(id, v)?)
            }
            // read_property pairs each identifier with its own value type.
            _ => return Err(DecodeError::InvalidPropertyValue(id)),
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
    Ok(props)
}

#[cfg(feature = "v5")]
impl<'a> Properties<'a> {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
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
    /// for one indirect call per property present.
    #[inline(never)]
    fn for_each(
        &self,
        f: &mut dyn FnMut(PropertyId, Value<'a>) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        use PropertyId as P;
        let byte = |b: bool| Value::Byte(b as u8);
        if let Some(v) = self.payload_format_indicator {
            f(P::PayloadFormatIndicator, byte(v))?;
        }
        if let Some(v) = self.message_expiry_interval {
            f(P::MessageExpiryInterval, Value::Four(v))?;
        }
        if let Some(v) = self.content_type {
            f(P::ContentType, Value::Str(v))?;
        }
        if let Some(v) = self.response_topic {
            f(P::ResponseTopic, Value::Str(v))?;
        }
        if let Some(v) = self.correlation_data {
            f(P::CorrelationData, Value::Bin(v))?;
        }
        for id in self.subscription_identifiers.iter() {
            f(P::SubscriptionIdentifier, Value::Vbi(id.0))?;
        }
        if let Some(v) = self.session_expiry_interval {
            f(P::SessionExpiryInterval, Value::Four(v))?;
        }
        if let Some(v) = self.assigned_client_identifier {
            f(P::AssignedClientIdentifier, Value::Str(v))?;
        }
        if let Some(v) = self.server_keep_alive {
            f(P::ServerKeepAlive, Value::Two(v))?;
        }
        if let Some(v) = self.authentication_method {
            f(P::AuthenticationMethod, Value::Str(v))?;
        }
        if let Some(v) = self.authentication_data {
            f(P::AuthenticationData, Value::Bin(v))?;
        }
        if let Some(v) = self.request_problem_information {
            f(P::RequestProblemInformation, byte(v))?;
        }
        if let Some(v) = self.will_delay_interval {
            f(P::WillDelayInterval, Value::Four(v))?;
        }
        if let Some(v) = self.request_response_information {
            f(P::RequestResponseInformation, byte(v))?;
        }
        if let Some(v) = self.response_information {
            f(P::ResponseInformation, Value::Str(v))?;
        }
        if let Some(v) = self.server_reference {
            f(P::ServerReference, Value::Str(v))?;
        }
        if let Some(v) = self.reason_string {
            f(P::ReasonString, Value::Str(v))?;
        }
        if let Some(v) = self.receive_maximum {
            f(P::ReceiveMaximum, Value::Two(v))?;
        }
        if let Some(v) = self.topic_alias_maximum {
            f(P::TopicAliasMaximum, Value::Two(v))?;
        }
        if let Some(v) = self.topic_alias {
            f(P::TopicAlias, Value::Two(v))?;
        }
        if let Some(v) = self.maximum_qos {
            f(P::MaximumQoS, Value::Byte(v as u8))?;
        }
        if let Some(v) = self.retain_available {
            f(P::RetainAvailable, byte(v))?;
        }
        for p in self.user_properties.iter() {
            f(P::UserProperty, Value::Pair(p.name, p.value))?;
        }
        if let Some(v) = self.maximum_packet_size {
            f(P::MaximumPacketSize, Value::Four(v))?;
        }
        if let Some(v) = self.wildcard_subscription_available {
            f(P::WildcardSubscriptionAvailable, byte(v))?;
        }
        if let Some(v) = self.subscription_identifier_available {
            f(P::SubscriptionIdentifierAvailable, byte(v))?;
        }
        if let Some(v) = self.shared_subscription_available {
            f(P::SharedSubscriptionAvailable, byte(v))?;
        }
        Ok(())
    }

    /// The length of the property block's contents (without its own length prefix),
    /// refusing properties the packet may not carry.
    pub(crate) fn block_len(&self, context: PropertyContext) -> Result<usize, EncodeError> {
        let mut len = 0usize;
        let mut subscription_ids = 0usize;
        self.for_each(&mut |id, value| {
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
        })?;
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
        self.for_each(&mut |id, value| {
            w.u8(id as u8)?;
            value.write(w)
        })
    }
}

/// Moves `rest`, a property block the decoder has already validated, to the value of the
/// next `wanted` property; `None` at the end. User properties and subscription identifiers
/// are found by walking the block again on each iteration, so the other properties are
/// stepped over by their length rather than read (and their strings re-validated).
#[cfg(feature = "v5")]
fn seek(rest: &mut &[u8], wanted: PropertyId) -> Option<()> {
    use PropertyId as P;
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
        let skip = match id {
            P::PayloadFormatIndicator
            | P::RequestProblemInformation
            | P::RequestResponseInformation
            | P::MaximumQoS
            | P::RetainAvailable
            | P::WildcardSubscriptionAvailable
            | P::SubscriptionIdentifierAvailable
            | P::SharedSubscriptionAvailable => 1,
            P::ServerKeepAlive | P::ReceiveMaximum | P::TopicAliasMaximum | P::TopicAlias => 2,
            P::MessageExpiryInterval
            | P::SessionExpiryInterval
            | P::WillDelayInterval
            | P::MaximumPacketSize => 4,
            P::SubscriptionIdentifier => after.len() - wire::vbi(after).ok()?.0.len(),
            P::ContentType
            | P::ResponseTopic
            | P::AssignedClientIdentifier
            | P::AuthenticationMethod
            | P::ResponseInformation
            | P::ServerReference
            | P::ReasonString
            | P::CorrelationData
            | P::AuthenticationData => field(after)?,
            P::UserProperty => {
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
