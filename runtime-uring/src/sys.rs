//! `$SYS` topics, with mosquitto's names where mosquitto has one.

use std::sync::Arc;

use petrel_state::broker::Broker;
use petrel_state::message::Message;

use crate::shared::{ShardFigures, Shared};

pub(crate) struct SysReporter {
    shared: Arc<Shared>,
    index: usize,
}

impl SysReporter {
    pub(crate) fn new(shared: Arc<Shared>, index: usize) -> Self {
        SysReporter { shared, index }
    }

    /// Writes this shard's figures where worker 0 sums them.
    pub(crate) fn record(&mut self, broker: &Broker) {
        let stats = broker.stats();
        self.shared.limits.record_shard(self.index, &stats);
        let figures = ShardFigures {
            sessions: broker.session_count() as u64,
            subscriptions: broker.subscription_count() as u64,
            retained: broker.retained_count() as u64,
            messages_received: stats.messages_received,
            messages_sent: stats.deliveries,
            dropped: stats.deliveries_dropped,
        };
        let mut shards = self.shared.shards.lock().unwrap_or_else(|e| e.into_inner());
        if shards.len() <= self.index {
            shards.resize(self.index + 1, ShardFigures::default());
        }
        shards[self.index] = figures;
    }

    /// The `$SYS` messages for this tick, retained like mosquitto's.
    pub(crate) fn messages(&self) -> Vec<Message> {
        let total = {
            let shards = self.shared.shards.lock().unwrap_or_else(|e| e.into_inner());
            shards
                .iter()
                .fold(ShardFigures::default(), |a, s| ShardFigures {
                    sessions: a.sessions + s.sessions,
                    subscriptions: a.subscriptions + s.subscriptions,
                    // Every shard holds every retained message.
                    retained: a.retained.max(s.retained),
                    messages_received: a.messages_received + s.messages_received,
                    messages_sent: a.messages_sent + s.messages_sent,
                    dropped: a.dropped + s.dropped,
                })
        };
        let entries: [(&str, String); 11] = [
            (
                "$SYS/broker/version",
                format!("petrel {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/uptime",
                format!("{} seconds", self.shared.uptime_secs()),
            ),
            (
                "$SYS/broker/clients/connected",
                self.shared.total(|s| &s.connections_open).to_string(),
            ),
            ("$SYS/broker/clients/total", total.sessions.to_string()),
            (
                "$SYS/broker/messages/received",
                total.messages_received.to_string(),
            ),
            ("$SYS/broker/messages/sent", total.messages_sent.to_string()),
            (
                "$SYS/broker/publish/messages/dropped",
                total.dropped.to_string(),
            ),
            (
                "$SYS/broker/bytes/received",
                self.shared.total(|s| &s.bytes_received).to_string(),
            ),
            (
                "$SYS/broker/bytes/sent",
                self.shared.total(|s| &s.bytes_sent).to_string(),
            ),
            (
                "$SYS/broker/subscriptions/count",
                total.subscriptions.to_string(),
            ),
            (
                "$SYS/broker/retained messages/count",
                total.retained.to_string(),
            ),
        ];
        entries
            .into_iter()
            .chain(self.shared.access.sys_entries())
            .chain(self.shared.limits.sys_entries())
            .map(|(topic, value)| (topic.to_string(), value))
            .chain(crate::bridge::kafka::sys_entries(&self.shared.kafka))
            .map(|(topic, value)| {
                let mut message = Message::new(&topic, value.into_bytes());
                message.retain = true;
                message
            })
            .chain(crate::bridge::mqtt::sys_messages(&self.shared))
            .collect()
    }
}
