//! Runs one benchmark routine many times, for counting its instructions under callgrind: a
//! measure that, unlike time, does not move when other processes share the machine.
//!
//! ```text
//! cargo build --release -p petrel-benches --example instructions
//! valgrind --tool=callgrind --toggle-collect='*measured*' --callgrind-out-file=/dev/null \
//!     target/release/examples/instructions decode publish_64b_qos1_v311 petrel 100000
//! ```
//!
//! Divide the "Collected" count by the iterations. Only `measured` is counted: making the
//! inputs and dropping them afterwards are not, as in the criterion benchmarks. Instructions
//! are not time: a heap allocation or an atomic costs more time per instruction than the
//! arithmetic of a parser, so this understates what allocating costs.

use std::hint::black_box;
use std::process::ExitCode;

use bytes::BytesMut;
use petrel_benches::{
    cases, checked_wire, mqttbytes_decode, mqttbytes_encode, petrel_decode, petrel_encode,
    petrel_encode_bytesmut, Case,
};
use petrel_codec::Decoder;

const USAGE: &str =
    "usage: instructions <decode|encode> <case> <petrel|petrel_bytesmut|mqttbytes> [iterations]";

/// The only function callgrind counts; never inlined, so its name survives.
#[inline(never)]
fn measured(case: &Case, operation: &str, side: &str, iterations: usize, inputs: &mut [BytesMut]) {
    let decoder = Decoder::new(case.version);
    let mut buf = [0u8; 2048];
    let mut out = BytesMut::new();
    if operation == "encode" {
        // Outside the loops: the buffers' capacity is there before the first iteration.
        out.reserve(buf.len());
    }
    match (operation, side) {
        ("decode", "petrel") => {
            for input in inputs.iter() {
                black_box(petrel_decode(&decoder, input));
            }
        }
        ("decode", "mqttbytes") => {
            for input in inputs.iter_mut() {
                mqttbytes_decode(case.version, input);
            }
        }
        ("encode", "petrel") => {
            for _ in 0..iterations {
                black_box(petrel_encode(case, &mut buf));
            }
        }
        ("encode", "petrel_bytesmut") => {
            for _ in 0..iterations {
                black_box(petrel_encode_bytesmut(case, &mut out));
            }
        }
        ("encode", "mqttbytes") => {
            for _ in 0..iterations {
                black_box(mqttbytes_encode(case, &mut out));
            }
        }
        _ => unreachable!("checked by main"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (operation, name, side) = match &args[..] {
        [operation, name, side, ..] => (operation.as_str(), name.as_str(), side.as_str()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let known = matches!(
        (operation, side),
        ("decode", "petrel" | "mqttbytes") | ("encode", "petrel" | "petrel_bytesmut" | "mqttbytes")
    );
    let iterations = match args.get(3).map(|n| n.parse::<usize>()) {
        None => 100_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let Some(case) = cases().into_iter().find(|c| c.name == name) else {
        let names: Vec<_> = cases().iter().map(|c| c.name).collect();
        eprintln!("{USAGE}\ncases: {}", names.join(", "));
        return ExitCode::FAILURE;
    };
    if !known {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    }
    let wire = checked_wire(&case);
    assert!(
        wire.len() <= 2048,
        "measured's buffer is too small for {name}"
    );
    // Decoding consumes one input per iteration, made before counting starts.
    let mut inputs: Vec<BytesMut> = match operation {
        "decode" => (0..iterations).map(|_| BytesMut::from(&wire[..])).collect(),
        _ => Vec::new(),
    };
    measured(&case, operation, side, iterations, &mut inputs);
    println!("{operation} {name} {side}: {iterations} iterations");
    ExitCode::SUCCESS
}
