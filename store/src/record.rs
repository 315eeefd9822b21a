//! The on-disk form of sessions and retained messages: a small versioned binary encoding
//! with a CRC-32 over each record, shared by every store.
//!
//! The broker's [`Instant`]s count from the start of the process, so a record would mean
//! nothing to the next process if it kept them. Every instant is written as wall-clock
//! microseconds since the Unix epoch through a [`Clock`], and read back relative to the new
//! process's origin: a message whose expiry passed while the broker was down comes back
//! already expired.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use petrel_codec::{PacketId, QoS, RetainHandling, SubscriptionId, SubscriptionOptions};
use petrel_state::broker::{SessionRecord, SessionView, StoredSubscription};
use petrel_state::message::{Message, MessageProperties};
use petrel_state::server::{Delivery, DropCounters, Outbound, OutboundState, Session, Will};
use petrel_state::Instant;

use crate::backend::{EntryKey, EntryKind, Op};

/// The first byte of every record: the format version. A record of another version is
/// refused rather than misread. Version 2 split sessions into a header and per-message
/// entries; a version 1 session record ([`Layout::Whole`]) is still read, to migrate it.
const FORMAT: u8 = 2;
/// The version of a whole-session record ([`Layout::Whole`]), and of retained messages
/// written before version 2 (whose encoding did not change).
const FORMAT_WHOLE: u8 = 1;

/// Converts the broker's process-relative instants to wall-clock time and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Microseconds since the Unix epoch at the broker's `Instant::ZERO`.
    origin_unix_micros: u64,
}

impl Clock {
    /// A clock whose `Instant::ZERO` is `origin_unix_micros` after the epoch.
    pub const fn new(origin_unix_micros: u64) -> Self {
        Clock { origin_unix_micros }
    }

    /// A clock for a process whose `Instant::ZERO` is `origin` (a `std::time::Instant`).
    pub fn for_origin(origin: std::time::Instant) -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let now = u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX);
        let elapsed = u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        Clock::new(now.saturating_sub(elapsed))
    }

    /// Wall-clock microseconds of `at`.
    pub fn to_unix(self, at: Instant) -> u64 {
        self.origin_unix_micros.saturating_add(at.as_micros())
    }

    /// The instant of wall-clock `unix_micros`; a time before the origin is the origin,
    /// which is in the past for anything that asks.
    pub fn from_unix(self, unix_micros: u64) -> Instant {
        Instant::from_micros(unix_micros.saturating_sub(self.origin_unix_micros))
    }

    /// Wall-clock microseconds now.
    pub fn unix_now() -> u64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)
    }
}

/// A record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes end before the record does.
    Truncated,
    /// The checksum does not match: the bytes changed after they were written.
    Checksum,
    /// A format version this build does not know.
    Version(u8),
    /// A field holds a value no writer produces.
    Invalid(&'static str),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated => f.write_str("record is truncated"),
            RecordError::Checksum => f.write_str("record checksum does not match"),
            RecordError::Version(v) => write!(f, "unknown record format version {v}"),
            RecordError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// How a stored session record is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Format 2: the header only; the messages in flight and queued are entries of their own.
    Header,
    /// Format 1 (before per-message entries): the whole session, messages included, in one
    /// record. Still read, so that a store written by an older Petrel is migrated.
    Whole,
}

/// Encodes the header record of a session: everything but the messages it holds in flight
/// and queued, which are entries of their own ([`encode_outbound`], [`encode_queued`]).
pub fn encode_session_header(view: SessionView<'_>, clock: Clock) -> Vec<u8> {
    let mut w = Writer::new();
    let s = view.session;
    w.str(&s.client_id);
    w.u32(s.expiry_interval);
    w.opt_u64(view.expires_at.map(|at| clock.to_unix(at)));
    w.u32(len32(s.inbound_qos2.len()));
    for id in &s.inbound_qos2 {
        w.u16(*id);
    }
    w.drops(&s.dropped);
    w.subscriptions(view.subscriptions);
    w.will(view.pending_will, clock);
    w.finish()
}

