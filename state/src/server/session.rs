//! The server's per-client session state: what outlives a connection when the session is
//! persistent, and what the broker core and persistence read and restore.

use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use petrel_codec::{PacketId, QoS, SubscriptionId};

use crate::message::Message;
use crate::time::Instant;

/// One message on its way to one subscriber: the shared message, the QoS granted for this
/// delivery, and what the subscription changes about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message, shared between every subscriber it goes to.
    pub message: Arc<Message>,
    /// The QoS of this delivery: the lower of the message's and the subscription's
    /// [MQTT-3.8.4-8].
    pub qos: QoS,
    /// The RETAIN flag to send (kept or cleared per Retain As Published).
    pub retain: bool,
    /// The identifiers of every subscription of this client that matched [MQTT-3.3.4-3].
    pub subscription_ids: Vec<SubscriptionId>,
    /// The shared subscription (`$share/{group}/{filter}`) that chose this client, if any:
    /// the broker hands the message to another member if this client leaves.
    pub shared_group: Option<Arc<str>>,
}

impl Delivery {
    /// A delivery of `message` at its own QoS and retain flag.
    pub fn new(message: Arc<Message>) -> Self {
        Delivery {
            qos: message.qos,
            retain: message.retain,
            message,
            subscription_ids: Vec::new(),
            shared_group: None,
        }
    }
}

/// Where an outbound QoS 1 or 2 publication stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundState {
    /// QoS 1 PUBLISH sent; PUBACK not yet received.
    AwaitingPubAck,
    /// QoS 2 PUBLISH sent; PUBREC not yet received.
    AwaitingPubRec,
    /// QoS 2 PUBREL sent; PUBCOMP not yet received.
    AwaitingPubComp,
}

/// An unacknowledged outbound publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Its packet identifier.
    pub packet_id: PacketId,
    /// What was sent.
    pub delivery: Delivery,
    /// How far the handshake got.
    pub state: OutboundState,
}

/// Messages dropped instead of delivered, by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropCounters {
    /// QoS 0 messages dropped because the connection's outbound buffer was full.
    pub qos0_buffer_full: u64,
    /// Messages dropped because the session queue reached its count or byte limit.
    pub queue_full: u64,
    /// Messages larger than the client's maximum packet size [MQTT-3.1.2-25].
    pub too_large: u64,
    /// Messages whose message expiry interval passed before they could be sent.
    pub expired: u64,
}

/// Bounds on the messages a session holds for a client that cannot take them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// The most messages queued.
    pub max_messages: usize,
    /// The most payload and topic bytes queued.
    pub max_bytes: usize,
    /// Whether QoS 0 messages are queued for an offline client (mosquitto's
    /// `queue_qos0_messages`); they are always queued behind a full in-flight window.
    pub queue_qos0_offline: bool,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_messages: 1000,
            max_bytes: 16 * 1024 * 1024,
            queue_qos0_offline: false,
        }
    }
}

