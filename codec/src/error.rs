//! The codec's error types. Every decode error names the reason code the receiver must send.

use core::fmt;

use crate::properties::PropertyId;
use crate::reason::ReasonCode;
use crate::types::PacketType;

/// Why a byte sequence is not a well-formed MQTT packet.
///
/// Each variant maps to the reason code that the specification tells the receiver to use when
/// it closes the connection ([`DecodeError::reason_code`]): a server sends it in a CONNACK
/// (before the connection is accepted) or a DISCONNECT (after), a client in a DISCONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet type nibble is 0, or 15 (AUTH) on an MQTT 3.1.1 connection.
    InvalidPacketType(u8),
    /// The fixed header's flag bits are not the ones the packet type requires [MQTT-2.1.3-1].
    InvalidHeaderFlags {
        /// The packet whose flags are wrong.
        packet_type: PacketType,
        /// The low nibble that arrived.
        flags: u8,
    },
    /// A variable byte integer is longer than four bytes or not minimally encoded
    /// [MQTT-1.5.5-1].
    MalformedVariableByteInteger,
    /// The packet is larger than the maximum packet size in force.
    PacketTooLarge {
        /// The packet's total size in bytes, fixed header included.
        size: usize,
        /// The maximum that was exceeded.
        maximum: u32,
    },
    /// A field runs past the end of the packet given by its remaining length.
    UnexpectedEnd,
    /// Bytes are left over after the packet's last field.
    TrailingBytes,
    /// A QoS field holds 3, or a QoS-dependent flag contradicts the QoS.
    InvalidQoS,
    /// A PUBLISH at QoS 0 has its DUP flag set [MQTT-3.3.1-2].
    DupWithQoS0,
    /// A string is not well-formed UTF-8 [MQTT-1.5.4-1].
    InvalidUtf8,
    /// A string contains U+0000 [MQTT-1.5.4-2].
    NullCharacter,
    /// The CONNECT protocol name is not "MQTT" [MQTT-3.1.2-1].
    InvalidProtocolName,
    /// The CONNECT protocol level is neither 4 (3.1.1) nor 5 (5.0) [MQTT-3.1.2-2].
    UnsupportedProtocolVersion(u8),
    /// A reserved bit is set: CONNECT flags bit 0 [MQTT-3.1.2-3], the CONNACK acknowledge
    /// flags, or subscription option bits 6 and 7 [MQTT-3.8.3-5].
    ReservedBitSet,
    /// The will QoS or will retain bit is set without the will flag [MQTT-3.1.2-11].
    InvalidWillFlags,
    /// MQTT 3.1.1: the password flag is set without the user name flag [MQTT-3.1.2-22].
    PasswordWithoutUsername,
    /// A packet identifier is zero [MQTT-2.2.1-3].
    ZeroPacketIdentifier,
    /// A topic name is empty or contains a wildcard [MQTT-3.3.2-2], [MQTT-4.7.3-1].
    InvalidTopicName,
    /// A topic filter is empty or misuses a wildcard or the shared-subscription prefix
    /// [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.8.2-1].
    InvalidTopicFilter,
    /// A v5 PUBLISH has an empty topic name and no topic alias [MQTT-3.3.2-1].
    EmptyTopicWithoutAlias,
    /// A SUBSCRIBE or UNSUBSCRIBE carries no topic filter [MQTT-3.8.3-3], [MQTT-3.10.3-2].
    NoTopicFilters,
    /// A SUBACK or UNSUBACK carries no reason code.
    NoReasonCodes,
    /// A reason or return code is not one this packet may carry.
    InvalidReasonCode {
        /// The packet carrying the code.
        packet_type: PacketType,
        /// The code that arrived.
        code: u8,
    },
    /// The retain handling subscription option is 3 (MQTT 5.0 section 3.8.3.1).
    InvalidRetainHandling,
    /// No Local is set on a shared subscription [MQTT-3.8.3-4].
    NoLocalOnSharedSubscription,
    /// A property identifier the specification does not define.
    UnknownProperty(u32),
    /// A property this packet type may not carry.
    PropertyNotAllowed {
        /// The property that arrived.
        property: PropertyId,
        /// The packet (or, for will properties, CONNECT) it arrived in.
        packet_type: PacketType,
    },
    /// A property that may appear at most once appears twice.
    DuplicateProperty(PropertyId),
    /// A property holds a value the specification forbids (a receive maximum of 0, a
    /// boolean other than 0 or 1, a subscription identifier of 0, …).
    InvalidPropertyValue(PropertyId),
    /// A topic alias property is 0 [MQTT-3.3.2-8].
    ZeroTopicAlias,
    /// Authentication data is present without an authentication method.
    AuthenticationDataWithoutMethod,
    /// A CONNACK refuses the connection yet sets Session Present [MQTT-3.2.2-6].
    SessionPresentOnRefusal,
}

