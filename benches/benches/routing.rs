//! Routing one publish through the broker core to 1, 100 and 10,000 subscribers: matching,
//! one delivery per session, and encoding the PUBLISH into every subscriber's buffer, then
//! taking those bytes out as the runtime would.
//!
//! `cargo bench -p petrel-benches --bench routing`

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use petrel_benches::routing::{broker_with_subscribers, drain};
use petrel_state::message::Message;
use petrel_state::Instant;

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
