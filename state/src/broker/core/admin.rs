//! What an operator asks of a shard: who is connected, what they subscribe to, which
//! messages are retained; and what an operator does: disconnect a client, subscribe or
//! unsubscribe on a session's behalf, delete a retained message, publish and learn how
//! many received it.
//!
//! Each call answers for this shard only; the runtime asks every shard and merges.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use petrel_codec::topic::{validate_topic_filter, validate_topic_name};
use petrel_codec::{ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};

use super::{Broker, SessionEntry};
use crate::broker::storage::StoredSubscription;
use crate::message::Message;
use crate::time::Instant;

/// One session of this shard, connected or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSummary {
    /// The client identifier.
    pub client_id: String,
    /// Whether a connection holds the session.
    pub connected: bool,
    /// The user name of the connection, while connected.
    pub username: Option<String>,
    /// The peer address of the connection, while connected.
    pub remote: Option<String>,
    /// The protocol of the connection, while connected.
    pub protocol: Option<ProtocolVersion>,
    /// Seconds the session outlives its connection.
    pub expiry_interval: u32,
    /// Subscriptions of the session.
    pub subscriptions: usize,
    /// Outbound QoS 1/2 messages not yet acknowledged.
    pub inflight: usize,
    /// Messages queued for the client.
    pub queued: usize,
    /// Bytes queued for the client.
    pub queued_bytes: usize,
}

/// One subscription of a session of this shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSummary {
    /// The session's client identifier.
    pub client_id: String,
    /// The filter (a `$share/…` filter included).
    pub filter: String,
    /// The QoS granted.
    pub qos: QoS,
}

/// What publishing on this shard did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishReport {
    /// Sessions whose connection took the message (sent, or waiting for the in-flight
    /// window), plus shared groups this shard picked a member of.
    pub delivered: usize,
    /// Offline sessions that queued it for their return.
    pub queued: usize,
}

impl Broker {
    /// Every session of this shard.
    pub fn clients(&self) -> Vec<ClientSummary> {
        self.by_client_id
            .values()
            .filter_map(|&key| self.summary(key))
            .collect()
    }

    /// The session of `client_id`, if this shard has it.
    pub fn client(&self, client_id: &str) -> Option<ClientSummary> {
        self.summary(*self.by_client_id.get(client_id)?)
    }

    fn summary(&self, key: u32) -> Option<ClientSummary> {
        let entry: &SessionEntry = self.sessions.get(key as usize)?.as_ref()?;
        let conn = entry.connection.and_then(|id| self.conn(id));
        let session = match conn {
            Some(state) => state.conn.session(),
            None => entry.detached.as_deref(),
        };
        Some(ClientSummary {
            client_id: entry.client_id.clone(),
            connected: conn.is_some(),
            username: conn.and_then(|c| c.username.clone()),
            remote: conn.and_then(|c| c.remote.clone()),
            protocol: conn.map(|c| c.version),
            expiry_interval: session.map_or(0, |s| s.expiry_interval),
            subscriptions: entry.subscriptions.0.len(),
            inflight: session.map_or(0, |s| s.outbound.len()),
            queued: session.map_or(0, |s| s.queue.len()),
            queued_bytes: session.map_or(0, |s| s.queued_bytes),
        })
    }

    /// Every subscription of every session of this shard, by client then filter.
    pub fn subscription_list(&self) -> Vec<SubscriptionSummary> {
        let mut list = Vec::new();
        for (client_id, &key) in &self.by_client_id {
            let Some(entry) = self.sessions.get(key as usize).and_then(Option::as_ref) else {
                continue;
            };
            list.extend(entry.subscriptions.0.iter().map(|s| SubscriptionSummary {
                client_id: client_id.clone(),
                filter: s.filter.clone(),
                qos: s.options.qos,
            }));
        }
        list
    }

    /// Every retained message (each shard holds all of them).
    pub fn retained_messages(&self) -> Vec<Arc<Message>> {
        let mut list = Vec::with_capacity(self.retained.len());
        self.retained.for_each(|m| list.push(m.clone()));
        list
    }

    /// Messages and bytes queued in this shard's sessions, summed.
    pub fn queue_depth(&self) -> (usize, usize) {
        self.clients()
            .iter()
            .fold((0, 0), |(m, b), c| (m + c.queued, b + c.queued_bytes))
    }

