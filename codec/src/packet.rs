//! The fifteen control packets: their fields, and how each body is read and written.
//!
//! Every decoded packet borrows from the input buffer. Repeated fields are [`List`]s over the
//! validated bytes, so decoding never allocates.

use crate::decode::Decoded;
use crate::error::{DecodeError, EncodeError};
use crate::list::{options_from_byte, List, SubscribeFilter};
use crate::properties::{decode_properties, Properties, PropertyContext};
use crate::reason::{ReasonCode, ReasonContext};
use crate::topic::{validate_topic_filter, validate_topic_name, SharedFilter};
use crate::types::{PacketId, PacketType, ProtocolVersion, QoS};
use crate::wire::{self, fail, field_len, PResult, Writer};

/// The protocol name every CONNECT carries.
const PROTOCOL_NAME: &str = "MQTT";
/// The MQTT 3.1 protocol name: recognised only to answer "unsupported version".
const PROTOCOL_NAME_V31: &str = "MQIsdp";

/// A control packet.
///
/// A CONNECT, with two property sets, is the largest variant; boxing it would cost an
/// allocation on the decode path, which this codec never makes, so the size is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(clippy::large_enum_variant)]
pub enum Packet<'a> {
    /// Client request to connect.
    Connect(Connect<'a>),
    /// Connect acknowledgement.
    ConnAck(ConnAck<'a>),
    /// An application message.
    Publish(Publish<'a>),
    /// QoS 1 acknowledgement.
    PubAck(PubResponse<'a>),
    /// QoS 2 delivery, part 1: received.
    PubRec(PubResponse<'a>),
    /// QoS 2 delivery, part 2: release.
    PubRel(PubResponse<'a>),
    /// QoS 2 delivery, part 3: complete.
    PubComp(PubResponse<'a>),
    /// Subscribe request.
    Subscribe(Subscribe<'a>),
    /// Subscribe acknowledgement.
    SubAck(SubAck<'a>),
    /// Unsubscribe request.
    Unsubscribe(Unsubscribe<'a>),
    /// Unsubscribe acknowledgement.
    UnsubAck(UnsubAck<'a>),
    /// Keep-alive ping.
    PingReq,
    /// Keep-alive answer.
    PingResp,
    /// Orderly close, with a reason in 5.0.
    Disconnect(Disconnect<'a>),
    /// Extended authentication exchange (5.0 only).
    Auth(Auth<'a>),
}

/// CONNECT (section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Connect<'a> {
    /// The protocol the client speaks; it also decides how this packet is encoded.
    pub protocol_version: ProtocolVersion,
    /// Clean start (5.0) / clean session (3.1.1).
    pub clean_start: bool,
    /// Keep-alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// CONNECT properties (5.0).
    pub properties: Properties<'a>,
    /// The client identifier; may be empty, asking the server to assign one.
    pub client_id: &'a str,
    /// The will message, if any.
    pub will: Option<Will<'a>>,
    /// The user name.
    pub username: Option<&'a str>,
    /// The password (binary data).
    pub password: Option<&'a [u8]>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Will<'a> {
    /// The topic it is published to.
    pub topic: &'a str,
    /// The payload.
    pub payload: &'a [u8],
    /// Its QoS.
    pub qos: QoS,
    /// Whether it is published retained.
    pub retain: bool,
    /// Will properties (5.0).
    pub properties: Properties<'a>,
}

/// CONNACK (section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnAck<'a> {
    /// Whether the server resumed a session.
    pub session_present: bool,
    /// The outcome; over 3.1.1 it travels as the closest return code.
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0).
    pub properties: Properties<'a>,
}

/// PUBLISH (section 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Publish<'a> {
    /// This may be a re-delivery of an earlier attempt (QoS 1 and 2 only).
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name; empty in 5.0 when a topic alias stands for it.
    pub topic: &'a str,
    /// Packet identifier: present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (5.0).
    pub properties: Properties<'a>,
    /// The application message.
    pub payload: &'a [u8],
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (sections 3.4 to 3.7): the [`Packet`] variant says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PubResponse<'a> {
    /// The identifier of the PUBLISH (or PUBREL) answered.
    pub packet_id: PacketId,
    /// The outcome (5.0); always success over 3.1.1.
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: Properties<'a>,
}

impl PubResponse<'_> {
    /// A successful response without properties.
    pub const fn new(packet_id: PacketId) -> Self {
        PubResponse {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: EMPTY_PROPERTIES,
        }
    }
}

/// SUBSCRIBE (section 3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Subscribe<'a> {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Properties (5.0): a subscription identifier and user properties.
    pub properties: Properties<'a>,
    /// The filters, at least one.
    pub filters: List<'a, SubscribeFilter<'a>>,
}

/// SUBACK (section 3.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubAck<'a> {
    /// The SUBSCRIBE's identifier.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: Properties<'a>,
    /// One code per filter, in order: the granted QoS or a failure.
    pub reason_codes: List<'a, ReasonCode>,
}

/// UNSUBSCRIBE (section 3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Unsubscribe<'a> {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: Properties<'a>,
    /// The filters, at least one.
    pub filters: List<'a, &'a str>,
}

/// UNSUBACK (section 3.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnsubAck<'a> {
    /// The UNSUBSCRIBE's identifier.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: Properties<'a>,
    /// One code per filter (5.0); empty over 3.1.1, which has none.
    pub reason_codes: List<'a, ReasonCode>,
}

/// DISCONNECT (section 3.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Disconnect<'a> {
    /// Why (5.0); normal disconnection over 3.1.1.
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: Properties<'a>,
}

/// AUTH (section 3.15, 5.0 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Auth<'a> {
    /// Success, continue authentication, or re-authenticate.
    pub reason_code: ReasonCode,
    /// Properties: authentication method and data, reason string, user properties.
    pub properties: Properties<'a>,
}

/// An empty property set usable in `const` contexts.
#[cfg(not(feature = "v5"))]
pub const EMPTY_PROPERTIES: Properties<'static> = Properties {
    borrow: core::marker::PhantomData,
};

/// An empty property set usable in `const` contexts.
#[cfg(feature = "v5")]
pub const EMPTY_PROPERTIES: Properties<'static> = Properties {
    payload_format_indicator: None,
    message_expiry_interval: None,
    content_type: None,
    response_topic: None,
    correlation_data: None,
    subscription_identifiers: List::empty(),
    session_expiry_interval: None,
    assigned_client_identifier: None,
    server_keep_alive: None,
    authentication_method: None,
    authentication_data: None,
    request_problem_information: None,
    will_delay_interval: None,
    request_response_information: None,
    response_information: None,
    server_reference: None,
    reason_string: None,
    receive_maximum: None,
    topic_alias_maximum: None,
    topic_alias: None,
    maximum_qos: None,
    retain_available: None,
    user_properties: List::empty(),
    maximum_packet_size: None,
    wildcard_subscription_available: None,
    subscription_identifier_available: None,
    shared_subscription_available: None,
};

