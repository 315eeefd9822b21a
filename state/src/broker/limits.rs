//! Limits on what one client, and one remote address, may do: publish rate, topic size,
//! and connection admission. Sans-IO like the rest: the clock comes in as an argument.
//!
//! - [`ClientLimits`] are enforced by the [`Broker`](super::Broker) on every PUBLISH and
//!   SUBSCRIBE: a client publishing faster than its [`Rate`] is disconnected with 0x96
//!   "message rate too high" (the only packet that code may travel in); a topic with too
//!   many levels or bytes is refused with 0x90 "topic name invalid" (PUBACK / PUBREC; a
//!   3.1.1 publisher's message is acknowledged and dropped) and a filter with 0x8F "topic
//!   filter invalid" (SUBACK; 0x80 for 3.1.1).
//! - [`Admission`] decides whether the runtime accepts a new transport connection at all:
//!   total connections, connections per remote address, and new connections per second
//!   per address. It runs before any byte is read, so a refused connection costs no
//!   session, no buffer and no CONNACK.

use alloc::collections::BTreeMap;
use core::net::IpAddr;

use crate::time::Instant;

/// Events per second with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained events per second (at least 1).
    pub per_second: u32,
    /// Events allowed at once after a quiet spell (at least 1).
    pub burst: u32,
}

