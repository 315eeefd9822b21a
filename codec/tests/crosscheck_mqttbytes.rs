//! Cross-check against an independent codec, mqttbytes 0.6 (`v4` for MQTT 3.1.1, `v5` for
//! 5.0), on generated packets, in both directions:
//!
//! - petrel encodes, mqttbytes decodes, and every field mqttbytes reads must be the one we
//!   wrote (properties included: mqttbytes models every property of the packets it knows);
//! - mqttbytes encodes the same packet, petrel decodes, and the result must equal the packet
//!   (and, over 3.1.1 where there are no properties to order, the bytes must be ours).
//!
//! mqttbytes is neither complete nor always right. Each place where it departs from the
//! specifications says so where it is worked around, and skips only the field concerned; the
//! checks on petrel's side are never relaxed. It has no AUTH packet, so AUTH is not covered.

#[path = "common/strategies.rs"]
mod strategies;

use bytes::{Bytes, BytesMut};
use mqttbytes::{v4, v5, Protocol};
use petrel_codec::{
    DecodeError, Decoded, Decoder, Packet, PacketType, ProtocolVersion, QoS, ReasonCode,
    RetainHandling, SubscriptionOptions,
};
use proptest::prelude::*;
use strategies::*;

use ProtocolVersion::{V311, V5};

/// mqttbytes' limit applies to the remaining length; ours are all far below this.
const MAX_SIZE: usize = 1 << 28;

fn fail(message: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(message.into())
}

fn petrel_encode(owned: &OwnedPacket, version: ProtocolVersion) -> Result<Vec<u8>, TestCaseError> {
    owned.with(|packet| {
        let len = packet
            .encoded_len(version)
            .map_err(|e| fail(format!("encoded_len: {e:?}")))?;
        let mut buf = vec![0u8; len];
        packet
            .encode(version, &mut buf)
            .map_err(|e| fail(format!("encode: {e:?}")))?;
        Ok(buf)
    })
}

/// Decodes one whole packet with petrel.
fn petrel_decode(bytes: &[u8], version: ProtocolVersion) -> Result<Packet<'_>, DecodeError> {
    match Decoder::new(version).decode(bytes)? {
        Decoded::Packet { packet, len } => {
            assert_eq!(len, bytes.len(), "mqttbytes wrote exactly one packet");
            Ok(packet)
        }
        Decoded::Incomplete { needed } => {
            panic!("a whole packet decoded as incomplete ({needed} more bytes)")
        }
    }
}

fn their_qos(qos: QoS) -> mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqttbytes::QoS::ExactlyOnce,
    }
}