// ---------------------------------------------------------------------------------------------
// Decoding

fn packet_id(input: &[u8]) -> PResult<'_, PacketId> {
    let (rest, raw) = wire::u16_(input)?;
    match PacketId::new(raw) {
        Some(id) => Ok((rest, id)),
        None => fail(DecodeError::ZeroPacketIdentifier),
    }
}

/// Reads the property block of a 5.0 packet into `props` (empty); over 3.1.1 there is none.
fn properties_if_v5<'a>(
    input: &'a [u8],
    version: ProtocolVersion,
    context: PropertyContext,
    props: &mut Properties<'a>,
) -> PResult<'a, ()> {
    if version.is_v5() {
        decode_properties(input, context, props)
    } else {
        Ok((input, ()))
    }
}

fn reason_code(
    input: &[u8],
    packet_type: PacketType,
    context: ReasonContext,
) -> PResult<'_, ReasonCode> {
    let (rest, byte) = wire::u8_(input)?;
    match ReasonCode::from_u8(byte) {
        Some(code) if code.allowed_in(context) => Ok((rest, code)),
        _ => fail(DecodeError::InvalidReasonCode {
            packet_type,
            code: byte,
        }),
    }
}

fn end(input: &[u8]) -> Result<(), DecodeError> {
    if input.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes)
    }
}

