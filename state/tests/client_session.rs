//! Client session scenarios: the test plays the server, encoding its packets with
//! `petrel-codec` and decoding what the client transmits. Each test names the normative
//! statement it checks (5.0 numbering unless marked 3.1.1).

use petrel_codec::{
    ConnAck, Decoded, Decoder, Disconnect, Packet, Properties, ProtocolVersion, PubResponse,
    Publish, QoS, ReasonCode, SubAck, SubscribeFilter, SubscriptionOptions, UnsubAck,
};
use petrel_codec::{List, PacketId};
use petrel_state::client::{
    Client, ClientError, ClientEvent, ClientOptions, ConnectionState, InflightState, LastWill,
};
use petrel_state::{Duration, Instant};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

type TestClient = Client<'static, 8, 6144>;

// ---------------------------------------------------------------------------------------------
// The server's side of the wire

fn at(secs: u64) -> Instant {
    Instant::from_secs(secs)
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

/// Everything the client has to transmit.
fn drain<const I: usize, const B: usize>(client: &mut Client<'_, I, B>, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 300];
    loop {
        let n = client.poll_transmit(now, &mut buf);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Decodes a byte stream the client sent; every packet must be whole and well formed.
fn packets(version: ProtocolVersion, mut bytes: &[u8]) -> Vec<Packet<'_>> {
    let decoder = Decoder::new(version);
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match decoder
            .decode(bytes)
            .expect("the client sent a malformed packet")
        {
            Decoded::Packet { packet, len } => {
                out.push(packet);
                bytes = &bytes[len..];
            }
            Decoded::Incomplete { .. } => panic!("the client sent part of a packet"),
        }
    }
    out
}

fn encode(version: ProtocolVersion, packet: Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0; packet.encoded_len(version).unwrap()];
    packet.encode(version, &mut buf).unwrap();
    buf
}

/// Feeds one whole packet and returns its event.
fn feed<'b, const I: usize, const B: usize>(
    client: &mut Client<'_, I, B>,
    now: Instant,
    bytes: &'b [u8],
) -> Option<ClientEvent<'b>> {
    let received = client
        .handle_bytes(now, bytes)
        .expect("handle_bytes failed");
    assert_eq!(
        received.consumed,
        bytes.len(),
        "one whole packet is consumed"
    );
    received.event
}

fn connack(version: ProtocolVersion, session_present: bool) -> Vec<u8> {
    encode(
        version,
        Packet::ConnAck(ConnAck {
            session_present,
            ..ConnAck::default()
        }),
    )
}

fn connack_with(properties: Properties<'_>) -> Vec<u8> {
    encode(
        V5,
        Packet::ConnAck(ConnAck {
            properties,
            ..ConnAck::default()
        }),
    )
}

fn publish_packet(
    version: ProtocolVersion,
    qos: QoS,
    packet_id: Option<u16>,
    dup: bool,
    payload: &'static [u8],
) -> Vec<u8> {
    encode(
        version,
        Packet::Publish(Publish {
            dup,
            qos,
            topic: "a/b",
            packet_id: packet_id.map(id),
            payload,
            ..Publish::default()
        }),
    )
}

