//! The scaffolding alone: the UART, clock, stack painting and exit every program has, with
//! no MQTT client. Its figures are the floor under every other row.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use embedded_io::Write;

#[entry]
fn main() -> ! {
    petrel_footprint::start();
    let mut uart = petrel_footprint::uart();
    let ok = uart.write_all(&[0xE0, 0]).is_ok();
    petrel_footprint::finish(ok)
}