fn our_qos(qos: mqttbytes::QoS) -> QoS {
    match qos {
        mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn pkid(id: Option<petrel_codec::PacketId>) -> u16 {
    id.map_or(0, |id| id.get())
}

/// mqttbytes models the password as a `String` and refuses one that is not UTF-8, although
/// MQTT defines it as binary data (3.1.1 section 3.1.3.5, 5.0 section 3.1.3.6); see
/// `mqttbytes_refuses_a_binary_password`. The cross-checked CONNECTs therefore carry UTF-8
/// passwords; the round-trip tests cover binary ones.
fn connect_with_text_password(version: ProtocolVersion) -> impl Strategy<Value = OwnedPacket> {
    connect(version).prop_map(|mut packet| {
        if let OwnedPacket::Connect(c) = &mut packet {
            c.password = c
                .password
                .take()
                .map(|p| String::from_utf8_lossy(&p).into_owned().into_bytes());
        }
        packet
    })
}

/// mqttbytes models credentials as two strings where "" stands for "absent": it writes
/// neither an empty user name nor an empty password (their flags stay clear), and reads
/// "flag set, empty string" like "flag clear". This is what the packet becomes through it.
fn through_mqttbytes_login(c: &OwnedConnect) -> OwnedConnect {
    let mut c = c.clone();
    if c.username.as_deref() == Some("") {
        c.username = None;
    }
    if c.password.as_deref() == Some(b"") {
        c.password = None;
    }
    c
}

fn their_credentials(c: &OwnedConnect) -> (String, String) {
    (
        c.username.clone().unwrap_or_default(),
        String::from_utf8(c.password.clone().unwrap_or_default())
            .expect("cross-checked passwords are UTF-8"),
    )
}

fn their_login<L>(c: &OwnedConnect, make: impl FnOnce(String, String) -> L) -> Option<L> {
    (c.username.is_some() || c.password.is_some()).then(|| {
        let (username, password) = their_credentials(c);
        make(username, password)
    })
}

// =============================================================================================
// MQTT 3.1.1: mqttbytes::v4

fn their_v4_connack_code(code: ReasonCode) -> v4::ConnectReturnCode {
    use v4::ConnectReturnCode as C;
    match code {
        ReasonCode::Success => C::Success,
        ReasonCode::UnsupportedProtocolVersion => C::RefusedProtocolVersion,
        ReasonCode::ClientIdentifierNotValid => C::BadClientId,
        ReasonCode::ServerUnavailable => C::ServiceUnavailable,
        ReasonCode::BadUserNameOrPassword => C::BadUserNamePassword,
        ReasonCode::NotAuthorized => C::NotAuthorized,
        other => panic!("{other:?} is not a 3.1.1 return code"),
    }
}

fn their_v4_suback_code(code: ReasonCode) -> v4::SubscribeReasonCode {
    match code {
        ReasonCode::Success => v4::SubscribeReasonCode::Success(mqttbytes::QoS::AtMostOnce),
        ReasonCode::GrantedQoS1 => v4::SubscribeReasonCode::Success(mqttbytes::QoS::AtLeastOnce),
        ReasonCode::GrantedQoS2 => v4::SubscribeReasonCode::Success(mqttbytes::QoS::ExactlyOnce),
        _ => v4::SubscribeReasonCode::Failure,
    }
}

/// (a) petrel encodes for 3.1.1, mqttbytes decodes: every field must match.
fn petrel_to_v4(owned: &OwnedPacket) -> Result<(), TestCaseError> {
    let bytes = petrel_encode(owned, V311)?;
    let mut stream = BytesMut::from(&bytes[..]);
    let theirs = v4::read(&mut stream, MAX_SIZE)
        .map_err(|e| fail(format!("mqttbytes refused {bytes:02x?}: {e:?}")))?;
    prop_assert!(stream.is_empty(), "mqttbytes left bytes over");

    match (owned, theirs) {
        (OwnedPacket::Connect(c), v4::Packet::Connect(t)) => {
            prop_assert_eq!(t.protocol, Protocol::V4);
            prop_assert_eq!(t.keep_alive, c.keep_alive);
            prop_assert_eq!(&t.client_id, &c.client_id);
            prop_assert_eq!(t.clean_session, c.clean_start);
            match (&c.will, &t.last_will) {
                (None, None) => {}
                (Some(ours), Some(will)) => {
                    prop_assert_eq!(&will.topic, &ours.topic);
                    prop_assert_eq!(&will.message[..], &ours.payload[..]);
                    prop_assert_eq!(our_qos(will.qos), ours.qos);
                    prop_assert_eq!(will.retain, ours.retain);
                }
                (ours, theirs) => prop_assert!(false, "will {:?} read as {:?}", ours, theirs),
            }
            // Only the credentials' values are compared: mqttbytes cannot tell an empty
            // user name or password from an absent one (see `through_mqttbytes_login`).
            let read = t
                .login
                .map(|l| (l.username, l.password))
                .unwrap_or_default();
            prop_assert_eq!(read, their_credentials(c));
        }
        (OwnedPacket::ConnAck(c), v4::Packet::ConnAck(t)) => {
            prop_assert_eq!(t.session_present, c.session_present);
            prop_assert_eq!(t.code as u8, c.reason_code.to_v311_connack());
        }
        (OwnedPacket::Publish(p), v4::Packet::Publish(t)) => {
            prop_assert_eq!(t.dup, p.dup);
            prop_assert_eq!(our_qos(t.qos), p.qos);
            prop_assert_eq!(t.retain, p.retain);
            prop_assert_eq!(&t.topic, &p.topic);
            prop_assert_eq!(t.pkid, pkid(p.packet_id));
            prop_assert_eq!(&t.payload[..], &p.payload[..]);
        }
        (OwnedPacket::PubAck(r), v4::Packet::PubAck(t)) => {
            prop_assert_eq!(t.pkid, r.packet_id.get())
        }
        (OwnedPacket::PubRec(r), v4::Packet::PubRec(t)) => {
            prop_assert_eq!(t.pkid, r.packet_id.get())
        }
        (OwnedPacket::PubRel(r), v4::Packet::PubRel(t)) => {
            prop_assert_eq!(t.pkid, r.packet_id.get())
        }
        (OwnedPacket::PubComp(r), v4::Packet::PubComp(t)) => {
            prop_assert_eq!(t.pkid, r.packet_id.get())
        }
        (OwnedPacket::Subscribe(s), v4::Packet::Subscribe(t)) => {
            prop_assert_eq!(t.pkid, s.packet_id.get());
            let read: Vec<(String, QoS)> = t
                .filters
                .iter()
                .map(|f| (f.path.clone(), our_qos(f.qos)))
                .collect();
            let sent: Vec<(String, QoS)> = s
                .filters
                .iter()
                .map(|(filter, options)| (filter.clone(), options.qos))
                .collect();
            prop_assert_eq!(read, sent);
        }
        (OwnedPacket::SubAck(s), v4::Packet::SubAck(t)) => {
            prop_assert_eq!(t.pkid, s.packet_id.get());
            let sent: Vec<v4::SubscribeReasonCode> = s
                .reason_codes
                .iter()
                .map(|&c| their_v4_suback_code(c))
                .collect();
            prop_assert_eq!(t.return_codes, sent);
        }
        (OwnedPacket::Unsubscribe(u), v4::Packet::Unsubscribe(t)) => {
            prop_assert_eq!(t.pkid, u.packet_id.get());
            prop_assert_eq!(&t.topics, &u.filters);
        }
        (OwnedPacket::UnsubAck(u), v4::Packet::UnsubAck(t)) => {
            prop_assert_eq!(t.pkid, u.packet_id.get())
        }
        (OwnedPacket::PingReq, v4::Packet::PingReq)
        | (OwnedPacket::PingResp, v4::Packet::PingResp)
        | (OwnedPacket::Disconnect(_), v4::Packet::Disconnect) => {}
        (ours, theirs) => {
            return Err(fail(format!(
                "{:?} read by mqttbytes as {theirs:?}",
                ours.packet_type()
            )))
        }
    }
    Ok(())
}

/// Writes the mqttbytes equivalent of a 3.1.1 packet.
fn write_v4(owned: &OwnedPacket) -> BytesMut {
    let mut out = BytesMut::new();
    let written = match owned {
        OwnedPacket::Connect(c) => v4::Connect {
            protocol: Protocol::V4,
            keep_alive: c.keep_alive,
            client_id: c.client_id.clone(),
            clean_session: c.clean_start,
            last_will: c.will.as_ref().map(|w| v4::LastWill {
                topic: w.topic.clone(),
                message: Bytes::from(w.payload.clone()),
                qos: their_qos(w.qos),
                retain: w.retain,
            }),
            login: their_login(c, |username, password| v4::Login { username, password }),
        }
        .write(&mut out),
        OwnedPacket::ConnAck(c) => v4::ConnAck {
            session_present: c.session_present,
            code: their_v4_connack_code(c.reason_code),
        }
        .write(&mut out),
        OwnedPacket::Publish(p) => v4::Publish {
            dup: p.dup,
            qos: their_qos(p.qos),
            retain: p.retain,
            topic: p.topic.clone(),
            pkid: pkid(p.packet_id),
            payload: Bytes::from(p.payload.clone()),
        }
        .write(&mut out),
        OwnedPacket::PubAck(r) => v4::PubAck::new(r.packet_id.get()).write(&mut out),
        OwnedPacket::PubRec(r) => v4::PubRec::new(r.packet_id.get()).write(&mut out),
        OwnedPacket::PubRel(r) => v4::PubRel::new(r.packet_id.get()).write(&mut out),
        OwnedPacket::PubComp(r) => v4::PubComp::new(r.packet_id.get()).write(&mut out),
        OwnedPacket::Subscribe(s) => v4::Subscribe {
            pkid: s.packet_id.get(),
            filters: s
                .filters
                .iter()
                .map(|(filter, options)| {
                    v4::SubscribeFilter::new(filter.clone(), their_qos(options.qos))
                })
                .collect(),
        }
        .write(&mut out),
        OwnedPacket::SubAck(s) => v4::SubAck::new(
            s.packet_id.get(),
            s.reason_codes
                .iter()
                .map(|&c| their_v4_suback_code(c))
                .collect(),
        )
        .write(&mut out),
        OwnedPacket::Unsubscribe(u) => v4::Unsubscribe {
            pkid: u.packet_id.get(),
            topics: u.filters.clone(),
        }
        .write(&mut out),
        OwnedPacket::UnsubAck(u) => v4::UnsubAck::new(u.packet_id.get()).write(&mut out),
        OwnedPacket::PingReq => v4::PingReq.write(&mut out),
        OwnedPacket::PingResp => v4::PingResp.write(&mut out),
        OwnedPacket::Disconnect(_) => v4::Disconnect.write(&mut out),
        OwnedPacket::Auth(_) => panic!("AUTH does not exist in 3.1.1"),
    };
    written.expect("mqttbytes writes the packet");
    out
}

/// (b) mqttbytes encodes for 3.1.1, petrel decodes: the packet must come back, and with no
/// properties to order the bytes must be exactly petrel's.
fn v4_to_petrel(owned: &OwnedPacket) -> Result<(), TestCaseError> {
    let bytes = write_v4(owned);
    let expected = match owned {
        OwnedPacket::Connect(c) => {
            let c = through_mqttbytes_login(c);
            if c.username.is_none() && c.password.is_some() {
                // An empty user name with a password: mqttbytes drops the user name and
                // sends a password alone, which 3.1.1 forbids [MQTT-3.1.2-22].
                prop_assert_eq!(
                    petrel_decode(&bytes, V311),
                    Err(DecodeError::PasswordWithoutUsername)
                );
                return Ok(());
            }
            OwnedPacket::Connect(c)
        }
        other => other.clone(),
    };
    expected.with(|packet| {
        prop_assert_eq!(petrel_decode(&bytes, V311), Ok(packet));
        Ok(())
    })?;
    prop_assert_eq!(&bytes[..], &petrel_encode(&expected, V311)?[..]);
    Ok(())
}

// =============================================================================================
// MQTT 5.0: mqttbytes::v5

fn flag(value: Option<u8>) -> Option<bool> {
    value.map(|v| match v {
        0 => false,
        1 => true,
        other => panic!("mqttbytes read a boolean property as {other}"),
    })
}

fn their_flag(value: Option<bool>) -> Option<u8> {
    value.map(u8::from)
}

fn bin(value: Option<Bytes>) -> Option<Vec<u8>> {
    value.map(|b| b.to_vec())
}

fn their_bin(value: &Option<Vec<u8>>) -> Option<Bytes> {
    value.clone().map(Bytes::from)
}

/// mqttbytes reads an empty property block as `None`, and writes `None` as an empty block.
fn their_props<T>(props: &OwnedProps, make: impl FnOnce(&OwnedProps) -> T) -> Option<T> {
    (!props.is_empty()).then(|| make(props))
}

fn our_connect_props(p: Option<v5::ConnectProperties>) -> OwnedProps {
    let Some(p) = p else {
        return OwnedProps::default();
    };
    OwnedProps {
        session_expiry_interval: p.session_expiry_interval,
        receive_maximum: p.receive_maximum,
        maximum_packet_size: p.max_packet_size,
        topic_alias_maximum: p.topic_alias_max,
        request_response_information: flag(p.request_response_info),
        request_problem_information: flag(p.request_problem_info),
        user_properties: p.user_properties,
        authentication_method: p.authentication_method,
        authentication_data: bin(p.authentication_data),
        ..OwnedProps::default()
    }
}

fn their_connect_props(p: &OwnedProps) -> v5::ConnectProperties {
    v5::ConnectProperties {
        session_expiry_interval: p.session_expiry_interval,
        receive_maximum: p.receive_maximum,
        max_packet_size: p.maximum_packet_size,
        topic_alias_max: p.topic_alias_maximum,
        request_response_info: their_flag(p.request_response_information),
        request_problem_info: their_flag(p.request_problem_information),
        user_properties: p.user_properties.clone(),
        authentication_method: p.authentication_method.clone(),
        authentication_data: their_bin(&p.authentication_data),
    }
}

fn our_will_props(p: Option<v5::WillProperties>) -> OwnedProps {
    let Some(p) = p else {
        return OwnedProps::default();
    };
    OwnedProps {
        will_delay_interval: p.delay_interval,
        payload_format_indicator: flag(p.payload_format_indicator),
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: bin(p.correlation_data),
        user_properties: p.user_properties,
        ..OwnedProps::default()
    }
}

fn their_will_props(p: &OwnedProps) -> v5::WillProperties {
    v5::WillProperties {
        delay_interval: p.will_delay_interval,
        payload_format_indicator: their_flag(p.payload_format_indicator),
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: their_bin(&p.correlation_data),
        user_properties: p.user_properties.clone(),
    }
}

fn our_connack_props(p: Option<v5::ConnAckProperties>) -> OwnedProps {
    let Some(p) = p else {
        return OwnedProps::default();
    };
    OwnedProps {
        session_expiry_interval: p.session_expiry_interval,
        receive_maximum: p.receive_max,
        maximum_qos: p.max_qos.map(|q| match q {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            other => panic!("mqttbytes read a maximum QoS of {other}"),
        }),
        retain_available: flag(p.retain_available),
        maximum_packet_size: p.max_packet_size,
        assigned_client_identifier: p.assigned_client_identifier,
        topic_alias_maximum: p.topic_alias_max,
        reason_string: p.reason_string,
        user_properties: p.user_properties,
        wildcard_subscription_available: flag(p.wildcard_subscription_available),
        subscription_identifier_available: flag(p.subscription_identifiers_available),
        shared_subscription_available: flag(p.shared_subscription_available),
        server_keep_alive: p.server_keep_alive,
        response_information: p.response_information,
        server_reference: p.server_reference,
        authentication_method: p.authentication_method,
        authentication_data: bin(p.authentication_data),
        ..OwnedProps::default()
    }
}

fn their_connack_props(p: &OwnedProps) -> v5::ConnAckProperties {
    v5::ConnAckProperties {
        session_expiry_interval: p.session_expiry_interval,
        receive_max: p.receive_maximum,
        max_qos: p.maximum_qos.map(|q| q as u8),
        retain_available: their_flag(p.retain_available),
        max_packet_size: p.maximum_packet_size,
        assigned_client_identifier: p.assigned_client_identifier.clone(),
        topic_alias_max: p.topic_alias_maximum,
        reason_string: p.reason_string.clone(),
        user_properties: p.user_properties.clone(),
        wildcard_subscription_available: their_flag(p.wildcard_subscription_available),
        subscription_identifiers_available: their_flag(p.subscription_identifier_available),
        shared_subscription_available: their_flag(p.shared_subscription_available),
        server_keep_alive: p.server_keep_alive,
        response_information: p.response_information.clone(),
        server_reference: p.server_reference.clone(),
        authentication_method: p.authentication_method.clone(),
        authentication_data: their_bin(&p.authentication_data),
    }
}

fn our_publish_props(p: Option<v5::PublishProperties>) -> OwnedProps {
    let Some(p) = p else {
        return OwnedProps::default();
    };
    OwnedProps {
        payload_format_indicator: flag(p.payload_format_indicator),
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: p.topic_alias,
        response_topic: p.response_topic,
        correlation_data: bin(p.correlation_data),
        user_properties: p.user_properties,
        subscription_identifiers: p
            .subscription_identifiers
            .into_iter()
            .map(|id| u32::try_from(id).expect("a variable byte integer fits in u32"))
            .collect(),
        content_type: p.content_type,
        ..OwnedProps::default()
    }
}

fn their_publish_props(p: &OwnedProps) -> v5::PublishProperties {
    v5::PublishProperties {
        payload_format_indicator: their_flag(p.payload_format_indicator),
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: p.topic_alias,
        response_topic: p.response_topic.clone(),
        correlation_data: their_bin(&p.correlation_data),
        user_properties: p.user_properties.clone(),
        subscription_identifiers: p
            .subscription_identifiers
            .iter()
            .map(|&id| id as usize)
            .collect(),
        content_type: p.content_type.clone(),
    }
}

fn our_subscribe_props(p: Option<v5::SubscribeProperties>) -> OwnedProps {
    let Some(p) = p else {
        return OwnedProps::default();
    };
    OwnedProps {
        subscription_identifiers: p
            .id
            .map(|id| u32::try_from(id).expect("a variable byte integer fits in u32"))
            .into_iter()
            .collect(),
        user_properties: p.user_properties,
        ..OwnedProps::default()
    }
}

fn their_subscribe_props(p: &OwnedProps) -> v5::SubscribeProperties {
    v5::SubscribeProperties {
        id: p.subscription_identifiers.first().map(|&id| id as usize),
        user_properties: p.user_properties.clone(),
    }
}

fn our_disconnect_props(p: Option<v5::DisconnectProperties>) -> OwnedProps {
    let Some(p) = p else {
        return OwnedProps::default();
    };
    OwnedProps {
        session_expiry_interval: p.session_expiry_interval,
        reason_string: p.reason_string,
        user_properties: p.user_properties,
        server_reference: p.server_reference,
        ..OwnedProps::default()
    }
}

fn their_disconnect_props(p: &OwnedProps) -> v5::DisconnectProperties {
    v5::DisconnectProperties {
        session_expiry_interval: p.session_expiry_interval,
        reason_string: p.reason_string.clone(),
        user_properties: p.user_properties.clone(),
        server_reference: p.server_reference.clone(),
    }
}

/// The acknowledgements' property blocks: a reason string and user properties, one struct
/// type per packet in mqttbytes.
macro_rules! ack_props {
    ($ours:ident, $theirs:ident, $ty:ident) => {
        fn $ours(p: Option<v5::$ty>) -> OwnedProps {
            let Some(p) = p else {
                return OwnedProps::default();
            };
            OwnedProps {
                reason_string: p.reason_string,
                user_properties: p.user_properties,
                ..OwnedProps::default()
            }
        }

        fn $theirs(p: &OwnedProps) -> v5::$ty {
            v5::$ty {
                reason_string: p.reason_string.clone(),
                user_properties: p.user_properties.clone(),
            }
        }
    };
}

ack_props!(our_puback_props, their_puback_props, PubAckProperties);
ack_props!(our_pubrec_props, their_pubrec_props, PubRecProperties);
ack_props!(our_pubrel_props, their_pubrel_props, PubRelProperties);
ack_props!(our_pubcomp_props, their_pubcomp_props, PubCompProperties);
ack_props!(our_suback_props, their_suback_props, SubAckProperties);
ack_props!(our_unsuback_props, their_unsuback_props, UnsubAckProperties);

fn our_unsubscribe_props(p: Option<v5::UnsubscribeProperties>) -> OwnedProps {
    p.map(|p| OwnedProps {
        user_properties: p.user_properties,
        ..OwnedProps::default()
    })
    .unwrap_or_default()
}

fn their_unsubscribe_props(p: &OwnedProps) -> v5::UnsubscribeProperties {
    v5::UnsubscribeProperties {
        user_properties: p.user_properties.clone(),
    }
}

fn their_v5_connack_code(code: ReasonCode) -> v5::ConnectReturnCode {
    use v5::ConnectReturnCode as C;
    use ReasonCode as R;
    match code {
        R::Success => C::Success,
        R::UnspecifiedError => C::UnspecifiedError,
        R::MalformedPacket => C::MalformedPacket,
        R::ProtocolError => C::ProtocolError,
        R::ImplementationSpecificError => C::ImplementationSpecificError,
        R::UnsupportedProtocolVersion => C::UnsupportedProtocolVersion,
        R::ClientIdentifierNotValid => C::ClientIdentifierNotValid,
        R::BadUserNameOrPassword => C::BadUserNamePassword,
        R::NotAuthorized => C::NotAuthorized,
        R::ServerUnavailable => C::ServerUnavailable,
        R::ServerBusy => C::ServerBusy,
        R::Banned => C::Banned,
        R::BadAuthenticationMethod => C::BadAuthenticationMethod,
        R::TopicNameInvalid => C::TopicNameInvalid,
        R::PacketTooLarge => C::PacketTooLarge,
        R::QuotaExceeded => C::QuotaExceeded,
        R::PayloadFormatInvalid => C::PayloadFormatInvalid,
        R::RetainNotSupported => C::RetainNotSupported,
        R::QoSNotSupported => C::QoSNotSupported,
        R::UseAnotherServer => C::UseAnotherServer,
        R::ServerMoved => C::ServerMoved,
        R::ConnectionRateExceeded => C::ConnectionRateExceeded,
        other => panic!("{other:?} is not a CONNACK reason code"),
    }
}

/// PUBACK and PUBREC share their codes; mqttbytes has one enum for each.
macro_rules! their_puback_code {
    ($ty:ident, $code:expr) => {{
        use v5::$ty as C;
        use ReasonCode as R;
        match $code {
            R::Success => C::Success,
            R::NoMatchingSubscribers => C::NoMatchingSubscribers,
            R::UnspecifiedError => C::UnspecifiedError,
            R::ImplementationSpecificError => C::ImplementationSpecificError,
            R::NotAuthorized => C::NotAuthorized,
            R::TopicNameInvalid => C::TopicNameInvalid,
            R::PacketIdentifierInUse => C::PacketIdentifierInUse,
            R::QuotaExceeded => C::QuotaExceeded,
            R::PayloadFormatInvalid => C::PayloadFormatInvalid,
            other => panic!("{other:?} is not a PUBACK/PUBREC reason code"),
        }
    }};
}

/// So do PUBREL and PUBCOMP.
macro_rules! their_pubrel_code {
    ($ty:ident, $code:expr) => {{
        match $code {
            ReasonCode::Success => v5::$ty::Success,
            ReasonCode::PacketIdentifierNotFound => v5::$ty::PacketIdentifierNotFound,
            other => panic!("{other:?} is not a PUBREL/PUBCOMP reason code"),
        }
    }};
}

fn their_unsuback_code(code: ReasonCode) -> v5::UnsubAckReason {
    use v5::UnsubAckReason as C;
    use ReasonCode as R;
    match code {
        R::Success => C::Success,
        R::NoSubscriptionExisted => C::NoSubscriptionExisted,
        R::UnspecifiedError => C::UnspecifiedError,
        R::ImplementationSpecificError => C::ImplementationSpecificError,
        R::NotAuthorized => C::NotAuthorized,
        R::TopicFilterInvalid => C::TopicFilterInvalid,
        R::PacketIdentifierInUse => C::PacketIdentifierInUse,
        other => panic!("{other:?} is not an UNSUBACK reason code"),
    }
}

fn their_retain_rule(handling: RetainHandling) -> v5::RetainForwardRule {
    match handling {
        RetainHandling::SendOnSubscribe => v5::RetainForwardRule::OnEverySubscribe,
        RetainHandling::SendIfNew => v5::RetainForwardRule::OnNewSubscribe,
        RetainHandling::DoNotSend => v5::RetainForwardRule::Never,
    }
}

fn our_options(f: &v5::SubscribeFilter) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: our_qos(f.qos),
        no_local: f.nolocal,
        retain_as_published: f.preserve_retain,
        retain_handling: match f.retain_forward_rule {
            v5::RetainForwardRule::OnEverySubscribe => RetainHandling::SendOnSubscribe,
            v5::RetainForwardRule::OnNewSubscribe => RetainHandling::SendIfNew,
            v5::RetainForwardRule::Never => RetainHandling::DoNotSend,
        },
    }
}

