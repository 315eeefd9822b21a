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
    /// Connections open at the last high point, and whether a flood is leaving.
    peak: Mutex<(usize, bool)>,
}

/// A flood that leaves is given back: once this many connections were open, the allocator
/// returns its free pages to the system each time the open connections fall below a
/// quarter of the last high point, down to a handful.
const TRIM_PEAK: usize = 1000;

/// Gives the allocator's free memory back to the system. glibc keeps freed pages in its
/// per-thread arenas; after thousands of connections come and go, that is megabytes the
/// broker no longer uses.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no
    // pointer and is safe to call from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
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
            peak: Mutex::new((0, false)),
        }
    }

    /// Follows the number of open connections; after a flood has left, gives memory back.
    fn after_change(&self, open: usize) {
        let mut guard = self.peak.lock().unwrap_or_else(|e| e.into_inner());
        let (peak, leaving) = &mut *guard;
        if open > *peak {
            *peak = open;
            *leaving |= open >= TRIM_PEAK;
        } else if *leaving && open < *peak / 4 {
            *peak = open;
            *leaving = open >= 16;
            drop(guard);
            release_free_memory();
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
            (
                "$SYS/broker/limits/queue full",
                sum(|s| s.dropped.queue_full),
            ),
            (
                "$SYS/broker/limits/outbound buffer full",
                sum(|s| s.dropped.buffer_full),
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
        let result = {
            let mut admission = shared
                .limits
                .admission
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            admission.admit(now, address).map(|()| admission.open())
        };
        match result {
            Ok(open) => {
                shared.limits.after_change(open);
                Some(Ticket {
                    shared: shared.clone(),
                    address,
                })
            }
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
        let open = {
            let mut admission = self
                .shared
                .limits
                .admission
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            admission.release(self.address);
            admission.open()
        };
        self.shared.limits.after_change(open);
    }
}