/// Decodes the body of a packet whose fixed header has been read and checked; `len` is the
/// whole packet's size.
pub(crate) fn decode_body(
    packet_type: PacketType,
    flags: u8,
    body: &[u8],
    version: ProtocolVersion,
    len: usize,
) -> Result<Decoded<'_>, DecodeError> {
    use PacketType as T;
    let packet = match packet_type {
        T::Connect => Packet::Connect(decode_connect(body)?),
        T::Subscribe => Packet::Subscribe(decode_subscribe(body, version)?),
        T::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(body, version)?),
        T::PingReq => {
            end(body)?;
            Packet::PingReq
        }
        _ => return decode_server_body(packet_type, flags, body, version, len),
    };
    Ok(Decoded::Packet { packet, len })
}

/// [`decode_body`] for the packets a server sends; those only a client sends (CONNECT,
/// SUBSCRIBE, UNSUBSCRIBE, PINGREQ) are refused unread, so that a client, which calls only
/// this, links none of their decoders.
pub(crate) fn decode_server_body(
    packet_type: PacketType,
    flags: u8,
    body: &[u8],
    version: ProtocolVersion,
    len: usize,
) -> Result<Decoded<'_>, DecodeError> {
    use PacketType as T;
    let packet = match packet_type {
        T::Connect | T::Subscribe | T::Unsubscribe | T::PingReq => {
            return Err(DecodeError::InvalidPacketType(packet_type as u8))
        }
        T::ConnAck => Packet::ConnAck(decode_connack(body, version)?),
        // The hot path builds its `Decoded` itself, saving the copy of the packet into it.
        T::Publish => return decode_publish(flags, body, version, len),
        T::PubAck => Packet::PubAck(decode_pub_response(T::PubAck, body, version)?),
        T::PubRec => Packet::PubRec(decode_pub_response(T::PubRec, body, version)?),
        T::PubRel => Packet::PubRel(decode_pub_response(T::PubRel, body, version)?),
        T::PubComp => Packet::PubComp(decode_pub_response(T::PubComp, body, version)?),
        T::SubAck => Packet::SubAck(decode_suback(body, version)?),
        T::UnsubAck => Packet::UnsubAck(decode_unsuback(body, version)?),
        T::PingResp => {
            end(body)?;
            Packet::PingResp
        }
        T::Disconnect => Packet::Disconnect(decode_disconnect(body, version)?),
        T::Auth => Packet::Auth(decode_auth(body)?),
    };
    // Wrapped here, not by the caller: there, wrapping the returned packet cost one more
    // copy of the whole (large) `Packet` on every decode.
    Ok(Decoded::Packet { packet, len })
}

fn decode_connect(body: &[u8]) -> Result<Connect<'_>, DecodeError> {
    let (input, name) = wire::finish(wire::utf8(body))?;
    let (input, level) = wire::finish(wire::u8_(input))?;
    if name != PROTOCOL_NAME {
        return Err(if name == PROTOCOL_NAME_V31 {
            DecodeError::UnsupportedProtocolVersion(level)
        } else {
            DecodeError::InvalidProtocolName
        });
    }
    let version = match level {
        4 => ProtocolVersion::V311,
        #[cfg(feature = "v5")]
        5 => ProtocolVersion::V5,
        other => return Err(DecodeError::UnsupportedProtocolVersion(other)),
    };
    wire::finish(connect_rest(input, version)).map(|(_, connect)| connect)
}

