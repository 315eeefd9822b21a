//! The oracle: every message published, every copy received, and the deliveries the MQTT
//! guarantees demand. It knows nothing of the broker's internals; it sees what clients saw.
//!
//! Checked at once, on every received copy:
//!
//! - a copy is never delivered at a QoS above the one it was published with;
//! - a message published at QoS 0 reaches a subscriber at most once (nobody re-sends it);
//! - a message published at QoS 2 is routed once: every copy a subscriber gets has the same
//!   QoS, and at delivered QoS 0 or 2 there is exactly one (QoS 2: exactly once end to end,
//!   across reconnects, takeovers and broker restarts);
//! - per-publisher order: for each (subscriber, publisher, published QoS, delivered QoS
//!   class), the *first* copies of messages arrive in the order they were published
//!   (MQTT 5.0 section 4.6, [MQTT-4.6.0-6]: every topic is an ordered topic for non-shared
//!   subscriptions). Re-sent copies (a QoS 1 message again after a reconnect) are not first
//!   copies and may come later. Delivered QoS 1 and 2 form one class because they share the
//!   session's in-flight window and queue; QoS 0 is its own class because it never waits in
//!   that queue while the client is connected. A QoS 1 message its publisher re-sent after
//!   losing its connection is exempt: the broker routes it a second time (it cannot tell a
//!   QoS 1 re-send from a new message), and that copy keeps its place in the order in which
//!   the broker received them, not in the order in which they were first published.
//!
//! Checked at quiescence (see [`Oracle::check_complete`]): every message a publisher had
//! acknowledged (PUBACK, PUBCOMP) reached every subscriber that was owed it at QoS 1 or 2.

use std::collections::{BTreeMap, BTreeSet};

use petrel_codec::QoS;

use super::model::PayloadTag;

/// Index of a message in the oracle's table.
pub(crate) type MessageId = usize;

/// Where a publisher's message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// QoS 0 (never acknowledged), or QoS 1/2 not acknowledged yet.
    Unacknowledged,
    /// PUBACK or PUBCOMP reached the publisher at this tick.
    Acknowledged(u64),
    /// The publisher's session was discarded with the publish still in flight.
    Abandoned,
}

/// One message a simulated client published.
#[derive(Debug, Clone)]
pub(crate) struct MessageRecord {
    pub(crate) publisher: usize,
    pub(crate) publisher_shard: u16,
    pub(crate) seq: u64,
    pub(crate) topic: usize,
    pub(crate) qos: QoS,
    /// The tick of the `publish` call: the message cannot reach the broker before it.
    pub(crate) published_at: u64,
    pub(crate) fate: Fate,
    /// QoS 1 and in flight when its publisher's connection ended: the publisher sends it
    /// again (DUP) and the broker, which cannot tell, routes it again.
    pub(crate) resent: bool,
}

/// Copies of one message one subscriber received, by delivered QoS.
#[derive(Debug, Clone, Copy, Default)]
struct Copies {
    at_qos: [u32; 3],
}

impl Copies {
    fn total(&self) -> u32 {
        self.at_qos.iter().sum()
    }
}

/// A delivery the guarantees demand: `subscriber`, in its session `epoch`, must get
/// `message` at least once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Requirement {
    pub(crate) subscriber: usize,
    pub(crate) subscriber_shard: u16,
    pub(crate) epoch: u32,
    pub(crate) message: MessageId,
}

/// Counters for the run summary.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OracleStats {
    pub(crate) published: [u64; 3],
    pub(crate) acknowledged: u64,
    pub(crate) abandoned: u64,
    pub(crate) copies: [u64; 3],
    pub(crate) duplicate_qos1_copies: u64,
    pub(crate) resent_first_copies: u64,
    pub(crate) requirements_met: u64,
    pub(crate) excused_session_ended: u64,
    pub(crate) excused_queue_drop: u64,
    pub(crate) excused_crash: u64,
}

/// What every subscriber must and did receive. See the [module documentation](self).
#[derive(Debug, Default)]
pub(crate) struct Oracle {
    messages: Vec<MessageRecord>,
    /// Per subscriber: copies received, by message.
    received: Vec<BTreeMap<MessageId, Copies>>,
    /// `(subscriber, publisher, published QoS, delivered class)` → sequence number of the
    /// last first copy.
    last_first_copy: BTreeMap<(usize, usize, u8, u8), u64>,
    requirements: Vec<Requirement>,
    /// Cross-shard copies a crash destroyed in the channel between shards: `(target shard,
    /// message)`. See `World::restart`.
    lost_in_crash: BTreeSet<(u16, MessageId)>,
    pub(crate) stats: OracleStats,
}

impl Oracle {
    pub(crate) fn new(clients: usize) -> Self {
        Oracle {
            received: vec![BTreeMap::new(); clients],
            ..Oracle::default()
        }
    }

    /// The id the next published message gets.
    pub(crate) fn next_id(&self) -> MessageId {
        self.messages.len()
    }

    pub(crate) fn message(&self, id: MessageId) -> &MessageRecord {
        &self.messages[id]
    }

    pub(crate) fn on_published(&mut self, record: MessageRecord) -> MessageId {
        self.stats.published[record.qos as usize] += 1;
        self.messages.push(record);
        self.messages.len() - 1
    }

    pub(crate) fn on_acknowledged(&mut self, id: MessageId, tick: u64) -> Result<(), String> {
        let record = &mut self.messages[id];
        if record.fate != Fate::Unacknowledged || record.qos == QoS::AtMostOnce {
            return Err(format!(
                "message {id} acknowledged twice or at QoS 0: {record:?}"
            ));
        }
        record.fate = Fate::Acknowledged(tick);
        self.stats.acknowledged += 1;
        Ok(())
    }

