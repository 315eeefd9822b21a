//! Decode, encode, decode again: the first input byte picks the protocol version (low bit:
//! 0 for 3.1.1, 1 for 5.0) and the rest is a stream of packets. For every packet that
//! decodes, the encoder must accept it, reproduce it exactly in `encoded_len` bytes, and
//! produce the same bytes a second time; every strict prefix of the stream must decode as
//! incomplete without over-asking. The rules live in `codec/tests/common/invariants.rs`,
//! shared with the regression test that replays crash inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../codec/tests/common/invariants.rs"]
mod invariants;

fuzz_target!(|data: &[u8]| {
    invariants::check_roundtrip_input(data);
});
