//! One MQTT connection of a run: a petrel-state client session driven over a tokio TCP
//! stream (with TLS or WebSocket between them when asked: see the `transport` module).
//!
//! Each connection is one task that owns its session, its buffers and its tallies, and
//! loops: publish what the pacing and the window allow into the session, move the
//! session's queued bytes into the write buffer, write what the socket takes, read what it
//! has, feed every complete packet to the session, and sleep on socket readiness or the
//! next deadline only when none of that made progress. Nothing on the per-message path
//! takes a lock or touches memory another task writes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use petrel_codec::{
    ConnAck, List, Packet, Properties, Publish, QoS, ReasonCode, SubAck, SubscribeFilter,
    SubscriptionOptions,
};
use petrel_state::client::{ClientError, ClientEvent, ConnectionState};
use petrel_state::Instant;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::conn::{describe, Io};
use super::ctx::{report_progress, Ctx, Flow, Live, Phase, PubPlan, Role, TaskResult};
use super::fast::{Framed, PublishTemplate, Qos0Reader};
use super::payload::{self, Stamp};
use super::raw;
use super::session::{
    options, IdleClient, LargePubClient, Session, SmallPubClient, SubClient, LARGE_STORE,
    MAX_PACKET, SMALL_PACKET, SMALL_STORE,
};
use super::stats::{histogram, PubTally, SubTally, Window};

/// How long a TCP connect may take before it counts as failed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most messages published in one loop iteration before the connection reads and
/// writes again: enough to fill a write, few enough that acknowledgements keep flowing.
const MAX_BATCH: u64 = 512;

/// How long a closing connection tries to get its DISCONNECT out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a subscriber on the QoS 0 fast path still hands a packet to its session. Any
/// packet tells the session the broker is alive (it clears a pending PINGRESP deadline,
/// 10 s by default), so the session must keep seeing some while messages stream past it.
const SESSION_TOUCH_NS: u64 = 1_000_000_000;

/// The size of the PUBLISH packet for this topic, payload size and QoS.
pub fn publish_packet_len(
    version: petrel_codec::ProtocolVersion,
    topic: &str,
    payload_len: usize,
    qos: QoS,
) -> usize {
    let payload = vec![0u8; payload_len];
    let packet = petrel_codec::Packet::Publish(Publish {
        qos,
        topic,
        packet_id: if qos == QoS::AtMostOnce {
            None
        } else {
            petrel_codec::PacketId::new(1)
        },
        payload: &payload,
        ..Publish::default()
    });
    packet.encoded_len(version).unwrap_or(usize::MAX)
}

/// Opens one MQTT connection with `role` and runs it until the run stops.
///
/// `permit` bounds the connection attempts in progress; it is dropped once the connection
/// is established or has failed.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    role: Role,
    client_id: String,
    permit: Option<OwnedSemaphorePermit>,
) -> TaskResult {
    let started = ctx.clock.elapsed_ns();
    let mut result = TaskResult::default();
    if let Role::Subscriber(s) = &role {
        result.subscriber_id = Some(s.id);
    }
    let version = ctx.version;
    let connect = async {
        let mut stream = TcpStream::connect(ctx.addr).await?;
        // Small packets must not wait for Nagle's algorithm: latency is what is measured.
        stream.set_nodelay(true)?;
        if ctx.relay {
            match &role {
                Role::Publisher(p) => {
                    raw::handshake(&mut stream, true, p.group, ctx.frame_len).await?
                }
                Role::Subscriber(s) => raw::handshake(&mut stream, false, s.group, 0).await?,
                Role::Idle(_) => {
                    return Err(std::io::Error::other("the relay holds no idle connections"))
                }
            }
        }
        let layers = match &ctx.connector {
            Some(c) => Some(c.establish(&stream).await?),
            None => None,
        };
        Ok((stream, layers))
    };
    let (stream, layers) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed(&ctx, result, describe(&e)),
        Err(_) => return failed(&ctx, result, "connect timed out".into()),
    };
    let mut opts = options(
        version,
        &client_id,
        ctx.keep_alive,
        ctx.username.as_deref(),
        ctx.password.as_deref().map(str::as_bytes),
    );
    if ctx.persistent {
        opts.clean_start = false;
        opts.session_expiry_interval = u32::MAX;
    }
    match &role {
        Role::Idle(_) => {
            let io = Io::new(stream, layers, 1024, 1024);
            let mut client = Box::new(IdleClient::new(opts));
            Driver::new(&ctx, io, role, started, permit, usize::MAX)
                .run(&mut *client, &mut result)
                .await;
        }
        Role::Subscriber(_) => {
            result.subscriber = Some(SubTally::default());
            let io = Io::new(stream, layers, 256 * 1024, 64 * 1024);
            let mut client = Box::new(SubClient::new(opts));
            Driver::new(&ctx, io, role, started, permit, usize::MAX)
                .run(&mut *client, &mut result)
                .await;
        }
        Role::Publisher(plan) => {
            let packet = publish_packet_len(version, &plan.topic, ctx.payload, ctx.qos);
            result.publisher = Some(PubTally {
                id: plan.id,
                ..PubTally::default()
            });
            if packet <= SMALL_PACKET {
                let io = Io::new(stream, layers, 64 * 1024, 64 * 1024);
                let window = ctx.inflight.min(SMALL_STORE / packet.max(1));
                let mut client = Box::new(SmallPubClient::new(opts));
                Driver::new(&ctx, io, role, started, permit, window)
                    .run(&mut *client, &mut result)
                    .await;
            } else if packet <= MAX_PACKET {
                let io = Io::new(stream, layers, 64 * 1024, 2 * MAX_PACKET);
                let window = ctx.inflight.min(LARGE_STORE / packet.max(1));
                let mut client = Box::new(LargePubClient::new(opts));
                Driver::new(&ctx, io, role, started, permit, window)
                    .run(&mut *client, &mut result)
                    .await;
            } else {
                return failed(&ctx, result, format!("PUBLISH of {packet} bytes too large"));
            }
        }
    }
    result
}