/// Encodes an outbound publication in flight, as a session entry.
pub fn encode_outbound(outbound: &Outbound, clock: Clock) -> Vec<u8> {
    let mut w = Writer::new();
    w.outbound(outbound, clock);
    w.finish()
}

/// Encodes a queued delivery, as a session entry.
pub fn encode_queued(delivery: &Delivery, clock: Clock) -> Vec<u8> {
    let mut w = Writer::new();
    w.delivery(delivery, clock);
    w.finish()
}

/// Decodes an entry written by [`encode_outbound`].
pub fn decode_outbound(bytes: &[u8], clock: Clock) -> Result<Outbound, RecordError> {
    let mut r = Reader::open(bytes, Layout::Header)?;
    let outbound = r.outbound(clock)?;
    r.end()?;
    Ok(outbound)
}

/// Decodes an entry written by [`encode_queued`].
pub fn decode_queued(bytes: &[u8], clock: Clock) -> Result<Delivery, RecordError> {
    let mut r = Reader::open(bytes, Layout::Header)?;
    let delivery = r.delivery(clock)?;
    r.end()?;
    Ok(delivery)
}

/// The operations that store a whole session from scratch: its header, then one entry per
/// message in flight and queued, numbered from 0 in list order. They do not remove what
/// the store already holds of the session; precede them with [`Op::DeleteSession`] for that.
pub fn session_ops(view: SessionView<'_>, clock: Clock) -> Vec<Op> {
    let s = view.session;
    let id = &s.client_id;
    let mut ops = Vec::with_capacity(1 + s.outbound.len() + s.queue.len());
    ops.push(Op::PutSession(
        id.clone(),
        encode_session_header(view, clock),
    ));
    let mut seq = 0;
    let mut next = |kind| {
        seq += 1;
        EntryKey { kind, seq: seq - 1 }
    };
    for o in &s.outbound {
        let key = next(EntryKind::Outbound);
        ops.push(Op::PutEntry(id.clone(), key, encode_outbound(o, clock)));
    }
    for d in &s.queue {
        let key = next(EntryKind::Queued);
        ops.push(Op::PutEntry(id.clone(), key, encode_queued(d, clock)));
    }
    ops
}

/// Decodes a session record: a header ([`Layout::Header`], whose messages are entries of
/// their own) or a whole session written by an older Petrel ([`Layout::Whole`]).
pub fn decode_session(bytes: &[u8], clock: Clock) -> Result<(SessionRecord, Layout), RecordError> {
    let (mut r, layout) = Reader::open_session(bytes)?;
    let client_id = r.string()?;
    let expiry_interval = r.u32()?;
    let mut session = Session::new(client_id, expiry_interval);
    session.expires_at = r.opt_u64()?.map(|t| clock.from_unix(t));
    if layout == Layout::Whole {
        for _ in 0..r.count()? {
            let outbound = r.outbound(clock)?;
            session.outbound.push_back(outbound);
        }
    }
    for _ in 0..r.count()? {
        session.inbound_qos2.insert(r.u16()?);
    }
    if layout == Layout::Whole {
        for _ in 0..r.count()? {
            let delivery = r.delivery(clock)?;
            session.queued_bytes += delivery.message.size();
            session.queue.push_back(delivery);
        }
    }
    session.dropped = DropCounters {
        qos0_buffer_full: r.u64()?,
        queue_full: r.u64()?,
        too_large: r.u64()?,
        expired: r.u64()?,
    };
    let mut subscriptions = Vec::new();
    for _ in 0..r.count()? {
        let filter = r.string()?;
        let bits = r.u8()?;
        let options = SubscriptionOptions {
            qos: QoS::from_bits(bits & 0b11).ok_or(RecordError::Invalid("subscription qos"))?,
            no_local: bits & 0b100 != 0,
            retain_as_published: bits & 0b1000 != 0,
            retain_handling: match bits >> 4 {
                0 => RetainHandling::SendOnSubscribe,
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                _ => return Err(RecordError::Invalid("retain handling")),
            },
        };
        let identifier = r.opt_u32()?;
        subscriptions.push(StoredSubscription {
            filter,
            options,
            identifier,
        });
    }
    let pending_will = match r.u8()? {
        0 => None,
        1 => {
            let at = clock.from_unix(r.u64()?);
            let message = r.message(clock)?;
            let will = Will {
                message,
                delay_interval: r.u32()?,
                message_expiry_interval: r.opt_u32()?,
            };
            Some((at, will))
        }
        _ => return Err(RecordError::Invalid("will flag")),
    };
    r.end()?;
    let record = SessionRecord {
        session,
        subscriptions,
        pending_will,
    };
    Ok((record, layout))
}

