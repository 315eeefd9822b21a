//! Routes one 64-byte QoS 0 publish to N subscribers, many times, for counting the broker
//! core's instructions per delivery under callgrind (the `routing` criterion benchmark
//! times the same work, but time moves with the machine's load and instructions do not).
//!
//! ```text
//! cargo build --release -p petrel-benches --example route_instructions
//! valgrind --tool=callgrind --toggle-collect='*measured*' --callgrind-out-file=/dev/null \
//!     target/release/examples/route_instructions 100 1000
//! ```
//!
//! Divide the "Collected" count by subscribers × publishes.

use std::hint::black_box;
use std::process::ExitCode;

use bytes::{Bytes, BytesMut};
use petrel_benches::routing::{broker_with_subscribers, drain};
use petrel_state::broker::Broker;
use petrel_state::message::Message;
use petrel_state::Instant;

const USAGE: &str = "usage: route_instructions <subscribers> [publishes]";

/// The only function callgrind counts; never inlined, so its name survives.
#[inline(never)]
fn measured(broker: &mut Broker, payload: &Bytes, sink: &mut BytesMut, publishes: usize) -> usize {
    let mut delivered = 0;
    for _ in 0..publishes {
        let message = Message::new("bench/1/data", payload.clone());
        delivered += broker.publish(Instant::ZERO, message);
        black_box(drain(broker, sink));
    }
    delivered
}

fn main() -> ExitCode {
    let args: Vec<usize> = match std::env::args().skip(1).map(|a| a.parse()).collect() {
        Ok(args) => args,
        Err(_) => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let (subscribers, publishes) = match args[..] {
        [s] if s > 0 => (s, 1000),
        [s, p] if s > 0 && p > 0 => (s, p),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let (mut broker, _ids) = broker_with_subscribers(subscribers);
    let payload = Bytes::from(vec![0x5Au8; 64]);
    let mut sink = BytesMut::with_capacity(4096);
    let delivered = measured(&mut broker, &payload, &mut sink, publishes);
    println!("{delivered} deliveries ({subscribers} subscribers × {publishes} publishes)");
    ExitCode::SUCCESS
}
