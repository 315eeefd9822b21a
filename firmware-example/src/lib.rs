//! The Petrel `no_std` MQTT client on a Cortex-M4, without heap or TCP/IP stack.
//!
//! The firmware runs on QEMU's `mps2-an386` board. UART0 carries raw MQTT bytes: QEMU turns
//! it into a TCP connection to the broker (`-serial tcp:127.0.0.1:PORT`), so the client
//! needs no network stack. On real hardware the same [`link::Link`] runs over anything that
//! implements the [`embedded_io`] traits, a TCP socket of smoltcp or of a Wi-Fi module.
//!
//! - [`uart`]: the CMSDK APB UART as an `embedded_io` byte stream;
//! - [`clock`]: a millisecond clock from SysTick, as the [`petrel_state::Instant`] the
//!   client takes;
//! - [`link`]: pumps bytes between a byte stream and a [`petrel_state::client::Client`];
//! - [`exit`]: ends the QEMU run with a status code (semihosting);
//! - [`demo`]: the scenario both demo binaries run;
//! - [`stack`]: peak stack use by stack painting (for the footprint comparison).
#![no_std]

#[macro_use]
mod fmt;

pub mod clock;
pub mod demo;
pub mod exit;
pub mod link;
pub mod stack;
pub mod uart;

#[cfg(feature = "defmt")]
use defmt_semihosting as _;
