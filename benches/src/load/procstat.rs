//! CPU time and resident memory of a process, read from Linux's `/proc`.

use std::fs;

/// Clock ticks per second of the CPU times in `/proc/<pid>/stat`. Linux reports them in
/// USER_HZ, which is 100 on every architecture it supports for this interface.
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time so far, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
}

/// Reads `/proc/<pid>` (`"self"` for this process); `None` if the process is gone or this
/// is not Linux.
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: the fields after it
    // start after the last ')'. utime and stime are fields 14 and 15, i.e. the 12th and
    // 13th after the name.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        rss_bytes: rss_kib * 1024,
    })
}

/// What a process used over a run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcUsage {
    /// The process id (0 for the generator itself).
    pub pid: u32,
    /// CPU used over the measurement window, in percent of one core.
    pub cpu_percent: f64,
    /// CPU seconds over the measurement window.
    pub cpu_seconds: f64,
    /// Resident memory before the first connection.
    pub rss_start_bytes: u64,
    /// Highest resident memory sampled during the run.
    pub rss_peak_bytes: u64,
    /// Resident memory at the end of the measurement window (for `conn`: while the
    /// connections are held).
    pub rss_end_bytes: u64,
}

/// Samples one process through a run.
#[derive(Debug, Clone)]
pub struct Tracker {
    pid: String,
    start: Option<ProcSample>,
    window_start: Option<(f64, ProcSample)>,
    window_end: Option<(f64, ProcSample)>,
    peak: u64,
}

impl Tracker {
    /// Starts tracking `pid` (`"self"` for this process) and takes the first sample.
    pub fn new(pid: &str) -> Tracker {
        let start = sample(pid);
        Tracker {
            pid: pid.to_owned(),
            peak: start.map_or(0, |s| s.rss_bytes),
            start,
            window_start: None,
            window_end: None,
        }
    }

    /// Takes a sample for the peak.
    pub fn tick(&mut self) -> Option<ProcSample> {
        let s = sample(&self.pid)?;
        self.peak = self.peak.max(s.rss_bytes);
        Some(s)
    }

    /// Marks the start of the measurement window at `t` seconds.
    pub fn window_start(&mut self, t: f64) {
        if let Some(s) = self.tick() {
            self.window_start = Some((t, s));
        }
    }

    /// Marks the end of the measurement window at `t` seconds.
    pub fn window_end(&mut self, t: f64) {
        if let Some(s) = self.tick() {
            self.window_end = Some((t, s));
        }
    }

    /// The usage over the window; `None` if the process could not be read.
    pub fn usage(&self, pid: u32) -> Option<ProcUsage> {
        let start = self.start?;
        let (t0, s0) = self.window_start?;
        let (t1, s1) = self.window_end?;
        let cpu = (s1.cpu_seconds - s0.cpu_seconds).max(0.0);
        let span = (t1 - t0).max(1e-9);
        Some(ProcUsage {
            pid,
            cpu_percent: 100.0 * cpu / span,
            cpu_seconds: cpu,
            rss_start_bytes: start.rss_bytes,
            rss_peak_bytes: self.peak,
            rss_end_bytes: s1.rss_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample("self").expect("/proc/self is readable on Linux");
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_seconds >= 0.0);
        assert!(sample("0").is_none());
    }
}
