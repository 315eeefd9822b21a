//! Connection admission and the limit counters of `$SYS`. The decisions are the state
//! crate's ([`petrel_state::broker::limits`]); this module holds the one [`Admission`]
//! every worker shares (taken once per accepted connection, never per message) and sums
//! the shards' counters.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use petrel_state::broker::limits::{Admission, AdmissionLimits, ClientLimits, Rate, Refusal};
use petrel_state::broker::BrokerStats;
use tracing::debug;

use crate::config::Limits as LimitsConfig;
use crate::shared::Shared;

fn rate(per_second: u32, burst: u32) -> Option<Rate> {
    (per_second > 0).then_some(Rate {
        per_second,
        burst: if burst == 0 { per_second } else { burst },
    })
}

/// The per-client limits the broker core enforces.
pub(crate) fn client_limits(config: &LimitsConfig) -> ClientLimits {
    ClientLimits {
        publish_rate: rate(config.publish_rate, config.publish_burst),
        max_topic_levels: config.max_topic_levels,
        max_topic_length: config.max_topic_length,
    }
}

/// What all workers share about limits.
#[derive(Debug)]
pub(crate) struct Limits {
    admission: Mutex<Admission>,
    shards: Mutex<Vec<BrokerStats>>,
}

impl Limits {
    pub(crate) fn new(config: &LimitsConfig) -> Self {
        Limits {
            admission: Mutex::new(Admission::new(AdmissionLimits {
                max_connections: config.max_connections,
                max_per_address: config.max_connections_per_address,
                rate_per_address: rate(
                    config.connection_rate_per_address,
                    config.connection_burst_per_address,
                ),
            })),
            shards: Mutex::new(Vec::new()),
        }
    }

    /// Records a shard's counters for the next `$SYS` tick.
    pub(crate) fn record_shard(&self, index: usize, stats: &BrokerStats) {
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        if shards.len() <= index {
            shards.resize(index + 1, BrokerStats::default());
        }
        shards[index] = *stats;
    }

    /// `$SYS` topics, one per limit.
    pub(crate) fn sys_entries(&self) -> Vec<(&'static str, String)> {
        let admission = self
            .admission
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats();
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let sum = |f: fn(&BrokerStats) -> u64| shards.iter().map(f).sum::<u64>().to_string();
        vec![
            (
                "$SYS/broker/limits/connections refused",
                admission.too_many_connections.to_string(),
            ),
            (
                "$SYS/broker/limits/connections per address refused",
                admission.too_many_from_address.to_string(),
            ),
            (
                "$SYS/broker/limits/connection rate refused",
                admission.too_fast.to_string(),
            ),
            (
                "$SYS/broker/limits/publish rate exceeded",
                sum(|s| s.publish_rate_exceeded),
            ),
            (
                "$SYS/broker/limits/topic too large",
                sum(|s| s.topic_too_large),
            ),
            (
                "$SYS/broker/limits/packet too large",
                sum(|s| s.packet_too_large),
            ),
            (
                "$SYS/broker/limits/receive maximum exceeded",
                sum(|s| s.receive_maximum_exceeded),
            ),
        ]
    }
}

/// An admitted connection: its place in the counts is given back when this is dropped,
/// wherever the connection ends (on the worker that accepted it or on its owner).
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    address: Option<IpAddr>,
}

impl Ticket {
    /// Asks to accept a connection from `remote` (`None`: a Unix socket).
    pub(crate) fn admit(shared: &Arc<Shared>, remote: Option<SocketAddr>) -> Option<Ticket> {
        let address = remote.map(|r| r.ip());
        let now = shared.now();
        let result = shared
            .limits
            .admission
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(now, address);
        match result {
            Ok(()) => Some(Ticket {
                shared: shared.clone(),
                address,
            }),
            Err(refusal) => {
                let why = match refusal {
                    Refusal::TooManyConnections => "limits.max_connections",
                    Refusal::TooManyFromAddress => "limits.max_connections_per_address",
                    Refusal::TooFast => "limits.connection_rate_per_address",
                };
                debug!(remote = ?remote, "connection refused: {why}");
                None
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.shared
            .limits
            .admission
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(self.address);
    }
}