/// The session of one client identifier.
///
/// While a connection is attached, the [`ServerConnection`](super::ServerConnection) owns it;
/// when the connection ends, the broker takes it back ([`super::ServerConnection::take_session`])
/// and keeps it until it expires, queueing messages for the client's return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The client identifier.
    pub client_id: String,
    /// Seconds the session outlives its connection: 0 ends it with the connection,
    /// `u32::MAX` never expires it.
    pub expiry_interval: u32,
    /// When the session expires, once no connection is attached.
    pub expires_at: Option<Instant>,
    /// Unacknowledged outbound publications, in the order they were first sent; they are
    /// re-sent in that order when the client resumes the session [MQTT-4.4.0-1].
    pub outbound: VecDeque<Outbound>,
    /// Packet identifiers of inbound QoS 2 publications that were answered with PUBREC and
    /// await PUBREL: the exactly-once markers. A PUBLISH re-sent with one of these is not
    /// delivered again [MQTT-4.3.3-10].
    pub inbound_qos2: BTreeSet<u16>,
    /// Deliveries waiting for room in the in-flight window, or for the client to return.
    pub queue: VecDeque<Delivery>,
    /// Payload and topic bytes in `queue`.
    pub queued_bytes: usize,
    /// Messages dropped so far.
    pub dropped: DropCounters,
    next_packet_id: u16,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: impl Into<String>, expiry_interval: u32) -> Self {
        Session {
            client_id: client_id.into(),
            expiry_interval,
            expires_at: None,
            outbound: VecDeque::new(),
            inbound_qos2: BTreeSet::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            dropped: DropCounters::default(),
            next_packet_id: 1,
        }
    }

    /// [`Session::allocate_packet_id`], for a caller that keeps `known_free` between calls:
    /// how many identifiers from the next one on are known not to be in flight. Finding
    /// that out costs a scan of the in-flight window, once per run of free identifiers (a
    /// window's length short of all 65,535 when acknowledgements come in order) rather than
    /// once per allocation. The caller sets it to 0 whenever `outbound` gains an entry by
    /// any other way than this method (a session handed over).
    pub(crate) fn allocate_packet_id_from(&mut self, known_free: &mut u16) -> Option<PacketId> {
        if *known_free == 0 || self.next_packet_id == 0 {
            // The distance from the next identifier to the nearest one in flight ahead of it,
            // counting around the 65,535 identifiers; 0 when the next one is in flight.
            let next = u32::from(self.next_packet_id);
            let gap = self
                .outbound
                .iter()
                .map(|o| (u32::from(o.packet_id.get()) + 65_535 - next) % 65_535)
                .min()
                .unwrap_or(65_535);
            if gap == 0 || next == 0 {
                *known_free = 0;
                return self.allocate_packet_id();
            }
            *known_free = u16::try_from(gap).unwrap_or(u16::MAX);
        }
        *known_free -= 1;
        let id = PacketId::new(self.next_packet_id);
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    /// A packet identifier not used by any unacknowledged outbound publication, or `None`
    /// if all 65,535 are in use.
    pub(crate) fn allocate_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            let candidate = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let Some(id) = PacketId::new(candidate) else {
                continue;
            };
            if !self.outbound.iter().any(|o| o.packet_id == id) {
                return Some(id);
            }
        }
        None
    }

    /// Queues a delivery within `limits`, counting it as dropped if there is no room.
    /// Returns whether it was queued.
    pub fn enqueue(&mut self, delivery: Delivery, limits: &QueueLimits) -> bool {
        let size = delivery.message.size();
        if self.queue.len() >= limits.max_messages
            || self.queued_bytes.saturating_add(size) > limits.max_bytes
        {
            self.dropped.queue_full += 1;
            return false;
        }
        self.queued_bytes += size;
        self.queue.push_back(delivery);
        true
    }

    /// Takes the oldest queued delivery.
    pub(crate) fn dequeue(&mut self) -> Option<Delivery> {
        let delivery = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(delivery.message.size());
        Some(delivery)
    }

    /// Returns a delivery to the head of the queue (its turn came but it could not go).
    pub(crate) fn requeue_front(&mut self, delivery: Delivery) {
        self.queued_bytes += delivery.message.size();
        self.queue.push_front(delivery);
    }

    /// The number of QoS 1 and 2 publications in flight to the client.
    pub fn inflight(&self) -> usize {
        self.outbound.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut s = Session::new("c", 0);
        s.next_packet_id = u16::MAX;
        let message = Arc::new(Message::new("t", &b"x"[..]));
        let first = s.allocate_packet_id().unwrap();
        assert_eq!(first.get(), u16::MAX);
        s.outbound.push_back(Outbound {
            packet_id: PacketId::new(1).unwrap(),
            delivery: Delivery::new(message),
            state: OutboundState::AwaitingPubAck,
        });
        // 0 is never used [MQTT-2.2.1-3] and 1 is in flight.
        assert_eq!(s.allocate_packet_id().unwrap().get(), 2);
    }

    /// The run of known free identifiers gives what a scan per allocation gives, whatever
    /// order the acknowledgements come in, and when the counter wraps onto identifiers
    /// still in flight.
    #[test]
    fn a_known_free_run_allocates_as_a_scan_would() {
        let message = Arc::new(Message::new("t", &b"x"[..]));
        let outbound = |id: u16| Outbound {
            packet_id: PacketId::new(id).unwrap(),
            delivery: Delivery::new(message.clone()),
            state: OutboundState::AwaitingPubAck,
        };
        let mut scanned = Session::new("c", 0);
        let mut run = Session::new("c", 0);
        let mut known_free = 0u16;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        // Identifiers a resumed session left in flight, never acknowledged here: the counter
        // meets them on every lap.
        const STUCK: usize = 50;
        for n in 0..STUCK as u16 {
            let id = 7 + n * 1_301 + (n % 3);
            scanned.outbound.push_back(outbound(id));
            run.outbound.push_back(outbound(id));
        }
        // Three laps of the 65,535 identifiers.
        for step in 0..300_000u32 {
            if scanned.outbound.len() < STUCK + 100 && random(3) != 0 {
                let a = scanned.allocate_packet_id();
                let b = run.allocate_packet_id_from(&mut known_free);
                assert_eq!(a, b, "step {step}");
                let id = a.unwrap().get();
                scanned.outbound.push_back(outbound(id));
                run.outbound.push_back(outbound(id));
            } else if scanned.outbound.len() > STUCK {
                // Mostly the oldest, sometimes any.
                let len = (scanned.outbound.len() - STUCK) as u64;
                let at = STUCK + if random(4) == 0 { random(len) } else { 0 } as usize;
                scanned.outbound.remove(at);
                run.outbound.remove(at);
            }
        }
    }

    #[test]
    fn queue_limits_count_drops() {
        let mut s = Session::new("c", 60);
        let limits = QueueLimits {
            max_messages: 2,
            max_bytes: 100,
            queue_qos0_offline: true,
        };
        let message = Arc::new(Message::new("t", &[0u8; 10][..]));
        assert!(s.enqueue(Delivery::new(message.clone()), &limits));
        assert!(s.enqueue(Delivery::new(message.clone()), &limits));
        assert!(!s.enqueue(Delivery::new(message.clone()), &limits));
        assert_eq!(s.dropped.queue_full, 1);
        assert_eq!(s.queued_bytes, 22);
        let big = Arc::new(Message::new("t", &[0u8; 200][..]));
        s.dequeue();
        assert!(!s.enqueue(Delivery::new(big), &limits));
        assert_eq!(s.dropped.queue_full, 2);
        assert_eq!(s.queued_bytes, 11);
    }
}