fn connect_rest(input: &[u8], version: ProtocolVersion) -> PResult<'_, Connect<'_>> {
    let (input, flags) = wire::u8_(input)?;
    if flags & 0b0000_0001 != 0 {
        return fail(DecodeError::ReservedBitSet);
    }
    let clean_start = flags & 0b0000_0010 != 0;
    let will_flag = flags & 0b0000_0100 != 0;
    let Some(will_qos) = QoS::from_bits((flags >> 3) & 0b11) else {
        return fail(DecodeError::InvalidQoS);
    };
    let will_retain = flags & 0b0010_0000 != 0;
    let password_flag = flags & 0b0100_0000 != 0;
    let username_flag = flags & 0b1000_0000 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return fail(DecodeError::InvalidWillFlags);
    }
    if version == ProtocolVersion::V311 && password_flag && !username_flag {
        return fail(DecodeError::PasswordWithoutUsername);
    }
    let (input, keep_alive) = wire::u16_(input)?;
    let mut properties = Properties::default();
    let (input, ()) = properties_if_v5(input, version, PropertyContext::Connect, &mut properties)?;
    let (mut input, client_id) = wire::utf8(input)?;
    let mut will = None;
    if will_flag {
        let mut will_properties = Properties::default();
        let (rest, ()) =
            properties_if_v5(input, version, PropertyContext::Will, &mut will_properties)?;
        let (rest, topic) = wire::utf8(rest)?;
        if let Err(e) = validate_topic_name(topic) {
            return fail(e);
        }
        let (rest, payload) = wire::binary(rest)?;
        will = Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties: will_properties,
        });
        input = rest;
    }
    let mut username = None;
    if username_flag {
        let (rest, name) = wire::utf8(input)?;
        username = Some(name);
        input = rest;
    }
    let mut password = None;
    if password_flag {
        let (rest, secret) = wire::binary(input)?;
        password = Some(secret);
        input = rest;
    }
    if let Err(e) = end(input) {
        return fail(e);
    }
    Ok((
        input,
        Connect {
            protocol_version: version,
            clean_start,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        },
    ))
}

fn decode_connack(body: &[u8], version: ProtocolVersion) -> Result<ConnAck<'_>, DecodeError> {
    let (input, flags) = wire::finish(wire::u8_(body))?;
    if flags & 0b1111_1110 != 0 {
        return Err(DecodeError::ReservedBitSet);
    }
    let session_present = flags & 1 != 0;
    let (input, code) = wire::finish(wire::u8_(input))?;
    let reason = if version.is_v5() {
        ReasonCode::from_u8(code).filter(|c| c.allowed_in(ReasonContext::ConnAck))
    } else {
        ReasonCode::from_v311_connack(code)
    };
    let Some(reason_code) = reason else {
        return Err(DecodeError::InvalidReasonCode {
            packet_type: PacketType::ConnAck,
            code,
        });
    };
    if session_present && reason_code.is_error() {
        return Err(DecodeError::SessionPresentOnRefusal);
    }
    let mut connack = ConnAck {
        session_present,
        reason_code,
        properties: Properties::default(),
    };
    let (input, ()) = wire::finish(properties_if_v5(
        input,
        version,
        PropertyContext::ConnAck,
        &mut connack.properties,
    ))?;
    end(input)?;
    Ok(connack)
}

fn decode_publish(
    flags: u8,
    body: &[u8],
    version: ProtocolVersion,
    len: usize,
) -> Result<Decoded<'_>, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let retain = flags & 0b0001 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupWithQoS0);
    }
    let (mut input, (topic, wildcard)) = wire::finish(wire::topic_utf8(body))?;
    let mut packet_id_field = None;
    if qos != QoS::AtMostOnce {
        let (rest, id) = wire::finish(packet_id(input))?;
        packet_id_field = Some(id);
        input = rest;
    }
    // PUBLISH is the hot path, and most carry no property: an empty block (a zero length)
    // skips the general parser.
    let mut properties = Properties::default();
    let payload = match input.split_first() {
        _ if !version.is_v5() => input,
        Some((0, rest)) => rest,
        _ => {
            wire::finish(decode_properties(
                input,
                PropertyContext::Publish,
                &mut properties,
            ))?
            .0
        }
    };
    if topic.is_empty() {
        if !version.is_v5() {
            return Err(DecodeError::InvalidTopicName);
        }
        #[cfg(feature = "v5")]
        if properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicWithoutAlias);
        }
    } else if wildcard {
        // validate_topic_name's rule, from the scan that already looked for U+0000.
        return Err(DecodeError::InvalidTopicName);
    }
    Ok(Decoded::Packet {
        packet: Packet::Publish(Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id: packet_id_field,
            properties,
            payload,
        }),
        len,
    })
}

