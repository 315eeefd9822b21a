//! `petrel-state`: every protocol decision of Petrel, as pure state machines.
//!
//! Nothing here does I/O, reads a clock or starts a thread. Bytes and the current
//! [`Instant`] come in; bytes to send, events and the next deadline come out. The shape is
//! quinn-proto's:
//!
//! - **inputs**: `handle_*` methods with `now`,
//! - **commands**: what the application asks for (publish, subscribe, close, …),
//! - **outputs**, drained after every input or command until empty: `poll_transmit` (bytes
//!   into a caller-owned buffer), `poll_event`, and `poll_timeout` (when to call
//!   `handle_timeout` next).
//!
//! The [`client`] module needs neither `std` nor a heap, so the same client runs on a
//! microcontroller, in the proxy's upstream side and in the load generator. Its MQTT 5.0
//! half sits behind the `v5` feature (on by default, and needed by the server side behind
//! `alloc`): a firmware that speaks only 3.1.1 turns it off and carries none of that code.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "alloc")]
pub mod broker;
pub mod client;
#[cfg(feature = "alloc")]
pub mod message;
#[cfg(feature = "alloc")]
pub mod proxy;
#[cfg(feature = "alloc")]
pub mod server;
pub mod time;

pub use time::{Duration, Instant};
