//! Which upstream broker a client lands on, and which upstreams are alive.
//!
//! Placement is rendezvous hashing (highest random weight): every upstream gets a score for
//! the client id, and the live upstream with the highest score wins. It is consistent in
//! the sense that matters for persistent sessions: a client id always lands on the same
//! upstream while that upstream lives, adding an upstream moves only the clients it now
//! wins, and removing one (or losing it) moves only its own clients.
//!
//! Health is kept here too, without I/O: the balancer asks for probes
//! ([`BalancerEvent::Probe`]) when they are due, the runtime performs them and reports back
//! ([`Balancer::probe_result`]); a failed connection to an upstream counts at once
//! ([`Balancer::connect_failed`]), so a dead upstream is left on the first client that
//! notices rather than on the next probe.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use crate::time::{Duration, Instant};

/// How upstreams are probed and when their state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between two probes of one upstream.
    pub interval: Duration,
    /// Consecutive failed probes before a live upstream is declared down.
    pub fall: u32,
    /// Consecutive successful probes before a dead upstream is used again.
    pub rise: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(2),
            fall: 1,
            rise: 1,
        }
    }
}

/// What the balancer asks of the runtime, or tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalancerEvent {
    /// Probe this upstream now and report with [`Balancer::probe_result`].
    Probe(String),
    /// The upstream is declared down: disconnect the clients it serves, so they reconnect
    /// and land on a live one.
    Down(String),
    /// The upstream is back and takes new clients again.
    Up(String),
    /// The upstream was removed from the configuration: disconnect its clients.
    Removed(String),
}

#[derive(Debug, Clone)]
struct Upstream {
    address: String,
    up: bool,
    failures: u32,
    successes: u32,
    next_probe: Instant,
    probing: bool,
}

/// The set of upstreams, their health and the placement of clients on them.
#[derive(Debug, Clone)]
pub struct Balancer {
    config: HealthConfig,
    upstreams: Vec<Upstream>,
    events: VecDeque<BalancerEvent>,
}

