//! The demo over MQTT 3.1.1 (see `petrel_firmware::demo`).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use petrel_codec::ProtocolVersion;

#[entry]
fn main() -> ! {
    petrel_firmware::demo::run(ProtocolVersion::V311, "petrel-fw-311")
}
