//! Times petrel and mqttbytes on one case in alternating short batches, so both meet the
//! same interference from other processes; on a shared machine this gives a steadier ratio
//! than two criterion runs made one after the other.
//!
//! ```text
//! cargo run --release -p petrel-benches --example paired -- decode publish_64b_qos1_v311
//! ```
//!
//! Prints, for each side, the fastest batch and the median batch in nanoseconds per
//! operation. The fastest batch is the least disturbed one: the best estimate of what the
//! code costs on an idle machine. Inputs are made before each batch's clock starts.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use bytes::BytesMut;
use petrel_benches::{
    cases, checked_wire, mqttbytes_decode, mqttbytes_encode, petrel_decode, petrel_encode, Case,
};
use petrel_codec::Decoder;

const USAGE: &str = "usage: paired <decode|encode> <case> [batches]";
/// Operations per batch: long enough to dwarf the clock reads, short enough that most
/// batches run between two interruptions.
const BATCH: usize = 2_000;

/// Nanoseconds per operation over one batch.
fn batch(case: &Case, wire: &[u8], operation: &str, petrel: bool) -> f64 {
    let elapsed = if operation == "decode" {
        let mut inputs: Vec<BytesMut> = (0..BATCH).map(|_| BytesMut::from(wire)).collect();
        let decoder = Decoder::new(case.version);
        let start = Instant::now();
        if petrel {
            for input in &inputs {
                black_box(petrel_decode(&decoder, input));
            }
        } else {
            for input in &mut inputs {
                mqttbytes_decode(case.version, input);
            }
        }
        start.elapsed()
    } else {
        let mut buf = vec![0u8; wire.len()];
        let mut out = BytesMut::with_capacity(wire.len());
        let start = Instant::now();
        for _ in 0..BATCH {
            if petrel {
                black_box(petrel_encode(case, &mut buf));
            } else {
                black_box(mqttbytes_encode(case, &mut out));
            }
        }
        start.elapsed()
    };
    elapsed.as_nanos() as f64 / BATCH as f64
}

fn summary(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[0], times[times.len() / 2])
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (operation, name) = match &args[..] {
        [operation, name, ..] if operation == "decode" || operation == "encode" => {
            (operation.as_str(), name.as_str())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let batches = match args.get(2).map(|n| n.parse::<usize>()) {
        None => 300,
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
    let wire = checked_wire(&case);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..batches {
        // Alternate which side goes first, so neither always follows the other's frees.
        let petrel_first = i % 2 == 0;
        for petrel in [petrel_first, !petrel_first] {
            let time = batch(&case, &wire, operation, petrel);
            if petrel {
                ours.push(time);
            } else {
                theirs.push(time);
            }
        }
    }
    let (ours_min, ours_median) = summary(ours);
    let (theirs_min, theirs_median) = summary(theirs);
    println!(
        "{operation} {name}: petrel {ours_min:.1} ns (median {ours_median:.1}), \
         mqttbytes {theirs_min:.1} ns (median {theirs_median:.1}), \
         ratio {:.2}x (median {:.2}x)",
        theirs_min / ours_min,
        theirs_median / ours_median
    );
    ExitCode::SUCCESS
}