/// (a) petrel encodes for 5.0, mqttbytes decodes: every field, every property must match.
fn petrel_to_v5(owned: &OwnedPacket) -> Result<(), TestCaseError> {
    let bytes = petrel_encode(owned, V5)?;
    let mut stream = BytesMut::from(&bytes[..]);
    let read = v5::read(&mut stream, MAX_SIZE);

    if let OwnedPacket::Disconnect(_) = owned {
        // mqttbytes cannot read the short DISCONNECTs that 5.0 section 3.14.2.1 allows:
        // `v5::read` turns away every remaining length of 0 but PINGREQ/PINGRESP, and a
        // reason code without a property length (remaining length 1, which "uses a value
        // of 0", section 3.14.2.2.1) makes it look for the missing length byte.
        match bytes[1] {
            0 => {
                prop_assert_eq!(read, Err(mqttbytes::Error::PayloadRequired));
                return Ok(());
            }
            1 => {
                prop_assert_eq!(read, Err(mqttbytes::Error::InsufficientBytes(1)));
                return Ok(());
            }
            _ => {}
        }
    }

    let theirs = read.map_err(|e| fail(format!("mqttbytes refused {bytes:02x?}: {e:?}")))?;
    prop_assert!(stream.is_empty(), "mqttbytes left bytes over");

    match (owned, theirs) {
        (OwnedPacket::Connect(c), v5::Packet::Connect(t)) => {
            prop_assert_eq!(t.protocol, Protocol::V5);
            prop_assert_eq!(t.keep_alive, c.keep_alive);
            prop_assert_eq!(&t.client_id, &c.client_id);
            prop_assert_eq!(t.clean_session, c.clean_start);
            prop_assert_eq!(our_connect_props(t.properties), c.properties.clone());
            match (&c.will, t.last_will) {
                (None, None) => {}
                (Some(ours), Some(will)) => {
                    prop_assert_eq!(&will.topic, &ours.topic);
                    prop_assert_eq!(&will.message[..], &ours.payload[..]);
                    prop_assert_eq!(our_qos(will.qos), ours.qos);
                    prop_assert_eq!(will.retain, ours.retain);
                    prop_assert_eq!(our_will_props(will.properties), ours.properties.clone());
                }
                (ours, theirs) => prop_assert!(false, "will {:?} read as {:?}", ours, theirs),
            }
            // Values only, as over 3.1.1: see `through_mqttbytes_login`.
            let read = t
                .login
                .map(|l| (l.username, l.password))
                .unwrap_or_default();
            prop_assert_eq!(read, their_credentials(c));
        }
        (OwnedPacket::ConnAck(c), v5::Packet::ConnAck(t)) => {
            prop_assert_eq!(t.session_present, c.session_present);
            prop_assert_eq!(t.code as u8, c.reason_code as u8);
            prop_assert_eq!(our_connack_props(t.properties), c.properties.clone());
        }
        (OwnedPacket::Publish(p), v5::Packet::Publish(t)) => {
            prop_assert_eq!(t.dup, p.dup);
            prop_assert_eq!(our_qos(t.qos), p.qos);
            prop_assert_eq!(t.retain, p.retain);
            prop_assert_eq!(&t.topic, &p.topic);
            prop_assert_eq!(t.pkid, pkid(p.packet_id));
            let ids = &p.properties.subscription_identifiers;
            if ids.len() > 1 {
                // mqttbytes bug: reading a subscription identifier it counts the property's
                // identifier byte twice (`cursor += 1` for it, then `cursor += 1 + id_len`),
                // so after several of them it believes the block has ended, stops, and
                // hands the rest of the block over as payload (see
                // `mqttbytes_v5_misreads_several_subscription_identifiers`). The properties
                // and payload of such a PUBLISH are skipped, but for the identifiers it did
                // read; PUBLISHes with at most one identifier are compared in full.
                let read = our_publish_props(t.properties).subscription_identifiers;
                prop_assert!(ids.starts_with(&read), "{:?} read as {:?}", ids, read);
            } else {
                prop_assert_eq!(our_publish_props(t.properties), p.properties.clone());
                prop_assert_eq!(&t.payload[..], &p.payload[..]);
            }
        }
        (OwnedPacket::PubAck(r), v5::Packet::PubAck(t)) => {
            prop_assert_eq!(t.pkid, r.packet_id.get());
            prop_assert_eq!(t.reason as u8, r.reason_code as u8);
            prop_assert_eq!(our_puback_props(t.properties), r.properties.clone());
        }
        (OwnedPacket::PubRec(r), v5::Packet::PubRec(t)) => {
            prop_assert_eq!(t.pkid, r.packet_id.get());
            prop_assert_eq!(t.reason as u8, r.reason_code as u8);
            prop_assert_eq!(our_pubrec_props(t.properties), r.properties.clone());
        }
        (OwnedPacket::PubRel(r), v5::Packet::PubRel(t)) => {
            prop_assert_eq!(t.pkid, r.packet_id.get());
            prop_assert_eq!(t.reason as u8, r.reason_code as u8);
            prop_assert_eq!(our_pubrel_props(t.properties), r.properties.clone());
        }
        (OwnedPacket::PubComp(r), v5::Packet::PubComp(t)) => {
            prop_assert_eq!(t.pkid, r.packet_id.get());
            prop_assert_eq!(t.reason as u8, r.reason_code as u8);
            prop_assert_eq!(our_pubcomp_props(t.properties), r.properties.clone());
        }
        (OwnedPacket::Subscribe(s), v5::Packet::Subscribe(t)) => {
            prop_assert_eq!(t.pkid, s.packet_id.get());
            prop_assert_eq!(our_subscribe_props(t.properties), s.properties.clone());
            let read: Vec<(String, SubscriptionOptions)> = t
                .filters
                .iter()
                .map(|f| (f.path.clone(), our_options(f)))
                .collect();
            prop_assert_eq!(read, s.filters.clone());
        }
        (OwnedPacket::SubAck(s), v5::Packet::SubAck(t)) => {
            prop_assert_eq!(t.pkid, s.packet_id.get());
            prop_assert_eq!(our_suback_props(t.properties), s.properties.clone());
            let read: Vec<u8> = t.return_codes.iter().map(|&c| c as u8).collect();
            let sent: Vec<u8> = s.reason_codes.iter().map(|&c| c as u8).collect();
            prop_assert_eq!(read, sent);
        }
        // mqttbytes' v5 UNSUBSCRIBE reader still has a `dbg!(pkid)` in it: the stray packet
        // identifiers on stderr come from there.
        (OwnedPacket::Unsubscribe(u), v5::Packet::Unsubscribe(t)) => {
            prop_assert_eq!(t.pkid, u.packet_id.get());
            prop_assert_eq!(our_unsubscribe_props(t.properties), u.properties.clone());
            prop_assert_eq!(&t.filters, &u.filters);
        }
        (OwnedPacket::UnsubAck(u), v5::Packet::UnsubAck(t)) => {
            prop_assert_eq!(t.pkid, u.packet_id.get());
            prop_assert_eq!(our_unsuback_props(t.properties), u.properties.clone());
            let read: Vec<u8> = t.reasons.iter().map(|&c| c as u8).collect();
            let sent: Vec<u8> = u.reason_codes.iter().map(|&c| c as u8).collect();
            prop_assert_eq!(read, sent);
        }
        (OwnedPacket::PingReq, v5::Packet::PingReq)
        | (OwnedPacket::PingResp, v5::Packet::PingResp) => {}
        (OwnedPacket::Disconnect(d), v5::Packet::Disconnect(t)) => {
            prop_assert_eq!(t.reason_code as u8, d.reason_code as u8);
            prop_assert_eq!(our_disconnect_props(t.properties), d.properties.clone());
        }
        (ours, theirs) => {
            return Err(fail(format!(
                "{:?} read by mqttbytes as {theirs:?}",
                ours.packet_type()
            )))
        }
    }
    Ok(())
}