fn decode_pub_response(
    packet_type: PacketType,
    body: &[u8],
    version: ProtocolVersion,
) -> Result<PubResponse<'_>, DecodeError> {
    let (input, packet_id) = wire::finish(packet_id(body))?;
    let mut response = PubResponse {
        packet_id,
        reason_code: ReasonCode::Success,
        properties: Properties::default(),
    };
    if !version.is_v5() || input.is_empty() {
        end(input)?;
        return Ok(response);
    }
    let context = match packet_type {
        PacketType::PubAck | PacketType::PubRec => ReasonContext::PubAck,
        _ => ReasonContext::PubRel,
    };
    let (input, code) = wire::finish(reason_code(input, packet_type, context))?;
    response.reason_code = code;
    // A remaining length of 3 means a reason code and no property length.
    if input.is_empty() {
        return Ok(response);
    }
    let (input, ()) = wire::finish(decode_properties(
        input,
        PropertyContext::PubResponse(packet_type),
        &mut response.properties,
    ))?;
    end(input)?;
    Ok(response)
}

fn decode_subscribe(body: &[u8], version: ProtocolVersion) -> Result<Subscribe<'_>, DecodeError> {
    let (input, packet_id) = wire::finish(packet_id(body))?;
    let mut properties = Properties::default();
    let (payload, ()) = wire::finish(properties_if_v5(
        input,
        version,
        PropertyContext::Subscribe,
        &mut properties,
    ))?;
    if payload.is_empty() {
        return Err(DecodeError::NoTopicFilters);
    }
    let mut rest = payload;
    while !rest.is_empty() {
        let (after, filter) = wire::finish(wire::utf8(rest))?;
        let (after, options) = wire::finish(wire::u8_(after))?;
        rest = after;
        validate_topic_filter(filter)?;
        let reserved = if version.is_v5() {
            0b1100_0000
        } else {
            0b1111_1100
        };
        if options & reserved != 0 {
            return Err(DecodeError::ReservedBitSet);
        }
        if options & 0b11 == 3 {
            return Err(DecodeError::InvalidQoS);
        }
        if (options >> 4) & 0b11 == 3 {
            return Err(DecodeError::InvalidRetainHandling);
        }
        if options_from_byte(options).no_local && SharedFilter::parse(filter)?.is_some() {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters: List::from_wire(payload),
    })
}

fn decode_reason_codes(
    payload: &[u8],
    packet_type: PacketType,
    valid: impl Fn(u8) -> bool,
) -> Result<List<'_, ReasonCode>, DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::NoReasonCodes);
    }
    if let Some(&code) = payload.iter().find(|&&code| !valid(code)) {
        return Err(DecodeError::InvalidReasonCode { packet_type, code });
    }
    Ok(List::from_wire(payload))
}

fn decode_suback(body: &[u8], version: ProtocolVersion) -> Result<SubAck<'_>, DecodeError> {
    let (input, packet_id) = wire::finish(packet_id(body))?;
    let mut properties = Properties::default();
    let (payload, ()) = wire::finish(properties_if_v5(
        input,
        version,
        PropertyContext::SubAck,
        &mut properties,
    ))?;
    let reason_codes = decode_reason_codes(payload, PacketType::SubAck, |code| {
        if version.is_v5() {
            ReasonCode::from_u8(code).is_some_and(|c| c.allowed_in(ReasonContext::SubAck))
        } else {
            ReasonCode::from_v311_suback(code).is_some()
        }
    })?;
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn decode_unsubscribe(
    body: &[u8],
    version: ProtocolVersion,
) -> Result<Unsubscribe<'_>, DecodeError> {
    let (input, packet_id) = wire::finish(packet_id(body))?;
    let mut properties = Properties::default();
    let (payload, ()) = wire::finish(properties_if_v5(
        input,
        version,
        PropertyContext::Unsubscribe,
        &mut properties,
    ))?;
    if payload.is_empty() {
        return Err(DecodeError::NoTopicFilters);
    }
    let mut rest = payload;
    while !rest.is_empty() {
        let (after, filter) = wire::finish(wire::utf8(rest))?;
        validate_topic_filter(filter)?;
        rest = after;
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters: List::from_wire(payload),
    })
}

