//! Owned application messages, as the server side keeps and routes them.
//!
//! A message is built once from the PUBLISH that brought it in, sharing the connection's
//! receive buffer for its payload (`Bytes::slice_ref`), and then fanned out by reference
//! (`Arc<Message>`): a delivery to ten thousand subscribers copies no payload.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use bytes::Bytes;
use petrel_codec::{List, Properties, Publish, QoS, SubscriptionId, UserProperty};

use crate::time::{Duration, Instant};

/// An application message: topic, payload and the properties that travel with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic name (never empty: an inbound topic alias is resolved before this is built).
    pub topic: Arc<str>,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// Whether it was published retained.
    pub retain: bool,
    /// The 5.0 properties that are forwarded with it.
    pub properties: MessageProperties,
}

/// The forwarded properties of a message (MQTT 5.0 section 3.3.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageProperties {
    /// `Some(true)` if the payload is declared UTF-8 text.
    pub payload_format_indicator: Option<bool>,
    /// When the message expires: the arrival time plus its message expiry interval. A
    /// forwarded copy carries the time that is left [MQTT-3.3.2-6].
    pub expires_at: Option<Instant>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic.
    pub response_topic: Option<String>,
    /// Correlation data.
    pub correlation_data: Option<Bytes>,
    /// User properties, in their original order [MQTT-3.3.2-17].
    pub user_properties: Vec<(String, String)>,
}

impl Message {
    /// A QoS 0 message without properties.
    pub fn new(topic: &str, payload: impl Into<Bytes>) -> Self {
        Message {
            topic: Arc::from(topic),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: MessageProperties::default(),
        }
    }

    /// Builds a message from a decoded PUBLISH whose bytes are `frame`. The payload shares
    /// `frame` when it lies inside it; `topic` is the resolved topic (after alias lookup).
    pub fn from_publish(publish: &Publish<'_>, topic: &str, frame: &Bytes, now: Instant) -> Self {
        Message {
            topic: Arc::from(topic),
            payload: share(frame, publish.payload),
            qos: publish.qos,
            retain: publish.retain,
            properties: MessageProperties::from_properties(&publish.properties, frame, now),
        }
    }

    /// Whether the message has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.properties.expires_at.is_some_and(|at| now >= at)
    }

    /// The payload plus topic size, the figure queue limits count in.
    pub fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// A subslice of `frame` as `Bytes` sharing its storage, or a copy if it lies elsewhere.
pub(crate) fn share(frame: &Bytes, part: &[u8]) -> Bytes {
    let base = frame.as_ptr() as usize;
    let start = part.as_ptr() as usize;
    if part.is_empty() {
        Bytes::new()
    } else if start >= base && start + part.len() <= base + frame.len() {
        frame.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

impl MessageProperties {
    /// Whether there is nothing to forward: a 5.0 PUBLISH of the message has no property.
    pub fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.expires_at.is_none()
            && self.content_type.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
    }

    /// Takes the forwardable properties of a PUBLISH or will.
    pub fn from_properties(properties: &Properties<'_>, frame: &Bytes, now: Instant) -> Self {
        MessageProperties {
            payload_format_indicator: properties.payload_format_indicator,
            expires_at: properties
                .message_expiry_interval
                .map(|secs| now + Duration::from_secs(u64::from(secs))),
            content_type: properties.content_type.map(String::from),
            response_topic: properties.response_topic.map(String::from),
            correlation_data: properties.correlation_data.map(|d| share(frame, d)),
            user_properties: properties
                .user_properties
                .iter()
                .map(|p| (String::from(p.name), String::from(p.value)))
                .collect(),
        }
    }

    /// The seconds left before expiry at `now`, rounded up so a message sent just before it
    /// expires is not given an interval of 0 (which would mean "already expired" to nobody
    /// and "no expiry" to some clients).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}

/// Borrowed user properties for encoding, built from a message's owned ones.
pub(crate) fn user_property_views(props: &MessageProperties) -> Vec<UserProperty<'_>> {
    props
        .user_properties
        .iter()
        .map(|(name, value)| UserProperty { name, value })
        .collect()
}

/// Fills the PUBLISH properties of an outbound copy of `message`.
pub(crate) fn publish_properties<'a>(
    message: &'a Message,
    users: &'a [UserProperty<'a>],
    subscription_ids: &'a [SubscriptionId],
    now: Instant,
) -> Properties<'a> {
    let p = &message.properties;
    Properties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.remaining_expiry(now),
        content_type: p.content_type.as_deref(),
        response_topic: p.response_topic.as_deref(),
        correlation_data: p.correlation_data.as_deref(),
        user_properties: List::new(users),
        subscription_identifiers: List::new(subscription_ids),
        ..Properties::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_shares_the_frame() {
        let frame = Bytes::from_static(b"\x30\x07\x00\x01tpay!");
        let publish = Publish {
            topic: "t",
            payload: &frame[5..],
            ..Publish::default()
        };
        let m = Message::from_publish(&publish, "t", &frame, Instant::ZERO);
        assert_eq!(&m.payload[..], b"pay!");
        assert_eq!(m.payload.as_ptr(), frame[5..].as_ptr());
    }

    #[test]
    fn remaining_expiry_rounds_up() {
        let props = MessageProperties {
            expires_at: Some(Instant::from_secs(10)),
            ..MessageProperties::default()
        };
        assert_eq!(props.remaining_expiry(Instant::from_millis(100)), Some(10));
        assert_eq!(props.remaining_expiry(Instant::from_millis(9_001)), Some(1));
        assert_eq!(props.remaining_expiry(Instant::from_secs(10)), Some(0));
        assert_eq!(
            MessageProperties::default().remaining_expiry(Instant::ZERO),
            None
        );
    }
}
