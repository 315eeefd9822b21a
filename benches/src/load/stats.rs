//! What each connection counts while it runs, merged into the run's figures at the end.
//!
//! Every connection task owns its tallies outright (no locks, no shared atomics on the
//! per-message path); the live progress line reads separate counters that tasks bump once
//! per loop iteration, not once per message.

use hdrhistogram::Histogram;

use super::clock::Clock;
use super::payload::Stamp;
use super::seq::{Seen, SeqSet};

/// Highest latency a histogram records exactly: 60 s, in nanoseconds. A longer one (a
/// message that sat in a broker queue for minutes) is recorded as 60 s.
const HIST_MAX_NS: u64 = 60_000_000_000;

/// Publisher ids above this are not ours (a stray message on the topic): counting them
/// would mean allocating a sequence set per garbage id.
const MAX_PUBLISHER_ID: u32 = 1 << 20;

/// A latency histogram in nanoseconds with three significant digits, HdrHistogram's usual
/// precision (about 200 KiB each, so one per connection that measures, merged at the end).
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that HdrHistogram accepts.
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).unwrap_or_else(|_| unreachable!())
}

/// The time span over which rates are measured, in [`Clock::elapsed_ns`] time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start (the end of the warm-up).
    pub start_ns: u64,
    /// End (when publishing stops); `u64::MAX` for a run bounded by a message count.
    pub end_ns: u64,
}

impl Window {
    /// A window that counts everything.
    pub const ALL: Window = Window {
        start_ns: 0,
        end_ns: u64::MAX,
    };

    /// Whether `t` falls in the window.
    pub fn contains(&self, t: u64) -> bool {
        t >= self.start_ns && t < self.end_ns
    }
}

/// What one subscriber received.
#[derive(Debug, Clone, Default)]
pub struct SubTally {
    /// Sequence numbers seen, per publisher id.
    pub per_publisher: Vec<SeqSet>,
    /// Every message with a stamp, duplicates included.
    pub received: u64,
    /// Distinct messages.
    pub unique: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Distinct messages that arrived after a later one from the same publisher.
    pub reordered: u64,
    /// Messages without a stamp (not sent by this tool) or with an impossible publisher id.
    pub foreign: u64,
    /// Distinct messages received inside the measurement window.
    pub in_window: u64,
    /// When the first and the last distinct message arrived.
    pub first_ns: Option<u64>,
    /// See `first_ns`.
    pub last_ns: Option<u64>,
    /// End-to-end latency of distinct messages received in the window, except the latest
    /// run of equal ones (`run`): read it with [`SubTally::merge_latency_into`].
    latency: Option<Histogram<u64>>,
    /// The latest latencies not yet in `latency`: a value and how many times in a row it
    /// was measured. A publisher stamps a whole batch with one send time and a subscriber
    /// reads many messages at one receive time, so runs of equal latencies are the rule
    /// under load, and one histogram update per run is cheaper than one per message.
    run: (u64, u64),
    /// Messages stamped later than they arrived: only possible between two processes whose
    /// clocks disagree; recorded as zero latency and counted here so that it shows.
    pub clock_skewed: u64,
    /// Publishers heard from since the last [`SubTally::take_touched`].
    touched: Vec<u32>,
    /// Per publisher id: whether it is in `touched`.
    is_touched: Vec<bool>,
}

impl SubTally {
    /// The publishers heard from since the last call, each with one past the highest
    /// sequence number received from it.
    pub fn take_touched(&mut self, mut f: impl FnMut(u32, u64)) {
        for p in self.touched.drain(..) {
            if let Some(t) = self.is_touched.get_mut(p as usize) {
                *t = false;
            }
            if let Some(max) = self.per_publisher.get(p as usize).and_then(SeqSet::max) {
                f(p, u64::from(max) + 1);
            }
        }
    }

    /// Accounts for one received payload that arrived at `recv_ns` ([`Clock::elapsed_ns`]).
    /// Returns whether it was a new distinct message.
    pub fn record(&mut self, payload: &[u8], recv_ns: u64, clock: &Clock, window: Window) -> bool {
        let Some(stamp) = Stamp::read(payload) else {
            self.foreign += 1;
            return false;
        };
        if stamp.publisher >= MAX_PUBLISHER_ID {
            self.foreign += 1;
            return false;
        }
        self.received += 1;
        let index = stamp.publisher as usize;
        if self.per_publisher.len() <= index {
            self.per_publisher.resize_with(index + 1, SeqSet::new);
            self.is_touched.resize(index + 1, false);
        }
        if !self.is_touched[index] {
            self.is_touched[index] = true;
            self.touched.push(stamp.publisher);
        }
        match self.per_publisher[index].insert(stamp.seq) {
            Seen::Duplicate => {
                self.duplicates += 1;
                return false;
            }
            Seen::Reordered => self.reordered += 1,
            Seen::InOrder => {}
        }
        self.unique += 1;
        self.first_ns.get_or_insert(recv_ns);
        self.last_ns = Some(recv_ns);
        if window.contains(recv_ns) {
            self.in_window += 1;
            let now = clock.stamp_of(recv_ns);
            let latency = match now.checked_sub(stamp.sent_ns) {
                Some(l) => l,
                None => {
                    self.clock_skewed += 1;
                    0
                }
            };
            let latency = latency.max(1);
            if self.run.0 == latency {
                self.run.1 += 1;
            } else {
                self.flush_run();
                self.run = (latency, 1);
            }
        }
        true
    }