impl Balancer {
    /// A balancer without upstreams.
    pub fn new(config: HealthConfig) -> Self {
        Balancer {
            config,
            upstreams: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Replaces the set of upstreams (at start and on configuration reload). Upstreams
    /// that stay keep their health; new ones start live and are probed at once; removed
    /// ones are announced with [`BalancerEvent::Removed`].
    pub fn set_upstreams<S: AsRef<str>>(&mut self, now: Instant, addresses: &[S]) {
        let wanted = |a: &str| addresses.iter().any(|w| w.as_ref() == a);
        let (kept, removed): (Vec<_>, Vec<_>) = core::mem::take(&mut self.upstreams)
            .into_iter()
            .partition(|u| wanted(&u.address));
        self.upstreams = kept;
        for gone in removed {
            self.events.push_back(BalancerEvent::Removed(gone.address));
        }
        for address in addresses {
            let address = address.as_ref();
            if self.upstreams.iter().all(|u| u.address != address) {
                self.upstreams.push(Upstream {
                    address: String::from(address),
                    up: true,
                    failures: 0,
                    successes: 0,
                    next_probe: now,
                    probing: false,
                });
            }
        }
    }

    /// The live upstream for `client_id`, or `None` when every upstream is down.
    pub fn choose(&self, client_id: &str) -> Option<&str> {
        self.upstreams
            .iter()
            .filter(|u| u.up)
            .max_by_key(|u| (score(&u.address, client_id), &u.address))
            .map(|u| u.address.as_str())
    }

    /// Whether `address` is configured and live.
    pub fn is_up(&self, address: &str) -> bool {
        self.upstreams.iter().any(|u| u.address == address && u.up)
    }

    /// The configured upstreams, in configuration order.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.upstreams.iter().map(|u| u.address.as_str())
    }

    /// A client's connection to `address` failed: the upstream is down now, whatever the
    /// probes said, and is probed again after the usual interval.
    pub fn connect_failed(&mut self, now: Instant, address: &str) {
        let interval = self.config.interval;
        if let Some(u) = self.upstreams.iter_mut().find(|u| u.address == address) {
            u.successes = 0;
            u.failures = u.failures.saturating_add(1);
            u.next_probe = u.next_probe.max(now + interval);
            if u.up {
                u.up = false;
                self.events
                    .push_back(BalancerEvent::Down(u.address.clone()));
            }
        }
    }

    /// The outcome of a probe the balancer asked for.
    pub fn probe_result(&mut self, now: Instant, address: &str, healthy: bool) {
        let config = self.config;
        let Some(u) = self.upstreams.iter_mut().find(|u| u.address == address) else {
            return; // removed while the probe ran
        };
        u.probing = false;
        u.next_probe = now + config.interval;
        if healthy {
            u.failures = 0;
            u.successes = u.successes.saturating_add(1);
            if !u.up && u.successes >= config.rise.max(1) {
                u.up = true;
                self.events.push_back(BalancerEvent::Up(u.address.clone()));
            }
        } else {
            u.successes = 0;
            u.failures = u.failures.saturating_add(1);
            if u.up && u.failures >= config.fall.max(1) {
                u.up = false;
                self.events
                    .push_back(BalancerEvent::Down(u.address.clone()));
            }
        }
    }

    /// Asks for the probes that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for u in &mut self.upstreams {
            if !u.probing && u.next_probe <= now {
                u.probing = true;
                self.events
                    .push_back(BalancerEvent::Probe(u.address.clone()));
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.upstreams
            .iter()
            .filter(|u| !u.probing)
            .map(|u| u.next_probe)
            .min()
    }

    /// The next event; drain after every input.
    pub fn poll_event(&mut self) -> Option<BalancerEvent> {
        self.events.pop_front()
    }
}

/// The weight of `upstream` for `client_id`: FNV-1a over both (a separator between them,
/// so `ab`+`c` and `a`+`bc` differ), then a 64-bit finalizer, because FNV alone leaves
/// scores of similar addresses correlated and the same upstream would win too often.
fn score(upstream: &str, client_id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = upstream
        .bytes()
        .chain(core::iter::once(0xFF))
        .chain(client_id.bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;

    const A: &str = "10.0.0.1:1883";
    const B: &str = "10.0.0.2:1883";
    const C: &str = "10.0.0.3:1883";

    fn balancer(addresses: &[&str]) -> Balancer {
        let mut b = Balancer::new(HealthConfig::default());
        b.set_upstreams(Instant::ZERO, addresses);
        b
    }

    fn placement(b: &Balancer, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| String::from(b.choose(&format!("device-{i}")).unwrap()))
            .collect()
    }

    #[test]
    fn placement_is_sticky_and_spread() {
        let b = balancer(&[A, B, C]);
        let first = placement(&b, 3000);
        assert_eq!(first, placement(&b, 3000));
        for address in [A, B, C] {
            let n = first.iter().filter(|p| *p == address).count();
            assert!((800..1200).contains(&n), "{address}: {n} of 3000");
        }
        // The order of the configuration does not matter.
        assert_eq!(first, placement(&balancer(&[C, A, B]), 3000));
    }

    #[test]
    fn losing_an_upstream_moves_only_its_clients() {
        let mut b = balancer(&[A, B, C]);
        let before = placement(&b, 2000);
        b.connect_failed(Instant::ZERO, B);
        assert_eq!(b.poll_event(), Some(BalancerEvent::Down(String::from(B))));
        let after = placement(&b, 2000);
        for (old, new) in before.iter().zip(&after) {
            assert_ne!(new, B);
            if old != B {
                assert_eq!(old, new);
            }
        }
    }

    #[test]
    fn adding_an_upstream_moves_only_the_clients_it_wins() {
        let mut b = balancer(&[A, B]);
        let before = placement(&b, 2000);
        b.set_upstreams(Instant::ZERO, &[A, B, C]);
        let after = placement(&b, 2000);
        let moved = before.iter().zip(&after).filter(|(o, n)| o != n).count();
        assert!(after.iter().zip(&before).all(|(n, o)| n == o || n == C));
        assert!((500..850).contains(&moved), "{moved} of 2000 moved");
    }

    #[test]
    fn removal_is_announced_and_others_stay() {
        let mut b = balancer(&[A, B]);
        b.connect_failed(Instant::ZERO, A);
        let _ = b.poll_event();
        b.set_upstreams(Instant::ZERO, &[A, C]);
        assert_eq!(
            b.poll_event(),
            Some(BalancerEvent::Removed(String::from(B)))
        );
        assert_eq!(b.poll_event(), None);
        assert!(!b.is_up(A), "a kept upstream keeps its health");
        assert!(b.is_up(C));
        assert_eq!(b.addresses().collect::<Vec<_>>(), vec![A, C]);
    }

    #[test]
    fn probes_declare_down_and_up() {
        let config = HealthConfig {
            interval: Duration::from_secs(5),
            fall: 2,
            rise: 2,
        };
        let mut b = Balancer::new(config);
        b.set_upstreams(Instant::ZERO, &[A]);
        assert_eq!(b.poll_timeout(), Some(Instant::ZERO));
        b.handle_timeout(Instant::ZERO);
        assert_eq!(b.poll_event(), Some(BalancerEvent::Probe(String::from(A))));
        // No second probe while one runs.
        b.handle_timeout(Instant::ZERO);
        assert_eq!(b.poll_event(), None);
        assert_eq!(b.poll_timeout(), None);

        b.probe_result(Instant::from_secs(1), A, false);
        assert!(b.is_up(A), "one failure is not enough with fall = 2");
        assert_eq!(b.poll_timeout(), Some(Instant::from_secs(6)));
        b.handle_timeout(Instant::from_secs(6));
        assert_eq!(b.poll_event(), Some(BalancerEvent::Probe(String::from(A))));
        b.probe_result(Instant::from_secs(6), A, false);
        assert_eq!(b.poll_event(), Some(BalancerEvent::Down(String::from(A))));
        assert_eq!(b.choose("x"), None);

        b.probe_result(Instant::from_secs(11), A, true);
        assert!(!b.is_up(A));
        b.probe_result(Instant::from_secs(16), A, true);
        assert_eq!(b.poll_event(), Some(BalancerEvent::Up(String::from(A))));
        assert_eq!(b.choose("x"), Some(A));
    }

    proptest::proptest! {
        /// Whatever upstreams die, a client lands on a live one, and a client whose
        /// upstream lives stays where it was.
        #[test]
        fn only_the_clients_of_dead_upstreams_move(
            count in 1usize..6,
            dead in proptest::collection::vec(proptest::bool::ANY, 6),
            clients in proptest::collection::vec("[a-z0-9]{0,12}", 1..50),
        ) {
            let addresses: Vec<String> =
                (0..count).map(|i| format!("10.0.0.{i}:1883")).collect();
            let mut b = Balancer::new(HealthConfig::default());
            b.set_upstreams(Instant::ZERO, &addresses);
            let before: Vec<String> =
                clients.iter().map(|c| String::from(b.choose(c).unwrap())).collect();
            for (address, &dies) in addresses.iter().zip(&dead) {
                if dies {
                    b.connect_failed(Instant::ZERO, address);
                }
            }
            for (client, old) in clients.iter().zip(&before) {
                match b.choose(client) {
                    Some(new) => {
                        proptest::prop_assert!(b.is_up(new));
                        if b.is_up(old) {
                            proptest::prop_assert_eq!(new, old.as_str());
                        }
                    }
                    None => proptest::prop_assert!(addresses.iter().all(|a| !b.is_up(a))),
                }
            }
        }
    }

    #[test]
    fn a_late_probe_of_a_removed_upstream_is_ignored() {
        let mut b = balancer(&[A]);
        b.handle_timeout(Instant::ZERO);
        b.set_upstreams(Instant::ZERO, &[B]);
        b.probe_result(Instant::ZERO, A, false);
        let events: Vec<_> = core::iter::from_fn(|| b.poll_event()).collect();
        assert_eq!(
            events,
            vec![
                BalancerEvent::Probe(String::from(A)),
                BalancerEvent::Removed(String::from(A))
            ]
        );
    }
}