/// Writes the mqttbytes equivalent of a 5.0 packet.
fn write_v5(owned: &OwnedPacket) -> BytesMut {
    let mut out = BytesMut::new();
    let written = match owned {
        OwnedPacket::Connect(c) => v5::Connect {
            protocol: Protocol::V5,
            keep_alive: c.keep_alive,
            client_id: c.client_id.clone(),
            clean_session: c.clean_start,
            last_will: c.will.as_ref().map(|w| v5::LastWill {
                topic: w.topic.clone(),
                message: Bytes::from(w.payload.clone()),
                qos: their_qos(w.qos),
                retain: w.retain,
                properties: their_props(&w.properties, their_will_props),
            }),
            login: their_login(c, |username, password| v5::Login { username, password }),
            properties: their_props(&c.properties, their_connect_props),
        }
        .write(&mut out),
        OwnedPacket::ConnAck(c) => v5::ConnAck {
            session_present: c.session_present,
            code: their_v5_connack_code(c.reason_code),
            // With `None` mqttbytes leaves the property length out altogether, which 5.0
            // does not allow in CONNACK (section 3.2.2.3; see
            // `mqttbytes_v5_connack_without_properties_is_malformed`): always give it a
            // block, even an empty one.
            properties: Some(their_connack_props(&c.properties)),
        }
        .write(&mut out),
        OwnedPacket::Publish(p) => v5::Publish {
            dup: p.dup,
            qos: their_qos(p.qos),
            retain: p.retain,
            topic: p.topic.clone(),
            pkid: pkid(p.packet_id),
            properties: their_props(&p.properties, their_publish_props),
            payload: Bytes::from(p.payload.clone()),
        }
        .write(&mut out),
        OwnedPacket::PubAck(r) => v5::PubAck {
            pkid: r.packet_id.get(),
            reason: their_puback_code!(PubAckReason, r.reason_code),
            properties: their_props(&r.properties, their_puback_props),
        }
        .write(&mut out),
        OwnedPacket::PubRec(r) => v5::PubRec {
            pkid: r.packet_id.get(),
            reason: their_puback_code!(PubRecReason, r.reason_code),
            properties: their_props(&r.properties, their_pubrec_props),
        }
        .write(&mut out),
        OwnedPacket::PubRel(r) => v5::PubRel {
            pkid: r.packet_id.get(),
            reason: their_pubrel_code!(PubRelReason, r.reason_code),
            properties: their_props(&r.properties, their_pubrel_props),
        }
        .write(&mut out),
        OwnedPacket::PubComp(r) => v5::PubComp {
            pkid: r.packet_id.get(),
            reason: their_pubrel_code!(PubCompReason, r.reason_code),
            properties: their_props(&r.properties, their_pubcomp_props),
        }
        .write(&mut out),
        OwnedPacket::Subscribe(s) => v5::Subscribe {
            pkid: s.packet_id.get(),
            filters: s
                .filters
                .iter()
                .map(|(filter, options)| v5::SubscribeFilter {
                    path: filter.clone(),
                    qos: their_qos(options.qos),
                    nolocal: options.no_local,
                    preserve_retain: options.retain_as_published,
                    retain_forward_rule: their_retain_rule(options.retain_handling),
                })
                .collect(),
            properties: their_props(&s.properties, their_subscribe_props),
        }
        .write(&mut out),
        OwnedPacket::SubAck(s) => v5::SubAck {
            pkid: s.packet_id.get(),
            return_codes: s
                .reason_codes
                .iter()
                .map(|&c| v5::SubscribeReasonCode::try_from(c as u8).expect("a SUBACK reason code"))
                .collect(),
            properties: their_props(&s.properties, their_suback_props),
        }
        .write(&mut out),
        OwnedPacket::Unsubscribe(u) => v5::Unsubscribe {
            pkid: u.packet_id.get(),
            filters: u.filters.clone(),
            properties: their_props(&u.properties, their_unsubscribe_props),
        }
        .write(&mut out),
        OwnedPacket::UnsubAck(u) => v5::UnsubAck {
            pkid: u.packet_id.get(),
            reasons: u
                .reason_codes
                .iter()
                .map(|&c| their_unsuback_code(c))
                .collect(),
            properties: their_props(&u.properties, their_unsuback_props),
        }
        .write(&mut out),
        OwnedPacket::PingReq => v5::PingReq.write(&mut out),
        OwnedPacket::PingResp => v5::PingResp.write(&mut out),
        OwnedPacket::Disconnect(d) => v5::Disconnect {
            reason_code: v5::DisconnectReasonCode::try_from(d.reason_code as u8)
                .expect("a DISCONNECT reason code"),
            // `their_props` gives `None` for an empty block, and must here: given
            // `Some(empty)`, mqttbytes computes a remaining length of 2, takes that for
            // its "no reason code" shortcut and writes E0 00, losing the reason code (see
            // `mqttbytes_v5_disconnect_with_empty_properties_loses_the_reason_code`).
            properties: their_props(&d.properties, their_disconnect_props),
        }
        .write(&mut out),
        OwnedPacket::Auth(_) => panic!("mqttbytes has no AUTH packet"),
    };
    written.expect("mqttbytes writes the packet");
    out
}

