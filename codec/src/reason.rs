//! MQTT 5.0 reason codes and the packets each one may appear in.

macro_rules! reason_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// A reason code (MQTT 5.0 section 2.4), also used to describe MQTT 3.1.1 outcomes.
        ///
        /// A 3.1.1 CONNACK return code or SUBACK failure is carried as its 5.0 equivalent and
        /// translated on the wire (see [`ReasonCode::to_v311_connack`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[repr(u8)]
        pub enum ReasonCode {
            $($(#[$doc])* $name = $value,)*
        }

        impl ReasonCode {
            /// Every reason code the specification defines, in ascending order.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$name,)*];

            /// The reason code with this value, if the specification defines one.
            pub const fn from_u8(value: u8) -> Option<ReasonCode> {
                match value {
                    $($value => Some(ReasonCode::$name),)*
                    _ => None,
                }
            }
        }
    };
}

reason_codes! {
    /// Success; in DISCONNECT "normal disconnection", in SUBACK "granted QoS 0".
    Success = 0x00,
    /// SUBACK: granted QoS 1.
    GrantedQoS1 = 0x01,
    /// SUBACK: granted QoS 2.
    GrantedQoS2 = 0x02,
    /// DISCONNECT from a client: close, but publish the will message.
    DisconnectWithWillMessage = 0x04,
    /// PUBACK / PUBREC: accepted, but nobody is subscribed.
    NoMatchingSubscribers = 0x10,
    /// UNSUBACK: there was no such subscription.
    NoSubscriptionExisted = 0x11,
    /// AUTH: continue the authentication exchange.
    ContinueAuthentication = 0x18,
    /// AUTH: start a re-authentication.
    ReAuthenticate = 0x19,
    /// An error the sender does not want to detail.
    UnspecifiedError = 0x80,
    /// The packet could not be parsed.
    MalformedPacket = 0x81,
    /// The packet was parsed but breaks the protocol.
    ProtocolError = 0x82,
    /// Valid, but this implementation does not accept it.
    ImplementationSpecificError = 0x83,
    /// CONNACK: the protocol level is not supported.
    UnsupportedProtocolVersion = 0x84,
    /// CONNACK: the client identifier is not accepted.
    ClientIdentifierNotValid = 0x85,
    /// CONNACK: the credentials were refused.
    BadUserNameOrPassword = 0x86,
    /// The client is not allowed to do this.
    NotAuthorized = 0x87,
    /// CONNACK: the server cannot serve now.
    ServerUnavailable = 0x88,
    /// The server is busy; try later.
    ServerBusy = 0x89,
    /// The client is banned.
    Banned = 0x8A,
    /// DISCONNECT: the server is shutting down.
    ServerShuttingDown = 0x8B,
    /// The authentication method is not supported or does not match.
    BadAuthenticationMethod = 0x8C,
    /// DISCONNECT: nothing received for 1.5 times the keep-alive.
    KeepAliveTimeout = 0x8D,
    /// DISCONNECT: another connection took over this session.
    SessionTakenOver = 0x8E,
    /// The topic filter is well formed UTF-8 but not accepted.
    TopicFilterInvalid = 0x8F,
    /// The topic name is well formed UTF-8 but not accepted.
    TopicNameInvalid = 0x90,
    /// The packet identifier is already in use.
    PacketIdentifierInUse = 0x91,
    /// The packet identifier is not known.
    PacketIdentifierNotFound = 0x92,
    /// More QoS 1/2 publications in flight than the receive maximum allows.
    ReceiveMaximumExceeded = 0x93,
    /// The topic alias is zero, above the maximum, or unknown.
    TopicAliasInvalid = 0x94,
    /// The packet exceeds the maximum packet size.
    PacketTooLarge = 0x95,
    /// The publish rate is too high.
    MessageRateTooHigh = 0x96,
    /// A quota was exceeded.
    QuotaExceeded = 0x97,
    /// DISCONNECT: an administrator's action.
    AdministrativeAction = 0x98,
    /// The payload does not match its payload format indicator.
    PayloadFormatInvalid = 0x99,
    /// Retained messages are not supported.
    RetainNotSupported = 0x9A,
    /// The QoS is above the server's maximum QoS.
    QoSNotSupported = 0x9B,
    /// Use another server (temporarily).
    UseAnotherServer = 0x9C,
    /// The server has moved (permanently).
    ServerMoved = 0x9D,
    /// Shared subscriptions are not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// Connections from this client arrive too fast.
    ConnectionRateExceeded = 0x9F,
    /// The maximum connection time was reached.
    MaximumConnectTime = 0xA0,
    /// Subscription identifiers are not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// Wildcard subscriptions are not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

/// Which packet a reason code travels in; each allows a different set (MQTT 5.0 section 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReasonContext {
    ConnAck,
    PubAck,
    PubRel,
    SubAck,
    UnsubAck,
    Disconnect,
    Auth,
}

