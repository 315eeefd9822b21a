//! Arbitrary bytes into an MQTT 5.0 decoder, packet after packet: it must never panic.
//! A second decoder, whose maximum packet size is the input's first byte, reads the rest of
//! the input so that the size limit is tested as often as the happy path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel_codec::ProtocolVersion;

#[path = "../../codec/tests/common/invariants.rs"]
mod invariants;

fuzz_target!(|data: &[u8]| {
    invariants::check_decode_input(ProtocolVersion::V5, data);
});