/// (b) mqttbytes encodes for 5.0, petrel decodes: the packet must come back. mqttbytes
/// writes properties in an order of its own (valid: the specification imposes none), so
/// the bytes are compared only in length.
fn v5_to_petrel(owned: &OwnedPacket) -> Result<(), TestCaseError> {
    let bytes = write_v5(owned);
    let expected = match owned {
        OwnedPacket::Connect(c) => OwnedPacket::Connect(through_mqttbytes_login(c)),
        other => other.clone(),
    };
    expected.with(|packet| {
        prop_assert_eq!(petrel_decode(&bytes, V5), Ok(packet));
        prop_assert_eq!(packet.encoded_len(V5), Ok(bytes.len()));
        Ok(())
    })
}

// =============================================================================================
// The generated cross-checks

macro_rules! crosscheck_tests {
    ($($name:ident: $strategy:expr => $to_them:ident, $from_them:ident;)*) => {
        proptest! {
            #![proptest_config(config())]
            $(
                #[test]
                fn $name(packet in $strategy) {
                    $to_them(&packet)?;
                    $from_them(&packet)?;
                }
            )*
        }
    };
}

crosscheck_tests! {
    connect_v311: connect_with_text_password(V311) => petrel_to_v4, v4_to_petrel;
    connack_v311: connack(V311) => petrel_to_v4, v4_to_petrel;
    publish_v311: publish(V311) => petrel_to_v4, v4_to_petrel;
    puback_v311: pub_response(V311, PacketType::PubAck) => petrel_to_v4, v4_to_petrel;
    pubrec_v311: pub_response(V311, PacketType::PubRec) => petrel_to_v4, v4_to_petrel;
    pubrel_v311: pub_response(V311, PacketType::PubRel) => petrel_to_v4, v4_to_petrel;
    pubcomp_v311: pub_response(V311, PacketType::PubComp) => petrel_to_v4, v4_to_petrel;
    subscribe_v311: subscribe(V311) => petrel_to_v4, v4_to_petrel;
    suback_v311: suback(V311) => petrel_to_v4, v4_to_petrel;
    unsubscribe_v311: unsubscribe(V311) => petrel_to_v4, v4_to_petrel;
    unsuback_v311: unsuback(V311) => petrel_to_v4, v4_to_petrel;
    pingreq_v311: Just(OwnedPacket::PingReq) => petrel_to_v4, v4_to_petrel;
    pingresp_v311: Just(OwnedPacket::PingResp) => petrel_to_v4, v4_to_petrel;
    disconnect_v311: disconnect(V311) => petrel_to_v4, v4_to_petrel;

    connect_v5: connect_with_text_password(V5) => petrel_to_v5, v5_to_petrel;
    connack_v5: connack(V5) => petrel_to_v5, v5_to_petrel;
    publish_v5: publish(V5) => petrel_to_v5, v5_to_petrel;
    puback_v5: pub_response(V5, PacketType::PubAck) => petrel_to_v5, v5_to_petrel;
    pubrec_v5: pub_response(V5, PacketType::PubRec) => petrel_to_v5, v5_to_petrel;
    pubrel_v5: pub_response(V5, PacketType::PubRel) => petrel_to_v5, v5_to_petrel;
    pubcomp_v5: pub_response(V5, PacketType::PubComp) => petrel_to_v5, v5_to_petrel;
    subscribe_v5: subscribe(V5) => petrel_to_v5, v5_to_petrel;
    suback_v5: suback(V5) => petrel_to_v5, v5_to_petrel;
    unsubscribe_v5: unsubscribe(V5) => petrel_to_v5, v5_to_petrel;
    unsuback_v5: unsuback(V5) => petrel_to_v5, v5_to_petrel;
    pingreq_v5: Just(OwnedPacket::PingReq) => petrel_to_v5, v5_to_petrel;
    pingresp_v5: Just(OwnedPacket::PingResp) => petrel_to_v5, v5_to_petrel;
    disconnect_v5: disconnect(V5) => petrel_to_v5, v5_to_petrel;
}

