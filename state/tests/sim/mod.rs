//! The deterministic simulation of Petrel's broker core and clients. See `simulation.rs` for
//! what it checks and how to run it.

pub(crate) mod model;
pub(crate) mod oracle;
pub(crate) mod rng;
pub(crate) mod world;