impl DecodeError {
    /// The reason code the receiver of the offending packet must send when it closes the
    /// connection (in a CONNACK before the connection is accepted, a DISCONNECT after).
    pub const fn reason_code(&self) -> ReasonCode {
        use DecodeError as E;
        match self {
            E::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            E::InvalidProtocolName | E::UnsupportedProtocolVersion(_) => {
                ReasonCode::UnsupportedProtocolVersion
            }
            E::InvalidTopicName => ReasonCode::TopicNameInvalid,
            E::InvalidTopicFilter => ReasonCode::TopicFilterInvalid,
            E::ZeroTopicAlias => ReasonCode::TopicAliasInvalid,
            E::ZeroPacketIdentifier
            | E::EmptyTopicWithoutAlias
            | E::NoTopicFilters
            | E::NoReasonCodes
            | E::InvalidReasonCode { .. }
            | E::InvalidRetainHandling
            | E::NoLocalOnSharedSubscription
            | E::DuplicateProperty(_)
            | E::InvalidPropertyValue(_)
            | E::AuthenticationDataWithoutMethod
            | E::SessionPresentOnRefusal => ReasonCode::ProtocolError,
            E::InvalidPacketType(_)
            | E::InvalidHeaderFlags { .. }
            | E::MalformedVariableByteInteger
            | E::UnexpectedEnd
            | E::TrailingBytes
            | E::InvalidQoS
            | E::DupWithQoS0
            | E::InvalidUtf8
            | E::NullCharacter
            | E::ReservedBitSet
            | E::InvalidWillFlags
            | E::PasswordWithoutUsername
            | E::UnknownProperty(_)
            | E::PropertyNotAllowed { .. } => ReasonCode::MalformedPacket,
        }
    }

