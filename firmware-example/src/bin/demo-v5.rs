//! The demo over MQTT 5.0 (see `petrel_firmware::demo`).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use petrel_codec::ProtocolVersion;

#[entry]
fn main() -> ! {
    petrel_firmware::demo::run(ProtocolVersion::V5, "petrel-fw-5")
}