fn decode_unsuback(body: &[u8], version: ProtocolVersion) -> Result<UnsubAck<'_>, DecodeError> {
    let (input, packet_id) = wire::finish(packet_id(body))?;
    if !version.is_v5() {
        end(input)?;
        return Ok(UnsubAck {
            packet_id,
            properties: Properties::default(),
            reason_codes: List::empty(),
        });
    }
    let mut properties = Properties::default();
    let (payload, ()) = wire::finish(decode_properties(
        input,
        PropertyContext::UnsubAck,
        &mut properties,
    ))?;
    let reason_codes = decode_reason_codes(payload, PacketType::UnsubAck, |code| {
        ReasonCode::from_u8(code).is_some_and(|c| c.allowed_in(ReasonContext::UnsubAck))
    })?;
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn decode_disconnect(body: &[u8], version: ProtocolVersion) -> Result<Disconnect<'_>, DecodeError> {
    let mut disconnect = Disconnect {
        reason_code: ReasonCode::NORMAL_DISCONNECTION,
        properties: Properties::default(),
    };
    if !version.is_v5() || body.is_empty() {
        end(body)?;
        return Ok(disconnect);
    }
    let (input, reason_code) = wire::finish(reason_code(
        body,
        PacketType::Disconnect,
        ReasonContext::Disconnect,
    ))?;
    disconnect.reason_code = reason_code;
    // "If the Remaining Length is less than 2, a value of 0 is used" (section 3.14.2.2.1).
    if input.is_empty() {
        return Ok(disconnect);
    }
    let (input, ()) = wire::finish(decode_properties(
        input,
        PropertyContext::Disconnect,
        &mut disconnect.properties,
    ))?;
    end(input)?;
    Ok(disconnect)
}

fn decode_auth(body: &[u8]) -> Result<Auth<'_>, DecodeError> {
    // Only a remaining length of 0 may omit the reason code and properties (section 3.15.2).
    if body.is_empty() {
        return Ok(Auth {
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        });
    }
    let (input, reason_code) =
        wire::finish(reason_code(body, PacketType::Auth, ReasonContext::Auth))?;
    let mut auth = Auth {
        reason_code,
        properties: Properties::default(),
    };
    let (input, ()) = wire::finish(decode_properties(
        input,
        PropertyContext::Auth,
        &mut auth.properties,
    ))?;
    end(input)?;
    Ok(auth)
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn properties_len(
    properties: &Properties<'_>,
    version: ProtocolVersion,
    context: PropertyContext,
) -> Result<usize, EncodeError> {
    if version.is_v5() {
        properties.encoded_len(context)
    } else {
        Ok(0)
    }
}

fn write_properties(
    w: &mut Writer<'_>,
    properties: &Properties<'_>,
    version: ProtocolVersion,
    context: PropertyContext,
) -> Result<(), EncodeError> {
    if version.is_v5() {
        properties.write(w, context)
    } else {
        Ok(())
    }
}

/// How a v5 acknowledgement with an optional reason code and properties is shortened: the
/// specification lets the sender omit a trailing success code and empty properties.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AckShape {
    Bare,
    ReasonOnly,
    Full,
}

fn ack_shape(
    version: ProtocolVersion,
    reason: ReasonCode,
    properties: &Properties<'_>,
) -> AckShape {
    if !version.is_v5() {
        AckShape::Bare
    } else if !properties.is_empty() {
        AckShape::Full
    } else if reason != ReasonCode::Success {
        AckShape::ReasonOnly
    } else {
        AckShape::Bare
    }
}

