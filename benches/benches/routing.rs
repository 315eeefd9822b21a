//! Routing one publish through the broker core to 1, 100 and 10,000 subscribers: matching,
//! one delivery per session, and encoding the PUBLISH into every subscriber's buffer, then
//! taking those bytes out as the runtime would.
//!
//! `cargo bench -p petrel-benches --bench routing`

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use petrel_codec::{
    Connect, List, Packet, PacketId, Properties, ProtocolVersion, QoS, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use petrel_state::broker::{AllowAll, Broker, BrokerConfig, ConnectionId, NoStorage};
use petrel_state::message::Message;
use petrel_state::Instant;

fn encode(packet: Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0; packet.encoded_len(ProtocolVersion::V5).unwrap()];
    packet.encode(ProtocolVersion::V5, &mut buf).unwrap();
    buf
}

/// A broker with `count` connected 5.0 subscribers to `bench/+/data`.
fn broker_with_subscribers(count: usize) -> (Broker, Vec<ConnectionId>) {
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

/// Takes every connection's bytes, as the runtime's writers would.
fn drain(broker: &mut Broker, sink: &mut BytesMut) -> usize {
    let mut total = 0;
    while let Some(id) = broker.poll_ready() {
        total += broker.poll_transmit(Instant::ZERO, id, sink);
        sink.clear();
    }
    total
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_publish_64b_qos0");
    for subscribers in [1usize, 100, 10_000] {
        let (mut broker, _ids) = broker_with_subscribers(subscribers);
        let payload = Bytes::from(vec![0x5Au8; 64]);
        let mut sink = BytesMut::with_capacity(4096);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, &subscribers| {
                b.iter(|| {
                    let message = Message::new("bench/1/data", payload.clone());
                    let delivered = broker.publish(Instant::ZERO, message);
                    assert_eq!(delivered, subscribers);
                    drain(&mut broker, &mut sink)
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
