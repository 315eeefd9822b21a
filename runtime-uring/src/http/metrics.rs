//! `/metrics` in the Prometheus text format: every shard's counters summed.

use std::fmt::Write;

use petrel_state::broker::BrokerStats;

use super::fanout::ask_all;
use crate::shared::Shared;

/// What one shard reports.
#[derive(Default)]
struct ShardReport {
    stats: BrokerStats,
    sessions: u64,
    subscriptions: u64,
    retained: u64,
    queued_messages: u64,
    queued_bytes: u64,
}

/// The metrics page; `None` if a worker did not answer.
pub(super) fn render(shared: &Shared) -> Option<String> {
    let reports = ask_all(shared, |broker, _, _| {
        let (queued_messages, queued_bytes) = broker.queue_depth();
        ShardReport {
            stats: broker.stats(),
            sessions: broker.session_count() as u64,
            subscriptions: broker.subscription_count() as u64,
            retained: broker.retained_count() as u64,
            queued_messages: queued_messages as u64,
            queued_bytes: queued_bytes as u64,
        }
    })?;
    let sum = |f: &dyn Fn(&ShardReport) -> u64| reports.iter().map(f).sum::<u64>();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP petrel_{name} {help}");
        let _ = writeln!(out, "# TYPE petrel_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "petrel_{name}{labels} {value}");
        }
    };
    let one = |value: u64| [(String::new(), value)];
    let by_qos = |f: &dyn Fn(&BrokerStats) -> [u64; 3]| -> Vec<(String, u64)> {
        (0..3)
            .map(|q| {
                let value = reports.iter().map(|r| f(&r.stats)[q]).sum();
                (format!("{{qos=\"{q}\"}}"), value)
            })
            .collect()
    };
    metric(
        "connections",
        "gauge",
        "Open client connections.",
        &one(shared.total(|s| &s.connections_open)),
    );
    metric(
        "connections_accepted_total",
        "counter",
        "Connections accepted since start.",
        &one(sum(&|r| r.stats.connections_accepted)),
    );
    metric(
        "sessions",
        "gauge",
        "Sessions, connected or not.",
        &one(sum(&|r| r.sessions)),
    );
    metric(
        "subscriptions",
        "gauge",
        "Subscriptions (shared ones excluded).",
        &one(sum(&|r| r.subscriptions)),
    );
    // Every shard holds every retained message: one shard's count is the broker's.
    metric(
        "retained_messages",
        "gauge",
        "Retained messages.",
        &one(reports.iter().map(|r| r.retained).max().unwrap_or(0)),
    );
    metric(
        "messages_received_total",
        "counter",
        "Application messages received, by the QoS they were published at.",
        &by_qos(&|s| s.messages_received_by_qos),
    );
    metric(
        "messages_sent_total",
        "counter",
        "Application messages handed to sessions (sent or queued), by QoS.",
        &by_qos(&|s| s.deliveries_by_qos),
    );
    metric(
        "payload_bytes_received_total",
        "counter",
        "Payload bytes received, by QoS.",
        &by_qos(&|s| s.bytes_received_by_qos),
    );
    metric(
        "payload_bytes_sent_total",
        "counter",
        "Payload bytes handed to sessions, by QoS.",
        &by_qos(&|s| s.bytes_delivered_by_qos),
    );
    metric(
        "bytes_received_total",
        "counter",
        "Bytes read from client connections.",
        &one(shared.total(|s| &s.bytes_received)),
    );
    metric(
        "bytes_sent_total",
        "counter",
        "Bytes written to client connections.",
        &one(shared.total(|s| &s.bytes_sent)),
    );
    let dropped: Vec<(String, u64)> = [
        ("buffer_full", sum(&|r| r.stats.dropped.buffer_full)),
        ("queue_full", sum(&|r| r.stats.dropped.queue_full)),
        ("too_large", sum(&|r| r.stats.dropped.too_large)),
        ("expired", sum(&|r| r.stats.dropped.expired)),
    ]
    .into_iter()
    .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), n))
    .collect();
    metric(
        "messages_dropped_total",
        "counter",
        "Deliveries dropped, by reason.",
        &dropped,
    );
    metric(
        "publishes_refused_total",
        "counter",
        "PUBLISH and SUBSCRIBE refused by authorization.",
        &one(sum(&|r| r.stats.refused)),
    );
    metric(
        "queued_messages",
        "gauge",
        "Messages waiting in session queues.",
        &one(sum(&|r| r.queued_messages)),
    );
    metric(
        "queued_bytes",
        "gauge",
        "Bytes waiting in session queues.",
        &one(sum(&|r| r.queued_bytes)),
    );
    for (name, kind, help, samples) in crate::bridge::mqtt::metric_families(&shared.mqtt_bridges) {
        metric(name, kind, help, &samples);
    }
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        &one(shared.uptime_secs()),
    );
    crate::bridge::kafka::metrics(&shared.kafka, &mut metric);
    Some(out)
}