impl Packet<'_> {
    /// The packet's type.
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    fn first_byte(&self) -> u8 {
        let flags = match self {
            Packet::Publish(p) => (p.dup as u8) << 3 | (p.qos as u8) << 1 | p.retain as u8,
            other => other.packet_type().required_flags(),
        };
        (self.packet_type() as u8) << 4 | flags
    }

    /// The remaining length: the size of everything after the fixed header.
    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        use PropertyContext as C;
        Ok(match self {
            Packet::Connect(c) => {
                let v = c.protocol_version;
                let mut len = field_len(PROTOCOL_NAME.as_bytes())? + 1 + 1 + 2;
                len += properties_len(&c.properties, v, C::Connect)?;
                len += field_len(c.client_id.as_bytes())?;
                if let Some(will) = &c.will {
                    len += properties_len(&will.properties, v, C::Will)?;
                    len += field_len(will.topic.as_bytes())? + field_len(will.payload)?;
                }
                if let Some(username) = c.username {
                    len += field_len(username.as_bytes())?;
                }
                if let Some(password) = c.password {
                    len += field_len(password)?;
                }
                len
            }
            Packet::ConnAck(c) => 2 + properties_len(&c.properties, version, C::ConnAck)?,
            Packet::Publish(p) => {
                if (p.qos == QoS::AtMostOnce) != p.packet_id.is_none() {
                    return Err(EncodeError::PacketIdMismatch);
                }
                if p.dup && p.qos == QoS::AtMostOnce {
                    return Err(EncodeError::DupWithQoS0);
                }
                field_len(p.topic.as_bytes())?
                    + if p.packet_id.is_some() { 2 } else { 0 }
                    + properties_len(&p.properties, version, C::Publish)?
                    + p.payload.len()
            }
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                match ack_shape(version, r.reason_code, &r.properties) {
                    AckShape::Bare => 2,
                    AckShape::ReasonOnly => 3,
                    AckShape::Full => {
                        3 + r
                            .properties
                            .encoded_len(C::PubResponse(self.packet_type()))?
                    }
                }
            }
            Packet::Subscribe(s) => {
                let mut len = 2 + properties_len(&s.properties, version, C::Subscribe)?;
                for f in s.filters.iter() {
                    len += field_len(f.filter.as_bytes())? + 1;
                }
                len
            }
            Packet::SubAck(s) => {
                2 + properties_len(&s.properties, version, C::SubAck)? + s.reason_codes.len()
            }
            Packet::Unsubscribe(u) => {
                let mut len = 2 + properties_len(&u.properties, version, C::Unsubscribe)?;
                for f in u.filters.iter() {
                    len += field_len(f.as_bytes())?;
                }
                len
            }
            Packet::UnsubAck(u) => {
                if version.is_v5() {
                    2 + u.properties.encoded_len(C::UnsubAck)? + u.reason_codes.len()
                } else {
                    2
                }
            }
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => match ack_shape(version, d.reason_code, &d.properties) {
                AckShape::Bare => 0,
                AckShape::ReasonOnly => 1,
                AckShape::Full => 1 + d.properties.encoded_len(C::Disconnect)?,
            },
            Packet::Auth(a) => {
                if !version.is_v5() {
                    return Err(EncodeError::NotInVersion(PacketType::Auth));
                }
                if a.reason_code == ReasonCode::Success && a.properties.is_empty() {
                    0
                } else {
                    1 + a.properties.encoded_len(C::Auth)?
                }
            }
        })
    }

    /// The number of bytes [`Packet::encode`] writes for this packet.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let remaining = self.remaining_len(version)?;
        let remaining = u32::try_from(remaining)
            .ok()
            .filter(|&r| r <= wire::VBI_MAX)
            .ok_or(EncodeError::ValueTooLarge)?;
        Ok(1 + wire::vbi_len(remaining) + remaining as usize)
    }

    /// Encodes the packet for a connection speaking `version` into `buf`, returning the number
    /// of bytes written. Never panics; a short buffer yields [`EncodeError::BufferTooSmall`]
    /// with the size required, and nothing useful is left in `buf`.
    ///
    /// A CONNECT is always encoded in its own `protocol_version`. Over MQTT 3.1.1, properties
    /// and reason codes that 3.1.1 cannot carry are left out, and CONNACK and SUBACK codes are
    /// translated to 3.1.1 return codes. The encoder checks sizes and structure; content rules
    /// (topic syntax, U+0000 in strings) are the caller's to keep.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let remaining = self.remaining_len(version)?;
        let remaining = u32::try_from(remaining)
            .ok()
            .filter(|&r| r <= wire::VBI_MAX)
            .ok_or(EncodeError::ValueTooLarge)?;
        let required = 1 + wire::vbi_len(remaining) + remaining as usize;
        if buf.len() < required {
            return Err(EncodeError::BufferTooSmall { required });
        }
        let mut w = Writer::new(buf);
        w.u8(self.first_byte())?;
        w.vbi(remaining)?;
        self.write_body(version, &mut w)?;
        debug_assert_eq!(w.position(), required);
        Ok(w.position())
    }

    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        use PropertyContext as C;
        match self {
            Packet::Connect(c) => {
                let v = c.protocol_version;
                w.field(PROTOCOL_NAME.as_bytes())?;
                w.u8(v.level())?;
                let mut flags = (c.clean_start as u8) << 1;
                if let Some(will) = &c.will {
                    flags |= 0b100 | (will.qos as u8) << 3 | (will.retain as u8) << 5;
                }
                flags |= (c.password.is_some() as u8) << 6 | (c.username.is_some() as u8) << 7;
                w.u8(flags)?;
                w.u16(c.keep_alive)?;
                write_properties(w, &c.properties, v, C::Connect)?;
                w.field(c.client_id.as_bytes())?;
                if let Some(will) = &c.will {
                    write_properties(w, &will.properties, v, C::Will)?;
                    w.field(will.topic.as_bytes())?;
                    w.field(will.payload)?;
                }
                if let Some(username) = c.username {
                    w.field(username.as_bytes())?;
                }
                if let Some(password) = c.password {
                    w.field(password)?;
                }
            }
            Packet::ConnAck(c) => {
                w.u8(c.session_present as u8)?;
                w.u8(if version.is_v5() {
                    c.reason_code as u8
                } else {
                    c.reason_code.to_v311_connack()
                })?;
                write_properties(w, &c.properties, version, C::ConnAck)?;
            }
            Packet::Publish(p) => {
                w.field(p.topic.as_bytes())?;
                if let Some(id) = p.packet_id {
                    w.u16(id.get())?;
                }
                write_properties(w, &p.properties, version, C::Publish)?;
                w.bytes(p.payload)?;
            }
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                w.u16(r.packet_id.get())?;
                let shape = ack_shape(version, r.reason_code, &r.properties);
                if shape != AckShape::Bare {
                    w.u8(r.reason_code as u8)?;
                }
                if shape == AckShape::Full {
                    r.properties.write(w, C::PubResponse(self.packet_type()))?;
                }
            }
            Packet::Subscribe(s) => {
                w.u16(s.packet_id.get())?;
                write_properties(w, &s.properties, version, C::Subscribe)?;
                for f in s.filters.iter() {
                    w.field(f.filter.as_bytes())?;
                    let options = if version.is_v5() {
                        f.options.to_byte()
                    } else {
                        f.options.qos as u8
                    };
                    w.u8(options)?;
                }
            }
            Packet::SubAck(s) => {
                w.u16(s.packet_id.get())?;
                write_properties(w, &s.properties, version, C::SubAck)?;
                for code in s.reason_codes.iter() {
                    w.u8(if version.is_v5() {
                        code as u8
                    } else {
                        code.to_v311_suback()
                    })?;
                }
            }
            Packet::Unsubscribe(u) => {
                w.u16(u.packet_id.get())?;
                write_properties(w, &u.properties, version, C::Unsubscribe)?;
                for f in u.filters.iter() {
                    w.field(f.as_bytes())?;
                }
            }
            Packet::UnsubAck(u) => {
                w.u16(u.packet_id.get())?;
                if version.is_v5() {
                    u.properties.write(w, C::UnsubAck)?;
                    for code in u.reason_codes.iter() {
                        w.u8(code as u8)?;
                    }
                }
            }
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => {
                let shape = ack_shape(version, d.reason_code, &d.properties);
                if shape != AckShape::Bare {
                    w.u8(d.reason_code as u8)?;
                }
                if shape == AckShape::Full {
                    d.properties.write(w, C::Disconnect)?;
                }
            }
            Packet::Auth(a) => {
                if a.reason_code != ReasonCode::Success || !a.properties.is_empty() {
                    w.u8(a.reason_code as u8)?;
                    a.properties.write(w, C::Auth)?;
                }
            }
        }
        Ok(())
    }
}