impl ReasonContext {
    const ALL: [ReasonContext; 7] = [
        ReasonContext::ConnAck,
        ReasonContext::PubAck,
        ReasonContext::PubRel,
        ReasonContext::SubAck,
        ReasonContext::UnsubAck,
        ReasonContext::Disconnect,
        ReasonContext::Auth,
    ];
}

/// For each reason code (at [`ReasonCode::slot`]), one bit per [`ReasonContext`] that
/// allows it.
const ALLOWED: [u8; 0x20 + 0x23] = {
    let mut table = [0u8; 0x20 + 0x23];
    let mut i = 0;
    while i < ReasonCode::ALL.len() {
        let code = ReasonCode::ALL[i];
        let mut c = 0;
        while c < ReasonContext::ALL.len() {
            let context = ReasonContext::ALL[c];
            if code.listed_in(context) {
                table[code.slot()] |= 1 << context as u8;
            }
            c += 1;
        }
        i += 1;
    }
    table
};

impl ReasonCode {
    /// Whether this code is an error (0x80 and above) rather than a success outcome.
    pub const fn is_error(self) -> bool {
        self as u8 >= 0x80
    }

    /// "Normal disconnection": the same value as [`ReasonCode::Success`].
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// "Granted QoS 0": the same value as [`ReasonCode::Success`].
    pub const GRANTED_QOS0: ReasonCode = ReasonCode::Success;

    /// Whether the specification allows this code in the given packet: one load from a
    /// table that `listed_in` fills at compile time (its matches took 0.3 KB of a
    /// Cortex-M4 image).
    pub(crate) const fn allowed_in(self, context: ReasonContext) -> bool {
        let slot = self.slot();
        // Every code's slot is in the table; the comparison only spares a bounds check.
        slot < ALLOWED.len() && ALLOWED[slot] & 1 << context as u8 != 0
    }

    /// This code's place in [`ALLOWED`]: the codes below 0x80 end at 0x19, so the errors
    /// follow from 0x20.
    const fn slot(self) -> usize {
        let value = self as usize;
        if value >= 0x80 {
            value - 0x80 + 0x20
        } else {
            value
        }
    }

    /// Whether the specification lists this code for the given packet (MQTT 5.0 section
    /// 2.4 and each packet's reason code table).
    const fn listed_in(self, context: ReasonContext) -> bool {
        use ReasonCode as R;
        match context {
            ReasonContext::ConnAck => matches!(
                self,
                R::Success
                    | R::UnspecifiedError
                    | R::MalformedPacket
                    | R::ProtocolError
                    | R::ImplementationSpecificError
                    | R::UnsupportedProtocolVersion
                    | R::ClientIdentifierNotValid
                    | R::BadUserNameOrPassword
                    | R::NotAuthorized
                    | R::ServerUnavailable
                    | R::ServerBusy
                    | R::Banned
                    | R::BadAuthenticationMethod
                    | R::TopicNameInvalid
                    | R::PacketTooLarge
                    | R::QuotaExceeded
                    | R::PayloadFormatInvalid
                    | R::RetainNotSupported
                    | R::QoSNotSupported
                    | R::UseAnotherServer
                    | R::ServerMoved
                    | R::ConnectionRateExceeded
            ),
            ReasonContext::PubAck => matches!(
                self,
                R::Success
                    | R::NoMatchingSubscribers
                    | R::UnspecifiedError
                    | R::ImplementationSpecificError
                    | R::NotAuthorized
                    | R::TopicNameInvalid
                    | R::PacketIdentifierInUse
                    | R::QuotaExceeded
                    | R::PayloadFormatInvalid
            ),
            ReasonContext::PubRel => matches!(self, R::Success | R::PacketIdentifierNotFound),
            ReasonContext::SubAck => matches!(
                self,
                R::Success
                    | R::GrantedQoS1
                    | R::GrantedQoS2
                    | R::UnspecifiedError
                    | R::ImplementationSpecificError
                    | R::NotAuthorized
                    | R::TopicFilterInvalid
                    | R::PacketIdentifierInUse
                    | R::QuotaExceeded
                    | R::SharedSubscriptionsNotSupported
                    | R::SubscriptionIdentifiersNotSupported
                    | R::WildcardSubscriptionsNotSupported
            ),
            ReasonContext::UnsubAck => matches!(
                self,
                R::Success
                    | R::NoSubscriptionExisted
                    | R::UnspecifiedError
                    | R::ImplementationSpecificError
                    | R::NotAuthorized
                    | R::TopicFilterInvalid
                    | R::PacketIdentifierInUse
            ),
            ReasonContext::Disconnect => matches!(
                self,
                R::Success
                    | R::DisconnectWithWillMessage
                    | R::UnspecifiedError
                    | R::MalformedPacket
                    | R::ProtocolError
                    | R::ImplementationSpecificError
                    | R::NotAuthorized
                    | R::ServerBusy
                    | R::ServerShuttingDown
                    | R::KeepAliveTimeout
                    | R::SessionTakenOver
                    | R::TopicFilterInvalid
                    | R::TopicNameInvalid
                    | R::ReceiveMaximumExceeded
                    | R::TopicAliasInvalid
                    | R::PacketTooLarge
                    | R::MessageRateTooHigh
                    | R::QuotaExceeded
                    | R::AdministrativeAction
                    | R::PayloadFormatInvalid
                    | R::RetainNotSupported
                    | R::QoSNotSupported
                    | R::UseAnotherServer
                    | R::ServerMoved
                    | R::SharedSubscriptionsNotSupported
                    | R::ConnectionRateExceeded
                    | R::MaximumConnectTime
                    | R::SubscriptionIdentifiersNotSupported
                    | R::WildcardSubscriptionsNotSupported
            ),
            ReasonContext::Auth => matches!(
                self,
                R::Success | R::ContinueAuthentication | R::ReAuthenticate
            ),
        }
    }