// =============================================================================================
// mqttbytes' departures from the specifications, pinned so that a fixed mqttbytes shows up

#[test]
fn mqttbytes_refuses_a_binary_password() {
    let connect = OwnedPacket::Connect(OwnedConnect {
        protocol_version: V311,
        clean_start: true,
        keep_alive: 60,
        properties: OwnedProps::default(),
        client_id: "c".into(),
        will: None,
        username: Some("u".into()),
        password: Some(vec![0xFF, 0x00, 0xC3]),
    });
    let bytes = petrel_encode(&connect, V311).unwrap();
    let mut stream = BytesMut::from(&bytes[..]);
    assert_eq!(
        v4::read(&mut stream, MAX_SIZE),
        Err(mqttbytes::Error::TopicNotUtf8)
    );
    // Binary data is what the specification asks for, and petrel reads it back.
    connect.with(|packet| assert_eq!(petrel_decode(&bytes, V311), Ok(packet)));
}

#[test]
fn mqttbytes_v5_connack_without_properties_is_malformed() {
    let mut out = BytesMut::new();
    v5::ConnAck::new(v5::ConnectReturnCode::Success, false)
        .write(&mut out)
        .unwrap();
    // No property length byte: 5.0 requires one in CONNACK (section 3.2.2.3.1).
    assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x00]);
    assert_eq!(petrel_decode(&out, V5), Err(DecodeError::UnexpectedEnd));
    // mqttbytes cannot read it back either.
    assert_eq!(
        v5::read(&mut out, MAX_SIZE),
        Err(mqttbytes::Error::InsufficientBytes(1))
    );
}

