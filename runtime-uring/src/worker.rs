//! One worker thread: a tokio-uring runtime driving one broker shard.
//!
//! The worker moves bytes and time; every protocol decision is the shard's. Per connection
//! there is a reader task (read, hand the bytes to the shard) and, only while the shard has
//! bytes for it, a writer task (writes everything the shard has in one call, and ends when
//! nothing is left, so an idle connection holds no writer and no write buffer). Everything
//! on a worker is single-threaded: the shard sits in a `RefCell`, and no lock is taken per
//! message. A quiet plain-socket connection has no reader either: it waits in the worker's
//! [`IdleSet`] as a readiness poll, and gets its reader back when bytes arrive.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use petrel_codec::{Decoded, Decoder, Packet, ProtocolVersion};
use petrel_state::broker::{
    owner_shard, Broker, BrokerConfig, ConnectionId, ShardMessage, Storage, StoredState,
};
use petrel_state::message::Message;
use petrel_state::Instant;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::hooks::RuntimeHooks;
use crate::idle::IdleSet;
use crate::limits::Ticket;
use crate::persistence::Durable;
use crate::shared::{Shared, WorkerMessage, WorkerStats};
use crate::sys::SysReporter;
use crate::transport::{Endpoint, Stream};

/// What the reader and writer of one connection share.
struct ConnIo {
    stream: Stream,
    /// The writer drained bytes, so a reader held back by backpressure may go on.
    readable: Notify,
    /// The shard closed the connection: the writer flushes what is left and shuts it.
    closing: Cell<bool>,
    /// A writer task is running.
    writing: Cell<bool>,
    /// The connection's place in the admission counts, given back when the last of its
    /// tasks lets go of this.
    _ticket: Option<Ticket>,
}

/// A connection not yet opened on a shard: boxed, so that the connection's task, which
/// lives as long as the connection, does not keep room for it.
struct Accepted {
    stream: Stream,
    /// Bytes already read (by the worker that handed the connection over).
    received: Vec<u8>,
    remote: String,
    /// Already on the worker that owns its session.
    settled: bool,
    ticket: Option<Ticket>,
}

impl Accepted {
    /// A connection just accepted (or through its handshakes) on this worker.
    fn new(stream: Stream, remote: String, ticket: Ticket) -> Box<Accepted> {
        Box::new(Accepted {
            stream,
            received: Vec::new(),
            remote,
            settled: false,
            ticket: Some(ticket),
        })
    }
}

/// The smallest read buffer, posted while a connection is idle: an idle connection holds
/// this much, not a full-size buffer (tokio-uring 0.5 has no provided-buffer rings).
const MIN_READ: usize = 64;
/// Rounds of hand-overs between the shards at start-up, before any client is served: the
/// longest chain a restored state starts is a shared subscription's (member's shard → group
/// owner → every other shard).
const RESTORE_ROUNDS: usize = 2;

/// Accepts each worker keeps posted per TCP listener. More than one: in a burst of new
/// connections, every completion of a scheduling round is an accepted socket, rather than
/// one per round with the next accept posted only after it.
const ACCEPTS_IN_FLIGHT: usize = 4;
/// The largest read buffer, reached by doubling while reads keep filling it.
const MAX_READ: usize = 64 * 1024;
/// The most inbox hand-overs from other shards handled as one input.
const MAX_MERGED_HANDOVERS: usize = 64;
/// How long a graceful stop waits for the shards to hand each other what they still have.
/// A hand-over takes an inbox round trip, so this is only reached by a worker that hangs.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