/// Encodes a retained message.
pub fn encode_message(message: &Message, clock: Clock) -> Vec<u8> {
    let mut w = Writer::new();
    w.message(message, clock);
    w.finish()
}

/// Decodes a retained message.
pub fn decode_message(bytes: &[u8], clock: Clock) -> Result<Message, RecordError> {
    let mut r = Reader::open(bytes, Layout::Header)?;
    let message = r.message(clock)?;
    r.end()?;
    Ok(message)
}

/// When a stored session would expire, as wall-clock microseconds, without decoding the
/// whole record; `None` if it never expires or is attached (expiry unknown).
pub fn session_expiry(bytes: &[u8]) -> Result<Option<u64>, RecordError> {
    // Both layouts start the same way.
    let (mut r, _) = Reader::open_session(bytes)?;
    r.string()?;
    r.u32()?;
    r.opt_u64()
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn new() -> Self {
        Writer { buf: vec![FORMAT] }
    }

    fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u32(v);
            }
        }
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
        }
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(len32(v.len()));
        self.buf.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn opt_bytes(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.bytes(v);
            }
        }
    }

    fn message(&mut self, m: &Message, clock: Clock) {
        self.str(&m.topic);
        self.bytes(&m.payload);
        self.u8(m.qos as u8 | u8::from(m.retain) << 2);
        let p = &m.properties;
        self.u8(match p.payload_format_indicator {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        self.opt_u64(p.expires_at.map(|at| clock.to_unix(at)));
        self.opt_bytes(p.content_type.as_deref().map(str::as_bytes));
        self.opt_bytes(p.response_topic.as_deref().map(str::as_bytes));
        self.opt_bytes(p.correlation_data.as_deref());
        self.u32(len32(p.user_properties.len()));
        for (name, value) in &p.user_properties {
            self.str(name);
            self.str(value);
        }
    }

    fn outbound(&mut self, o: &Outbound, clock: Clock) {
        self.u16(o.packet_id.get());
        self.u8(match o.state {
            OutboundState::AwaitingPubAck => 0,
            OutboundState::AwaitingPubRec => 1,
            OutboundState::AwaitingPubComp => 2,
        });
        self.delivery(&o.delivery, clock);
    }

    fn drops(&mut self, d: &DropCounters) {
        self.u64(d.qos0_buffer_full);
        self.u64(d.queue_full);
        self.u64(d.too_large);
        self.u64(d.expired);
    }

    fn subscriptions(&mut self, subscriptions: &[StoredSubscription]) {
        self.u32(len32(subscriptions.len()));
        for sub in subscriptions {
            self.str(&sub.filter);
            let o = sub.options;
            self.u8(o.qos as u8
                | u8::from(o.no_local) << 2
                | u8::from(o.retain_as_published) << 3
                | (o.retain_handling as u8) << 4);
            self.opt_u32(sub.identifier);
        }
    }

    fn will(&mut self, will: Option<&(Instant, Will)>, clock: Clock) {
        match will {
            None => self.u8(0),
            Some((at, will)) => {
                self.u8(1);
                self.u64(clock.to_unix(*at));
                self.message(&will.message, clock);
                self.u32(will.delay_interval);
                self.opt_u32(will.message_expiry_interval);
            }
        }
    }

    fn delivery(&mut self, d: &Delivery, clock: Clock) {
        self.message(&d.message, clock);
        self.u8(d.qos as u8 | u8::from(d.retain) << 2);
        self.u32(len32(d.subscription_ids.len()));
        for id in &d.subscription_ids {
            self.u32(id.0);
        }
        self.opt_bytes(d.shared_group.as_deref().map(str::as_bytes));
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the checksum and the version, and positions after the version byte. A record
    /// that is not a session's (an entry, a retained message) takes `Layout::Header`: its
    /// encoding is the same in both versions, so a retained message written by version 1
    /// is read too.
    fn open(bytes: &'a [u8], layout: Layout) -> Result<Self, RecordError> {
        let (reader, version) = Reader::checked(bytes)?;
        match (layout, version) {
            (_, FORMAT) | (Layout::Header, FORMAT_WHOLE) => Ok(reader),
            (_, other) => Err(RecordError::Version(other)),
        }
    }

    /// [`Reader::open`] for a session record, which says its layout by its version.
    fn open_session(bytes: &'a [u8]) -> Result<(Self, Layout), RecordError> {
        match Reader::checked(bytes)? {
            (reader, FORMAT) => Ok((reader, Layout::Header)),
            (reader, FORMAT_WHOLE) => Ok((reader, Layout::Whole)),
            (_, other) => Err(RecordError::Version(other)),
        }
    }

    fn checked(bytes: &'a [u8]) -> Result<(Self, u8), RecordError> {
        if bytes.len() < 5 {
            return Err(RecordError::Truncated);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(body) != crc {
            return Err(RecordError::Checksum);
        }
        Ok((Reader { buf: &body[1..] }, body[0]))
    }

    fn end(&self) -> Result<(), RecordError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Invalid("trailing bytes"))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items that follow; every item takes at least one byte, so a count larger
    /// than what is left is refused before anything is allocated for it.
    fn count(&mut self) -> Result<u32, RecordError> {
        let n = self.u32()?;
        if n as usize > self.buf.len() {
            return Err(RecordError::Truncated);
        }
        Ok(n)
    }
    fn flag(&mut self) -> Result<bool, RecordError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RecordError::Invalid("option flag")),
        }
    }
    fn opt_u32(&mut self) -> Result<Option<u32>, RecordError> {
        Ok(if self.flag()? {
            Some(self.u32()?)
        } else {
            None
        })
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, RecordError> {
        Ok(if self.flag()? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, RecordError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(String::from)
            .map_err(|_| RecordError::Invalid("UTF-8 string"))
    }
    fn opt_string(&mut self) -> Result<Option<String>, RecordError> {
        Ok(if self.flag()? {
            Some(self.string()?)
        } else {
            None
        })
    }
    fn qos_retain(&mut self) -> Result<(QoS, bool), RecordError> {
        let bits = self.u8()?;
        let qos = QoS::from_bits(bits & 0b11).ok_or(RecordError::Invalid("QoS"))?;
        Ok((qos, bits & 0b100 != 0))
    }

    fn message(&mut self, clock: Clock) -> Result<Message, RecordError> {
        let topic: Arc<str> = Arc::from(self.string()?);
        let payload = Bytes::copy_from_slice(self.bytes()?);
        let (qos, retain) = self.qos_retain()?;
        let payload_format_indicator = match self.u8()? {
            0 => None,
            1 => Some(false),
            2 => Some(true),
            _ => return Err(RecordError::Invalid("payload format indicator")),
        };
        let expires_at = self.opt_u64()?.map(|t| clock.from_unix(t));
        let content_type = self.opt_string()?;
        let response_topic = self.opt_string()?;
        let correlation_data = if self.flag()? {
            Some(Bytes::copy_from_slice(self.bytes()?))
        } else {
            None
        };
        let mut user_properties = Vec::new();
        for _ in 0..self.count()? {
            user_properties.push((self.string()?, self.string()?));
        }
        Ok(Message {
            topic,
            payload,
            qos,
            retain,
            properties: MessageProperties {
                payload_format_indicator,
                expires_at,
                content_type,
                response_topic,
                correlation_data,
                user_properties,
            },
        })
    }

    fn outbound(&mut self, clock: Clock) -> Result<Outbound, RecordError> {
        let packet_id = PacketId::new(self.u16()?).ok_or(RecordError::Invalid("packet id 0"))?;
        let state = match self.u8()? {
            0 => OutboundState::AwaitingPubAck,
            1 => OutboundState::AwaitingPubRec,
            2 => OutboundState::AwaitingPubComp,
            _ => return Err(RecordError::Invalid("outbound state")),
        };
        let delivery = self.delivery(clock)?;
        Ok(Outbound {
            packet_id,
            delivery,
            state,
        })
    }

    fn delivery(&mut self, clock: Clock) -> Result<Delivery, RecordError> {
        let message = Arc::new(self.message(clock)?);
        let (qos, retain) = self.qos_retain()?;
        let mut subscription_ids = Vec::new();
        for _ in 0..self.count()? {
            subscription_ids.push(SubscriptionId(self.u32()?));
        }
        let shared_group = self.opt_string()?.map(Arc::from);
        Ok(Delivery {
            message,
            qos,
            retain,
            subscription_ids,
            shared_group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_message(topic: &str) -> Message {
        let mut m = Message::new(topic, &b"payload"[..]);
        m.qos = QoS::ExactlyOnce;
        m.retain = true;
        m.properties = MessageProperties {
            payload_format_indicator: Some(true),
            expires_at: Some(Instant::from_secs(100)),
            content_type: Some(String::from("text/plain")),
            response_topic: Some(String::from("reply/here")),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![(String::from("k"), String::from("v"))],
        };
        m
    }

    fn sample_record() -> SessionRecord {
        let mut session = Session::new("client-1", 3600);
        session.expires_at = Some(Instant::from_secs(50));
        let delivery = Delivery {
            message: Arc::new(sample_message("a/b")),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![SubscriptionId(7)],
            shared_group: Some(Arc::from("$share/g/a/#")),
        };
        session.outbound.push_back(Outbound {
            packet_id: PacketId::new(9).unwrap(),
            delivery: delivery.clone(),
            state: OutboundState::AwaitingPubComp,
        });
        session.inbound_qos2.insert(3);
        session.inbound_qos2.insert(65535);
        session.queued_bytes = delivery.message.size();
        session.queue.push_back(delivery);
        session.dropped.queue_full = 4;
        SessionRecord {
            session,
            subscriptions: vec![StoredSubscription {
                filter: String::from("a/#"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
                identifier: Some(7),
            }],
            pending_will: Some((
                Instant::from_secs(60),
                Will {
                    message: Message::new("will/t", &b"bye"[..]),
                    delay_interval: 30,
                    message_expiry_interval: Some(10),
                },
            )),
        }
    }

    /// Decodes what [`session_ops`] wrote, the way `load` puts it together.
    fn reassemble(ops: &[Op], clock: Clock) -> SessionRecord {
        let Some(Op::PutSession(_, header)) = ops.first() else {
            panic!("{ops:?}");
        };
        let (mut record, layout) = decode_session(header, clock).unwrap();
        assert_eq!(layout, Layout::Header);
        for op in &ops[1..] {
            let Op::PutEntry(_, key, value) = op else {
                panic!("{op:?}");
            };
            match key.kind {
                EntryKind::Outbound => {
                    let outbound = decode_outbound(value, clock).unwrap();
                    record.session.outbound.push_back(outbound);
                }
                EntryKind::Queued => {
                    let delivery = decode_queued(value, clock).unwrap();
                    record.session.queued_bytes += delivery.message.size();
                    record.session.queue.push_back(delivery);
                }
            }
        }
        record
    }

    #[test]
    fn a_session_round_trips_as_a_header_and_entries() {
        let clock = Clock::new(1_700_000_000_000_000);
        let record = sample_record();
        let ops = session_ops(record.view(), clock);
        assert_eq!(ops.len(), 3, "a header, one in flight, one queued");
        assert_eq!(reassemble(&ops, clock), record);
        let Op::PutSession(_, header) = &ops[0] else {
            unreachable!()
        };
        assert_eq!(
            session_expiry(header).unwrap(),
            Some(clock.to_unix(Instant::from_secs(50)))
        );
    }

    /// A whole-session record as Petrel wrote it before per-message entries (format 1),
    /// encoded from `sample_record` at the clock below.
    const WHOLE_V1: &str = "0108000000636c69656e742d31100e0000018030191b240a06000100000009000203000000612f62070000007061796c6f61640602010021141e240a0600010a000000746578742f706c61696e010a0000007265706c792f686572650102000000000101000000010000006b0100000076010100000007000000010c0000002473686172652f672f612f23020000000300ffff0100000003000000612f62070000007061796c6f61640602010021141e240a0600010a000000746578742f706c61696e010a0000007265706c792f686572650102000000000101000000010000006b0100000076010100000007000000010c0000002473686172652f672f612f2300000000000000000400000000000000000000000000000000000000000000000100000003000000612f232e01070000000100c7b11b240a06000600000077696c6c2f7403000000627965000000000000000000001e000000010a00000079d80101";

    #[test]
    fn a_whole_session_record_of_format_1_still_decodes() {
        let clock = Clock::new(1_700_000_000_000_000);
        let bytes: Vec<u8> = (0..WHOLE_V1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&WHOLE_V1[i..i + 2], 16).unwrap())
            .collect();
        let (record, layout) = decode_session(&bytes, clock).unwrap();
        assert_eq!(layout, Layout::Whole);
        assert_eq!(record, sample_record());
        assert_eq!(
            session_expiry(&bytes).unwrap(),
            Some(clock.to_unix(Instant::from_secs(50)))
        );
    }

    #[test]
    fn instants_survive_a_new_origin() {
        let before = Clock::new(1_000_000_000);
        // The new process started 40 s of wall time later.
        let after = Clock::new(1_000_000_000 + 40_000_000);
        let bytes = encode_message(&sample_message("t"), before);
        let m = decode_message(&bytes, after).unwrap();
        assert_eq!(m.properties.expires_at, Some(Instant::from_secs(60)));
        // Expired while down: back at the origin, already expired.
        let late = Clock::new(1_000_000_000 + 500_000_000);
        let m = decode_message(&bytes, late).unwrap();
        assert!(m.is_expired(Instant::ZERO));
    }

    #[test]
    fn every_damaged_byte_and_every_truncation_is_an_error() {
        let clock = Clock::new(0);
        let record = sample_record();
        let header = encode_session_header(record.view(), clock);
        let entry = encode_outbound(&record.session.outbound[0], clock);
        for cut in 0..header.len() {
            assert!(
                decode_session(&header[..cut], clock).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..header.len() {
            let mut damaged = header.clone();
            damaged[i] ^= 0x40;
            assert!(decode_session(&damaged, clock).is_err(), "byte {i}");
        }
        for cut in 0..entry.len() {
            assert!(decode_outbound(&entry[..cut], clock).is_err(), "cut {cut}");
        }
        for i in 0..entry.len() {
            let mut damaged = entry.clone();
            damaged[i] ^= 0x40;
            assert!(decode_outbound(&damaged, clock).is_err(), "byte {i}");
        }
    }
}