    /// The MQTT 3.1.1 CONNACK return code that best describes this outcome.
    ///
    /// 3.1.1 has only five refusals; every 5.0 refusal without a direct equivalent becomes
    /// "server unavailable" (3), the one a 3.1.1 client treats as "try again later".
    pub const fn to_v311_connack(self) -> u8 {
        match self {
            ReasonCode::Success => 0,
            ReasonCode::UnsupportedProtocolVersion => 1,
            ReasonCode::ClientIdentifierNotValid => 2,
            ReasonCode::BadUserNameOrPassword | ReasonCode::BadAuthenticationMethod => 4,
            ReasonCode::NotAuthorized | ReasonCode::Banned => 5,
            _ => 3,
        }
    }

    /// The reason code for an MQTT 3.1.1 CONNACK return code (0 to 5).
    pub const fn from_v311_connack(code: u8) -> Option<ReasonCode> {
        Some(match code {
            0 => ReasonCode::Success,
            1 => ReasonCode::UnsupportedProtocolVersion,
            2 => ReasonCode::ClientIdentifierNotValid,
            3 => ReasonCode::ServerUnavailable,
            4 => ReasonCode::BadUserNameOrPassword,
            5 => ReasonCode::NotAuthorized,
            _ => return None,
        })
    }

    /// The MQTT 3.1.1 SUBACK return code: the granted QoS, or 0x80 for any failure.
    pub const fn to_v311_suback(self) -> u8 {
        match self {
            ReasonCode::Success => 0,
            ReasonCode::GrantedQoS1 => 1,
            ReasonCode::GrantedQoS2 => 2,
            _ => 0x80,
        }
    }

    /// The reason code for an MQTT 3.1.1 SUBACK return code (0, 1, 2 or 0x80).
    pub const fn from_v311_suback(code: u8) -> Option<ReasonCode> {
        Some(match code {
            0 => ReasonCode::Success,
            1 => ReasonCode::GrantedQoS1,
            2 => ReasonCode::GrantedQoS2,
            0x80 => ReasonCode::UnspecifiedError,
            _ => return None,
        })
    }
}

/// Success: the outcome a packet reports when it reports nothing else.
impl Default for ReasonCode {
    fn default() -> Self {
        ReasonCode::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_u8_round_trips_every_code() {
        for &code in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_u8(code as u8), Some(code));
        }
        let defined = (0..=255u8)
            .filter(|&v| ReasonCode::from_u8(v).is_some())
            .count();
        assert_eq!(defined, ReasonCode::ALL.len());
        assert_eq!(defined, 43);
    }

    #[test]
    fn the_table_says_what_the_lists_say() {
        for &code in ReasonCode::ALL {
            for context in ReasonContext::ALL {
                assert_eq!(
                    code.allowed_in(context),
                    code.listed_in(context),
                    "{code:?} {context:?}"
                );
            }
        }
        assert!(ReasonCode::WildcardSubscriptionsNotSupported.allowed_in(ReasonContext::SubAck));
        assert!(!ReasonCode::GrantedQoS1.allowed_in(ReasonContext::PubAck));
    }

    #[test]
    fn v311_codes_round_trip() {
        for code in 0..=5 {
            let reason = ReasonCode::from_v311_connack(code).unwrap();
            assert_eq!(reason.to_v311_connack(), code);
        }
        for code in [0, 1, 2, 0x80] {
            let reason = ReasonCode::from_v311_suback(code).unwrap();
            assert_eq!(reason.to_v311_suback(), code);
        }
        assert_eq!(ReasonCode::from_v311_connack(6), None);
    }
}