    fn flush_run(&mut self) {
        let (value, count) = std::mem::take(&mut self.run);
        if count > 0 {
            self.latency
                .get_or_insert_with(histogram)
                .saturating_record_n(value, count);
        }
    }

    /// Adds the end-to-end latencies recorded so far into `into` (created if needed).
    pub fn merge_latency_into(&mut self, into: &mut Option<Histogram<u64>>) {
        self.flush_run();
        merge(into, self.latency.as_ref());
    }

    /// Distinct messages received from `publisher`.
    pub fn unique_from(&self, publisher: u32) -> u64 {
        self.per_publisher
            .get(publisher as usize)
            .map_or(0, SeqSet::len)
    }
}

/// What one publisher sent.
#[derive(Debug, Clone, Default)]
pub struct PubTally {
    /// The publisher's id (the one stamped into its payloads).
    pub id: u32,
    /// Messages handed to the session (and so, unless the connection broke, to the broker).
    pub sent: u64,
    /// Messages sent inside the measurement window.
    pub sent_in_window: u64,
    /// QoS 1/2 messages the broker acknowledged (PUBACK, or PUBCOMP for QoS 2).
    pub acked: u64,
    /// QoS 1/2 messages the broker refused (a 5.0 reason code of 0x80 or above).
    pub refused: u64,
    /// QoS 1/2 messages discarded with the session (never acknowledged).
    pub session_lost: u64,
    /// When the first and the last message were sent.
    pub first_ns: Option<u64>,
    /// See `first_ns`.
    pub last_ns: Option<u64>,
    /// Publish-to-acknowledgement latency of QoS 1/2 messages sent in the window.
    pub ack_latency: Option<Histogram<u64>>,
    /// The most messages that were ever awaiting acknowledgement at once.
    pub max_inflight: usize,
}

/// How one connection attempt went.
#[derive(Debug, Clone, Default)]
pub struct ConnTally {
    /// Nanoseconds from the start of the TCP connect to the CONNACK (or the relay's
    /// welcome), if the connection was established.
    pub connect_ns: Option<u64>,
    /// When the connection was established.
    pub established_at_ns: Option<u64>,
    /// Why the connection failed or ended early, if it did.
    pub error: Option<String>,
    /// Whether the error came before the connection was established.
    pub failed_to_connect: bool,
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// How many samples.
    pub samples: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a histogram in nanoseconds; `None` if it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Some(Percentiles {
            samples: h.len(),
            mean: h.mean() / 1_000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }
}

/// Adds `from` into `into`, creating it if needed.
pub fn merge(into: &mut Option<Histogram<u64>>, from: Option<&Histogram<u64>>) {
    if let Some(from) = from {
        // Same bounds everywhere, so adding cannot fail.
        let _ = into.get_or_insert_with(histogram).add(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::payload;

    #[test]
    fn counts_duplicates_reordering_and_foreign_payloads() {
        let clock = Clock::new();
        let mut t = SubTally::default();
        let mut buf = payload::buffer(32);
        for seq in [0, 1, 3, 2, 3] {
            Stamp {
                sent_ns: clock.stamp_ns(),
                publisher: 2,
                seq,
            }
            .write(&mut buf);
            t.record(&buf, clock.elapsed_ns() + 1_000, &clock, Window::ALL);
        }
        t.record(b"short", 0, &clock, Window::ALL);
        assert_eq!((t.received, t.unique, t.duplicates), (5, 4, 1));
        assert_eq!((t.reordered, t.foreign), (1, 1));
        assert_eq!(t.unique_from(2), 4);
        assert_eq!(t.unique_from(0), 0);
        let mut latency = None;
        t.merge_latency_into(&mut latency);
        let p = Percentiles::of(latency.as_ref().unwrap()).unwrap();
        assert_eq!(p.samples, 4);
        assert!(p.p50 >= 1.0, "{p:?}");
    }

    #[test]
    fn runs_of_equal_latencies_are_all_recorded() {
        let clock = Clock::new();
        let mut t = SubTally::default();
        let mut buf = payload::buffer(16);
        let sent_ns = clock.stamp_ns();
        let at = clock.elapsed_ns();
        // Three at one latency, one at another, two at the first again.
        for (seq, later) in [(0, 0), (1, 0), (2, 0), (3, 5_000), (4, 0), (5, 0)] {
            Stamp {
                sent_ns,
                publisher: 0,
                seq,
            }
            .write(&mut buf);
            t.record(&buf, at + later, &clock, Window::ALL);
        }
        let mut latency = None;
        t.merge_latency_into(&mut latency);
        let h = latency.unwrap();
        assert_eq!(h.len(), 6);
        assert_eq!(h.count_at(h.max()), 1);
        assert_eq!(h.count_at(h.min()), 5);
        // Merging again adds nothing new: the run was folded in once.
        let mut again = None;
        t.merge_latency_into(&mut again);
        assert_eq!(again.unwrap().len(), 6);
    }
}
