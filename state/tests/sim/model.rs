//! The simulation's vocabulary: topics, filters, the payload format that lets the oracle
//! recognise every message, and a topic matcher written independently of the broker's trie.

use petrel_codec::QoS;

/// Topic names publishers use: a small set, so that subscriptions overlap.
pub(crate) const TOPICS: [&str; 16] = [
    "t/0/a", "t/0/b", "t/1/a", "t/1/b", "t/2/a", "t/2/b", "t/3/a", "t/3/b", "t/4/a", "t/4/b",
    "t/5/a", "t/5/b", "t/6/a", "t/6/b", "t/7/a", "t/7/b",
];

/// Topic filters subscribers use, with how often each is picked (relative weight). Exact
/// names dominate so that a publish reaches tens of subscribers, not all two hundred; the
/// wildcards overlap each other and the exact names, which exercises "one copy per client at
/// the highest granted QoS".
pub(crate) const FILTERS: [(&str, u64); 16] = [
    ("t/0/a", 4),
    ("t/1/b", 4),
    ("t/2/a", 4),
    ("t/3/b", 4),
    ("t/4/a", 4),
    ("t/5/b", 4),
    ("t/6/a", 4),
    ("t/7/b", 4),
    ("t/0/+", 3),
    ("t/3/+", 3),
    ("t/6/+", 3),
    ("+/2/a", 2),
    ("t/1/#", 2),
    ("t/+/a", 1),
    ("t/+/b", 1),
    ("t/#", 1),
];

/// Whether `filter` matches `topic` (MQTT 4.7; no `$` topics are used here). Deliberately
/// naive: the oracle must not share the broker's matching code.
pub(crate) fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// `MATCHES[f][t]`: whether filter `f` matches topic `t`, computed once.
pub(crate) struct MatchTable {
    matches: Vec<[bool; TOPICS.len()]>,
}

impl MatchTable {
    pub(crate) fn new() -> Self {
        MatchTable {
            matches: FILTERS
                .iter()
                .map(|(filter, _)| core::array::from_fn(|t| filter_matches(filter, TOPICS[t])))
                .collect(),
        }
    }

    pub(crate) fn get(&self, filter: usize, topic: usize) -> bool {
        self.matches[filter][topic]
    }
}

/// What a payload says about its message: who published it, its place in that publisher's
/// sequence, the QoS it was published with, and its index in the oracle's message table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayloadTag {
    pub(crate) publisher: usize,
    pub(crate) seq: u64,
    pub(crate) qos: QoS,
    pub(crate) message: usize,
}

impl PayloadTag {
    /// `publisher:seq:qos:message|` followed by `padding` filler bytes (message sizes vary so
    /// that the queues' byte limits matter, not only their counts).
    pub(crate) fn encode(&self, padding: usize) -> Vec<u8> {
        let mut payload = format!(
            "{}:{}:{}:{}|",
            self.publisher, self.seq, self.qos as u8, self.message
        )
        .into_bytes();
        payload.resize(payload.len() + padding, b'.');
        payload
    }

    /// Reads a payload written by [`PayloadTag::encode`].
    pub(crate) fn decode(payload: &[u8]) -> Option<PayloadTag> {
        let end = payload.iter().position(|&b| b == b'|')?;
        let text = core::str::from_utf8(&payload[..end]).ok()?;
        let mut fields = text.split(':');
        let publisher = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        let qos = QoS::from_bits(fields.next()?.parse().ok()?)?;
        let message = fields.next()?.parse().ok()?;
        if fields.next().is_some() {
            return None;
        }
        Some(PayloadTag {
            publisher,
            seq,
            qos,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_follows_the_specification_examples() {
        assert!(filter_matches("t/#", "t/1/a"));
        assert!(filter_matches("t/1/#", "t/1/a"));
        assert!(filter_matches("#", "t/1/a"));
        assert!(filter_matches("t/+/a", "t/1/a"));
        assert!(filter_matches("+/1/+", "t/1/a"));
        assert!(!filter_matches("t/+", "t/1/a"));
        assert!(!filter_matches("t/1/b", "t/1/a"));
        assert!(!filter_matches("t/1/a/b", "t/1/a"));
    }

    #[test]
    fn payload_round_trips() {
        let tag = PayloadTag {
            publisher: 17,
            seq: 123,
            qos: QoS::ExactlyOnce,
            message: 4567,
        };
        assert_eq!(PayloadTag::decode(&tag.encode(9)), Some(tag));
        assert_eq!(PayloadTag::decode(b"17:1:2|"), None);
    }
}