pub(crate) struct Worker {
    index: usize,
    shared: Arc<Shared>,
    broker: RefCell<Broker>,
    conns: RefCell<HashMap<ConnectionId, Rc<ConnIo>>>,
    /// Quiet connections, without a reader task or a read buffer until they are readable.
    idle: IdleSet<(ConnectionId, Rc<ConnIo>)>,
    timer: Notify,
    /// The deadline the timer task sleeps until (`None`: no deadline).
    timer_armed: Cell<Option<Instant>>,
    shutting_down: Cell<bool>,
    /// A graceful stop has closed every connection: the shard takes no more input of its
    /// own (bytes, lost connections, timers), only what other shards hand over.
    draining: Cell<bool>,
    /// Which store batches are durable here and on the shards they forwarded to.
    durable: RefCell<Durable>,
    /// Per shard: the shards this one passed acknowledged messages on to while handling
    /// what that shard handed over, since that shard's last fence. The fence is relayed
    /// to them, so that what they stored counts for the batch it fences.
    onward: RefCell<Vec<Vec<usize>>>,
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        shared: Arc<Shared>,
        storage: Box<dyn Storage + Send>,
        restored: StoredState,
        durable: Durable,
    ) -> Rc<Worker> {
        let config = BrokerConfig {
            server: shared.server_config.clone(),
            shard_index: index as u16,
            shard_count: shared.workers() as u16,
            max_retained: shared.config.limits.max_retained,
            limits: crate::limits::client_limits(&shared.config.limits),
            ..BrokerConfig::default()
        };
        let hooks = RuntimeHooks::new(shared.clone(), index);
        let mut broker = Broker::new(config, Box::new(hooks), storage);
        if let Some(pipeline) = crate::bridge::kafka::pipeline(&shared.kafka, index) {
            broker.set_pipeline(Box::new(pipeline));
        }
        broker.restore(shared.now(), restored);
        Rc::new(Worker {
            index,
            shared,
            broker: RefCell::new(broker),
            conns: RefCell::new(HashMap::new()),
            idle: IdleSet::new(),
            timer: Notify::new(),
            timer_armed: Cell::new(None),
            shutting_down: Cell::new(false),
            draining: Cell::new(false),
            durable: RefCell::new(durable),
            onward: RefCell::new(Vec::new()),
        })
    }

    fn stats(&self) -> &WorkerStats {
        &self.shared.stats[self.index]
    }

    fn now(&self) -> Instant {
        self.shared.now()
    }

    /// Runs the worker until shutdown: its listeners, its timer, its inbox.
    pub(crate) async fn run(
        self: Rc<Self>,
        tcp: Vec<(std::net::TcpListener, Endpoint)>,
        unix: Vec<std::os::unix::net::UnixListener>,
        mut inbox: UnboundedReceiver<WorkerMessage>,
        restored: Arc<std::sync::Barrier>,
    ) {
        // The subscriptions every shard restored reach the other shards before any client
        // is served: a publish must not miss a restored subscriber that lives elsewhere.
        // Two rounds, because a restored shared subscription takes two hops: its session's
        // shard tells the group's owner, and only then does the owner announce its interest
        // to the publishers' shards. With one round, a publisher served at once after a
        // restart could be acknowledged for messages its shard did not forward to the group.
        self.after_input();
        let mut early = None;
        for _ in 0..RESTORE_ROUNDS {
            restored.wait();
            while early.is_none() {
                match inbox.try_recv() {
                    Ok(WorkerMessage::Shard { from, messages }) => {
                        self.shard_messages(&[from], messages);
                        self.shared.handed_over(1);
                    }
                    Ok(other) => early = Some(other),
                    Err(_) => break,
                }
            }
        }
        for (listener, endpoint) in tcp {
            let listener = Rc::new(tokio_uring::net::TcpListener::from_std(listener));
            for _ in 0..ACCEPTS_IN_FLIGHT {
                tokio_uring::spawn(self.clone().accept_tcp(listener.clone(), endpoint.clone()));
            }
        }
        for listener in unix {
            tokio_uring::spawn(self.clone().accept_unix(listener));
        }
        tokio_uring::spawn(self.clone().timer_loop());
        tokio_uring::spawn(self.clone().idle_loop());
        if self.durable.borrow().backlog().is_some() {
            tokio_uring::spawn(self.clone().durability_watchdog());
        }
        if self.shared.config.sys.interval > 0 {
            tokio_uring::spawn(self.clone().sys_loop());
        }
        self.inbox_loop(early, inbox).await;
    }

    async fn accept_tcp(
        self: Rc<Self>,
        listener: Rc<tokio_uring::net::TcpListener>,
        endpoint: Endpoint,
    ) {
        let plain = endpoint.tls.is_none() && endpoint.websocket.is_none();
        loop {
            match listener.accept().await {
                Ok((stream, remote)) => {
                    if self.shutting_down.get() {
                        return;
                    }
                    // Refused before a byte is read: dropping the stream closes it.
                    let Some(ticket) = Ticket::admit(&self.shared, Some(remote)) else {
                        continue;
                    };
                    let remote = remote.to_string();
                    if plain {
                        tokio_uring::spawn(self.clone().connection(Accepted::new(
                            Stream::Tcp(stream),
                            remote,
                            ticket,
                        )));
                    } else {
                        tokio_uring::spawn(self.clone().establish(
                            stream,
                            endpoint.clone(),
                            remote,
                            ticket,
                        ));
                    }
                }
                Err(e) => {
                    warn!(worker = self.index, "accept failed: {e}");
                    // Out of descriptors, most likely: give the others a moment to close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    async fn accept_unix(self: Rc<Self>, listener: std::os::unix::net::UnixListener) {
        let listener = match listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.to_path_buf()))
        {
            // tokio-uring only binds by path; the std listener keeps the socket alive.
            Some(path) => {
                let _ = std::fs::remove_file(&path);
                match tokio_uring::net::UnixListener::bind(&path) {
                    Ok(l) => l,
                    Err(e) => {
                        warn!("unix listener {}: {e}", path.display());
                        return;
                    }
                }
            }
            None => return,
        };
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    if self.shutting_down.get() {
                        return;
                    }
                    let Some(ticket) = Ticket::admit(&self.shared, None) else {
                        continue;
                    };
                    tokio_uring::spawn(self.clone().connection(Accepted::new(
                        Stream::Unix(stream),
                        String::from("unix"),
                        ticket,
                    )));
                }
                Err(e) => {
                    warn!("unix accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Runs a listener's TLS and WebSocket handshakes, within the time a client has to
    /// send CONNECT, then serves the connection. The handshake is boxed: the task lives as
    /// long as the connection and should not keep room for it.
    fn establish(
        self: Rc<Self>,
        tcp: tokio_uring::net::TcpStream,
        endpoint: Endpoint,
        remote: String,
        ticket: Ticket,
    ) -> impl std::future::Future<Output = ()> {
        // Not an async fn: its arguments would stay in the task for the connection's life.
        let handshake = Box::pin(async move {
            let limit = self.shared.server_config.connect_timeout;
            match tokio::time::timeout(limit, endpoint.establish(tcp)).await {
                Ok(Ok(stream)) => Some((self, Accepted::new(stream, remote, ticket))),
                // Info, not debug: a refused client certificate is the operator's business.
                Ok(Err(e)) => {
                    info!(remote, "TLS/WebSocket handshake failed: {e}");
                    None
                }
                Err(_) => {
                    debug!(remote, "handshake timed out");
                    None
                }
            }
        });
        async move {
            if let Some((worker, accepted)) = handshake.await {
                worker.connection(accepted).await;
            }
        }
    }

    /// Serves an accepted connection. The task's future lives as long as the connection, so
    /// it holds only the read loop's state: what setting the connection up needs (the
    /// first packet's read and its timer, the remote address) is boxed and freed before.
    async fn connection(self: Rc<Self>, accepted: Box<Accepted>) {
        let Some((id, io)) = Box::pin(self.clone().settle(accepted)).await else {
            return;
        };
        self.read_loop(id, io).await;
    }

    /// Reads a connection's first packet, and if it is a CONNECT for a session another
    /// worker owns, hands the connection there (`None`); otherwise opens it on this shard.
    async fn settle(self: Rc<Self>, accepted: Box<Accepted>) -> Option<(ConnectionId, Rc<ConnIo>)> {
        let Accepted {
            stream,
            mut received,
            remote,
            settled,
            ticket,
        } = *accepted;
        if !settled && self.shared.workers() > 1 {
            // The shard's connect timeout does not run before the shard sees the
            // connection, so this read has its own.
            let limit = self.shared.server_config.connect_timeout;
            let first = tokio::time::timeout(
                limit,
                first_packet(&stream, received, self.shared.workers()),
            )
            .await
            .unwrap_or(None);
            match first {
                Some((bytes, Some(owner))) if owner != self.index => {
                    match stream.into_handover() {
                        Ok(stream) => {
                            self.shared.send(
                                owner,
                                WorkerMessage::Connection {
                                    stream,
                                    ticket,
                                    received: bytes,
                                    remote,
                                },
                            );
                        }
                        Err(e) => warn!("handing a connection over failed: {e}"),
                    }
                    return None;
                }
                Some((bytes, _)) => received = bytes,
                None => {
                    // Shut down, not just drop: a read still posted would keep the socket
                    // open until the peer sends something.
                    stream.shutdown();
                    return None;
                }
            }
        }
        let now = self.now();
        let identity = stream.identity();
        let id = self
            .broker
            .borrow_mut()
            .open_with_identity(now, Some(&remote), identity);
        let io = Rc::new(ConnIo {
            stream,
            readable: Notify::new(),
            closing: Cell::new(false),
            writing: Cell::new(false),
            _ticket: ticket,
        });
        self.conns.borrow_mut().insert(id, io.clone());
        WorkerStats::add(&self.stats().connections_open, 1);
        if !received.is_empty() {
            self.input(id, &received);
        }
        Some((id, io))
    }

    /// Keeps one read posted on the connection and hands what arrives to the shard, until
    /// the connection ends or goes quiet: a quiet plain socket is parked in the worker's
    /// [`IdleSet`] and this task ends.
    async fn read_loop(self: Rc<Self>, id: ConnectionId, io: Rc<ConnIo>) {
        let mut buf = Vec::with_capacity(MIN_READ);
        // The last read did not fill even the smallest buffer: the peer has nothing more
        // to say for now. A busy peer's reads keep a larger buffer and never park, so
        // io_uring's batched reads are kept for them.
        let mut quiet = false;
        loop {
            if io.closing.get() {
                break;
            }
            if !self.broker.borrow().wants_read(id) {
                io.readable.notified().await;
                continue;
            }
            if quiet {
                if let Some(fd) = io.stream.pollable_fd() {
                    self.idle.park(fd, (id, io));
                    return;
                }
            }
            let (result, mut filled) = io.stream.read(buf).await;
            match result {
                Ok(0) | Err(_) => {
                    self.lost(id);
                    break;
                }
                Ok(n) => {
                    self.input(id, &filled[..n]);
                    // Grow while reads fill the buffer; drop back to the small one when
                    // the connection goes quiet, so idle connections hold little.
                    let capacity = filled.capacity();
                    let next = if n == capacity {
                        (capacity * 2).min(MAX_READ)
                    } else {
                        n.next_power_of_two().clamp(MIN_READ, MAX_READ)
                    };
                    if next != capacity {
                        filled = Vec::with_capacity(next);
                    }
                    quiet = next == MIN_READ;
                    if next == MIN_READ {
                        self.broker.borrow_mut().release_spare_capacity(id);
                    }
                    filled.clear();
                    buf = filled;
                }
            }
        }
    }

    /// Gives parked connections their reader back as their sockets become readable.
    async fn idle_loop(self: Rc<Self>) {
        loop {
            let (id, io) = self.idle.next().await;
            // A connection the shard closed meanwhile is its writer's to finish: the shut
            // down socket is what woke the poll.
            if !io.closing.get() {
                tokio_uring::spawn(self.clone().read_loop(id, io));
            }
        }
    }

    fn input(self: &Rc<Self>, id: ConnectionId, bytes: &[u8]) {
        if self.draining.get() {
            return;
        }
        WorkerStats::add(&self.stats().bytes_received, bytes.len() as u64);
        if tracing::enabled!(tracing::Level::DEBUG) {
            trace_packets(id, bytes, "in");
        }
        let now = self.now();
        self.broker.borrow_mut().handle_bytes(now, id, bytes);
        self.after_input();
    }

    /// The connection ended (its will may be published). Not while draining: what that
    /// would hand other shards could come after they stopped.
    fn lost(self: &Rc<Self>, id: ConnectionId) {
        if self.draining.get() {
            return;
        }
        let now = self.now();
        self.broker.borrow_mut().connection_lost(now, id);
        self.after_input();
    }

    /// Starts the connection's writer unless one is running already.
    fn wake_writer(self: &Rc<Self>, id: ConnectionId, io: &Rc<ConnIo>) {
        if !io.writing.replace(true) {
            tokio_uring::spawn(self.clone().writer(id, io.clone()));
        }
    }

    /// Writes what the shard has for the connection until it has nothing left; then ends,
    /// or closes the connection if the shard closed it.
    async fn writer(self: Rc<Self>, id: ConnectionId, io: Rc<ConnIo>) {
        // Filled by swapping with the connection's own transmit buffer: nothing is copied,
        // and the buffer goes away with this task.
        let mut buf = BytesMut::new();
        let mut yielded = false;
        loop {
            let now = self.now();
            let n = self.broker.borrow_mut().poll_transmit(now, id, &mut buf);
            self.after_input();
            if n == 0 {
                // Under load more is usually on its way (the reader or another shard is
                // about to route it): let those tasks run once before ending, rather than
                // ending and being spawned again for the next message.
                if !yielded && !io.closing.get() {
                    yielded = true;
                    tokio::task::yield_now().await;
                    continue;
                }
                break;
            }
            yielded = false;
            if tracing::enabled!(tracing::Level::DEBUG) {
                trace_packets(id, &buf, "out");
            }
            let (result, written) = io.stream.write_all(buf).await;
            buf = written;
            buf.clear();
            if result.is_err() {
                io.closing.set(true);
                self.lost(id);
                break;
            }
            WorkerStats::add(&self.stats().bytes_sent, n as u64);
            io.readable.notify_one();
        }
        io.writing.set(false);
        if !io.closing.get() {
            return;
        }
        // Everything the shard had for this connection is written: close it.
        io.stream.close().await;
        io.readable.notify_one();
        self.conns.borrow_mut().remove(&id);
        self.broker.borrow_mut().release(id);
        WorkerStats::sub(&self.stats().connections_open, 1);
    }

    /// Drains what the shard produced: connections to write or close, messages for other
    /// shards; and wakes the timer, whose deadline may have moved. Returns the shards it
    /// sent acknowledged (QoS 1/2) messages to.
    fn after_input(self: &Rc<Self>) -> Vec<usize> {
        let mut broker = self.broker.borrow_mut();
        let conns = self.conns.borrow();
        while let Some(id) = broker.poll_ready() {
            if let Some(io) = conns.get(&id) {
                self.wake_writer(id, io);
            }
        }
        while let Some(id) = broker.poll_closed() {
            if let Some(io) = conns.get(&id) {
                io.closing.set(true);
                self.wake_writer(id, io);
                io.readable.notify_one();
            } else {
                broker.release(id);
            }
        }
        // The shards whose store may hold what this input's acknowledgements wait for.
        let mut targets: Vec<usize> = Vec::new();
        // One hand-over per target shard, carrying all this input had for it.
        let mut batches: Vec<Vec<ShardMessage>> = Vec::new();
        while let Some((shard, message)) = broker.poll_shard_message() {
            let shard = usize::from(shard);
            if message.awaits_durability() && !targets.contains(&shard) {
                targets.push(shard);
            }
            if batches.len() <= shard {
                batches.resize_with(shard + 1, Vec::new);
            }
            batches[shard].push(message);
        }
        for (shard, messages) in batches.into_iter().enumerate() {
            if !messages.is_empty() {
                let message = WorkerMessage::Shard {
                    from: self.index,
                    messages,
                };
                self.shared.send(shard, message);
            }
        }
        for fence in self.durable.borrow_mut().forwarded(&targets) {
            let message = WorkerMessage::Fence {
                from: self.index,
                token: fence.token,
                linked: fence.linked,
                relayed: false,
            };
            self.shared.send(fence.target, message);
        }
        let deadline = broker.poll_timeout();
        drop(conns);
        drop(broker);
        // Only a deadline earlier than the one the timer sleeps for needs it awake; a later
        // one is found when it wakes (an early wake-up is harmless). Waking it after every
        // input would re-arm a tokio timer per read.
        let armed = self.timer_armed.get();
        if deadline.is_some_and(|d| armed.is_none_or(|a| d < a)) {
            self.timer.notify_one();
        }
        targets
    }

    async fn timer_loop(self: Rc<Self>) {
        loop {
            let deadline = self.broker.borrow().poll_timeout();
            self.timer_armed.set(deadline);
            match deadline {
                Some(at) => {
                    let when = self.shared.to_tokio(at);
                    tokio::select! {
                        _ = tokio::time::sleep_until(when) => {
                            if self.draining.get() {
                                return;
                            }
                            let now = self.now();
                            self.broker.borrow_mut().handle_timeout(now);
                            self.after_input();
                        }
                        _ = self.timer.notified() => {}
                    }
                }
                None => self.timer.notified().await,
            }
        }
    }

    /// With a store: once a second, if acknowledgements have waited on the same batch for
    /// two seconds or more, says what they wait for. A batch is durable within a commit
    /// window and an fsync or two; one that waits this long points at a missing link or
    /// fence answer, and the log then holds this worker's side of it.
    async fn durability_watchdog(self: Rc<Self>) {
        let mut stuck_on = None;
        let mut seconds = 0u32;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let durable = self.durable.borrow();
            let oldest = durable
                .backlog()
                .and_then(|(released, issued)| (issued > released).then_some(released + 1));
            seconds = if oldest.is_some() && oldest == stuck_on {
                seconds + 1
            } else {
                0
            };
            stuck_on = oldest;
            if seconds >= 2 {
                warn!(
                    worker = self.index,
                    seconds,
                    state = ?*durable,
                    "acknowledgements wait for a store batch that is not released"
                );
            }
        }
    }

    async fn sys_loop(self: Rc<Self>) {
        let interval = Duration::from_secs(self.shared.config.sys.interval);
        let mut reporter = SysReporter::new(self.shared.clone(), self.index);
        loop {
            {
                let broker = self.broker.borrow();
                reporter.record(&broker);
            }
            if self.index == 0 && !self.draining.get() {
                let now = self.now();
                for message in reporter.messages() {
                    self.broker.borrow_mut().publish(now, message);
                }
                self.after_input();
            }
            tokio::time::sleep(interval).await;
        }
    }

    async fn inbox_loop(
        self: Rc<Self>,
        mut early: Option<WorkerMessage>,
        mut inbox: UnboundedReceiver<WorkerMessage>,
    ) {
        loop {
            let message = match early.take() {
                Some(message) => message,
                None => match inbox.recv().await {
                    Some(message) => message,
                    None => return,
                },
            };
            match message {
                WorkerMessage::Shard { from, mut messages } => {
                    // Hand-overs already waiting behind this one make one input with it: one
                    // store commit and one round of writer wake-ups for all of them. Bounded,
                    // so that a busy neighbour cannot keep this worker from its own sockets.
                    let mut merged = 1;
                    let mut sources = vec![from];
                    while merged < MAX_MERGED_HANDOVERS {
                        match inbox.try_recv() {
                            Ok(WorkerMessage::Shard {
                                from,
                                messages: more,
                            }) => {
                                messages.extend(more);
                                if !sources.contains(&from) {
                                    sources.push(from);
                                }
                                merged += 1;
                            }
                            Ok(other) => {
                                early = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.shard_messages(&sources, messages);
                    self.shared.handed_over(merged);
                }
                WorkerMessage::Connection {
                    stream,
                    ticket,
                    received,
                    remote,
                } => {
                    let stream = stream.into_stream();
                    tokio_uring::spawn(self.clone().connection(Box::new(Accepted {
                        stream,
                        received,
                        remote,
                        settled: true,
                        ticket,
                    })));
                }
                WorkerMessage::Publish(message) => self.publish(message),
                message @ (WorkerMessage::Committed(_)
                | WorkerMessage::Fence { .. }
                | WorkerMessage::FenceAnswered(_)
                | WorkerMessage::FenceRelayed { .. }) => self.durability_message(message),
                WorkerMessage::Admin(job) => {
                    let now = self.now();
                    job(&mut self.broker.borrow_mut(), now);
                    self.after_input();
                }
                WorkerMessage::Pipeline(ticket, result) => {
                    let now = self.now();
                    self.broker.borrow_mut().pipeline_done(now, ticket, result);
                    self.after_input();
                }
                WorkerMessage::Shutdown => {
                    self.shutdown(&mut inbox).await;
                    return;
                }
            }
        }
    }

    /// Shard `from` asks about what this shard did with the messages its batch `token`
    /// forwarded (all handled by now: the fence came behind them).
    ///
    /// What this shard passed on of them to other shards (a shared group's member, the
    /// copies of a retained message it owns) is stored there: a fence straight from `from`
    /// is relayed to those shards, behind what went to them, and the batch waits for their
    /// links or answers too. The linked batch's commit is told to expect their links (this
    /// link says how many), an unlinked batch to wait for their answers (`FenceRelayed`,
    /// sent before them). A relayed fence is not relayed again: a shard passes on only
    /// what it received straight from a publisher's shard.
    fn fence(&self, from: usize, token: u64, linked: bool, relayed: bool) {
        let onward = if relayed {
            Vec::new()
        } else {
            self.onward
                .borrow_mut()
                .get_mut(from)
                .map(std::mem::take)
                .unwrap_or_default()
        };
        let mut durable = self.durable.borrow_mut();
        if linked {
            durable.link(from, token, onward.len());
        } else if !onward.is_empty() {
            let count = onward.len() as u32;
            self.shared
                .send(from, WorkerMessage::FenceRelayed { token, count });
        }
        for &target in &onward {
            let message = WorkerMessage::Fence {
                from,
                token,
                linked,
                relayed: true,
            };
            self.shared.send(target, message);
        }
        if !linked {
            if let Some((shard, token)) = durable.fence(from, token) {
                self.shared.send(shard, WorkerMessage::FenceAnswered(token));
            }
        }
    }

    /// The committer reports the last durable batch; each one between releases what it
    /// held back.
    fn committed(self: &Rc<Self>, upto: u64) {
        let answers = self.durable.borrow_mut().committed(upto);
        for (shard, token) in answers {
            self.shared.send(shard, WorkerMessage::FenceAnswered(token));
        }
        self.release();
    }

    /// Hands the broker every batch that is durable here and wherever it forwarded to.
    fn release(self: &Rc<Self>) {
        let tokens = self.durable.borrow_mut().releasable();
        if tokens.is_empty() {
            return;
        }
        let now = self.now();
        let mut broker = self.broker.borrow_mut();
        for token in tokens {
            broker.storage_committed(now, token);
        }
        drop(broker);
        self.after_input();
    }

    /// Messages from the shards `sources`, handled as one input. The shards it passes
    /// acknowledged messages on to are remembered for each source's next fence (for all of
    /// them: which source's message went where is not told apart).
    fn shard_messages(self: &Rc<Self>, sources: &[usize], messages: Vec<ShardMessage>) {
        let now = self.now();
        self.broker
            .borrow_mut()
            .handle_shard_messages(now, messages);
        let targets = self.after_input();
        if targets.is_empty() {
            return;
        }
        let mut onward = self.onward.borrow_mut();
        for &source in sources {
            if onward.len() <= source {
                onward.resize_with(source + 1, Vec::new);
            }
            for &target in &targets {
                if !onward[source].contains(&target) {
                    onward[source].push(target);
                }
            }
        }
    }

    fn publish(self: &Rc<Self>, message: Message) {
        let now = self.now();
        self.broker.borrow_mut().publish(now, message);
        self.after_input();
    }

    /// Stops accepting, tells every client (DISCONNECT 0x8B to 5.0 clients), waits a little
    /// for the writers to flush, then drains: takes no more input of its own and handles
    /// what the other shards still hand over until none of them has anything left.
    ///
    /// Without the drain, a worker that stopped first would drop what another one forwarded
    /// to it at that moment: a QoS 2 copy lost while the publisher's exactly-once marker is
    /// written (the committer, told every shard is gone, would write the marker's batch
    /// without the link it waited for), so the publisher's re-send after the restart would
    /// be acknowledged and never delivered.
    async fn shutdown(self: &Rc<Self>, inbox: &mut UnboundedReceiver<WorkerMessage>) {
        self.shutting_down.set(true);
        let now = self.now();
        self.broker.borrow_mut().shutdown(now);
        self.after_input();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.conns.borrow().is_empty() && tokio::time::Instant::now() < deadline {
            // The goodbyes may wait for a store commit, reported through the inbox.
            while let Ok(message) = inbox.try_recv() {
                self.while_stopping(message);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.draining.set(true);
        self.shared.draining.fetch_add(1, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
        loop {
            while let Ok(message) = inbox.try_recv() {
                self.while_stopping(message);
            }
            if self.shared.drained() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    worker = self.index,
                    "stopping before the other shards handed over everything; what they \
                     still forward here is not stored"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        info!(worker = self.index, "stopped");
    }

    /// An inbox message during a graceful stop: hand-overs from other shards are stored and
    /// their fences answered (the other shards' commits may wait for this shard's links);
    /// new connections, publishes and jobs are dropped.
    fn while_stopping(self: &Rc<Self>, message: WorkerMessage) {
        match message {
            WorkerMessage::Shard { from, messages } => {
                self.shard_messages(&[from], messages);
                self.shared.handed_over(1);
            }
            other => self.durability_message(other),
        }
    }

    /// The store's commits and the other shards' fences, which the running loop and a
    /// graceful stop both answer (other shards' commits may wait for them); any other
    /// message is not this method's and is dropped.
    fn durability_message(self: &Rc<Self>, message: WorkerMessage) {
        match message {
            WorkerMessage::Committed(upto) => self.committed(upto),
            WorkerMessage::Fence {
                from,
                token,
                linked,
                relayed,
            } => {
                self.fence(from, token, linked, relayed);
                self.shared.handed_over(1);
            }
            WorkerMessage::FenceAnswered(token) => {
                self.durable.borrow_mut().fence_answered(token);
                self.release();
            }
            WorkerMessage::FenceRelayed { token, count } => {
                self.durable.borrow_mut().fence_relayed(token, count);
            }
            _ => {}
        }
    }
}

/// Reads until the first packet is complete (or clearly not a CONNECT), returning the
/// bytes read and the worker that owns the CONNECT's client identifier. `None` when the
/// connection ended first.
async fn first_packet(
    stream: &Stream,
    mut received: Vec<u8>,
    workers: usize,
) -> Option<(Vec<u8>, Option<usize>)> {
    let decoder = Decoder::new(ProtocolVersion::V5);
    loop {
        match decoder.header(&received) {
            Ok(Some(header)) if received.len() >= header.packet_len() => break,
            Ok(_) => {}
            // Malformed: let the local shard answer it.
            Err(_) => return Some((received, None)),
        }
        let buf = Vec::with_capacity(MIN_READ * 4);
        let (result, mut buf) = stream.read(buf).await;
        match result {
            Ok(0) | Err(_) => return None,
            // The usual case, a CONNECT in one read: keep the buffer rather than copy it.
            Ok(n) if received.is_empty() => {
                buf.truncate(n);
                received = buf;
            }
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    let owner = match decoder.decode(&received) {
        Ok(Decoded::Packet {
            packet: Packet::Connect(connect),
            ..
        }) if !connect.client_id.is_empty() => Some(connect.client_id.to_string()),
        _ => None,
    };
    Some((
        received,
        owner.map(|id| usize::from(owner_shard(&id, workers as u16))),
    ))
}

fn trace_packets(id: ConnectionId, mut bytes: &[u8], direction: &str) {
    let decoder = Decoder::new(ProtocolVersion::V5);
    while let Ok(Some(header)) = decoder.header(bytes) {
        debug!(
            connection = id.index(),
            "{direction} {:?} ({} bytes)",
            header.packet_type,
            header.packet_len()
        );
        if header.packet_len() > bytes.len() {
            break;
        }
        bytes = &bytes[header.packet_len()..];
    }
}
