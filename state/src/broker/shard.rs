//! How several broker shards (one per core) share one broker's work.
//!
//! - A session lives on exactly one shard, chosen by a hash of its client identifier
//!   ([`owner_shard`]); the runtime reads a connection's CONNECT and hands the connection to
//!   that shard, so a takeover is always local to one shard.
//! - Each shard matches publishes against its own subscribers, and knows, per filter, which
//!   other shards have an interest; a publish goes once to each interested shard, which
//!   matches it again against its own subscribers. Order is kept per publisher because the
//!   channel between two shards is first in, first out.
//! - A shared subscription group is owned by the shard its name hashes to; the owner knows
//!   every member, picks one per message and sends the message to that member's shard.
//! - Retained messages are replicated: every shard holds every retained message (the
//!   payload is shared, not copied). Each topic has an owner shard ([`owner_shard`] of the
//!   topic), which alone applies changes first, stores them and tells the others, so that
//!   all shards and the store agree on the last one.

use alloc::string::String;
use alloc::sync::Arc;

use crate::message::Message;

use super::storage::StoredSubscription;

/// A message from one shard to another. The runtime carries it, in order, to
/// [`Broker::handle_shard_message`](super::Broker::handle_shard_message) of the target shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardMessage {
    /// A published message for the target's own subscribers (and shared groups it owns).
    Publish {
        /// The message.
        message: Arc<Message>,
        /// The target's interest in the topic includes a session its store keeps (or a
        /// shared group it owns), so it may store a copy: a QoS 1/2 publisher's
        /// acknowledgement waits for that store. Without it the target keeps nothing of the
        /// message, and nothing waits for it.
        stored: bool,
    },
    /// The sending shard's interest in `filter` changed: it gained its first subscription
    /// to it or lost its last (`add`), or some of the subscriptions it has began or ceased
    /// to belong to sessions its store keeps (`stored`).
    Interest {
        /// The shard whose interest changed.
        shard: u16,
        /// A plain topic filter.
        filter: String,
        /// Whether the shard has a subscription to `filter` at all.
        add: bool,
        /// Whether one of them is of a session the shard's store keeps (or of a shared
        /// group it owns): what it is sent may be stored there.
        stored: bool,
    },
    /// A member joined or left a shared group the target owns.
    SharedMember {
        /// The full `$share/{group}/{filter}` filter.
        shared_filter: String,
        /// The member's shard.
        shard: u16,
        /// The member's client identifier.
        client_id: String,
        /// Its subscription.
        subscription: StoredSubscription,
        /// Joined or left.
        add: bool,
    },
    /// The owner of a shared group chose a member on the target shard for this message.
    SharedDeliver {
        /// The full `$share/{group}/{filter}` filter.
        shared_filter: String,
        /// The chosen member.
        client_id: String,
        /// The message.
        message: Arc<Message>,
    },
    /// A retained message for a topic the target owns: set it (`Some`) or clear it
    /// (`None`), store that, and tell every other shard.
    SetRetained {
        /// The topic.
        topic: String,
        /// The new retained message.
        message: Option<Arc<Message>>,
        /// The publish that set it is acknowledged (QoS 1 or 2) once every shard has it.
        acknowledged: bool,
    },
    /// The owner of a topic set (`Some`) or cleared (`None`) its retained message.
    Retained {
        /// The topic.
        topic: String,
        /// The new retained message.
        message: Option<Arc<Message>>,
        /// The publish that set it is acknowledged once every shard has it.
        acknowledged: bool,
    },
}

impl ShardMessage {
    /// Whether the target may store what it does with this message (a QoS 1 or 2 publish
    /// for sessions its store keeps), so that acknowledging the publish waits for the
    /// target's store. A retained message set by an acknowledged publish waits too, so that
    /// a subscriber on any shard sees it once the publisher has its acknowledgement.
    /// Subscription changes, QoS 0 messages and publishes for a shard whose matching
    /// sessions its store does not keep need no such wait: each is stored by its own shard,
    /// or not at all.
    pub fn awaits_durability(&self) -> bool {
        match self {
            ShardMessage::Publish { message, stored } => {
                *stored && message.qos != petrel_codec::QoS::AtMostOnce
            }
            // The owner chose a member on the target without knowing its session: assume
            // the store keeps it.
            ShardMessage::SharedDeliver { message, .. } => {
                message.qos != petrel_codec::QoS::AtMostOnce
            }
            ShardMessage::SetRetained { acknowledged, .. }
            | ShardMessage::Retained { acknowledged, .. } => *acknowledged,
            ShardMessage::Interest { .. } | ShardMessage::SharedMember { .. } => false,
        }
    }
}

/// The shard that owns the session of `client_id` among `shard_count` shards.
///
/// FNV-1a: stable across runs and platforms (a restart must find sessions where it left
/// them), cheap, and good enough to spread identifiers that differ in a few characters.
pub fn owner_shard(key: &str, shard_count: u16) -> u16 {
    if shard_count <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(shard_count)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spread() {
        assert_eq!(owner_shard("anything", 1), 0);
        let mut counts = [0u32; 4];
        for n in 0..4000 {
            let id = alloc::format!("client-{n}");
            let shard = owner_shard(&id, 4);
            assert_eq!(shard, owner_shard(&id, 4));
            counts[usize::from(shard)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