    /// The MQTT 3.1.1 CONNACK return code for a refused CONNECT, where 3.1.1 defines one
    /// (an unacceptable protocol level is 1); `None` means "close without CONNACK", which is
    /// what 3.1.1 asks for every other malformed CONNECT [MQTT-4.8.0-1].
    pub const fn v311_connack_code(&self) -> Option<u8> {
        match self {
            DecodeError::InvalidProtocolName | DecodeError::UnsupportedProtocolVersion(_) => {
                Some(1)
            }
            _ => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeError as E;
        match self {
            E::InvalidPacketType(t) => write!(f, "invalid packet type {t}"),
            E::InvalidHeaderFlags { packet_type, flags } => {
                write!(
                    f,
                    "invalid fixed header flags {flags:#06b} for {packet_type:?}"
                )
            }
            E::MalformedVariableByteInteger => f.write_str("malformed variable byte integer"),
            E::PacketTooLarge { size, maximum } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {maximum}")
            }
            E::UnexpectedEnd => f.write_str("a field runs past the end of the packet"),
            E::TrailingBytes => f.write_str("bytes left after the last field"),
            E::InvalidQoS => f.write_str("invalid QoS"),
            E::DupWithQoS0 => f.write_str("DUP flag set on a QoS 0 PUBLISH"),
            E::InvalidUtf8 => f.write_str("string is not well-formed UTF-8"),
            E::NullCharacter => f.write_str("string contains U+0000"),
            E::InvalidProtocolName => f.write_str("protocol name is not \"MQTT\""),
            E::UnsupportedProtocolVersion(level) => {
                write!(f, "unsupported protocol level {level}")
            }
            E::ReservedBitSet => f.write_str("a reserved bit is set"),
            E::InvalidWillFlags => f.write_str("will QoS or retain set without the will flag"),
            E::PasswordWithoutUsername => f.write_str("password flag set without user name"),
            E::ZeroPacketIdentifier => f.write_str("packet identifier is zero"),
            E::InvalidTopicName => f.write_str("invalid topic name"),
            E::InvalidTopicFilter => f.write_str("invalid topic filter"),
            E::EmptyTopicWithoutAlias => f.write_str("empty topic name without a topic alias"),
            E::NoTopicFilters => f.write_str("no topic filter in the packet"),
            E::NoReasonCodes => f.write_str("no reason code in the packet"),
            E::InvalidReasonCode { packet_type, code } => {
                write!(f, "reason code {code:#04x} is not valid in {packet_type:?}")
            }
            E::InvalidRetainHandling => f.write_str("retain handling option is 3"),
            E::NoLocalOnSharedSubscription => f.write_str("no local set on a shared subscription"),
            E::UnknownProperty(id) => write!(f, "unknown property identifier {id:#04x}"),
            E::PropertyNotAllowed {
                property,
                packet_type,
            } => write!(f, "property {property:?} is not allowed in {packet_type:?}"),
            E::DuplicateProperty(p) => write!(f, "property {p:?} appears more than once"),
            E::InvalidPropertyValue(p) => write!(f, "property {p:?} has an invalid value"),
            E::ZeroTopicAlias => f.write_str("topic alias is zero"),
            E::AuthenticationDataWithoutMethod => {
                f.write_str("authentication data without an authentication method")
            }
            E::SessionPresentOnRefusal => f.write_str("session present set on a refused CONNACK"),
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small; `required` bytes are needed in all.
    BufferTooSmall {
        /// The encoded packet's total size.
        required: usize,
    },
    /// A string or binary field is longer than 65,535 bytes.
    FieldTooLong,
    /// The packet's remaining length exceeds 268,435,455 bytes, or a variable byte integer
    /// value (a subscription identifier) exceeds that range.
    ValueTooLarge,
    /// The packet has no encoding in this protocol version (AUTH in MQTT 3.1.1).
    NotInVersion(PacketType),
    /// A PUBLISH's packet identifier does not match its QoS (present at QoS 0, missing above).
    PacketIdMismatch,
    /// A QoS 0 PUBLISH has its DUP flag set [MQTT-3.3.1-2].
    DupWithQoS0,
    /// A property is set that the packet type may not carry.
    PropertyNotAllowed {
        /// The property.
        property: PropertyId,
        /// The packet it was set on.
        packet_type: PacketType,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { required } => {
                write!(f, "output buffer too small: {required} bytes required")
            }
            EncodeError::FieldTooLong => f.write_str("field longer than 65,535 bytes"),
            EncodeError::ValueTooLarge => f.write_str("value too large to encode"),
            EncodeError::NotInVersion(t) => write!(f, "{t:?} does not exist in MQTT 3.1.1"),
            EncodeError::PacketIdMismatch => f.write_str("packet identifier does not match QoS"),
            EncodeError::DupWithQoS0 => f.write_str("DUP flag set on a QoS 0 PUBLISH"),
            EncodeError::PropertyNotAllowed {
                property,
                packet_type,
            } => write!(f, "property {property:?} is not allowed in {packet_type:?}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// nom's plumbing: a parser failure is always one of our errors; nom's own error kinds only
/// arise from `complete` parsers running out of input.
impl<'a> nom::error::ParseError<&'a [u8]> for DecodeError {
    fn from_error_kind(_input: &'a [u8], _kind: nom::error::ErrorKind) -> Self {
        DecodeError::UnexpectedEnd
    }

    fn append(_input: &'a [u8], _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}