fn ack(
    version: ProtocolVersion,
    kind: fn(PubResponse<'static>) -> Packet<'static>,
    n: u16,
) -> Vec<u8> {
    encode(version, kind(PubResponse::new(id(n))))
}

fn ack_with_reason(
    kind: fn(PubResponse<'static>) -> Packet<'static>,
    n: u16,
    reason_code: ReasonCode,
) -> Vec<u8> {
    encode(
        V5,
        kind(PubResponse {
            reason_code,
            ..PubResponse::new(id(n))
        }),
    )
}

/// A client through CONNECT / CONNACK, with nothing left to transmit.
fn connected_with<const I: usize, const B: usize>(
    options: ClientOptions<'static>,
) -> Client<'static, I, B> {
    let mut client = Client::new(options);
    client.connect(at(0)).unwrap();
    drain(&mut client, at(0));
    let bytes = connack(options.version, false);
    assert_eq!(
        feed(&mut client, at(0), &bytes),
        Some(ClientEvent::Connected {
            session_present: false
        })
    );
    client
}

fn connected(version: ProtocolVersion) -> TestClient {
    connected_with(ClientOptions::new(version, "client-1"))
}

/// The reason code of the DISCONNECT the client sent, which must be its last packet.
fn sent_disconnect_reason(client: &mut TestClient, now: Instant) -> ReasonCode {
    let bytes = drain(client, now);
    match packets(V5, &bytes).last() {
        Some(Packet::Disconnect(d)) => d.reason_code,
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Connect

#[test]
fn mqtt_3_1_0_1_v311_connect_is_the_first_packet_and_connack_connects() {
    let will = LastWill {
        topic: "status/client-1",
        payload: b"gone",
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    };
    let options = ClientOptions {
        keep_alive: 30,
        username: Some("user"),
        password: Some(b"secret"),
        will: Some(will),
        ..ClientOptions::new(V3, "client-1")
    };
    let mut client = TestClient::new(options);
    assert_eq!(client.state(), ConnectionState::Disconnected);
    assert_eq!(
        client.publish(at(0), "a", b"", QoS::AtMostOnce, false),
        Err(ClientError::NotConnected)
    );
    client.connect(at(0)).unwrap();
    assert_eq!(client.state(), ConnectionState::Connecting);
    let bytes = drain(&mut client, at(0));
    let sent = packets(V3, &bytes);
    let [Packet::Connect(connect)] = sent.as_slice() else {
        panic!("expected one CONNECT, got {sent:?}");
    };
    assert_eq!(connect.protocol_version, V3);
    assert!(connect.clean_start);
    assert_eq!(connect.keep_alive, 30);
    assert_eq!(connect.client_id, "client-1");
    assert_eq!(connect.username, Some("user"));
    assert_eq!(connect.password, Some(&b"secret"[..]));
    assert_eq!(connect.will.unwrap().topic, "status/client-1");

    let bytes = connack(V3, false);
    assert_eq!(
        feed(&mut client, at(1), &bytes),
        Some(ClientEvent::Connected {
            session_present: false
        })
    );
    assert_eq!(client.state(), ConnectionState::Connected);
}

#[test]
fn mqtt_3_1_2_22_v311_password_without_user_name_is_refused_locally() {
    let options = ClientOptions {
        password: Some(b"x"),
        ..ClientOptions::new(V3, "c")
    };
    let mut client = TestClient::new(options);
    assert_eq!(client.connect(at(0)), Err(ClientError::InvalidOptions));
    assert_eq!(client.state(), ConnectionState::Disconnected);
    // 5.0 allows it.
    let options = ClientOptions {
        password: Some(b"x"),
        ..ClientOptions::new(V5, "c")
    };
    assert_eq!(TestClient::new(options).connect(at(0)), Ok(()));
}

#[test]
fn v5_connect_advertises_limits_and_connack_properties_are_applied() {
    let options = ClientOptions {
        session_expiry_interval: 3600,
        max_packet_size: 1000,
        ..ClientOptions::new(V5, "")
    };
    let mut client = TestClient::new(options);
    client.connect(at(0)).unwrap();
    let bytes = drain(&mut client, at(0));
    let sent = packets(V5, &bytes);
    let [Packet::Connect(connect)] = sent.as_slice() else {
        panic!("expected CONNECT, got {sent:?}");
    };
    let p = &connect.properties;
    assert_eq!(p.session_expiry_interval, Some(3600));
    // Receive Maximum is clamped to the INFLIGHT capacity (8).
    assert_eq!(p.receive_maximum, Some(8));
    assert_eq!(p.maximum_packet_size, Some(1000));
    // No Topic Alias Maximum: the server may send no alias [MQTT-3.1.2-27].
    assert_eq!(p.topic_alias_maximum, None);
    assert_eq!(connect.client_id, "");

    let bytes = connack_with(Properties {
        receive_maximum: Some(2),
        maximum_packet_size: Some(64),
        maximum_qos: Some(QoS::AtLeastOnce),
        retain_available: Some(false),
        assigned_client_identifier: Some("auto-7f3a"),
        server_keep_alive: Some(20),
        topic_alias_maximum: Some(5),
        ..Properties::default()
    });
    feed(&mut client, at(0), &bytes);
    let limits = *client.server_limits();
    assert_eq!(limits.receive_maximum, 2);
    assert_eq!(limits.maximum_packet_size, 64);
    assert_eq!(limits.maximum_qos, QoS::AtLeastOnce);
    assert!(!limits.retain_available);
    assert_eq!(limits.topic_alias_maximum, 5);
    assert_eq!(client.inflight_limit(), 2);
    assert_eq!(client.assigned_client_id(), Some("auto-7f3a"));
    // [MQTT-3.1.2-21]: the server's keep-alive replaces ours.
    assert_eq!(client.keep_alive(), 20);

    // [MQTT-3.2.2-11]: no publish above the server's Maximum QoS (no downgrade either).
    assert_eq!(
        client.publish(at(0), "t", b"", QoS::ExactlyOnce, false),
        Err(ClientError::QoSNotSupported)
    );
    // [MQTT-3.2.2-14]: no retained publish when Retain Available is 0.
    assert_eq!(
        client.publish(at(0), "t", b"", QoS::AtMostOnce, true),
        Err(ClientError::RetainNotSupported)
    );
    // [MQTT-3.2.2-15]: no packet above the server's Maximum Packet Size.
    assert_eq!(
        client.publish(at(0), "t", &[0; 100], QoS::AtMostOnce, false),
        Err(ClientError::PacketTooLarge)
    );
    assert!(client
        .publish(at(0), "t", &[0; 40], QoS::AtLeastOnce, false)
        .unwrap()
        .is_some());
    assert!(drain(&mut client, at(0)).len() <= 64);
}

#[test]
fn mqtt_3_2_2_16_assigned_client_identifier_is_used_on_reconnect() {
    let options = ClientOptions {
        clean_start: false,
        session_expiry_interval: 60,
        ..ClientOptions::new(V5, "")
    };
    let mut client = TestClient::new(options);
    client.connect(at(0)).unwrap();
    drain(&mut client, at(0));
    let bytes = connack_with(Properties {
        assigned_client_identifier: Some("auto-1"),
        ..Properties::default()
    });
    feed(&mut client, at(0), &bytes);
    client.connection_lost(at(1));
    client.connect(at(2)).unwrap();
    let bytes = drain(&mut client, at(2));
    let Packet::Connect(connect) = packets(V5, &bytes)[0] else {
        panic!("expected CONNECT");
    };
    assert_eq!(connect.client_id, "auto-1");
    assert!(!connect.clean_start);
}

#[test]
fn refused_connack_is_reported_in_both_versions() {
    for (version, code, expected) in [
        (
            V5,
            ReasonCode::BadUserNameOrPassword,
            ReasonCode::BadUserNameOrPassword,
        ),
        (V5, ReasonCode::ServerBusy, ReasonCode::ServerBusy),
        // 3.1.1 return code 5, "not authorized".
        (V3, ReasonCode::NotAuthorized, ReasonCode::NotAuthorized),
        // 3.1.1 return code 3, "server unavailable".
        (V3, ReasonCode::ServerBusy, ReasonCode::ServerUnavailable),
    ] {
        let mut client = TestClient::new(ClientOptions::new(version, "c"));
        client.connect(at(0)).unwrap();
        drain(&mut client, at(0));
        let bytes = encode(
            version,
            Packet::ConnAck(ConnAck {
                reason_code: code,
                ..ConnAck::default()
            }),
        );
        assert_eq!(
            feed(&mut client, at(0), &bytes),
            Some(ClientEvent::Refused(expected))
        );
        assert_eq!(client.state(), ConnectionState::Closing);
        assert_eq!(client.poll_timeout(), None);
    }
}

#[test]
fn mqtt_3_2_0_1_a_packet_before_connack_is_a_protocol_error() {
    let mut client = TestClient::new(ClientOptions::new(V5, "c"));
    client.connect(at(0)).unwrap();
    drain(&mut client, at(0));
    let bytes = encode(V5, Packet::PingResp);
    assert_eq!(
        client.handle_bytes(at(0), &bytes),
        Err(ClientError::Protocol(ReasonCode::ProtocolError))
    );
    assert_eq!(client.state(), ConnectionState::Closing);
    assert_eq!(
        sent_disconnect_reason(&mut client, at(0)),
        ReasonCode::ProtocolError
    );
}

#[test]
fn mqtt_3_2_0_2_a_second_connack_is_a_protocol_error() {
    let mut client = connected(V5);
    let bytes = connack(V5, false);
    let err = client.handle_bytes(at(0), &bytes).unwrap_err();
    assert!(err.is_fatal());
    assert_eq!(
        sent_disconnect_reason(&mut client, at(0)),
        ReasonCode::ProtocolError
    );
}

#[test]
fn mqtt_3_2_2_4_session_present_after_clean_start_is_a_protocol_error() {
    let mut client = TestClient::new(ClientOptions::new(V5, "c"));
    client.connect(at(0)).unwrap();
    drain(&mut client, at(0));
    let bytes = connack(V5, true);
    assert_eq!(
        client.handle_bytes(at(0), &bytes),
        Err(ClientError::Protocol(ReasonCode::ProtocolError))
    );
}

#[test]
fn connack_timeout_is_reported_by_handle_timeout() {
    let options = ClientOptions {
        response_timeout: Duration::from_secs(5),
        ..ClientOptions::new(V5, "c")
    };
    let mut client = TestClient::new(options);
    assert_eq!(client.poll_timeout(), None);
    client.connect(at(10)).unwrap();
    assert_eq!(client.poll_timeout(), Some(at(15)));
    assert_eq!(client.handle_timeout(at(14)), Ok(()));
    assert_eq!(client.handle_timeout(at(15)), Err(ClientError::Timeout));
    assert_eq!(client.state(), ConnectionState::Closing);
    client.connection_lost(at(15));
    assert_eq!(client.state(), ConnectionState::Disconnected);
    assert_eq!(client.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------------
// Subscribe / unsubscribe

#[test]
fn mqtt_3_8_4_6_subscribe_and_suback_in_both_versions() {
    for version in [V3, V5] {
        let mut client = connected(version);
        let filters = [
            SubscribeFilter {
                filter: "sensors/+/temp",
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            },
            SubscribeFilter {
                filter: "alerts/#",
                options: SubscriptionOptions::qos(QoS::ExactlyOnce),
            },
        ];
        let packet_id = client.subscribe(at(0), &filters).unwrap();
        let bytes = drain(&mut client, at(0));
        let sent = packets(version, &bytes);
        let [Packet::Subscribe(subscribe)] = sent.as_slice() else {
            panic!("expected SUBSCRIBE, got {sent:?}");
        };
        assert_eq!(subscribe.packet_id, packet_id);
        assert_eq!(subscribe.filters, List::new(&filters));

        let codes = [ReasonCode::GrantedQoS1, ReasonCode::UnspecifiedError];
        let bytes = encode(
            version,
            Packet::SubAck(SubAck {
                packet_id,
                properties: Properties::default(),
                reason_codes: List::new(&codes),
            }),
        );
        let Some(ClientEvent::Subscribed {
            packet_id: acked,
            reason_codes,
        }) = feed(&mut client, at(0), &bytes)
        else {
            panic!("expected Subscribed");
        };
        assert_eq!(acked, packet_id);
        assert_eq!(reason_codes.iter().collect::<Vec<_>>(), codes);
        assert_eq!(client.packet_ids_in_use(), 0);
    }
}

#[test]
fn mqtt_3_8_4_6_suback_with_the_wrong_number_of_codes_is_a_protocol_error() {
    let mut client = connected(V5);
    let filters = [SubscribeFilter {
        filter: "a",
        options: SubscriptionOptions::default(),
    }];
    let packet_id = client.subscribe(at(0), &filters).unwrap();
    drain(&mut client, at(0));
    let bytes = encode(
        V5,
        Packet::SubAck(SubAck {
            packet_id,
            properties: Properties::default(),
            reason_codes: List::new(&[ReasonCode::Success, ReasonCode::Success]),
        }),
    );
    assert_eq!(
        client.handle_bytes(at(0), &bytes),
        Err(ClientError::Protocol(ReasonCode::ProtocolError))
    );
}

#[test]
fn invalid_filters_and_topics_are_refused_before_anything_is_sent() {
    let mut client = connected(V5);
    let sub = |filter| SubscribeFilter {
        filter,
        options: SubscriptionOptions::default(),
    };
    // [MQTT-3.8.3-3]: at least one filter.
    assert_eq!(client.subscribe(at(0), &[]), Err(ClientError::NoFilters));
    // [MQTT-4.7.1-1]: '#' only last.
    assert_eq!(
        client.subscribe(at(0), &[sub("a/#/b")]),
        Err(ClientError::InvalidTopic)
    );
    // [MQTT-3.8.3-4]: No Local on a shared subscription.
    let shared = SubscribeFilter {
        filter: "$share/g/a",
        options: SubscriptionOptions {
            no_local: true,
            ..SubscriptionOptions::default()
        },
    };
    assert_eq!(
        client.subscribe(at(0), &[shared]),
        Err(ClientError::InvalidTopic)
    );
    assert_eq!(client.unsubscribe(at(0), &[]), Err(ClientError::NoFilters));
    assert_eq!(
        client.unsubscribe(at(0), &["a+"]),
        Err(ClientError::InvalidTopic)
    );
    // [MQTT-3.3.2-2]: no wildcard in a topic name.
    assert_eq!(
        client.publish(at(0), "a/+", b"", QoS::AtMostOnce, false),
        Err(ClientError::InvalidTopic)
    );
    assert_eq!(
        client.publish(at(0), "", b"", QoS::AtMostOnce, false),
        Err(ClientError::InvalidTopic)
    );
    // [MQTT-3.3.4-6]: a client sends no subscription identifier in PUBLISH.
    let ids = [petrel_codec::SubscriptionId(1)];
    let properties = Properties {
        subscription_identifiers: List::new(&ids),
        ..Properties::default()
    };
    assert!(matches!(
        client.publish_with(at(0), "a", b"", QoS::AtMostOnce, false, &properties),
        Err(ClientError::Encode(_))
    ));
    assert!(drain(&mut client, at(0)).is_empty());
    assert_eq!(client.packet_ids_in_use(), 0);
}

#[test]
fn unsubscribe_and_unsuback_in_both_versions() {
    for version in [V3, V5] {
        let mut client = connected(version);
        let packet_id = client.unsubscribe(at(0), &["a/b", "c/#"]).unwrap();
        let bytes = drain(&mut client, at(0));
        let sent = packets(version, &bytes);
        let [Packet::Unsubscribe(unsubscribe)] = sent.as_slice() else {
            panic!("expected UNSUBSCRIBE, got {sent:?}");
        };
        assert_eq!(unsubscribe.packet_id, packet_id);
        assert_eq!(
            unsubscribe.filters.iter().collect::<Vec<_>>(),
            ["a/b", "c/#"]
        );
        let codes = [ReasonCode::Success, ReasonCode::NoSubscriptionExisted];
        let bytes = encode(
            version,
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties: Properties::default(),
                reason_codes: List::new(&codes),
            }),
        );
        let Some(ClientEvent::Unsubscribed {
            packet_id: acked,
            reason_codes,
        }) = feed(&mut client, at(0), &bytes)
        else {
            panic!("expected Unsubscribed");
        };
        assert_eq!(acked, packet_id);
        assert_eq!(reason_codes.len(), if version == V5 { 2 } else { 0 });
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound publish

#[test]
fn mqtt_2_2_1_2_qos0_publish_has_no_packet_id_and_nothing_in_flight() {
    let mut client = connected(V5);
    assert_eq!(
        client.publish(at(0), "a/b", b"hello", QoS::AtMostOnce, true),
        Ok(None)
    );
    let bytes = drain(&mut client, at(0));
    let sent = packets(V5, &bytes);
    let [Packet::Publish(p)] = sent.as_slice() else {
        panic!("expected PUBLISH, got {sent:?}");
    };
    assert_eq!(
        (p.qos, p.packet_id, p.retain, p.dup),
        (QoS::AtMostOnce, None, true, false)
    );
    assert_eq!(p.payload, b"hello");
    assert_eq!(client.inflight(), 0);
    assert_eq!(client.stored_bytes(), 0);
}

#[test]
fn mqtt_4_3_2_qos1_publish_flow_in_both_versions() {
    for version in [V3, V5] {
        let mut client = connected(version);
        let packet_id = client
            .publish(at(0), "a/b", b"one", QoS::AtLeastOnce, false)
            .unwrap()
            .unwrap();
        let bytes = drain(&mut client, at(0));
        let Packet::Publish(p) = packets(version, &bytes)[0] else {
            panic!("expected PUBLISH");
        };
        // [MQTT-4.3.2-2]: DUP 0 with a packet identifier.
        assert_eq!(
            (p.qos, p.packet_id, p.dup),
            (QoS::AtLeastOnce, Some(packet_id), false)
        );
        assert_eq!(client.inflight(), 1);
        assert_eq!(
            client.inflight_state(packet_id),
            Some(InflightState::AwaitPubAck)
        );
        assert!(client.stored_bytes() > 0);

        // [MQTT-2.2.1-5]: a PUBACK for another identifier is ignored.
        let other = ack(version, Packet::PubAck, packet_id.get() + 1);
        assert_eq!(feed(&mut client, at(0), &other), None);
        assert_eq!(client.inflight(), 1);

        let bytes = ack(version, Packet::PubAck, packet_id.get());
        assert_eq!(
            feed(&mut client, at(0), &bytes),
            Some(ClientEvent::Published { packet_id })
        );
        assert_eq!(client.inflight(), 0);
        assert_eq!(client.stored_bytes(), 0);
        assert!(drain(&mut client, at(0)).is_empty());
    }
}

#[test]
fn v5_puback_with_an_error_reason_fails_the_publish() {
    let mut client = connected(V5);
    let packet_id = client
        .publish(at(0), "a", b"x", QoS::AtLeastOnce, false)
        .unwrap()
        .unwrap();
    drain(&mut client, at(0));
    let bytes = ack_with_reason(Packet::PubAck, packet_id.get(), ReasonCode::NotAuthorized);
    assert_eq!(
        feed(&mut client, at(0), &bytes),
        Some(ClientEvent::PublishFailed {
            packet_id,
            reason: ReasonCode::NotAuthorized
        })
    );
    assert_eq!(client.inflight(), 0);
}

#[test]
fn mqtt_4_3_3_qos2_publish_flow_in_both_versions() {
    for version in [V3, V5] {
        let mut client = connected(version);
        let packet_id = client
            .publish(at(0), "a/b", b"two", QoS::ExactlyOnce, false)
            .unwrap()
            .unwrap();
        let bytes = drain(&mut client, at(0));
        let Packet::Publish(p) = packets(version, &bytes)[0] else {
            panic!("expected PUBLISH");
        };
        // [MQTT-4.3.3-2]: QoS 2, DUP 0.
        assert_eq!((p.qos, p.dup), (QoS::ExactlyOnce, false));
        assert_eq!(
            client.inflight_state(packet_id),
            Some(InflightState::AwaitPubRec)
        );

        // [MQTT-4.3.3-4]: PUBREC is answered with PUBREL, same identifier.
        let bytes = ack(version, Packet::PubRec, packet_id.get());
        assert_eq!(feed(&mut client, at(0), &bytes), None);
        let sent = drain(&mut client, at(0));
        assert_eq!(
            packets(version, &sent),
            [Packet::PubRel(PubResponse::new(packet_id))]
        );
        assert_eq!(
            client.inflight_state(packet_id),
            Some(InflightState::AwaitPubComp)
        );
        // [MQTT-4.3.3-6]: the PUBLISH is no longer kept once PUBREL is sent.
        assert_eq!(client.stored_bytes(), 0);
        assert_eq!(client.inflight(), 1);

        // A repeated PUBREC gets the PUBREL again.
        let bytes = ack(version, Packet::PubRec, packet_id.get());
        assert_eq!(feed(&mut client, at(0), &bytes), None);
        let sent = drain(&mut client, at(0));
        assert_eq!(
            packets(version, &sent),
            [Packet::PubRel(PubResponse::new(packet_id))]
        );

        let bytes = ack(version, Packet::PubComp, packet_id.get());
        assert_eq!(
            feed(&mut client, at(0), &bytes),
            Some(ClientEvent::Published { packet_id })
        );
        assert_eq!(client.inflight(), 0);
        // A late PUBCOMP for the same identifier is ignored [MQTT-2.2.1-5].
        assert_eq!(feed(&mut client, at(0), &bytes), None);
    }
}

#[test]
fn v5_pubrec_with_an_error_reason_ends_the_flow() {
    let mut client = connected(V5);
    let packet_id = client
        .publish(at(0), "a", b"x", QoS::ExactlyOnce, false)
        .unwrap()
        .unwrap();
    drain(&mut client, at(0));
    let bytes = ack_with_reason(Packet::PubRec, packet_id.get(), ReasonCode::QuotaExceeded);
    assert_eq!(
        feed(&mut client, at(0), &bytes),
        Some(ClientEvent::PublishFailed {
            packet_id,
            reason: ReasonCode::QuotaExceeded
        })
    );
    // No PUBREL follows an error PUBREC.
    assert!(drain(&mut client, at(0)).is_empty());
    assert_eq!(client.inflight(), 0);
}

#[test]
fn mqtt_2_2_1_5_pubrec_for_an_unknown_id_gets_pubrel_not_found() {
    let mut client = connected(V5);
    let bytes = ack(V5, Packet::PubRec, 42);
    assert_eq!(feed(&mut client, at(0), &bytes), None);
    let sent = drain(&mut client, at(0));
    assert_eq!(
        packets(V5, &sent),
        [Packet::PubRel(PubResponse {
            reason_code: ReasonCode::PacketIdentifierNotFound,
            ..PubResponse::new(id(42))
        })]
    );
}

#[test]
fn mqtt_3_3_4_7_inflight_never_exceeds_the_servers_receive_maximum() {
    let mut client = TestClient::new(ClientOptions::new(V5, "c"));
    client.connect(at(0)).unwrap();
    drain(&mut client, at(0));
    let bytes = connack_with(Properties {
        receive_maximum: Some(3),
        ..Properties::default()
    });
    feed(&mut client, at(0), &bytes);
    let mut ids = Vec::new();
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce] {
        ids.push(
            client
                .publish(at(0), "t", b"x", qos, false)
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(
        client.publish(at(0), "t", b"x", QoS::AtLeastOnce, false),
        Err(ClientError::InflightFull)
    );
    // QoS 0 is not limited.
    assert_eq!(
        client.publish(at(0), "t", b"x", QoS::AtMostOnce, false),
        Ok(None)
    );
    drain(&mut client, at(0));
    // A PUBREC does not free the slot: the PUBLISH counts until PUBCOMP.
    let bytes = ack(V5, Packet::PubRec, ids[1].get());
    feed(&mut client, at(0), &bytes);
    assert_eq!(
        client.publish(at(0), "t", b"x", QoS::AtLeastOnce, false),
        Err(ClientError::InflightFull)
    );
    let bytes = ack(V5, Packet::PubAck, ids[0].get());
    feed(&mut client, at(0), &bytes);
    assert!(client
        .publish(at(0), "t", b"x", QoS::AtLeastOnce, false)
        .unwrap()
        .is_some());
    assert_eq!(client.inflight(), 3);
}

#[test]
fn inflight_is_limited_by_the_client_capacity_and_ids_are_distinct() {
    // [MQTT-2.2.1-3]: every identifier in use is distinct and non-zero.
    let mut client: Client<'static, 4, 2048> = connected_with(ClientOptions::new(V3, "c"));
    let filter = [SubscribeFilter {
        filter: "x",
        options: SubscriptionOptions::default(),
    }];
    let sub = client.subscribe(at(0), &filter).unwrap();
    let mut ids = vec![sub];
    for _ in 0..3 {
        ids.push(
            client
                .publish(at(0), "t", b"x", QoS::AtLeastOnce, false)
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(
        client.publish(at(0), "t", b"x", QoS::AtLeastOnce, false),
        Err(ClientError::InflightFull)
    );
    assert_eq!(
        client.subscribe(at(0), &filter),
        Err(ClientError::InflightFull)
    );
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 4);
}

#[test]
fn a_full_store_or_buffer_is_an_error_that_changes_nothing() {
    // One 64-byte buffer; the store leaves room for the 15-byte CONNECT, so it takes 49.
    let mut client: Client<'static, 8, 64> = connected_with(ClientOptions::new(V3, "c"));
    // 2 + 3 + 2 + 30 = 37 bytes: fits the store once.
    assert!(client
        .publish(at(0), "t", &[1; 30], QoS::AtLeastOnce, false)
        .unwrap()
        .is_some());
    assert_eq!(client.stored_bytes(), 37);
    assert_eq!(
        client.publish(at(0), "t", &[2; 30], QoS::AtLeastOnce, false),
        Err(ClientError::StoreFull)
    );
    // 2 + 3 + 20 = 25 of the 27 bytes left; then no room for another.
    assert_eq!(
        client.publish(at(0), "t", &[3; 20], QoS::AtMostOnce, false),
        Ok(None)
    );
    assert_eq!(
        client.publish(at(0), "t", &[3; 20], QoS::AtMostOnce, false),
        Err(ClientError::BufferFull)
    );
    assert_eq!(
        client.publish(at(0), "t", &[3; 100], QoS::AtMostOnce, false),
        Err(ClientError::PacketTooLarge)
    );
    assert_eq!(
        client.publish(at(0), "t", &[3; 48], QoS::AtLeastOnce, false),
        Err(ClientError::PacketTooLarge)
    );
    assert_eq!(client.inflight(), 1);
    assert_eq!(client.pending_transmit(), 37 + 25);
    // Both go out, in the order they were queued; the QoS 1 one stays stored.
    let bytes = drain(&mut client, at(0));
    let sent = packets(V3, &bytes);
    assert!(matches!(&sent[..], [Packet::Publish(a), Packet::Publish(b)]
        if a.payload == [1; 30] && !a.dup && b.payload == [3; 20]));
    assert_eq!(client.pending_transmit(), 0);
    assert_eq!(client.stored_bytes(), 37);
    assert_eq!(
        client.publish(at(0), "t", &[3; 20], QoS::AtMostOnce, false),
        Ok(None)
    );
    drain(&mut client, at(0));
    // 37 + 12 = 49 stored: the store is full, to the byte.
    client
        .publish(at(0), "t", &[4; 5], QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(
        client.publish(at(0), "t", &[5; 1], QoS::AtLeastOnce, false),
        Err(ClientError::StoreFull)
    );
    drain(&mut client, at(0));
    feed(&mut client, at(0), &ack(V3, Packet::PubAck, 1));
    assert_eq!(client.stored_bytes(), 12);
    assert!(client
        .publish(at(0), "t", &[5; 1], QoS::AtLeastOnce, false)
        .unwrap()
        .is_some());
}

#[test]
fn a_stored_publish_goes_out_in_queue_order_and_whole() {
    let mut client: TestClient = connected(V3);
    client
        .publish(at(0), "t", b"zero", QoS::AtMostOnce, false)
        .unwrap();
    let id1 = client
        .publish(at(0), "t", b"one", QoS::AtLeastOnce, false)
        .unwrap()
        .unwrap();
    client
        .publish(at(0), "t", b"two", QoS::AtMostOnce, false)
        .unwrap();
    // An acknowledgement for a publish not sent yet is ignored [MQTT-2.2.1-5].
    assert_eq!(feed(&mut client, at(0), &ack(V3, Packet::PubAck, 1)), None);
    // Three bytes at a time: the stored publish is not cut by the PUBACK queued meanwhile.
    let mut stream = Vec::new();
    let mut piece = [0u8; 3];
    let mut fed = false;
    loop {
        let n = client.poll_transmit(at(0), &mut piece);
        if n == 0 {
            break;
        }
        stream.extend_from_slice(&piece[..n]);
        if !fed && stream.len() > 12 {
            let bytes = publish_packet(V3, QoS::AtLeastOnce, Some(7), false, b"in");
            assert!(matches!(
                feed(&mut client, at(0), &bytes),
                Some(ClientEvent::Message(_))
            ));
            fed = true;
        }
    }
    let payloads: Vec<&[u8]> = packets(V3, &stream)
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.payload,
            Packet::PubAck(a) => {
                assert_eq!(a.packet_id, id(7));
                b"ack"
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(payloads, [&b"zero"[..], b"one", b"two", b"ack"]);
    assert_eq!(client.inflight(), 1);
    assert!(matches!(
        feed(&mut client, at(0), &ack(V3, Packet::PubAck, id1.get())),
        Some(ClientEvent::Published { .. })
    ));
    assert_eq!(client.stored_bytes(), 0);
}

// ---------------------------------------------------------------------------------------------
// Inbound publish

#[test]
fn receive_qos0_and_qos1_in_both_versions() {
    for version in [V3, V5] {
        let mut client = connected(version);
        let bytes = publish_packet(version, QoS::AtMostOnce, None, false, b"zero");
        let Some(ClientEvent::Message(m)) = feed(&mut client, at(0), &bytes) else {
            panic!("expected Message");
        };
        assert_eq!((m.topic, m.payload), ("a/b", &b"zero"[..]));
        assert!(drain(&mut client, at(0)).is_empty());

        // [MQTT-4.3.2-4] (5.0) / [MQTT-4.3.2-2] (3.1.1): PUBACK with the same identifier.
        let bytes = publish_packet(version, QoS::AtLeastOnce, Some(7), false, b"one");
        let Some(ClientEvent::Message(m)) = feed(&mut client, at(0), &bytes) else {
            panic!("expected Message");
        };
        assert_eq!(m.payload, b"one");
        let sent = drain(&mut client, at(0));
        assert_eq!(
            packets(version, &sent),
            [Packet::PubAck(PubResponse::new(id(7)))]
        );
    }
}

#[test]
fn mqtt_4_3_3_10_duplicate_qos2_delivery_gives_one_message() {
    for version in [V3, V5] {
        let mut client = connected(version);
        let first = publish_packet(version, QoS::ExactlyOnce, Some(9), false, b"once");
        assert!(matches!(
            feed(&mut client, at(0), &first),
            Some(ClientEvent::Message(_))
        ));
        // [MQTT-4.3.3-8]: PUBREC.
        let sent = drain(&mut client, at(0));
        assert_eq!(
            packets(version, &sent),
            [Packet::PubRec(PubResponse::new(id(9)))]
        );
        assert_eq!(client.incoming_qos2(), 1);

        // The server re-sends (DUP 1): PUBREC again, no second Message.
        let dup = publish_packet(version, QoS::ExactlyOnce, Some(9), true, b"once");
        assert_eq!(feed(&mut client, at(0), &dup), None);
        let sent = drain(&mut client, at(0));
        assert_eq!(
            packets(version, &sent),
            [Packet::PubRec(PubResponse::new(id(9)))]
        );

        // [MQTT-4.3.3-11]: PUBREL gets PUBCOMP.
        let rel = ack(version, Packet::PubRel, 9);
        assert_eq!(feed(&mut client, at(0), &rel), None);
        let sent = drain(&mut client, at(0));
        assert_eq!(
            packets(version, &sent),
            [Packet::PubComp(PubResponse::new(id(9)))]
        );
        assert_eq!(client.incoming_qos2(), 0);

        // [MQTT-4.3.3-12]: after PUBCOMP the identifier is a new message.
        assert!(matches!(
            feed(&mut client, at(0), &first),
            Some(ClientEvent::Message(_))
        ));
    }
}

#[test]
fn mqtt_4_3_3_11_pubrel_for_an_unknown_id_gets_pubcomp_not_found() {
    let mut client = connected(V5);
    let rel = ack(V5, Packet::PubRel, 5);
    assert_eq!(feed(&mut client, at(0), &rel), None);
    let sent = drain(&mut client, at(0));
    assert_eq!(
        packets(V5, &sent),
        [Packet::PubComp(PubResponse {
            reason_code: ReasonCode::PacketIdentifierNotFound,
            ..PubResponse::new(id(5))
        })]
    );
    // 3.1.1 has no reason code: a plain PUBCOMP.
    let mut client = connected(V3);
    let rel = ack(V3, Packet::PubRel, 5);
    feed(&mut client, at(0), &rel);
    let sent = drain(&mut client, at(0));
    assert_eq!(
        packets(V3, &sent),
        [Packet::PubComp(PubResponse::new(id(5)))]
    );
}

#[test]
fn mqtt_3_3_4_9_inbound_qos2_beyond_our_receive_maximum_is_0x93() {
    let options = ClientOptions {
        receive_maximum: 2,
        ..ClientOptions::new(V5, "c")
    };
    let mut client: TestClient = connected_with(options);
    for n in 1..=2 {
        let bytes = publish_packet(V5, QoS::ExactlyOnce, Some(n), false, b"x");
        feed(&mut client, at(0), &bytes);
    }
    let bytes = publish_packet(V5, QoS::ExactlyOnce, Some(3), false, b"x");
    assert_eq!(
        client.handle_bytes(at(0), &bytes),
        Err(ClientError::Protocol(ReasonCode::ReceiveMaximumExceeded))
    );
    assert_eq!(
        sent_disconnect_reason(&mut client, at(0)),
        ReasonCode::ReceiveMaximumExceeded
    );
    assert_eq!(client.state(), ConnectionState::Closing);
}

#[test]
fn mqtt_3_1_2_27_inbound_topic_alias_is_0x94() {
    let mut client = connected(V5);
    let bytes = encode(
        V5,
        Packet::Publish(Publish {
            topic: "a",
            properties: Properties {
                topic_alias: Some(1),
                ..Properties::default()
            },
            ..Publish::default()
        }),
    );
    assert_eq!(
        client.handle_bytes(at(0), &bytes),
        Err(ClientError::Protocol(ReasonCode::TopicAliasInvalid))
    );
    assert_eq!(
        sent_disconnect_reason(&mut client, at(0)),
        ReasonCode::TopicAliasInvalid
    );
}

#[test]
fn mqtt_3_1_2_24_inbound_packet_above_our_maximum_is_0x95() {
    let options = ClientOptions {
        max_packet_size: 32,
        ..ClientOptions::new(V5, "c")
    };
    let mut client: TestClient = connected_with(options);
    let bytes = publish_packet(V5, QoS::AtMostOnce, None, false, &[0; 40]);
    // Refused from the fixed header alone.
    let err = client.handle_bytes(at(0), &bytes[..3]).unwrap_err();
    assert!(matches!(err, ClientError::Decode(_)));
    assert_eq!(err.reason_code(), Some(ReasonCode::PacketTooLarge));
    assert_eq!(
        sent_disconnect_reason(&mut client, at(0)),
        ReasonCode::PacketTooLarge
    );
}

#[test]
fn malformed_input_is_fatal_with_a_v5_disconnect_and_silent_in_v311() {
    // Section 4.13: the client closes with the reason code; 3.1.1 just closes.
    let cases: [(&[u8], ReasonCode); 4] = [
        // Reserved packet type 0.
        (&[0x00, 0x00], ReasonCode::MalformedPacket),
        // PUBLISH at QoS 3.
        (&[0x36, 0x00], ReasonCode::MalformedPacket),
        // PUBACK with packet identifier 0.
        (&[0x40, 0x02, 0x00, 0x00], ReasonCode::ProtocolError),
        // PUBLISH whose topic has a wildcard.
        (
            &[0x30, 0x04, 0x00, 0x01, b'#', 0x00],
            ReasonCode::TopicNameInvalid,
        ),
    ];
    for (bytes, reason) in cases {
        let mut client = connected(V5);
        let err = client.handle_bytes(at(0), bytes).unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)), "{bytes:?}");
        assert!(err.is_fatal());
        assert_eq!(
            sent_disconnect_reason(&mut client, at(0)),
            reason,
            "{bytes:?}"
        );
        // The closing connection ignores further input.
        let more = client.handle_bytes(at(0), &[0xFF, 0xFF]).unwrap();
        assert_eq!((more.consumed, more.event), (2, None));

        let mut client = connected(V3);
        assert!(client.handle_bytes(at(0), bytes).unwrap_err().is_fatal());
        assert!(drain(&mut client, at(0)).is_empty());
        assert_eq!(client.state(), ConnectionState::Closing);
    }
}

#[test]
fn server_packets_a_client_never_receives_are_protocol_errors() {
    for packet in [
        Packet::PingReq,
        Packet::Unsubscribe(petrel_codec::Unsubscribe {
            packet_id: id(1),
            properties: Properties::default(),
            filters: List::new(&["a"]),
        }),
        Packet::Auth(petrel_codec::Auth::default()),
    ] {
        let mut client = connected(V5);
        let bytes = encode(V5, packet);
        assert_eq!(
            client.handle_bytes(at(0), &bytes),
            Err(ClientError::Protocol(ReasonCode::ProtocolError))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Byte stream handling

#[test]
fn bytes_arriving_one_at_a_time_are_reassembled() {
    let mut client = TestClient::new(ClientOptions::new(V5, "c"));
    client.connect(at(0)).unwrap();
    drain(&mut client, at(0));
    let mut stream = connack(V5, false);
    stream.extend(publish_packet(
        V5,
        QoS::AtLeastOnce,
        Some(3),
        false,
        b"slow",
    ));
    stream.extend(encode(V5, Packet::PingResp));

    let mut buffer: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for &byte in &stream {
        buffer.push(byte);
        let received = client.handle_bytes(at(0), &buffer).unwrap();
        if received.needs_more() {
            continue;
        }
        events.push(format!("{:?}", received.event));
        buffer.drain(..received.consumed);
    }
    assert!(buffer.is_empty());
    assert_eq!(events.len(), 3);
    assert!(events[0].contains("Connected"));
    assert!(events[1].contains("slow") || events[1].contains("115, 108, 111, 119"));
    assert!(events[2].contains("Pong"));
    let sent = drain(&mut client, at(0));
    assert_eq!(
        packets(V5, &sent),
        [Packet::PubAck(PubResponse::new(id(3)))]
    );
}

#[test]
fn several_packets_in_one_buffer_are_taken_one_per_call() {
    let mut client = connected(V3);
    let mut stream = publish_packet(V3, QoS::AtMostOnce, None, false, b"1");
    stream.extend(publish_packet(V3, QoS::AtMostOnce, None, false, b"2"));
    let mut rest = &stream[..];
    let mut payloads = Vec::new();
    while !rest.is_empty() {
        let received = client.handle_bytes(at(0), rest).unwrap();
        if let Some(ClientEvent::Message(m)) = received.event {
            payloads.push(m.payload.to_vec());
        }
        rest = &rest[received.consumed..];
    }
    assert_eq!(payloads, [b"1".to_vec(), b"2".to_vec()]);
}

#[test]
fn poll_transmit_hands_out_a_byte_stream_in_small_pieces() {
    let mut client = connected(V5);
    client
        .publish(at(0), "t", b"abcdef", QoS::AtLeastOnce, false)
        .unwrap();
    client
        .publish(at(0), "u", b"ghi", QoS::AtMostOnce, false)
        .unwrap();
    let mut stream = Vec::new();
    let mut piece = [0u8; 3];
    loop {
        let n = client.poll_transmit(at(0), &mut piece);
        if n == 0 {
            break;
        }
        stream.extend_from_slice(&piece[..n]);
    }
    let sent = packets(V5, &stream);
    assert_eq!(sent.len(), 2);
    assert_eq!(client.pending_transmit(), 0);
}

#[test]
fn a_full_transmit_queue_makes_handle_bytes_wait_without_consuming() {
    let mut client: Client<'static, 8, 32> = connected_with(ClientOptions::new(V3, "c"));
    // 2 + 3 + 25 = 30 of 32 bytes queued: no room for a 4-byte PUBACK.
    client
        .publish(at(0), "t", &[0; 25], QoS::AtMostOnce, false)
        .unwrap();
    let bytes = publish_packet(V3, QoS::AtLeastOnce, Some(1), false, b"x");
    let err = client.handle_bytes(at(0), &bytes).unwrap_err();
    assert_eq!(err, ClientError::BufferFull);
    assert!(!err.is_fatal());
    assert_eq!(client.state(), ConnectionState::Connected);
    let first = drain(&mut client, at(0));
    assert_eq!(packets(V3, &first).len(), 1);
    assert!(matches!(
        feed(&mut client, at(0), &bytes),
        Some(ClientEvent::Message(_))
    ));
    let sent = drain(&mut client, at(0));
    assert_eq!(
        packets(V3, &sent),
        [Packet::PubAck(PubResponse::new(id(1)))]
    );
}

// ---------------------------------------------------------------------------------------------
// Keep-alive

#[test]
fn mqtt_3_1_2_20_pingreq_when_idle_for_the_keep_alive_and_pong() {
    // 3.1.1 numbers it [MQTT-3.1.2-23].
    let options = ClientOptions {
        keep_alive: 30,
        response_timeout: Duration::from_secs(5),
        ..ClientOptions::new(V3, "c")
    };
    let mut client: TestClient = connected_with(options);
    assert_eq!(client.poll_timeout(), Some(at(30)));
    // Sending anything pushes the deadline back.
    client
        .publish(at(10), "t", b"", QoS::AtMostOnce, false)
        .unwrap();
    drain(&mut client, at(10));
    assert_eq!(client.poll_timeout(), Some(at(40)));
    client.handle_timeout(at(39)).unwrap();
    assert!(drain(&mut client, at(39)).is_empty());

    client.handle_timeout(at(40)).unwrap();
    let sent = drain(&mut client, at(40));
    assert_eq!(packets(V3, &sent), [Packet::PingReq]);
    // Now waiting for PINGRESP; no second PINGREQ meanwhile.
    assert_eq!(client.poll_timeout(), Some(at(45)));
    client.handle_timeout(at(44)).unwrap();
    assert!(drain(&mut client, at(44)).is_empty());

    let pong = encode(V3, Packet::PingResp);
    assert_eq!(feed(&mut client, at(44), &pong), Some(ClientEvent::Pong));
    assert_eq!(client.poll_timeout(), Some(at(70)));
}

#[test]
fn missing_pingresp_is_a_timeout() {
    let options = ClientOptions {
        keep_alive: 10,
        response_timeout: Duration::from_secs(3),
        ..ClientOptions::new(V5, "c")
    };
    let mut client: TestClient = connected_with(options);
    client.handle_timeout(at(10)).unwrap();
    assert_eq!(packets(V5, &drain(&mut client, at(10))), [Packet::PingReq]);
    assert_eq!(client.handle_timeout(at(13)), Err(ClientError::Timeout));
    assert_eq!(client.state(), ConnectionState::Closing);
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn any_packet_answers_an_outstanding_ping() {
    let options = ClientOptions {
        keep_alive: 10,
        response_timeout: Duration::from_secs(3),
        ..ClientOptions::new(V5, "c")
    };
    let mut client: TestClient = connected_with(options);
    client.handle_timeout(at(10)).unwrap();
    drain(&mut client, at(10));
    let bytes = publish_packet(V5, QoS::AtMostOnce, None, false, b"x");
    feed(&mut client, at(11), &bytes);
    assert_eq!(client.handle_timeout(at(13)), Ok(()));
    assert_eq!(client.poll_timeout(), Some(at(20)));
}

#[test]
fn mqtt_3_2_2_21_server_keep_alive_replaces_the_clients() {
    let options = ClientOptions {
        keep_alive: 60,
        ..ClientOptions::new(V5, "c")
    };
    let mut client = TestClient::new(options);
    client.connect(at(0)).unwrap();
    drain(&mut client, at(0));
    let bytes = connack_with(Properties {
        server_keep_alive: Some(5),
        ..Properties::default()
    });
    feed(&mut client, at(0), &bytes);
    assert_eq!(client.poll_timeout(), Some(at(5)));
    client.handle_timeout(at(5)).unwrap();
    assert_eq!(packets(V5, &drain(&mut client, at(5))), [Packet::PingReq]);

    // Keep-alive 0 from the server turns pings off.
    client.connection_lost(at(6));
    client.connect(at(6)).unwrap();
    drain(&mut client, at(6));
    let bytes = connack_with(Properties {
        server_keep_alive: Some(0),
        ..Properties::default()
    });
    feed(&mut client, at(6), &bytes);
    assert_eq!(client.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------------
// Reconnect and session

/// Drives a client into: 1 QoS 1 awaiting PUBACK, 2 QoS 2 past PUBREC, 3 QoS 2 awaiting
/// PUBREC, 4 QoS 1 never transmitted, and an inbound QoS 2 (id 77) awaiting PUBREL.
fn client_with_session(version: ProtocolVersion) -> TestClient {
    let options = ClientOptions {
        clean_start: true,
        session_expiry_interval: 300,
        ..ClientOptions::new(version, "resumer")
    };
    let mut client: TestClient = connected_with(options);
    let p1 = client
        .publish(at(1), "q/1", b"one", QoS::AtLeastOnce, false)
        .unwrap()
        .unwrap();
    let p2 = client
        .publish(at(1), "q/2", b"two", QoS::ExactlyOnce, false)
        .unwrap()
        .unwrap();
    let p3 = client
        .publish(at(1), "q/3", b"three", QoS::ExactlyOnce, true)
        .unwrap()
        .unwrap();
    assert_eq!((p1.get(), p2.get(), p3.get()), (1, 2, 3));
    drain(&mut client, at(1));
    let rec = ack(version, Packet::PubRec, 2);
    feed(&mut client, at(1), &rec);
    let inbound = publish_packet(version, QoS::ExactlyOnce, Some(77), false, b"in");
    feed(&mut client, at(1), &inbound);
    // Publish 4 is queued but the connection drops before it is transmitted.
    client
        .publish(at(2), "q/4", b"four", QoS::AtLeastOnce, false)
        .unwrap();
    client.connection_lost(at(3));
    assert_eq!(client.state(), ConnectionState::Disconnected);
    assert_eq!(client.pending_transmit(), 0);
    assert_eq!(client.inflight(), 4);
    client.set_clean_start(false);
    client
}

#[test]
fn mqtt_4_4_0_1_session_present_resends_publishes_with_dup_and_pubrel_in_order() {
    for version in [V3, V5] {
        let mut client = client_with_session(version);
        client.connect(at(10)).unwrap();
        let bytes = drain(&mut client, at(10));
        let Packet::Connect(connect) = packets(version, &bytes)[0] else {
            panic!("expected CONNECT");
        };
        assert!(!connect.clean_start);
        // Nothing is resent before CONNACK.
        assert_eq!(packets(version, &bytes).len(), 1);

        let bytes = connack(version, true);
        assert_eq!(
            feed(&mut client, at(10), &bytes),
            Some(ClientEvent::Connected {
                session_present: true
            })
        );
        assert_eq!(client.poll_event(), None);
        let bytes = drain(&mut client, at(10));
        let sent = packets(version, &bytes);
        // [MQTT-4.6.0-1]: original order; [MQTT-3.3.1-1]: DUP 1 on re-delivery.
        let summary: Vec<(&str, u16, bool)> = sent
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => ("PUBLISH", p.packet_id.unwrap().get(), p.dup),
                Packet::PubRel(r) => ("PUBREL", r.packet_id.get(), false),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("PUBLISH", 1, true),
                ("PUBREL", 2, false),
                ("PUBLISH", 3, true),
                // Never sent before the connection dropped: a first delivery, DUP 0.
                ("PUBLISH", 4, false),
            ]
        );
        let Packet::Publish(third) = sent[2] else {
            unreachable!()
        };
        assert_eq!(
            (third.topic, third.payload, third.retain),
            ("q/3", &b"three"[..], true)
        );
        assert_eq!(third.qos, QoS::ExactlyOnce);

        // The inbound QoS 2 state survived: a re-sent PUBLISH 77 is not delivered twice.
        let dup = publish_packet(version, QoS::ExactlyOnce, Some(77), true, b"in");
        assert_eq!(feed(&mut client, at(10), &dup), None);
        assert_eq!(
            packets(version, &drain(&mut client, at(10))),
            [Packet::PubRec(PubResponse::new(id(77)))]
        );

        // The flows complete as usual.
        for (kind, n) in [
            (Packet::PubAck as fn(_) -> _, 1),
            (Packet::PubComp, 2),
            (Packet::PubAck, 4),
        ] {
            let bytes = ack(version, kind, n);
            assert_eq!(
                feed(&mut client, at(11), &bytes),
                Some(ClientEvent::Published { packet_id: id(n) })
            );
        }
        assert_eq!(client.inflight(), 1);
        assert_eq!(
            client.inflight_state(id(3)),
            Some(InflightState::AwaitPubRec)
        );
    }
}

#[test]
fn mqtt_3_2_2_5_no_session_present_discards_the_session() {
    for version in [V3, V5] {
        let mut client = client_with_session(version);
        client.connect(at(10)).unwrap();
        drain(&mut client, at(10));
        let bytes = connack(version, false);
        assert_eq!(
            feed(&mut client, at(10), &bytes),
            Some(ClientEvent::Connected {
                session_present: false
            })
        );
        // Nothing is resent.
        assert!(drain(&mut client, at(10)).is_empty());
        assert_eq!(client.inflight(), 0);
        assert_eq!(client.stored_bytes(), 0);
        assert_eq!(client.incoming_qos2(), 0);
        let mut lost = Vec::new();
        while let Some(event) = client.poll_event() {
            let ClientEvent::SessionLost { packet_id } = event else {
                panic!("unexpected {event:?}");
            };
            lost.push(packet_id.get());
        }
        assert_eq!(lost, [1, 2, 3, 4]);
        assert_eq!(client.packet_ids_in_use(), 0);
        // The inbound identifier 77 is a new message now.
        let again = publish_packet(version, QoS::ExactlyOnce, Some(77), true, b"in");
        assert!(matches!(
            feed(&mut client, at(10), &again),
            Some(ClientEvent::Message(_))
        ));
    }
}

#[test]
fn mqtt_3_1_2_4_clean_start_discards_the_session_at_connect() {
    let mut client = client_with_session(V5);
    client.set_clean_start(true);
    client.connect(at(10)).unwrap();
    assert_eq!(client.inflight(), 0);
    assert_eq!(client.incoming_qos2(), 0);
    let mut lost = 0;
    while let Some(ClientEvent::SessionLost { .. }) = client.poll_event() {
        lost += 1;
    }
    assert_eq!(lost, 4);
    let bytes = drain(&mut client, at(10));
    let Packet::Connect(connect) = packets(V5, &bytes)[0] else {
        panic!("expected CONNECT");
    };
    assert!(connect.clean_start);
}

#[test]
fn a_subscribe_pending_when_the_connection_drops_is_reported_lost() {
    let mut client = connected(V5);
    let filter = [SubscribeFilter {
        filter: "a",
        options: SubscriptionOptions::default(),
    }];
    let packet_id = client.subscribe(at(0), &filter).unwrap();
    client.connection_lost(at(1));
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::SessionLost { packet_id })
    );
    assert_eq!(client.poll_event(), None);
    // A SUBACK arriving on a later connection is ignored.
    client.set_clean_start(false);
    client.connect(at(2)).unwrap();
    let bytes = connack(V5, true);
    feed(&mut client, at(2), &bytes);
    let suback = encode(
        V5,
        Packet::SubAck(SubAck {
            packet_id,
            properties: Properties::default(),
            reason_codes: List::new(&[ReasonCode::Success]),
        }),
    );
    assert_eq!(feed(&mut client, at(2), &suback), None);
}

#[test]
fn mqtt_3_3_4_7_resends_wait_for_the_new_receive_maximum() {
    // Retransmissions go out from the store as acknowledgements make room in the window.
    let options = ClientOptions {
        clean_start: false,
        ..ClientOptions::new(V5, "c")
    };
    let mut client: Client<'static, 8, 256> = connected_with(options);
    for n in 0..5u8 {
        client
            .publish(at(0), "t", &[n; 20], QoS::AtLeastOnce, false)
            .unwrap();
        drain(&mut client, at(0));
    }
    client.connection_lost(at(1));
    client.connect(at(2)).unwrap();
    drain(&mut client, at(2));
    let bytes = encode(
        V5,
        Packet::ConnAck(ConnAck {
            session_present: true,
            properties: Properties {
                receive_maximum: Some(3),
                ..Properties::default()
            },
            ..ConnAck::default()
        }),
    );
    feed(&mut client, at(2), &bytes);
    // New publishes wait behind the retransmissions.
    assert_eq!(
        client.publish(at(2), "t", b"new", QoS::AtLeastOnce, false),
        Err(ClientError::InflightFull)
    );
    let bytes = drain(&mut client, at(2));
    let ids: Vec<u16> = packets(V5, &bytes)
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => {
                assert!(p.dup);
                p.packet_id.unwrap().get()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // Only three may be outstanding on the new connection.
    assert_eq!(ids, [1, 2, 3]);
    for n in [1, 2] {
        let bytes = ack(V5, Packet::PubAck, n);
        feed(&mut client, at(3), &bytes);
    }
    let bytes = drain(&mut client, at(3));
    let ids: Vec<u16> = packets(V5, &bytes)
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.packet_id.unwrap().get(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, [4, 5]);
}

// ---------------------------------------------------------------------------------------------
// Disconnect

#[test]
fn mqtt_3_14_4_1_disconnect_is_the_last_packet_and_input_is_ignored_after() {
    let mut client = connected(V5);
    client
        .publish(at(0), "t", b"x", QoS::AtMostOnce, false)
        .unwrap();
    client.disconnect(at(0)).unwrap();
    assert_eq!(client.state(), ConnectionState::Closing);
    assert_eq!(
        client.publish(at(0), "t", b"x", QoS::AtMostOnce, false),
        Err(ClientError::NotConnected)
    );
    let bytes = drain(&mut client, at(0));
    let sent = packets(V5, &bytes);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1], Packet::Disconnect(Disconnect::default()));
    let bytes = encode(V5, Packet::PingResp);
    let received = client.handle_bytes(at(0), &bytes).unwrap();
    assert_eq!((received.consumed, received.event), (bytes.len(), None));
    assert_eq!(client.poll_timeout(), None);
    assert_eq!(client.disconnect(at(0)), Err(ClientError::NotConnected));
}

#[test]
fn stored_publishes_queued_before_disconnect_go_first_but_none_before_connack() {
    // Queued before DISCONNECT on an open connection: sent from the store, then DISCONNECT.
    let mut client = connected(V3);
    client
        .publish(at(0), "t", b"q1", QoS::AtLeastOnce, false)
        .unwrap();
    client.disconnect(at(0)).unwrap();
    let bytes = drain(&mut client, at(0));
    let sent = packets(V3, &bytes);
    assert!(matches!(&sent[..], [Packet::Publish(p), Packet::Disconnect(_)] if p.payload == b"q1"));

    // Resumed, but disconnected before CONNACK: only CONNECT and DISCONNECT go out (a
    // PUBLISH before CONNACK, let alone before CONNECT, would break the protocol).
    let mut client: TestClient = connected(V3);
    client
        .publish(at(0), "t", b"q1", QoS::AtLeastOnce, false)
        .unwrap();
    client.connection_lost(at(1));
    client.set_clean_start(false);
    client.connect(at(2)).unwrap();
    client.disconnect(at(2)).unwrap();
    let bytes = drain(&mut client, at(2));
    let sent = packets(V3, &bytes);
    assert!(matches!(
        &sent[..],
        [Packet::Connect(_), Packet::Disconnect(_)]
    ));
    assert_eq!(client.inflight(), 1);
}

#[test]
fn v5_server_disconnect_is_reported_and_v311_disconnect_is_a_protocol_error() {
    let mut client = connected(V5);
    let bytes = encode(
        V5,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::ServerShuttingDown,
            properties: Properties {
                reason_string: Some("maintenance"),
                ..Properties::default()
            },
        }),
    );
    let Some(ClientEvent::Disconnected { reason, properties }) = feed(&mut client, at(0), &bytes)
    else {
        panic!("expected Disconnected");
    };
    assert_eq!(reason, ReasonCode::ServerShuttingDown);
    assert_eq!(properties.reason_string, Some("maintenance"));
    assert_eq!(client.state(), ConnectionState::Closing);
    // Nothing is sent back.
    assert!(drain(&mut client, at(0)).is_empty());

    let mut client = connected(V3);
    let bytes = encode(V3, Packet::Disconnect(Disconnect::default()));
    assert_eq!(
        client.handle_bytes(at(0), &bytes),
        Err(ClientError::Protocol(ReasonCode::ProtocolError))
    );
}

#[test]
fn handle_bytes_without_a_transport_is_not_connected() {
    let mut client = TestClient::new(ClientOptions::new(V5, "c"));
    assert_eq!(
        client.handle_bytes(at(0), &[0x20]),
        Err(ClientError::NotConnected)
    );
    assert!(!ClientError::NotConnected.is_fatal());
    assert_eq!(client.poll_transmit(at(0), &mut [0; 8]), 0);
}

#[test]
fn errors_display_and_chain() {
    let e = ClientError::Decode(petrel_codec::DecodeError::InvalidQoS);
    assert_eq!(e.to_string(), "malformed packet from server: invalid QoS");
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(
        ClientError::Timeout.to_string(),
        "server did not respond in time"
    );
}

#[test]
fn mqtt_3_2_2_15_a_stored_publish_too_large_for_the_new_server_is_discarded() {
    let options = ClientOptions {
        clean_start: false,
        ..ClientOptions::new(V5, "c")
    };
    let mut client: TestClient = connected_with(options);
    let small = client
        .publish(at(0), "t", &[1; 10], QoS::AtLeastOnce, false)
        .unwrap()
        .unwrap();
    let large = client
        .publish(at(0), "t", &[2; 200], QoS::ExactlyOnce, false)
        .unwrap()
        .unwrap();
    let last = client
        .publish(at(0), "t", &[3; 10], QoS::AtLeastOnce, false)
        .unwrap()
        .unwrap();
    client.connection_lost(at(1));
    client.connect(at(2)).unwrap();
    drain(&mut client, at(2));
    let bytes = encode(
        V5,
        Packet::ConnAck(ConnAck {
            session_present: true,
            properties: Properties {
                maximum_packet_size: Some(100),
                ..Properties::default()
            },
            ..ConnAck::default()
        }),
    );
    feed(&mut client, at(2), &bytes);
    let sent = drain(&mut client, at(2));
    let resent: Vec<(PacketId, u8)> = packets(V5, &sent)
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.packet_id.unwrap(), p.payload[0]),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // The others keep their bytes and order although the store was compacted under them.
    assert_eq!(resent, [(small, 1), (last, 3)]);
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::SessionLost { packet_id: large })
    );
    assert_eq!(client.inflight(), 2);
}
