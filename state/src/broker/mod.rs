//! The broker core: routes messages between server connections, with no I/O, no clock and
//! no threads.
//!
//! A [`Broker`] is one shard. It owns the [`ServerConnection`](crate::server::ServerConnection)s
//! of its clients and their sessions, the subscription trie, the retained messages and the
//! wills. The runtime feeds it bytes ([`Broker::handle_bytes`]), transport losses and time;
//! it drains bytes per connection ([`Broker::poll_ready`], [`Broker::poll_transmit`]),
//! connections to close ([`Broker::poll_closed`]), messages for other shards
//! ([`Broker::poll_shard_message`]) and the next deadline ([`Broker::poll_timeout`]).
//!
//! Choices the specification leaves open, and what Petrel does:
//!
//! - Overlapping subscriptions of one client get one copy of a message, at the highest QoS
//!   granted among them, carrying every matching subscription identifier.
//! - A message is downgraded to a subscriber's granted QoS, never skipped.
//! - A 5.0 PUBACK / PUBREC reports 0x10 "no matching subscribers" when nobody received the
//!   message ([`BrokerConfig::report_no_subscribers`]).
//! - Refusals use the reason code the [`Hooks`] give (0x87 "not authorized" or 0x80
//!   "unspecified error", as the operator prefers); a 3.1.1 publisher's refused QoS 1/2
//!   message is acknowledged and dropped, as 3.1.1 allows.
//! - QoS 0 messages are queued for offline sessions only when
//!   [`QueueLimits::queue_qos0_offline`](crate::server::QueueLimits::queue_qos0_offline) is set.
//! - A shared subscription group takes turns among its members (or picks the least loaded);
//!   QoS 1 messages a leaving member had not acknowledged go to another member at once,
//!   QoS 2 ones when the member's session ends [MQTT-4.8.2-4], [MQTT-4.8.2-5].
//!
//! See `docs/ARCHITECTURE.md` for how shards divide the work.

mod core;
mod hooks;
pub mod limits;
pub mod pipeline;
pub mod retained_tree;
mod shard;
mod storage;
pub mod trie;

pub use self::core::admin::{ClientSummary, PublishReport, SubscriptionSummary};
pub use self::core::{Broker, BrokerConfig, BrokerStats, ConnectionId, DropTally, SharedPolicy};
pub use hooks::{
    describe_packet, AllowAll, AuthDecision, ClientInfo, Hooks, PacketDirection, PeerIdentity,
    Verdict,
};
pub use pipeline::{Offer, Pipeline, PipelineTicket};
pub use shard::{owner_shard, ShardMessage};
pub use storage::{
    Durability, MemoryStorage, NoStorage, SessionRecord, SessionView, Storage, StoredState,
    StoredSubscription,
};
