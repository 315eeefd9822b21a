//! The one clock every connection of a run reads.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A monotonic clock anchored to the wall clock once, at creation.
///
/// Send timestamps are written into payloads as nanoseconds since the Unix epoch, but read
/// from the monotonic clock: `wall_origin + elapsed`. Within one process (every preset runs
/// its publishers and subscribers in one process) latency is therefore purely monotonic and
/// immune to clock adjustments. Across two processes on one host (`pub` in one, `sub` in the
/// other) the two anchors differ only by how far apart the two processes read the wall
/// clock, which is far below a microsecond unless the clock is stepped between their starts.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    wall_origin_ns: u64,
}

impl Clock {
    /// A clock anchored now.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock {
            origin: Instant::now(),
            wall_origin_ns: wall,
        }
    }

    /// Nanoseconds since this clock was created.
    pub fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The timestamp written into payloads: wall-anchored nanoseconds (see the type docs).
    pub fn stamp_ns(&self) -> u64 {
        self.wall_origin_ns.saturating_add(self.elapsed_ns())
    }

    /// Converts a time read from [`Clock::elapsed_ns`] into a stamp.
    pub fn stamp_of(&self, elapsed_ns: u64) -> u64 {
        self.wall_origin_ns.saturating_add(elapsed_ns)
    }

    /// The current time as the petrel-state machines take it (microseconds since creation).
    pub fn state_now(&self) -> petrel_state::Instant {
        petrel_state::Instant::from_micros(self.elapsed_ns() / 1_000)
    }

    /// The `std` instant `elapsed_ns` after creation, for timers.
    pub fn instant_at(&self, elapsed_ns: u64) -> Instant {
        self.origin + std::time::Duration::from_nanos(elapsed_ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
