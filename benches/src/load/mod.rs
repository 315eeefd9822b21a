//! `petrel-bench`, the load generator: its library, so that tests drive it as the binary
//! does.
//!
//! - [`run`]: a run — plan the connections of a scenario, open them, publish, drain, and
//!   report ([`run::run_blocking`]);
//! - `mqtt`: one connection, a petrel-state client session over TCP (`raw`: the relay's
//!   handshake), with TLS and WebSocket in [`transport`] (`ws`: the WebSocket framing),
//!   and `fast`: QoS 0 messages without the session's encode and decode;
//! - [`relay`]: the TCP relay that gives the ceiling of the machine;
//! - [`stats`], [`seq`], [`payload`], [`clock`]: what is counted and how;
//! - [`report`] and [`compare`]: figures for people and machines, and the comparison
//!   tables and charts;
//! - [`cli`]: the command line.
//!
//! The runtime is tokio's multi-threaded scheduler with one task per connection. A
//! connection never blocks on one direction: it reads, writes and publishes from one loop
//! with non-blocking calls and waits only when none of them can progress, and it batches
//! (hundreds of small publishes per write). See the repository's BENCHMARKS.md for what
//! this costs per message.

pub mod cli;
pub mod clock;
pub mod compare;
mod conn;
mod ctx;
mod fast;
mod mqtt;
pub mod payload;
pub mod procstat;
mod raw;
pub mod relay;
pub mod report;
pub mod run;
pub mod seq;
mod session;
pub mod stats;
pub mod transport;
mod ws;

pub use mqtt::publish_packet_len;
pub use raw::{hello as raw_hello, HELLO_LEN as RAW_HELLO_LEN};