const MICRO: u64 = 1_000_000;

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    rate: Rate,
    /// Tokens, in millionths.
    micro_tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        let rate = Rate {
            per_second: rate.per_second.max(1),
            burst: rate.burst.max(1),
        };
        TokenBucket {
            rate,
            micro_tokens: u64::from(rate.burst) * MICRO,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.last).as_micros()).unwrap_or(u64::MAX);
        self.last = self.last.max(now);
        // Microseconds × tokens per second = millionths of a token.
        let added = elapsed.saturating_mul(u64::from(self.rate.per_second));
        let capacity = u64::from(self.rate.burst) * MICRO;
        self.micro_tokens = self.micro_tokens.saturating_add(added).min(capacity);
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.micro_tokens >= MICRO {
            self.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now` (an idle bucket can be forgotten).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.micro_tokens >= u64::from(self.rate.burst) * MICRO
    }
}

/// Per-client limits the broker enforces. Zero or `None` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientLimits {
    /// PUBLISH packets per second per connection.
    pub publish_rate: Option<Rate>,
    /// The most `/`-separated levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// The most bytes in a topic name or filter.
    pub max_topic_length: usize,
}

impl ClientLimits {
    /// Whether a topic name or filter is within the level and length limits.
    pub fn topic_fits(&self, topic: &str) -> bool {
        let length_ok = self.max_topic_length == 0 || topic.len() <= self.max_topic_length;
        let levels_ok = self.max_topic_levels == 0
            || topic.bytes().filter(|&b| b == b'/').count() < self.max_topic_levels;
        length_ok && levels_ok
    }
}

/// Limits on accepting transport connections. Zero or `None` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdmissionLimits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one remote address.
    pub max_per_address: usize,
    /// New connections per second from one remote address.
    pub rate_per_address: Option<Rate>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// [`AdmissionLimits::max_connections`] connections are open.
    TooManyConnections,
    /// [`AdmissionLimits::max_per_address`] connections from this address are open.
    TooManyFromAddress,
    /// This address opened connections faster than [`AdmissionLimits::rate_per_address`].
    TooFast,
}

/// Refusals counted since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdmissionStats {
    /// Refused because the broker was full.
    pub too_many_connections: u64,
    /// Refused because the address had too many open.
    pub too_many_from_address: u64,
    /// Refused because the address connected too fast.
    pub too_fast: u64,
}

#[derive(Debug, Clone, Copy)]
struct AddressState {
    open: usize,
    bucket: Option<TokenBucket>,
}

/// Connection admission for one broker (all shards share one).
#[derive(Debug, Default)]
pub struct Admission {
    limits: AdmissionLimits,
    open: usize,
    addresses: BTreeMap<IpAddr, AddressState>,
    /// Address entries at the last sweep: the map is swept when it doubles.
    swept_at: usize,
    stats: AdmissionStats,
}

impl Admission {
    /// Admission with these limits and nothing open.
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            limits,
            ..Admission::default()
        }
    }

    /// A transport connection from `address` (`None`: a Unix socket or in-process) asks to
    /// be accepted. On `Ok`, call [`Admission::release`] with the same address when it
    /// closes.
    pub fn admit(&mut self, now: Instant, address: Option<IpAddr>) -> Result<(), Refusal> {
        if self.limits.max_connections > 0 && self.open >= self.limits.max_connections {
            self.stats.too_many_connections += 1;
            return Err(Refusal::TooManyConnections);
        }
        if let Some(address) = address.map(|a| a.to_canonical()) {
            if self.addresses.len() >= self.swept_at.max(64) * 2 {
                self.sweep(now);
            }
            let limits = self.limits;
            let entry = self.addresses.entry(address).or_insert(AddressState {
                open: 0,
                bucket: limits.rate_per_address.map(|r| TokenBucket::new(r, now)),
            });
            if limits.max_per_address > 0 && entry.open >= limits.max_per_address {
                self.stats.too_many_from_address += 1;
                return Err(Refusal::TooManyFromAddress);
            }
            if let Some(bucket) = entry.bucket.as_mut() {
                if !bucket.take(now) {
                    self.stats.too_fast += 1;
                    return Err(Refusal::TooFast);
                }
            }
            entry.open += 1;
        }
        self.open += 1;
        Ok(())
    }

    /// An admitted connection closed.
    pub fn release(&mut self, address: Option<IpAddr>) {
        self.open = self.open.saturating_sub(1);
        if let Some(address) = address.map(|a| a.to_canonical()) {
            if let Some(entry) = self.addresses.get_mut(&address) {
                entry.open = entry.open.saturating_sub(1);
                if entry.open == 0 && entry.bucket.is_none() {
                    self.addresses.remove(&address);
                }
            }
        }
    }

    /// Forgets addresses with nothing open and a full bucket: they would start the same.
    fn sweep(&mut self, now: Instant) {
        self.addresses
            .retain(|_, s| s.open > 0 || s.bucket.as_mut().is_some_and(|b| !b.is_full(now)));
        self.swept_at = self.addresses.len();
    }

    /// Connections open.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Addresses remembered (open connections or a bucket still refilling).
    pub fn tracked_addresses(&self) -> usize {
        self.addresses.len()
    }

    /// Refusals so far.
    pub fn stats(&self) -> AdmissionStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;
    use proptest::prelude::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::from_secs(1);
        let mut bucket = TokenBucket::new(
            Rate {
                per_second: 10,
                burst: 3,
            },
            t0,
        );
        assert!(bucket.take(t0) && bucket.take(t0) && bucket.take(t0));
        assert!(!bucket.take(t0));
        assert!(!bucket.take(t0 + Duration::from_millis(99)));
        assert!(bucket.take(t0 + Duration::from_millis(100)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.is_full(later));
        assert!((0..3).all(|_| bucket.take(later)));
        assert!(!bucket.take(later));
    }

    #[test]
    fn admission_counts_total_and_per_address() {
        let now = Instant::from_secs(1);
        let mut admission = Admission::new(AdmissionLimits {
            max_connections: 3,
            max_per_address: 2,
            rate_per_address: None,
        });
        assert_eq!(admission.admit(now, ip(1)), Ok(()));
        assert_eq!(admission.admit(now, ip(1)), Ok(()));
        assert_eq!(
            admission.admit(now, ip(1)),
            Err(Refusal::TooManyFromAddress)
        );
        assert_eq!(admission.admit(now, ip(2)), Ok(()));
        assert_eq!(
            admission.admit(now, ip(3)),
            Err(Refusal::TooManyConnections)
        );
        admission.release(ip(1));
        assert_eq!(admission.admit(now, None), Ok(()));
        admission.release(None);
        assert_eq!(admission.admit(now, ip(1)), Ok(()));
        assert_eq!(admission.stats().too_many_from_address, 1);
        assert_eq!(admission.stats().too_many_connections, 1);
        // An IPv4-mapped IPv6 peer is the same address.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        admission.release(Some(mapped));
        admission.release(ip(1));
        admission.release(ip(2));
        assert_eq!(admission.open(), 0);
        assert_eq!(admission.tracked_addresses(), 0);
    }

    #[test]
    fn admission_rate_per_address() {
        let t0 = Instant::from_secs(1);
        let mut admission = Admission::new(AdmissionLimits {
            rate_per_address: Some(Rate {
                per_second: 1,
                burst: 2,
            }),
            ..AdmissionLimits::default()
        });
        assert!(admission.admit(t0, ip(1)).is_ok());
        assert!(admission.admit(t0, ip(1)).is_ok());
        assert_eq!(admission.admit(t0, ip(1)), Err(Refusal::TooFast));
        assert!(admission.admit(t0, ip(2)).is_ok());
        assert!(admission.admit(t0 + Duration::from_secs(1), ip(1)).is_ok());
        assert_eq!(admission.stats().too_fast, 1);
    }

    #[test]
    fn topic_limits() {
        let limits = ClientLimits {
            publish_rate: None,
            max_topic_levels: 3,
            max_topic_length: 10,
        };
        assert!(limits.topic_fits("a/b/c"));
        assert!(!limits.topic_fits("a/b/c/d"));
        assert!(!limits.topic_fits("abcdefghijk"));
        assert!(ClientLimits::default().topic_fits(&"a/".repeat(1000)));
    }

    proptest! {
        /// Many addresses that come and go leave no more entries behind than the sweep
        /// allows, and the open count always returns to zero.
        #[test]
        fn admission_memory_is_bounded(events in proptest::collection::vec((any::<u16>(), 0u64..10_000), 1..500)) {
            let mut admission = Admission::new(AdmissionLimits {
                max_connections: 0,
                max_per_address: 4,
                rate_per_address: Some(Rate { per_second: 100, burst: 10 }),
            });
            let mut now = Instant::from_secs(1);
            for (address, step) in events {
                now = now + Duration::from_millis(step);
                let address = Some(IpAddr::from([10, 0, (address >> 8) as u8, address as u8]));
                if admission.admit(now, address).is_ok() {
                    admission.release(address);
                }
            }
            prop_assert_eq!(admission.open(), 0);
            // Sweeps happen when the map doubles past 64.
            prop_assert!(admission.tracked_addresses() <= 128 + 1);
        }
    }
}
