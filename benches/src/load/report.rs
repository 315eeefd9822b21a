//! The figures of one run: JSON for machines (`--json`), a summary for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::procstat::ProcUsage;
use super::stats::Percentiles;

/// Everything one run measured. The JSON form of this struct is what `--json` prints and
/// what `petrel-bench report` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `petrel-bench` and its version.
    pub tool: String,
    /// The scenario (subcommand, or `--name`).
    pub scenario: String,
    /// What was measured (`--label`, e.g. the broker's name).
    pub label: Option<String>,
    /// host:port.
    pub target: String,
    /// `mqtt-3.1.1`, `mqtt-5.0` or `raw`.
    pub transport: String,
    /// QoS of the publishes.
    pub qos: u8,
    /// QoS of the subscriptions.
    pub sub_qos: u8,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Publishing connections.
    pub publishers: usize,
    /// Subscribing connections.
    pub subscribers: usize,
    /// Whether `conn`'s connections each subscribed to a topic of their own.
    #[serde(default)]
    pub idle_subscribe: bool,
    /// Total publish rate asked for (messages/s); `None`: as fast as possible.
    pub rate_limit: Option<f64>,
    /// QoS 1/2 messages a publisher could have unacknowledged (after the store's limit).
    pub inflight: usize,
    /// Messages per publisher, if the run was bounded by a count.
    pub count: Option<u64>,
    /// Measured duration asked for, if the run was bounded by time.
    pub duration_s: Option<f64>,
    /// Warm-up before the measurement window.
    pub warmup_s: f64,
    /// The span the rates are computed over.
    pub measured_s: f64,
    /// The publishing side.
    pub published: Published,
    /// The receiving side, when the run had subscribers.
    pub delivered: Option<Delivered>,
    /// Connection establishment.
    pub connections: Connections,
    /// The broker's CPU and memory (`--broker-pid`).
    pub broker: Option<ProcUsage>,
    /// The generator's own CPU and memory.
    pub generator: Option<ProcUsage>,
    /// The generator's CPU time per message sent plus received in the window, in
    /// microseconds: its own cost, to compare with the broker's.
    pub generator_cpu_us_per_message: Option<f64>,
    /// Problems that make the figures doubtful (connection errors, clock skew, …).
    pub warnings: Vec<String>,
}

/// The publishing side of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// Messages handed to the broker.
    pub sent: u64,
    /// Messages per second over the measured span.
    pub per_sec: f64,
    /// QoS 1/2 messages acknowledged (PUBACK, PUBCOMP).
    pub acked: u64,
    /// QoS 1/2 messages the broker refused.
    pub refused: u64,
    /// QoS 1/2 messages discarded with the session.
    pub session_lost: u64,
    /// The most messages one publisher had unacknowledged at once.
    pub max_inflight: usize,
    /// Publish-to-acknowledgement latency.
    pub ack_latency_us: Option<Percentiles>,
}

/// The receiving side of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    /// Deliveries expected: each message sent times the subscribers it matches. `None`
    /// when the publishers ran in another process (`sub`).
    pub expected: Option<u64>,
    /// Messages received, duplicates included.
    pub received: u64,
    /// Distinct messages received.
    pub unique: u64,
    /// Distinct messages per second over the measured span.
    pub per_sec: f64,
    /// Expected deliveries that never arrived (when `expected` is known).
    pub lost: Option<u64>,
    /// Sequence numbers missing below the highest one seen, per publisher: the losses a
    /// subscriber can see without knowing what was sent.
    pub gaps: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Distinct messages that arrived after a later one of the same publisher.
    pub reordered: u64,
    /// Messages not from this tool (no stamp).
    pub foreign: u64,
    /// Messages stamped later than they arrived (clocks of two processes disagree).
    pub clock_skewed: u64,
    /// End-to-end latency: publish call to receipt, for messages received in the window.
    pub latency_us: Option<Percentiles>,
}

