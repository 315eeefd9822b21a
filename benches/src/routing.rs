//! The broker-core routing fixture shared by the `routing` criterion benchmark and the
//! `route_instructions` example: a broker with connected subscribers, and the drain the
//! runtime's writers perform.

use bytes::BytesMut;
use petrel_codec::{
    Connect, List, Packet, PacketId, Properties, ProtocolVersion, QoS, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use petrel_state::broker::{AllowAll, Broker, BrokerConfig, ConnectionId, NoStorage};
use petrel_state::Instant;

fn encode(packet: Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0; packet.encoded_len(ProtocolVersion::V5).unwrap()];
    packet.encode(ProtocolVersion::V5, &mut buf).unwrap();
    buf
}

/// A broker with `count` connected 5.0 subscribers to `bench/+/data`.
pub fn broker_with_subscribers(count: usize) -> (Broker, Vec<ConnectionId>) {
    let mut broker = Broker::new(
        BrokerConfig::default(),
        Box::new(AllowAll),
        Box::new(NoStorage),
    );
    let now = Instant::ZERO;
    let filters = [SubscribeFilter {
        filter: "bench/+/data",
        options: SubscriptionOptions::qos(QoS::AtMostOnce),
    }];
    let subscribe = encode(Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Properties::default(),
        filters: List::new(&filters),
    }));
    let mut ids = Vec::with_capacity(count);
    let mut sink = BytesMut::new();
    for n in 0..count {
        let id = broker.open(now, None);
        let client_id = format!("sub-{n}");
        let connect = encode(Packet::Connect(Connect {
            protocol_version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id: &client_id,
            will: None,
            username: None,
            password: None,
        }));
        broker.handle_bytes(now, id, &connect);
        broker.handle_bytes(now, id, &subscribe);
        ids.push(id);
    }
    drain(&mut broker, &mut sink);
    (broker, ids)
}

/// Takes every connection's bytes, as the runtime's writers would; returns how many.
pub fn drain(broker: &mut Broker, sink: &mut BytesMut) -> usize {
    let mut total = 0;
    while let Some(id) = broker.poll_ready() {
        total += broker.poll_transmit(Instant::ZERO, id, sink);
        sink.clear();
    }
    total
}