fn failed(ctx: &Ctx, mut result: TaskResult, error: String) -> TaskResult {
    result.conn.error = Some(error);
    result.conn.failed_to_connect = true;
    ctx.live.signal(&ctx.live.failed);
    result
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Subscribing,
    Ready,
}

/// Per-connection state of the loop.
struct Driver<'c> {
    ctx: &'c Ctx,
    io: Io,
    role: Role,
    stage: Stage,
    started_ns: u64,
    /// Held while connecting (see [`run`]).
    permit: Option<OwnedSemaphorePermit>,
    phase: tokio::sync::watch::Receiver<Phase>,
    /// Publishers: the payload buffer, whose stamp changes per message.
    payload: Vec<u8>,
    /// Publishers at QoS 0: their PUBLISH, encoded once the session accepted the first
    /// one (so that its checks, such as the broker's maximum packet size, still apply).
    template: Option<PublishTemplate>,
    /// Subscribers: the QoS 0 fast path of their filter, once subscribed.
    reader: Option<Qos0Reader>,
    /// Subscribers: when the session last decoded a packet (see [`SESSION_TOUCH_NS`]).
    session_seen_ns: u64,
    /// Publishers: the most QoS 1/2 messages awaiting acknowledgement.
    window: usize,
    /// Publishers: when each message awaiting acknowledgement was sent.
    sent_at: HashMap<u16, u64, BuildHasherDefault<IdHasher>>,
    /// Publishers: where in its pacing period this publisher starts (spreads publishers).
    pace_offset: f64,
    publishing_done: bool,
    /// The session refused the last publish: the broker's receive maximum (below the
    /// window) or the store is full. Only an acknowledgement can change that, so the
    /// connection waits for one instead of retrying at once, which would spin.
    session_full: bool,
    /// The write buffer had no room for the next templated publish: only the socket taking
    /// bytes can change that, so the connection waits for it to be writable.
    write_full: bool,
    signalled_done: bool,
    /// Counts not yet added to the live counters.
    d_sent: u64,
    d_acked: u64,
    d_received: u64,
    d_unique: u64,
}

impl<'c> Driver<'c> {
    fn new(
        ctx: &'c Ctx,
        io: Io,
        role: Role,
        started_ns: u64,
        permit: Option<OwnedSemaphorePermit>,
        window: usize,
    ) -> Self {
        let pace_offset = match &role {
            Role::Publisher(p) => f64::from(p.id) / ctx.publishers.max(1) as f64,
            _ => 0.0,
        };
        let reader = match &role {
            Role::Subscriber(p) => Qos0Reader::new(ctx.version, &p.filter, MAX_PACKET),
            _ => None,
        };
        Driver {
            ctx,
            io,
            role,
            stage: Stage::Connecting,
            started_ns,
            permit,
            phase: ctx.phase.clone(),
            payload: payload::buffer(ctx.payload),
            template: None,
            reader,
            session_seen_ns: 0,
            window: window.max(1),
            sent_at: HashMap::default(),
            pace_offset,
            publishing_done: false,
            session_full: false,
            write_full: false,
            signalled_done: false,
            d_sent: 0,
            d_acked: 0,
            d_received: 0,
            d_unique: 0,
        }
    }