#[test]
fn mqttbytes_v5_disconnect_with_empty_properties_loses_the_reason_code() {
    let mut out = BytesMut::new();
    v5::Disconnect {
        reason_code: v5::DisconnectReasonCode::ServerBusy,
        properties: Some(v5::DisconnectProperties::new()),
    }
    .write(&mut out)
    .unwrap();
    assert_eq!(&out[..], &[0xE0, 0x00]);
    assert_eq!(
        petrel_decode(&out, V5),
        Ok(Packet::Disconnect(petrel_codec::Disconnect::default()))
    );
}

#[test]
fn mqttbytes_v5_cannot_read_short_disconnects() {
    for (bytes, error) in [
        (&[0xE0, 0x00][..], mqttbytes::Error::PayloadRequired),
        (
            &[0xE0, 0x01, 0x8B][..],
            mqttbytes::Error::InsufficientBytes(1),
        ),
    ] {
        let mut stream = BytesMut::from(bytes);
        assert_eq!(v5::read(&mut stream, MAX_SIZE), Err(error));
        assert!(petrel_decode(bytes, V5).is_ok());
    }
}

#[test]
fn mqttbytes_v5_misreads_several_subscription_identifiers() {
    let ids = [
        petrel_codec::SubscriptionId(1),
        petrel_codec::SubscriptionId(2),
        petrel_codec::SubscriptionId(3),
    ];
    let publish = Packet::Publish(petrel_codec::Publish {
        topic: "t",
        properties: petrel_codec::Properties {
            subscription_identifiers: petrel_codec::List::new(&ids),
            ..petrel_codec::Properties::default()
        },
        payload: b"p",
        ..petrel_codec::Publish::default()
    });
    let mut buf = [0u8; 32];
    let len = publish.encode(V5, &mut buf).unwrap();
    // Three identifiers in a block of six bytes, then the payload.
    assert_eq!(
        &buf[..len],
        &[0x30, 0x0B, 0x00, 0x01, b't', 0x06, 0x0B, 0x01, 0x0B, 0x02, 0x0B, 0x03, b'p']
    );
    let mut stream = BytesMut::from(&buf[..len]);
    let Ok(v5::Packet::Publish(theirs)) = v5::read(&mut stream, MAX_SIZE) else {
        panic!("mqttbytes reads it as a PUBLISH");
    };
    assert_eq!(
        theirs.properties.unwrap().subscription_identifiers,
        vec![1, 2]
    );
    assert_eq!(&theirs.payload[..], &[0x0B, 0x03, b'p']);
    assert_eq!(petrel_decode(&buf[..len], V5), Ok(publish));
}
