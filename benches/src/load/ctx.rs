//! What the connection tasks of a run share: settings, phase, live counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use petrel_codec::{ProtocolVersion, QoS};
use tokio::sync::{watch, Notify};

use super::clock::Clock;
use super::stats::{ConnTally, PubTally, SubTally, Window};
use super::transport::Connector;

/// Where a run stands; connection tasks watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Connecting and subscribing; publishers wait.
    Setup,
    /// Publishers publish.
    Run,
    /// Everyone disconnects and reports.
    Stop,
}

/// Counters for the live progress line and the coordinator's decisions. Tasks add their
/// local counts once per loop iteration.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) unique: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) ready: AtomicU64,
    pub(crate) publishers_done: AtomicU64,
    pub(crate) subscribers_done: AtomicU64,
    /// Woken when `ready`, `failed`, `publishers_done` or `subscribers_done` change.
    pub(crate) changed: Notify,
}

impl Live {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Bumps a counter the coordinator waits on, and wakes it.
    pub(crate) fn signal(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        self.changed.notify_one();
    }
}

/// Settings every connection task reads.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) clock: Clock,
    pub(crate) addr: SocketAddr,
    pub(crate) version: ProtocolVersion,
    /// The target is `petrel-bench relay` (see the `raw` module).
    pub(crate) relay: bool,
    /// TLS and WebSocket, if the run uses them.
    pub(crate) connector: Option<Connector>,
    pub(crate) qos: QoS,
    pub(crate) sub_qos: QoS,
    pub(crate) payload: usize,
    pub(crate) keep_alive: u16,
    pub(crate) persistent: bool,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// Messages per publisher, if the run is bounded by a count.
    pub(crate) count: Option<u64>,
    /// Messages per second per publisher, if paced.
    pub(crate) rate_per_publisher: Option<f64>,
    /// QoS 1/2 messages a publisher may have unacknowledged.
    pub(crate) inflight: usize,
    /// `sub`: a subscriber stops after this many distinct messages.
    pub(crate) sub_count: Option<u64>,
    /// Through the relay: the size of one PUBLISH packet, the relay's frame.
    pub(crate) frame_len: usize,
    /// How many publishers there are (to spread their pacing).
    pub(crate) publishers: usize,
    pub(crate) live: Live,
    /// When publishing starts ([`Clock::elapsed_ns`]); set before [`Phase::Run`].
    pub(crate) start_ns: AtomicU64,
    /// When publishers stop (`u64::MAX` for a count-bounded run); set before [`Phase::Run`].
    pub(crate) end_ns: AtomicU64,
    /// The measurement window's start; set before [`Phase::Run`].
    pub(crate) window_start_ns: AtomicU64,
    pub(crate) phase: watch::Receiver<Phase>,
    /// Per publisher id, when its subscribers run in this process (the presets): the
    /// window then bounds messages sent but not yet delivered to all of them, at every
    /// QoS. Unbounded, a QoS 0 flood fills megabytes of socket buffers and broker queues,
    /// and latency then measures how long those queues are, not the broker.
    pub(crate) flows: Vec<Flow>,
}

impl Ctx {
    /// The measurement window (valid once the run started).
    pub(crate) fn window(&self) -> Window {
        Window {
            start_ns: self.window_start_ns.load(Ordering::Acquire),
            end_ns: self.end_ns.load(Ordering::Acquire),
        }
    }
}

/// End-to-end flow control of one publisher whose subscribers run in this process: how far
/// each of its subscribers has got, so that the publisher stays at most a window ahead of
/// the slowest (see [`Ctx::flows`]).
#[derive(Debug)]
pub(crate) struct Flow {
    /// Per subscriber of this publisher: one past the highest sequence number it received
    /// (gaps count as resolved: a broker delivers a publisher's messages in order, so a
    /// missing one is lost, not late).
    delivered: Vec<AtomicU64>,
    /// The lowest of `delivered`, kept up to date by the subscribers (see
    /// [`Flow::advance`]), so that a publisher reads one number instead of scanning all
    /// its subscribers (a hundred in fan-out) every time it wakes.
    slowest: AtomicU64,
    /// Woken when the slowest subscriber advances.
    pub(crate) wake: Notify,
}