    async fn run<S: Session>(mut self, s: &mut S, result: &mut TaskResult) {
        let outcome = self.main_loop(s, result).await;
        self.permit.take();
        self.flush_live();
        if let Err(e) = outcome {
            result.conn.failed_to_connect = result.conn.connect_ns.is_none();
            if result.conn.failed_to_connect {
                self.ctx.live.signal(&self.ctx.live.failed);
            }
            result.conn.error = Some(e);
        } else {
            // A clean end: say goodbye so that the broker does not publish a will or log an
            // error, but do not wait long for a broker that stopped reading.
            let now = self.ctx.clock.state_now();
            if s.disconnect(now).is_ok() {
                let tail = self.io.write_tail();
                let n = s.poll_transmit(now, tail);
                self.io.wrote(n);
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.drain_writes()).await;
            }
        }
        self.signal_done();
    }

    async fn drain_writes(&mut self) {
        while self.io.pending_write() {
            match self.io.flush() {
                Ok(true) => {}
                Ok(false) => {
                    if self.io.stream.writable().await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn signal_done(&mut self) {
        if self.signalled_done {
            return;
        }
        self.signalled_done = true;
        let live = &self.ctx.live;
        match self.role {
            Role::Publisher(_) => live.signal(&live.publishers_done),
            Role::Subscriber(_) => live.signal(&live.subscribers_done),
            Role::Idle(_) => {}
        }
    }

    fn flush_live(&mut self) {
        let live = &self.ctx.live;
        Live::add(&live.sent, std::mem::take(&mut self.d_sent));
        Live::add(&live.acked, std::mem::take(&mut self.d_acked));
        Live::add(&live.received, std::mem::take(&mut self.d_received));
        Live::add(&live.unique, std::mem::take(&mut self.d_unique));
    }

    /// Moves the session's queued bytes into the write buffer; whether any moved.
    fn stage_writes<S: Session>(&mut self, s: &mut S, now: Instant) -> bool {
        let mut moved = false;
        while s.pending_transmit() > 0 {
            let tail = self.io.write_tail();
            if tail.is_empty() {
                break;
            }
            let n = s.poll_transmit(now, tail);
            self.io.wrote(n);
            if n == 0 {
                break;
            }
            moved = true;
        }
        moved
    }

    async fn main_loop<S: Session>(
        &mut self,
        s: &mut S,
        result: &mut TaskResult,
    ) -> Result<(), String> {
        let now = self.ctx.clock.state_now();
        s.connect(now).map_err(|e| format!("connect: {e}"))?;
        if self.ctx.relay {
            // The relay cannot answer: drop the CONNECT and accept it locally.
            let connack = Packet::ConnAck(ConnAck::default());
            self.simulate_broker(s, now, &connack, result)?;
        }
        loop {
            let now_ns = self.ctx.clock.elapsed_ns();
            let now = Instant::from_micros(now_ns / 1_000);
            let phase = *self.phase.borrow_and_update();
            if phase == Phase::Stop {
                return Ok(());
            }
            if s.poll_timeout().is_some_and(|t| t <= now) {
                match s.handle_timeout(now) {
                    Ok(()) | Err(ClientError::BufferFull) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            let mut progress = false;
            if phase == Phase::Run && self.stage == Stage::Ready && !self.publishing_done {
                if let Role::Publisher(plan) = &mut self.role {
                    // Taken out for the call (a move, not a copy of the topic per loop).
                    let plan = std::mem::take(plan);
                    let produced = self.produce(s, &plan, now, now_ns, result);
                    self.role = Role::Publisher(plan);
                    progress |= produced?;
                }
            }
            progress |= self.stage_writes(s, now);
            progress |= self.io.flush().map_err(|e| describe(&e))?;
            progress |= self.io.fill().map_err(|e| describe(&e))? > 0;
            progress |= self.consume(s, now, result)?;
            if let (Role::Subscriber(plan), Some(t)) = (&self.role, result.subscriber.as_mut()) {
                report_progress(self.ctx, t, plan.flow_slot);
            }
            while let Some(event) = s.poll_event() {
                self.on_event(s, Ev::of(&event), now, now_ns, result)?;
            }
            if s.state() == ConnectionState::Closing {
                return Err("connection closed by the session".into());
            }
            self.flush_live();
            if self.finished(s) {
                return Ok(());
            }
            if progress {
                // try_read/try_write bypass tokio's cooperative budget; spend it here so
                // that a connection that always has work cannot starve its neighbours.
                tokio::task::consume_budget().await;
                continue;
            }
            let sent = result.publisher.as_ref().map_or(0, |t| t.sent);
            self.wait(s, now_ns, phase, sent).await?;
        }
    }

    /// Whether this connection's work is over before the run stops.
    fn finished<S: Session>(&mut self, s: &S) -> bool {
        match self.role {
            Role::Publisher(_) => {
                self.publishing_done
                    && s.inflight() == 0
                    && s.pending_transmit() == 0
                    && !self.io.pending_write()
            }
            _ => false,
        }
    }

    async fn wait<S: Session>(
        &mut self,
        s: &S,
        now_ns: u64,
        phase: Phase,
        sent: u64,
    ) -> Result<(), String> {
        let ctx = self.ctx;
        let mut deadline = s
            .poll_timeout()
            .map(|t| t.as_micros().saturating_mul(1_000))
            .unwrap_or(u64::MAX);
        let mut flow = None;
        if phase == Phase::Run && self.stage == Stage::Ready && !self.publishing_done {
            if let Role::Publisher(plan) = &self.role {
                flow = ctx
                    .flows
                    .get(plan.id as usize)
                    .filter(|f| sent.saturating_sub(f.slowest()) >= self.window as u64);
                // Held back by the window or by the socket, a paced publisher is behind
                // schedule: its next due time has passed, and waking for it would spin.
                // The acknowledgement, the subscriber or the socket wakes it instead.
                let blocked = flow.is_some()
                    || (ctx.qos != QoS::AtMostOnce && s.inflight() >= self.window)
                    || self.session_full
                    || self.write_full
                    || s.pending_transmit() > 0;
                deadline = deadline.min(if blocked {
                    ctx.end_ns.load(Ordering::Acquire)
                } else {
                    self.next_publish_ns(now_ns, sent)
                });
            }
        }
        let interest = if self.io.pending_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if deadline <= now_ns {
            return Ok(());
        }
        let sleep_for = Duration::from_nanos(deadline - now_ns);
        let stream = &self.io.stream;
        let phase_rx = &mut self.phase;
        tokio::select! {
            ready = stream.ready(interest) => { ready.map_err(|e| describe(&e))?; }
            _ = tokio::time::sleep(sleep_for), if deadline != u64::MAX => {}
            _ = woken(flow) => {}
            changed = phase_rx.changed() => {
                changed.map_err(|_| "the run's coordinator is gone".to_string())?;
            }
        }
        Ok(())
    }

    /// When this publisher may publish next: now unless paced, or at its end.
    fn next_publish_ns(&self, now_ns: u64, sent: u64) -> u64 {
        let end = self.ctx.end_ns.load(Ordering::Acquire);
        let Some(rate) = self.ctx.rate_per_publisher else {
            // Unpaced and not held back (the caller checked): publish now. Waiting for an
            // event here would miss a window that opened after the last attempt.
            return now_ns;
        };
        let start = self.ctx.start_ns.load(Ordering::Acquire);
        // Message k (from 0) is due at start + (k - offset) / rate.
        let due = start as f64 + ((sent as f64 - self.pace_offset).max(0.0) / rate) * 1e9;
        (due as u64).max(now_ns).min(end)
    }

    fn produce<S: Session>(
        &mut self,
        s: &mut S,
        plan: &PubPlan,
        now: Instant,
        now_ns: u64,
        result: &mut TaskResult,
    ) -> Result<bool, String> {
        let ctx = self.ctx;
        let tally = result.publisher.get_or_insert_with(PubTally::default);
        let end = ctx.end_ns.load(Ordering::Acquire);
        let count = ctx.count.unwrap_or(u64::MAX);
        if now_ns >= end || tally.sent >= count {
            self.publishing_done = true;
            return Ok(false);
        }
        let mut allowed = (count - tally.sent).min(MAX_BATCH);
        if let Some(rate) = ctx.rate_per_publisher {
            let start = ctx.start_ns.load(Ordering::Acquire);
            let elapsed_s = now_ns.saturating_sub(start) as f64 / 1e9;
            let due = (elapsed_s * rate + self.pace_offset).floor() as u64 + 1;
            allowed = allowed.min(due.saturating_sub(tally.sent));
        }
        if let Some(flow) = ctx.flows.get(plan.id as usize) {
            let outstanding = tally.sent.saturating_sub(flow.slowest());
            allowed = allowed.min((self.window as u64).saturating_sub(outstanding));
        }
        self.session_full = false;
        self.write_full = false;
        let window = ctx.window();
        let stamp_ns = ctx.clock.stamp_of(now_ns);
        let qos = ctx.qos;
        let mut published = 0;
        // The template bypasses the session, so it may only append once the session's own
        // bytes (a PINGREQ) are out of its queue, or they would be reordered.
        if let Some(template) = self.template.as_ref().filter(|_| s.pending_transmit() == 0) {
            let len = template.len();
            let tail = self.io.write_tail();
            for out in tail.chunks_exact_mut(len).take(allowed as usize) {
                let stamp = Stamp {
                    sent_ns: stamp_ns,
                    publisher: plan.id,
                    seq: u32::try_from(tally.sent + published).unwrap_or(u32::MAX),
                };
                template.write(&stamp, out);
                published += 1;
            }
            self.io.wrote(published as usize * len);
            self.write_full = published < allowed;
        }
        let mut acked_ids = false;
        while published < allowed && self.template.is_none() {
            if qos != QoS::AtMostOnce && s.inflight() >= self.window {
                break;
            }
            let seq = u32::try_from(tally.sent + published).unwrap_or(u32::MAX);
            Stamp {
                sent_ns: stamp_ns,
                publisher: plan.id,
                seq,
            }
            .write(&mut self.payload);
            match s.publish(now, &plan.topic, &self.payload, qos) {
                Ok(id) => {
                    published += 1;
                    if let Some(id) = id {
                        self.sent_at.insert(id.get(), now_ns);
                        acked_ids = true;
                    } else if qos == QoS::AtMostOnce {
                        // The session took one: the rest of this topic and size at QoS 0
                        // is the same packet.
                        self.template =
                            PublishTemplate::new(ctx.version, &plan.topic, &self.payload);
                    }
                }
                Err(ClientError::InflightFull | ClientError::StoreFull) => {
                    self.session_full = true;
                    break;
                }
                Err(ClientError::BufferFull) => {
                    // Move the queued packets to the write buffer; if that has no room
                    // either, the socket is the bottleneck: write first.
                    let tail = self.io.write_tail();
                    let n = s.poll_transmit(now, tail);
                    self.io.wrote(n);
                    if n == 0 {
                        break;
                    }
                }
                Err(e) => return Err(format!("publish: {e}")),
            }
        }
        if published > 0 {
            // One loop iteration is one instant: every message of the batch was sent now.
            tally.sent += published;
            tally.first_ns.get_or_insert(now_ns);
            tally.last_ns = Some(now_ns);
            if window.contains(now_ns) {
                tally.sent_in_window += published;
            }
            if acked_ids {
                tally.max_inflight = tally.max_inflight.max(s.inflight());
            }
        }
        self.d_sent += published;
        if tally.sent >= count {
            self.publishing_done = true;
        }
        Ok(published > 0)
    }

    /// Feeds every complete packet read so far to the session, or to the QoS 0 fast path.
    fn consume<S: Session>(
        &mut self,
        s: &mut S,
        now: Instant,
        result: &mut TaskResult,
    ) -> Result<bool, String> {
        // Out of `self` for the call, which borrows `self` mutably throughout.
        let reader = self.reader.take();
        let fast = reader.as_ref().filter(|_| self.stage == Stage::Ready);
        let consumed = self.consume_with(s, now, result, fast);
        self.reader = reader;
        consumed
    }

    fn consume_with<S: Session>(
        &mut self,
        s: &mut S,
        now: Instant,
        result: &mut TaskResult,
        fast: Option<&Qos0Reader>,
    ) -> Result<bool, String> {
        let mut progress = false;
        let recv_ns = self.ctx.clock.elapsed_ns();
        let window = self.ctx.window();
        let mut session_due = recv_ns.saturating_sub(self.session_seen_ns) >= SESSION_TOUCH_NS;
        loop {
            let input = &self.io.rbuf[self.io.rstart..self.io.rend];
            if input.is_empty() {
                break;
            }
            if let Some(reader) = fast.filter(|_| !session_due) {
                match reader.read(input) {
                    Framed::Message { payload, len } => {
                        progress = true;
                        let t = result.subscriber.as_mut();
                        let (received, unique) = (&mut self.d_received, &mut self.d_unique);
                        if count_message(self.ctx, t, received, unique, payload, recv_ns, window) {
                            self.signal_done();
                        }
                        self.io.rstart += len;
                        continue;
                    }
                    Framed::Incomplete => break,
                    Framed::Session => {}
                }
            }
            let received = match s.handle_bytes(now, input) {
                Ok(r) => r,
                Err(ClientError::BufferFull) => {
                    // Acknowledgements back up: stage them, and write before reading on if
                    // the write buffer is full too.
                    let tail = &mut self.io.wbuf[self.io.wend..];
                    let n = s.poll_transmit(now, tail);
                    self.io.wend += n;
                    if n == 0 {
                        self.io.write_room();
                        if self.io.wbuf.len() == self.io.wend {
                            break;
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            if received.needs_more() {
                break;
            }
            progress = true;
            session_due = false;
            self.session_seen_ns = recv_ns;
            let consumed = received.consumed;
            if let Some(event) = received.event {
                match event {
                    // Handled inline: the payload borrows the read buffer.
                    ClientEvent::Message(publish) => {
                        let t = result.subscriber.as_mut();
                        let (received, unique) = (&mut self.d_received, &mut self.d_unique);
                        let payload = publish.payload;
                        if count_message(self.ctx, t, received, unique, payload, recv_ns, window) {
                            self.signal_done();
                        }
                    }
                    other => {
                        let event = Ev::of(&other);
                        self.io.rstart += consumed;
                        self.on_event(s, event, now, recv_ns, result)?;
                        continue;
                    }
                }
            }
            self.io.rstart += consumed;
        }
        Ok(progress)
    }

    /// Through the relay: drops what the session queued (its CONNECT or SUBSCRIBE) and
    /// feeds it the broker's answer, as if it had arrived.
    fn simulate_broker<S: Session>(
        &mut self,
        s: &mut S,
        now: Instant,
        answer: &Packet<'_>,
        result: &mut TaskResult,
    ) -> Result<(), String> {
        let mut scratch = [0u8; 512];
        while s.poll_transmit(now, &mut scratch) > 0 {}
        let mut wire = [0u8; 64];
        let len = answer
            .encode(self.ctx.version, &mut wire)
            .map_err(|e| e.to_string())?;
        let received = s
            .handle_bytes(now, &wire[..len])
            .map_err(|e| e.to_string())?;
        if let Some(event) = received.event {
            let now_ns = self.ctx.clock.elapsed_ns();
            self.on_event(s, Ev::of(&event), now, now_ns, result)?;
        }
        Ok(())
    }

    /// The connection is set up: its attempt slot frees, and its latency is recorded.
    fn established(&mut self, now_ns: u64, result: &mut TaskResult) {
        self.permit.take();
        result.conn.connect_ns = Some(now_ns.saturating_sub(self.started_ns));
        result.conn.established_at_ns = Some(now_ns);
        Live::add(&self.ctx.live.connected, 1);
    }

    fn on_event<S: Session>(
        &mut self,
        s: &mut S,
        event: Ev,
        now: Instant,
        now_ns: u64,
        result: &mut TaskResult,
    ) -> Result<(), String> {
        let live = &self.ctx.live;
        match event {
            Ev::Connected => {
                let filter = match &self.role {
                    Role::Subscriber(plan) => Some(plan.filter.clone()),
                    Role::Idle(filter) => filter.clone(),
                    Role::Publisher(_) => None,
                };
                // `conn --subscribe` measures accept + subscribe: established at SUBACK.
                if !matches!(self.role, Role::Idle(Some(_))) {
                    self.established(now_ns, result);
                }
                if let Some(filter) = filter {
                    let filters = [SubscribeFilter {
                        filter: &filter,
                        options: SubscriptionOptions::qos(self.ctx.sub_qos),
                    }];
                    let id = s
                        .subscribe(now, &filters)
                        .map_err(|e| format!("subscribe: {e}"))?;
                    self.stage = Stage::Subscribing;
                    if self.ctx.relay {
                        let granted = [ReasonCode::Success];
                        let suback = Packet::SubAck(SubAck {
                            packet_id: id,
                            properties: Properties::default(),
                            reason_codes: List::new(&granted),
                        });
                        self.simulate_broker(s, now, &suback, result)?;
                    }
                } else {
                    self.stage = Stage::Ready;
                    live.signal(&live.ready);
                }
            }
            Ev::Refused(code) => return Err(format!("refused: {code:?}")),
            Ev::Subscribed(Some(code)) => return Err(format!("subscription refused: {code:?}")),
            Ev::Subscribed(None) => {
                if matches!(self.role, Role::Idle(Some(_))) {
                    self.established(now_ns, result);
                }
                self.stage = Stage::Ready;
                live.signal(&live.ready);
            }
            Ev::Published(id) => {
                self.d_acked += 1;
                if let Some(t) = result.publisher.as_mut() {
                    t.acked += 1;
                    if let Some(sent) = self.sent_at.remove(&id) {
                        if self.ctx.window().contains(sent) {
                            t.ack_latency
                                .get_or_insert_with(histogram)
                                .saturating_record(now_ns.saturating_sub(sent).max(1));
                        }
                    }
                }
            }
            Ev::PublishFailed(id) => {
                self.sent_at.remove(&id);
                if let Some(t) = result.publisher.as_mut() {
                    t.refused += 1;
                }
            }
            Ev::SessionLost(id) => {
                self.sent_at.remove(&id);
                if let Some(t) = result.publisher.as_mut() {
                    t.session_lost += 1;
                }
            }
            Ev::Disconnected(reason) => {
                return Err(format!("disconnected by the broker: {reason:?}"))
            }
            Ev::Other => {}
        }
        Ok(())
    }
}

/// Counts one message received at `recv_ns` into a subscriber's tally and the live
/// counters; whether the subscriber now has the distinct messages it waits for (`sub -n`).
fn count_message(
    ctx: &Ctx,
    tally: Option<&mut SubTally>,
    received: &mut u64,
    unique: &mut u64,
    payload: &[u8],
    recv_ns: u64,
    window: Window,
) -> bool {
    *received += 1;
    let Some(t) = tally else {
        return false;
    };
    if !t.record(payload, recv_ns, &ctx.clock, window) {
        return false;
    }
    *unique += 1;
    ctx.sub_count == Some(t.unique)
}

/// Waits for a subscriber of `flow` to advance; for ever without one.
pub(crate) async fn woken(flow: Option<&Flow>) {
    match flow {
        Some(f) => f.wake.notified().await,
        None => std::future::pending().await,
    }
}

/// Hashes a packet identifier with one multiplication: SipHash's flood resistance buys
/// nothing for keys this process makes, and costs more than the rest of an acknowledgement.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u16(&mut self, id: u16) {
        // Fibonacci hashing: the high bits, which the table's control bytes use, vary.
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// What the driver needs of a [`ClientEvent`] other than a message, without its borrow of
/// the read buffer.
#[derive(Debug, Clone, Copy)]
enum Ev {
    Connected,
    Refused(ReasonCode),
    /// The first failure code of the SUBACK, if any.
    Subscribed(Option<ReasonCode>),
    Published(u16),
    PublishFailed(u16),
    SessionLost(u16),
    Disconnected(ReasonCode),
    Other,
}

impl Ev {
    fn of(event: &ClientEvent<'_>) -> Ev {
        match event {
            ClientEvent::Connected { .. } => Ev::Connected,
            ClientEvent::Refused(code) => Ev::Refused(*code),
            ClientEvent::Subscribed { reason_codes, .. } => {
                Ev::Subscribed(reason_codes.iter().find(|c| c.is_error()))
            }
            ClientEvent::Published { packet_id } => Ev::Published(packet_id.get()),
            ClientEvent::PublishFailed { packet_id, .. } => Ev::PublishFailed(packet_id.get()),
            ClientEvent::SessionLost { packet_id } => Ev::SessionLost(packet_id.get()),
            ClientEvent::Disconnected { reason, .. } => Ev::Disconnected(*reason),
            ClientEvent::Message(_) | ClientEvent::Unsubscribed { .. } | ClientEvent::Pong => {
                Ev::Other
            }
        }
    }
}
