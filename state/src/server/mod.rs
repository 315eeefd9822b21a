//! The server side: one [`ServerConnection`] per client connection, and the [`Session`] it
//! attaches, which outlives the connection when the client asks for a persistent session.
//!
//! The broker core drives connections through their events; everything here is
//! deterministic and needs no I/O.

mod config;
mod connection;
mod events;
mod session;

pub use config::ServerConfig;
pub use connection::{
    CommandError, ConnectionStats, DeliveryOutcome, DropReason, ServerConnection, SharedPublish,
};
pub use events::{
    Accept, AuthRequest, CloseInfo, CloseInitiator, ConnectRequest, InboundPublish, ServerEvent,
    SubscribeRequest, SubscriptionRequest, UnsubscribeRequest, Will,
};
pub use session::{Delivery, DropCounters, Outbound, OutboundState, QueueLimits, Session};
