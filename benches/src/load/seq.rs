//! Which sequence numbers of one publisher a subscriber has seen, to count losses,
//! duplicates and reordering exactly.

/// What [`SeqSet::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time, and above every number seen before.
    InOrder,
    /// First time, but below a number seen before (it overtook nothing: others overtook it).
    Reordered,
    /// Seen before.
    Duplicate,
}

/// A set of `u32` sequence numbers kept as sorted, disjoint, non-adjacent half-open ranges.
///
/// A broker delivers one publisher's messages in order [MQTT-4.6.0-5], so the common case
/// extends the last range in O(1) and the whole set stays one range per gap: memory grows
/// with the number of losses, not with the number of messages, which a bitmap per
/// (publisher, subscriber) pair could not afford for long fan-out runs.
#[derive(Debug, Clone, Default)]
pub struct SeqSet {
    ranges: Vec<(u32, u32)>,
    len: u64,
}

impl SeqSet {
    /// An empty set.
    pub fn new() -> Self {
        SeqSet::default()
    }

    /// How many distinct numbers the set holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The highest number seen, if any.
    pub fn max(&self) -> Option<u32> {
        self.ranges.last().map(|&(_, end)| end - 1)
    }

    /// How many ranges the set is made of (one more than the gaps between them).
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u32) -> bool {
        let i = self.ranges.partition_point(|&(start, _)| start <= seq);
        i > 0 && seq < self.ranges[i - 1].1
    }

    /// Adds `seq` and says whether it was new, and in order.
    pub fn insert(&mut self, seq: u32) -> Seen {
        // u32::MAX cannot be the end of a half-open range; a run never gets that far
        // (2^32 messages from one publisher), so it is counted as a duplicate rather than
        // corrupting the set.
        let Some(next) = seq.checked_add(1) else {
            return Seen::Duplicate;
        };
        if let Some(last) = self.ranges.last_mut() {
            if seq == last.1 {
                last.1 = next;
                self.len += 1;
                return Seen::InOrder;
            }
            if seq > last.1 {
                self.ranges.push((seq, next));
                self.len += 1;
                return Seen::InOrder;
            }
        } else {
            self.ranges.push((seq, next));
            self.len += 1;
            return Seen::InOrder;
        }
        // Below the highest number seen: find the range starting at or before it.
        let i = self.ranges.partition_point(|&(start, _)| start <= seq);
        if i > 0 && seq < self.ranges[i - 1].1 {
            return Seen::Duplicate;
        }
        let joins_left = i > 0 && self.ranges[i - 1].1 == seq;
        let joins_right = self.ranges.get(i).is_some_and(|&(start, _)| start == next);
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = next,
            (false, true) => self.ranges[i].0 = seq,
            (false, false) => self.ranges.insert(i, (seq, next)),
        }
        self.len += 1;
        Seen::Reordered
    }

    /// How many numbers below `end` are missing from the set.
    pub fn missing_below(&self, end: u32) -> u64 {
        let present: u64 = self
            .ranges
            .iter()
            .take_while(|&&(start, _)| start < end)
            .map(|&(start, stop)| u64::from(stop.min(end) - start))
            .sum();
        u64::from(end) - present
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_one_range() {
        let mut s = SeqSet::new();
        for i in 0..1000 {
            assert_eq!(s.insert(i), Seen::InOrder);
        }
        assert_eq!((s.len(), s.ranges(), s.max()), (1000, 1, Some(999)));
        assert_eq!(s.missing_below(1000), 0);
        assert_eq!(s.missing_below(1010), 10);
    }

    #[test]
    fn gaps_duplicates_and_late_arrivals() {
        let mut s = SeqSet::new();
        for i in [0, 1, 2, 5, 6, 9] {
            assert_eq!(s.insert(i), Seen::InOrder);
        }
        assert_eq!(s.ranges(), 3);
        assert_eq!(s.insert(6), Seen::Duplicate);
        assert_eq!(s.insert(0), Seen::Duplicate);
        assert_eq!(s.missing_below(10), 4);
        // Fills 3..5, joining two ranges.
        assert_eq!(s.insert(4), Seen::Reordered);
        assert_eq!(s.insert(3), Seen::Reordered);
        assert_eq!(s.ranges(), 2);
        assert_eq!(s.insert(8), Seen::Reordered);
        assert_eq!(s.insert(7), Seen::Reordered);
        assert_eq!((s.len(), s.ranges()), (10, 1));
        assert!(s.contains(7) && !s.contains(10));
    }

    #[test]
    fn matches_a_naive_set() {
        // A fixed pseudo-random sequence with repeats and jumps.
        let mut s = SeqSet::new();
        let mut naive = std::collections::BTreeSet::new();
        let mut x: u32 = 12345;
        for _ in 0..5000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let seq = (x >> 16) % 700;
            let new = naive.insert(seq);
            assert_eq!(s.insert(seq) != Seen::Duplicate, new);
        }
        assert_eq!(s.len(), naive.len() as u64);
        for seq in 0..710 {
            assert_eq!(s.contains(seq), naive.contains(&seq));
        }
    }
}