    /// Closes the connection of `client_id` (DISCONNECT 0x98 "administrative action" to a
    /// 5.0 client); the session stays for its expiry interval. False when the client is
    /// not connected to this shard.
    pub fn disconnect_client(&mut self, now: Instant, client_id: &str) -> bool {
        let Some(id) = self
            .by_client_id
            .get(client_id)
            .and_then(|&key| self.sessions.get(key as usize)?.as_ref()?.connection)
        else {
            return false;
        };
        let Some(state) = self.conn_mut(id) else {
            return false;
        };
        state.conn.close(now, ReasonCode::AdministrativeAction);
        self.drain(now, id);
        self.end_input(now);
        true
    }

    /// Subscribes the session of `client_id` to `filter` at `qos`, as if it had sent
    /// SUBSCRIBE (retained messages are not sent). False when this shard has no such
    /// session or the filter is not valid.
    pub fn subscribe_for(&mut self, now: Instant, client_id: &str, filter: &str, qos: QoS) -> bool {
        if validate_topic_filter(filter).is_err() {
            return false;
        }
        let Some(&key) = self.by_client_id.get(client_id) else {
            return false;
        };
        let subscription = StoredSubscription {
            filter: String::from(filter),
            options: SubscriptionOptions::qos(qos.min(self.config.server.maximum_qos)),
            identifier: None,
        };
        self.add_subscription(key, client_id, subscription);
        self.touched_sessions.insert(key);
        self.end_input(now);
        true
    }

    /// Removes the subscription of `client_id` to `filter`. False when there was none.
    pub fn unsubscribe_for(&mut self, now: Instant, client_id: &str, filter: &str) -> bool {
        let Some(&key) = self.by_client_id.get(client_id) else {
            return false;
        };
        let removed = self.remove_subscription(now, key, client_id, filter);
        if removed {
            self.touched_sessions.insert(key);
        }
        self.end_input(now);
        removed
    }

    /// Deletes the retained message of `topic` from every shard and the store. False when
    /// this shard has none. Call it on the topic's owner shard
    /// ([`owner_shard`](crate::broker::owner_shard) of the topic), where it is gone at once;
    /// another shard asks the owner, and keeps its copy until the owner's word comes back
    /// (retained messages follow their owner's order).
    pub fn delete_retained(&mut self, now: Instant, topic: &str) -> bool {
        if self.retained.get(topic).is_none() {
            return false;
        }
        self.retain(now, topic, None, false);
        self.end_input(now);
        true
    }

    /// Routes a message to this shard's subscribers only, and reports who took it. The
    /// runtime calls it on every shard so that the reports add up to the whole broker;
    /// `first` is true on exactly one of them, which counts the message as received and
    /// stores (and replicates) it if it is retained. An invalid topic name reaches nobody.
    pub fn publish_here(&mut self, now: Instant, message: Message, first: bool) -> PublishReport {
        if validate_topic_name(&message.topic).is_err() {
            return PublishReport::default();
        }
        let message = Arc::new(message);
        if first {
            self.stats.count_received(&message);
            self.apply_retain(now, &message);
        }
        // Sessions away whose queue takes the message (offline QoS 0 is queued only when
        // configured), one per session however many of its filters match.
        let queue_qos0 = self.config.server.queue.queue_qos0_offline;
        let mut away: Vec<(u32, QoS)> = Vec::new();
        self.subscriptions
            .for_each_match(&message.topic, |key, spec| {
                let offline = self
                    .sessions
                    .get(*key as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|e| e.connection.is_none());
                if offline {
                    away.push((*key, spec.options.qos.min(message.qos)));
                }
            });
        away.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        away.dedup_by_key(|(key, _)| *key);
        let offline = away
            .iter()
            .filter(|(_, qos)| queue_qos0 || *qos != QoS::AtMostOnce)
            .count();
        let receivers = self.route(now, &message, None, false).receivers;
        if first {
            self.hooks.on_published(None, &message, receivers);
        }
        self.end_input(now);
        PublishReport {
            delivered: receivers.saturating_sub(offline),
            queued: offline.min(receivers),
        }
    }
}
