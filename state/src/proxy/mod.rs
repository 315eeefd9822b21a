//! Proxy mode: Petrel in front of other brokers, without I/O.
//!
//! - [`Pipe`]: one client and its connection to an upstream broker; every packet of both
//!   directions is decoded, shown to the same [`Hooks`](crate::broker::Hooks) as the broker
//!   uses (authenticate CONNECT, authorize and rewrite PUBLISH, SUBSCRIBE and UNSUBSCRIBE
//!   on the way up, withhold or rewrite back on the way down) and forwarded, as the original
//!   frame when nothing changed.
//! - [`Balancer`]: which upstream a client id lands on (rendezvous hashing, sticky while the
//!   upstream lives) and the upstreams' health.
//! - [`BuiltinHooks`]: the configuration-driven hooks (anonymous access, tenant prefixes).
//!
//! The runtime (`petrel proxy`) moves bytes between sockets, runs the probes and the timers,
//! and does what the events say.

mod balancer;
mod builtin;
mod pipe;

pub use balancer::{Balancer, BalancerEvent, HealthConfig};
pub use builtin::BuiltinHooks;
pub use pipe::{Pipe, PipeConfig, PipeEvent, Side};
