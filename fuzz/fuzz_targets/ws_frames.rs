//! Arbitrary bytes into the broker's WebSocket deframer (runtime-uring/src/transport/ws/
//! frame.rs, included as it is): it must never panic, never yield more payload than it was
//! given, and give the same payload, control frames and verdict however the socket splits
//! the bytes. The first input byte picks the split size.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../runtime-uring/src/transport/ws/frame.rs"]
mod frame;

use frame::{Control, Deframer, FrameError};

/// Feeds `input` in chunks of `split` bytes, answering nothing: the payload bytes, the
/// control frames, and the error that ended the stream, if any.
fn run(input: &[u8], split: usize) -> (Vec<u8>, Vec<Control>, Option<FrameError>) {
    let mut deframer = Deframer::new();
    let mut data = Vec::new();
    let mut controls = Vec::new();
    for chunk in input.chunks(split) {
        let mut rest = chunk;
        loop {
            match deframer.feed(rest, &mut data) {
                Ok((used, control)) => {
                    assert!(used <= rest.len(), "consumed more than given");
                    rest = &rest[used..];
                    match control {
                        Some(control) => controls.push(control),
                        None => {
                            assert!(rest.is_empty(), "stopped early without a control frame");
                            break;
                        }
                    }
                }
                Err(e) => return (data, controls, Some(e)),
            }
        }
        if deframer.is_closed() {
            break;
        }
    }
    assert!(data.len() <= input.len(), "more payload than input");
    (data, controls, None)
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let split = usize::from(first % 32) + 1;
    let whole = run(rest, rest.len().max(1));
    let pieces = run(rest, split);
    assert_eq!(whole, pieces, "the split changed the outcome");
});