/// Connection establishment over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    /// Connections attempted.
    pub attempted: u64,
    /// Connections that got their CONNACK (or relay welcome).
    pub established: u64,
    /// Connections that failed before being established.
    pub failed: u64,
    /// Established connections that ended with an error before the run stopped.
    pub dropped: u64,
    /// Connections established per second, from the first attempt to the last success.
    pub per_sec: f64,
    /// TCP connect to CONNACK.
    pub connect_latency_us: Option<Percentiles>,
    /// Errors by description, with counts.
    pub errors: BTreeMap<String, u64>,
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` with thousands separators.
pub fn fmt_count(n: u64) -> String {
    thousands(n)
}

/// A rate with thousands separators and no decimals.
pub fn fmt_rate(r: f64) -> String {
    thousands(r.max(0.0).round() as u64)
}

/// Microseconds, shown in the unit that keeps three significant digits readable.
pub fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Bytes in MiB.
pub fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn fmt_percentiles(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        fmt_us(p.p50),
        fmt_us(p.p90),
        fmt_us(p.p99),
        fmt_us(p.p999),
        fmt_us(p.max),
        thousands(p.samples)
    )
}

impl Report {
    /// The summary for people, several lines.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let label = self
            .label
            .as_deref()
            .map(|l| format!(" [{l}]"))
            .unwrap_or_default();
        if self.publishers == 0 && self.subscribers == 0 {
            let _ = writeln!(
                o,
                "{}{label}  {}  {}  {} connections, held {:.1} s",
                self.scenario,
                self.target,
                self.transport,
                self.connections.attempted,
                self.measured_s
            );
            self.connection_lines(&mut o);
            self.process_lines(&mut o);
            return o;
        }
        let _ = writeln!(
            o,
            "{}{label}  {}  {}  qos {}  {} B payload  {} publishers → {} subscribers",
            self.scenario,
            self.target,
            self.transport,
            self.qos,
            self.payload_bytes,
            self.publishers,
            self.subscribers
        );
        let pacing = match self.rate_limit {
            Some(r) => format!("paced at {} msg/s", fmt_rate(r)),
            None => "unpaced".into(),
        };
        let window = if self.qos > 0 || (self.publishers > 0 && self.subscribers > 0) {
            format!(", window {}", self.inflight)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "  measured   {:.2} s after {:.2} s warm-up ({pacing}{window})",
            self.measured_s, self.warmup_s
        );
        let p = &self.published;
        if self.publishers > 0 {
            let mut line = format!(
                "  published  {} ({} msg/s)",
                thousands(p.sent),
                fmt_rate(p.per_sec)
            );
            if self.qos > 0 {
                let _ = write!(line, "  acked {}", thousands(p.acked));
                if p.refused > 0 || p.session_lost > 0 {
                    let _ = write!(
                        line,
                        "  refused {}  lost with session {}",
                        p.refused, p.session_lost
                    );
                }
            }
            let _ = writeln!(o, "{line}");
            if let Some(l) = &p.ack_latency_us {
                let _ = writeln!(o, "  ack        {}", fmt_percentiles(l));
            }
        }
        if let Some(d) = &self.delivered {
            let expected = d
                .expected
                .map(|e| format!(" of {} expected", thousands(e)))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  delivered  {} distinct{expected} ({} msg/s)",
                thousands(d.unique),
                fmt_rate(d.per_sec)
            );
            let lost = match (d.lost, d.expected) {
                (Some(l), Some(e)) if e > 0 => {
                    format!("{} ({:.4}%)", thousands(l), 100.0 * l as f64 / e as f64)
                }
                (Some(l), _) => thousands(l),
                (None, _) => format!("unknown (gaps in sequences: {})", thousands(d.gaps)),
            };
            let _ = writeln!(
                o,
                "  lost {lost}  duplicated {}  reordered {}{}",
                thousands(d.duplicates),
                thousands(d.reordered),
                if d.foreign > 0 {
                    format!("  foreign {}", thousands(d.foreign))
                } else {
                    String::new()
                }
            );
            if let Some(l) = &d.latency_us {
                let _ = writeln!(o, "  latency    {}", fmt_percentiles(l));
            }
        }
        self.connection_lines(&mut o);
        self.process_lines(&mut o);
        o
    }

    fn connection_lines(&self, o: &mut String) {
        let c = &self.connections;
        let mut line = format!(
            "  connections {} established, {} failed, {} dropped ({} conn/s)",
            thousands(c.established),
            thousands(c.failed),
            thousands(c.dropped),
            fmt_rate(c.per_sec)
        );
        if let Some(l) = &c.connect_latency_us {
            let _ = write!(
                line,
                "  connect p50 {} p99 {}",
                fmt_us(l.p50),
                fmt_us(l.p99)
            );
        }
        let _ = writeln!(o, "{line}");
        for (error, n) in &c.errors {
            let _ = writeln!(o, "    {n} × {error}");
        }
    }

    fn process_lines(&self, o: &mut String) {
        if let Some(b) = &self.broker {
            let _ = writeln!(
                o,
                "  broker     pid {}: cpu {:.0}%, rss {} → peak {} (end {})",
                b.pid,
                b.cpu_percent,
                fmt_mib(b.rss_start_bytes),
                fmt_mib(b.rss_peak_bytes),
                fmt_mib(b.rss_end_bytes)
            );
        }
        if let Some(g) = &self.generator {
            let per = self
                .generator_cpu_us_per_message
                .map(|u| format!(", {u:.2} µs per message sent or received"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  generator  cpu {:.0}%{per}, peak rss {}",
                g.cpu_percent,
                fmt_mib(g.rss_peak_bytes)
            );
        }
        for w in &self.warnings {
            let _ = writeln!(o, "  warning: {w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(fmt_us(12.4), "12 µs");
        assert_eq!(fmt_us(1500.0), "1.50 ms");
    }
}
