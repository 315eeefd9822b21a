//! petrel-codec against mqttbytes, decode and encode, on the same packets.
//!
//! Each criterion group holds one operation on one packet, with a `petrel` and a `mqttbytes`
//! function, so the report puts them side by side. The packets, the checks that both sides
//! do the same work, and the rules that keep the comparison fair are in the crate's library
//! (`src/lib.rs`).

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use petrel_benches::{
    cases, checked_wire, mqttbytes_decode, mqttbytes_encode, petrel_decode, petrel_encode,
    petrel_encode_bytesmut,
};
use petrel_codec::Decoder;

fn decode(c: &mut Criterion) {
    for case in cases() {
        let wire = checked_wire(&case);
        let decoder = Decoder::new(case.version);
        let mut group = c.benchmark_group(format!("decode/{}", case.name));
        group.throughput(Throughput::Bytes(wire.len() as u64));
        // The input is made (and later dropped) outside the timed section, for both sides.
        group.bench_function("petrel", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |input| petrel_decode(&decoder, input),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("mqttbytes", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |input| mqttbytes_decode(case.version, input),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

fn encode(c: &mut Criterion) {
    for case in cases() {
        let wire = checked_wire(&case);
        let mut group = c.benchmark_group(format!("encode/{}", case.name));
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let mut buf = vec![0u8; wire.len()];
        group.bench_function("petrel", |b| b.iter(|| petrel_encode(&case, &mut buf)));
        assert_eq!(buf, wire);
        let mut out = BytesMut::with_capacity(wire.len());
        group.bench_function("petrel_bytesmut", |b| {
            b.iter(|| petrel_encode_bytesmut(&case, &mut out))
        });
        assert_eq!(&out[..], &wire[..]);
        group.bench_function("mqttbytes", |b| {
            b.iter(|| mqttbytes_encode(&case, &mut out))
        });
        assert_eq!(out.len(), wire.len());
        group.finish();
    }
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