    /// The publisher's connection ended with this message in flight.
    pub(crate) fn on_in_flight_at_disconnect(&mut self, id: MessageId) {
        let record = &mut self.messages[id];
        if record.qos == QoS::AtLeastOnce {
            record.resent = true;
        }
    }

    pub(crate) fn on_abandoned(&mut self, id: MessageId) {
        self.messages[id].fate = Fate::Abandoned;
        self.stats.abandoned += 1;
    }

    pub(crate) fn require(&mut self, requirement: Requirement) {
        self.requirements.push(requirement);
    }

    pub(crate) fn lost_in_crash(&mut self, target_shard: u16, id: MessageId) {
        self.lost_in_crash.insert((target_shard, id));
    }

    pub(crate) fn was_lost_in_crash(&self, target_shard: u16, id: MessageId) -> bool {
        self.lost_in_crash.contains(&(target_shard, id))
    }

    /// A copy of a message reached `subscriber` with QoS `delivered`. Checks every
    /// per-copy rule of the [module documentation](self).
    pub(crate) fn on_copy(
        &mut self,
        subscriber: usize,
        tag: PayloadTag,
        delivered: QoS,
    ) -> Result<(), String> {
        let Some(record) = self.messages.get(tag.message) else {
            return Err(format!(
                "subscriber {subscriber} got an unknown message {tag:?}"
            ));
        };
        if (record.publisher, record.seq, record.qos) != (tag.publisher, tag.seq, tag.qos) {
            return Err(format!(
                "subscriber {subscriber} got a payload that does not match its record: \
                 {tag:?} vs {record:?}"
            ));
        }
        if delivered > record.qos {
            return Err(format!(
                "subscriber {subscriber} got message {} at {delivered:?}, above its published \
                 {:?}",
                tag.message, record.qos
            ));
        }
        let published = record.qos;
        let resent = record.resent;
        let copies = self.received[subscriber].entry(tag.message).or_default();
        let first = copies.total() == 0;
        copies.at_qos[delivered as usize] += 1;
        let copies = *copies;
        self.stats.copies[delivered as usize] += 1;
        let describe = || {
            format!(
                "message {} (publisher {} seq {} published {:?}) at subscriber {subscriber}: \
                 copies by delivered QoS {:?}",
                tag.message, tag.publisher, tag.seq, published, copies.at_qos
            )
        };
        match published {
            QoS::AtMostOnce if copies.total() > 1 => {
                return Err(format!("QoS 0 message delivered twice: {}", describe()));
            }
            QoS::ExactlyOnce => {
                if copies.at_qos.iter().filter(|&&n| n > 0).count() > 1 {
                    return Err(format!(
                        "QoS 2 message routed twice (copies at two QoS levels): {}",
                        describe()
                    ));
                }
                if copies.at_qos[2] > 1 {
                    return Err(format!("QoS 2 message delivered twice: {}", describe()));
                }
                if copies.at_qos[0] > 1 {
                    return Err(format!(
                        "QoS 2 message routed twice (two QoS 0 copies): {}",
                        describe()
                    ));
                }
            }
            _ => {}
        }
        if !first {
            if delivered == QoS::AtLeastOnce {
                self.stats.duplicate_qos1_copies += 1;
            }
            return Ok(());
        }
        if resent {
            // Routed twice: the broker keeps the order in which it received the copies, and
            // the second may be the first this subscriber gets, after later messages.
            self.stats.resent_first_copies += 1;
            return Ok(());
        }
        let class = u8::from(delivered != QoS::AtMostOnce);
        let key = (subscriber, tag.publisher, published as u8, class);
        if let Some(&last) = self.last_first_copy.get(&key) {
            if tag.seq <= last {
                return Err(format!(
                    "order broken: subscriber {subscriber} got publisher {}'s seq {} (published \
                     {:?}, delivered {:?}) after seq {last}",
                    tag.publisher, tag.seq, published, delivered
                ));
            }
        }
        self.last_first_copy.insert(key, tag.seq);
        Ok(())
    }

    /// At quiescence: every requirement of a session still alive (`epochs[subscriber]`
    /// unchanged) is met, unless excused: `dropped(subscriber)` says the session's queue
    /// overflowed (bounded-memory runs), or a crash destroyed the copy in the channel
    /// between shards. Requirements are then forgotten: they are met or never will be.
    pub(crate) fn check_complete(
        &mut self,
        epochs: &[u32],
        dropped: impl Fn(usize) -> bool,
    ) -> Result<(), String> {
        let requirements = std::mem::take(&mut self.requirements);
        let mut missing = Vec::new();
        for requirement in requirements {
            let subscriber = requirement.subscriber;
            if epochs[subscriber] != requirement.epoch {
                self.stats.excused_session_ended += 1;
            } else if self.received[subscriber].contains_key(&requirement.message) {
                self.stats.requirements_met += 1;
            } else if self
                .lost_in_crash
                .contains(&(requirement.subscriber_shard, requirement.message))
            {
                self.stats.excused_crash += 1;
            } else if dropped(subscriber) {
                self.stats.excused_queue_drop += 1;
            } else {
                missing.push(requirement);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = missing
            .iter()
            .take(10)
            .map(|r| {
                format!(
                    "  subscriber {} never got message {}: {:?}",
                    r.subscriber, r.message, self.messages[r.message]
                )
            })
            .collect();
        Err(format!(
            "{} acknowledged QoS 1/2 deliveries lost while the subscriber's session lived:\n{}",
            missing.len(),
            lines.join("\n")
        ))
    }
}