/// Tells the publishers a subscriber heard from how far it got.
pub(crate) fn report_progress(ctx: &Ctx, tally: &mut SubTally, slot: usize) {
    if ctx.flows.is_empty() {
        return;
    }
    tally.take_touched(|publisher, next| {
        if let Some(flow) = ctx.flows.get(publisher as usize) {
            flow.advance(slot, next);
        }
    });
}

impl Flow {
    /// The flow of a publisher with `subscribers` subscribers in this process.
    pub(crate) fn new(subscribers: u64) -> Flow {
        Flow {
            delivered: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
            slowest: AtomicU64::new(if subscribers == 0 { u64::MAX } else { 0 }),
            wake: Notify::new(),
        }
    }

    /// The sequence number every subscriber has got past.
    pub(crate) fn slowest(&self) -> u64 {
        self.slowest.load(Ordering::SeqCst)
    }

    /// The subscriber in `slot` got past `next`. Only a subscriber that was the slowest
    /// can raise the minimum, so only it scans the others; the publisher is woken only
    /// when the minimum rose.
    ///
    /// Why it never misses a rise (all operations are SeqCst, so they have one order): a
    /// subscriber that skips the scan read `slowest` after its own update and found its
    /// old position above it. A scanner repeats until a scan raises nothing, and its
    /// last scan comes after its last write of `slowest`, so it sees every update whose
    /// owner may have read `slowest` before that write.
    pub(crate) fn advance(&self, slot: usize, next: u64) {
        let Some(d) = self.delivered.get(slot) else {
            return;
        };
        let old = d.fetch_max(next, Ordering::SeqCst);
        if old >= next || old > self.slowest.load(Ordering::SeqCst) {
            return;
        }
        let mut raised = false;
        loop {
            let min = self
                .delivered
                .iter()
                .map(|d| d.load(Ordering::SeqCst))
                .min()
                .unwrap_or(u64::MAX);
            if self.slowest.fetch_max(min, Ordering::SeqCst) >= min {
                break;
            }
            raised = true;
        }
        if raised {
            self.wake.notify_one();
        }
    }
}

/// One publisher of the plan.
#[derive(Debug, Clone, Default)]
pub(crate) struct PubPlan {
    pub(crate) id: u32,
    pub(crate) topic: String,
    /// Through the relay: the group it sends to.
    pub(crate) group: u32,
}

/// One subscriber of the plan.
#[derive(Debug, Clone)]
pub(crate) struct SubPlan {
    pub(crate) id: u32,
    pub(crate) filter: String,
    /// Through the relay: the group it receives from.
    pub(crate) group: u32,
    /// Its index among the subscribers of each publisher it hears from ([`Flow`]).
    pub(crate) flow_slot: usize,
}

/// What a connection does.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// Connect and hold (`conn`); with a filter, subscribe to it first (`conn --subscribe`).
    Idle(Option<String>),
    Publisher(PubPlan),
    Subscriber(SubPlan),
}

/// What a connection task hands back.
#[derive(Debug, Default)]
pub(crate) struct TaskResult {
    pub(crate) conn: ConnTally,
    pub(crate) publisher: Option<PubTally>,
    pub(crate) subscriber: Option<SubTally>,
    /// The subscriber's id in the plan, to match its tally with what it expects.
    pub(crate) subscriber_id: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_is_the_lowest_subscriber() {
        let flow = Flow::new(3);
        assert_eq!(flow.slowest(), 0);
        flow.advance(0, 10);
        flow.advance(1, 5);
        assert_eq!(flow.slowest(), 0);
        flow.advance(2, 7);
        assert_eq!(flow.slowest(), 5);
        // Going back, or a slot that does not exist, changes nothing.
        flow.advance(1, 3);
        flow.advance(9, 100);
        assert_eq!(flow.slowest(), 5);
        flow.advance(1, 20);
        assert_eq!(flow.slowest(), 7);
        assert_eq!(Flow::new(0).slowest(), u64::MAX);
    }

    #[test]
    fn concurrent_subscribers_leave_the_true_minimum() {
        for _ in 0..20 {
            let flow = Flow::new(8);
            std::thread::scope(|scope| {
                for slot in 0..8 {
                    let flow = &flow;
                    scope.spawn(move || {
                        for next in 1..=2_000 {
                            flow.advance(slot, next + slot as u64);
                        }
                    });
                }
            });
            assert_eq!(flow.slowest(), 2_000);
        }
    }
}
