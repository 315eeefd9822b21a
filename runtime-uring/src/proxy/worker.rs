//! One proxy worker: a tokio-uring runtime serving the clients its listener accepts.
//!
//! Per client, a [`Pair`]: the client's stream, the upstream's once connected, and the
//! sans-IO [`Pipe`] between them. A reader per side hands what it reads to the pipe, and
//! the frames the pipe has for a side are sent at once, in place, with one non-blocking
//! gathering send. A writer task per side runs only for what a socket did not take (and for
//! TLS and WebSocket streams), writing through io_uring until the pipe has nothing left for
//! that side. A reader stops reading while the other side has more than
//! [`MAX_QUEUED`] bytes waiting, so a slow peer slows its partner instead of filling memory.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use petrel_codec::ReasonCode;
use petrel_state::broker::Hooks;
use petrel_state::proxy::{Pipe, PipeEvent, Side};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::hooks::ProxyHooks;
use super::{HealthCommand, ProxyMessage, ProxyShared};
use crate::auth::AccessView;
use crate::transport::{Endpoint, Stream, TRY_SEND_SLICES};

/// The smallest read buffer, posted while a side is idle.
const MIN_READ: usize = 128;
/// The largest read buffer, reached by doubling while reads keep filling it.
const MAX_READ: usize = 64 * 1024;
/// Bytes waiting for one side above which the other side is not read.
const MAX_QUEUED: usize = 256 * 1024;
/// Frames handed to one gathering write (below the kernel's IOV_MAX of 1024).
const MAX_FRAMES_PER_WRITE: usize = 256;

struct Worker {
    index: usize,
    shared: Arc<ProxyShared>,
    hooks: RefCell<Box<dyn Hooks>>,
    pairs: RefCell<HashMap<u32, Rc<Pair>>>,
    shutting_down: Cell<bool>,
}

/// One client and its upstream connection.
struct Pair {
    id: u32,
    pipe: RefCell<Pipe>,
    client: Rc<Stream>,
    upstream: RefCell<Option<Rc<Stream>>>,
    upstream_address: RefCell<Option<String>>,
    /// A writer task runs for the side (indexed by `Side as usize`).
    writing: [Cell<bool>; 2],
    /// A writer wrote to the side: a reader held back for it may go on.
    drained: [Notify; 2],
    /// The client's CONNECT was accepted.
    connected: Cell<bool>,
    /// The pipe closed: write what is queued, then shut both streams.
    closing: Cell<bool>,
    finished: Cell<bool>,
}

impl Pair {
    fn stream(&self, side: Side) -> Option<Rc<Stream>> {
        match side {
            Side::Client => Some(self.client.clone()),
            Side::Upstream => self.upstream.borrow().clone(),
        }
    }
}

/// Sends what the pipe has for `side` in place, as far as the socket takes it at once;
/// false if bytes are left for a writer task. Most writes fit the socket's buffer, and sent
/// here they cost no task, no submission and no completion that wakes the worker again.
fn send_now(pair: &Pair, side: Side, stream: &Stream) -> bool {
    loop {
        let (offered, sent) = {
            let pipe = pair.pipe.borrow();
            let (first, second) = pipe.frames(side);
            let offered: usize = first
                .iter()
                .chain(second)
                .take(TRY_SEND_SLICES)
                .map(Bytes::len)
                .sum();
            match stream.try_send(first.iter().chain(second)) {
                None => return false,
                Some(sent) => (offered, sent),
            }
        };
        match sent {
            Ok(0) => return false,
            Ok(n) => {
                pair.pipe.borrow_mut().transmitted(side, n);
                pair.drained[side as usize].notify_one();
                if pair.pipe.borrow().queued(side) == 0 {
                    return true;
                }
                // Less than offered: the socket is full. All of it: more frames than
                // one send takes.
                if n < offered {
                    return false;
                }
            }
            Err(e) => {
                debug!(pair = pair.id, side = ?side, "send failed: {e}");
                pair.closing.set(true);
                return true;
            }
        }
    }
}

pub(super) async fn run(
    index: usize,
    shared: Arc<ProxyShared>,
    listeners: Vec<(std::net::TcpListener, Endpoint)>,
    mut inbox: UnboundedReceiver<ProxyMessage>,
) {
    let worker = Rc::new(Worker {
        index,
        hooks: RefCell::new(Box::new(ProxyHooks {
            builtin: shared.hooks.clone(),
            access: AccessView::new(shared.access.clone()),
        })),
        shared,
        pairs: RefCell::new(HashMap::new()),
        shutting_down: Cell::new(false),
    });
    for (listener, endpoint) in listeners {
        let listener = tokio_uring::net::TcpListener::from_std(listener);
        tokio_uring::spawn(worker.clone().accept(listener, endpoint));
    }
    while let Some(message) = inbox.recv().await {
        match message {
            ProxyMessage::Evict { upstream, reason } => worker.evict(&upstream, reason),
            ProxyMessage::Shutdown => break,
        }
    }
    worker.shutdown().await;
}

impl Worker {
    async fn accept(self: Rc<Self>, listener: tokio_uring::net::TcpListener, endpoint: Endpoint) {
        let plain = endpoint.tls.is_none() && endpoint.websocket.is_none();
        let endpoint = Rc::new(endpoint);
        loop {
            match listener.accept().await {
                Ok((stream, remote)) => {
                    if self.shutting_down.get() {
                        return;
                    }
                    let _ = stream.set_nodelay(true);
                    if plain {
                        self.clone().open(Stream::Tcp(stream), remote.to_string());
                    } else {
                        tokio_uring::spawn(self.clone().establish(
                            stream,
                            endpoint.clone(),
                            remote.to_string(),
                        ));
                    }
                }
                Err(e) => {
                    warn!(worker = self.index, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// The TLS and WebSocket handshakes, within the connect timeout, then the pair.
    async fn establish(
        self: Rc<Self>,
        tcp: tokio_uring::net::TcpStream,
        endpoint: Rc<Endpoint>,
        remote: String,
    ) {
        let limit = self.shared.connect_timeout;
        match tokio::time::timeout(limit, endpoint.establish(tcp)).await {
            Ok(Ok(stream)) => self.open(stream, remote),
            Ok(Err(e)) => debug!(remote, "handshake failed: {e}"),
            Err(_) => debug!(remote, "handshake timed out"),
        }
    }

    fn open(self: Rc<Self>, stream: Stream, remote: String) {
        let id = self.shared.next_pair.fetch_add(1, Ordering::Relaxed);
        let pipe = Pipe::new(id, self.shared.pipe_config.clone(), Some(remote))
            .with_identity(stream.identity());
        let pair = Rc::new(Pair {
            id,
            pipe: RefCell::new(pipe),
            client: Rc::new(stream),
            upstream: RefCell::new(None),
            upstream_address: RefCell::new(None),
            writing: [Cell::new(false), Cell::new(false)],
            drained: [Notify::new(), Notify::new()],
            connected: Cell::new(false),
            closing: Cell::new(false),
            finished: Cell::new(false),
        });
        self.pairs.borrow_mut().insert(id, pair.clone());
        tokio_uring::spawn(self.read(pair, Side::Client));
    }

    async fn read(self: Rc<Self>, pair: Rc<Pair>, side: Side) {
        let Some(stream) = pair.stream(side) else {
            return;
        };
        let mut capacity = MIN_READ;
        let connect_deadline = tokio::time::Instant::now() + self.shared.connect_timeout;
        loop {
            if pair.closing.get() {
                return;
            }
            if pair.pipe.borrow().queued(side.other()) > MAX_QUEUED {
                pair.drained[side.other() as usize].notified().await;
                continue;
            }
            let read = stream.read(Vec::with_capacity(capacity));
            // Until its CONNECT has been read a client has `connect_timeout`; then the
            // upstream's keep-alive watches it.
            let (result, filled) = if side == Side::Client && !pair.connected.get() {
                // Boxed, so that the timer's room is taken only until the CONNECT, not for
                // the life of the reader.
                match Box::pin(tokio::time::timeout_at(connect_deadline, read)).await {
                    Ok(done) => done,
                    Err(_) => {
                        debug!(pair = pair.id, "no CONNECT in time");
                        pair.closing.set(true);
                        return self.after(&pair);
                    }
                }
            } else {
                read.await
            };
            let n = match result {
                Ok(n) if n > 0 => n,
                _ => return self.side_ended(&pair, side),
            };
            // The read buffer becomes the frames' storage: complete packets are split off
            // it and forwarded as they are.
            let chunk = Bytes::from(filled)
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            {
                let now = self.shared.now();
                let mut hooks = self.hooks.borrow_mut();
                let mut pipe = pair.pipe.borrow_mut();
                match side {
                    Side::Client => pipe.handle_client(now, chunk, &mut **hooks),
                    Side::Upstream => pipe.handle_upstream(now, chunk, &mut **hooks),
                }
            }
            self.after(&pair);
            // Grows at once and shrinks slowly: a busy side whose reads vary would otherwise
            // fall back to a buffer too small for its next batch, which then takes two
            // reads (and two forwards) instead of one.
            capacity = if n == capacity {
                (capacity * 2).min(MAX_READ)
            } else if n <= capacity / 4 {
                (capacity / 2).max(MIN_READ)
            } else {
                capacity
            };
        }
    }

    /// A side's stream ended (or failed) without the pipe closing the pair first.
    fn side_ended(self: &Rc<Self>, pair: &Rc<Pair>, side: Side) {
        if pair.closing.get() {
            return;
        }
        match side {
            // Closed without DISCONNECT: the upstream connection is dropped as abruptly,
            // so the upstream publishes the client's will.
            Side::Client => pair.closing.set(true),
            Side::Upstream => pair.pipe.borrow_mut().upstream_lost(),
        }
        self.after(pair);
    }

    /// Does what the pipe asks, sends what it has for each side (starting a writer for what
    /// a socket did not take), and closes a finished pair.
    fn after(self: &Rc<Self>, pair: &Rc<Pair>) {
        loop {
            let event = pair.pipe.borrow_mut().poll_event();
            match event {
                None => break,
                Some(PipeEvent::OpenUpstream { client_id }) => {
                    pair.connected.set(true);
                    tokio_uring::spawn(self.clone().connect(pair.clone(), client_id));
                }
                Some(PipeEvent::Trace {
                    client_id,
                    to,
                    line,
                }) => {
                    info!(target: "petrel::proxy::trace", client_id, to = ?to, "{line}");
                }
                Some(PipeEvent::Close { by, reason }) => {
                    debug!(pair = pair.id, by = ?by, reason = ?reason, "closing");
                    pair.closing.set(true);
                }
            }
        }
        for side in [Side::Client, Side::Upstream] {
            if pair.writing[side as usize].get() || pair.pipe.borrow().queued(side) == 0 {
                continue;
            }
            let Some(stream) = pair.stream(side) else {
                continue;
            };
            if !send_now(pair, side, &stream) {
                pair.writing[side as usize].set(true);
                tokio_uring::spawn(self.clone().write(pair.clone(), side));
            }
        }
        if pair.closing.get() {
            self.finish_if_flushed(pair);
        }
    }

    /// Writes what the pipe has for `side` through io_uring until nothing is left: for the
    /// frames a socket did not take at once, and for TLS and WebSocket streams.
    async fn write(self: Rc<Self>, pair: Rc<Pair>, side: Side) {
        if let Some(stream) = pair.stream(side) {
            let mut yielded = false;
            loop {
                let frames: Vec<Bytes> = {
                    let mut pipe = pair.pipe.borrow_mut();
                    std::iter::from_fn(|| pipe.poll_transmit(side))
                        .take(MAX_FRAMES_PER_WRITE)
                        .collect()
                };
                if frames.is_empty() {
                    // A peer that filled its socket is busy, and more is usually on its
                    // way: let the readers run once before ending, rather than ending
                    // and being spawned again for the next packet.
                    if !yielded && !pair.closing.get() {
                        yielded = true;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    break;
                }
                yielded = false;
                if stream.write_frames(frames).await.is_err() {
                    pair.closing.set(true);
                    break;
                }
                pair.drained[side as usize].notify_one();
            }
        }
        pair.writing[side as usize].set(false);
        if pair.closing.get() {
            self.finish_if_flushed(&pair);
        }
    }

    /// Shuts both streams once no writer is left (each ran until its queue was empty or
    /// its stream failed).
    fn finish_if_flushed(&self, pair: &Rc<Pair>) {
        if pair.writing.iter().any(Cell::get) || pair.finished.replace(true) {
            return;
        }
        pair.client.shutdown();
        if let Some(upstream) = pair.upstream.borrow().as_ref() {
            upstream.shutdown();
        }
        // Readers held back by a full queue must see the close too.
        for notify in &pair.drained {
            notify.notify_one();
        }
        self.pairs.borrow_mut().remove(&pair.id);
        let pipe = pair.pipe.borrow();
        debug!(
            pair = pair.id,
            client_id = pipe.client_id(),
            upstream = ?pair.upstream_address.borrow(),
            "closed"
        );
    }

    /// Connects the pair to the live upstream its client id hashes to. An upstream that
    /// refuses the connection is declared down and the next live one is tried, until none
    /// is left; one that does not answer in time only costs this client its connection.
    async fn connect(self: Rc<Self>, pair: Rc<Pair>, client_id: String) {
        loop {
            let Some(address) = self.shared.balancer().choose(&client_id).map(String::from) else {
                warn!(client_id, "no live upstream");
                pair.pipe.borrow_mut().upstream_lost();
                return self.after(&pair);
            };
            let attempt = async {
                let addr: SocketAddr = address.parse().map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad address")
                })?;
                tokio_uring::net::TcpStream::connect(addr).await
            };
            match tokio::time::timeout(self.shared.upstream_connect_timeout, attempt).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    if pair.closing.get() {
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    debug!(pair = pair.id, client_id, upstream = %address, "upstream connected");
                    *pair.upstream.borrow_mut() = Some(Rc::new(Stream::Tcp(stream)));
                    *pair.upstream_address.borrow_mut() = Some(address);
                    tokio_uring::spawn(self.clone().read(pair.clone(), Side::Upstream));
                    return self.after(&pair);
                }
                Ok(Err(e)) => warn!(upstream = %address, "cannot connect: {e}"),
                Err(_) => {
                    // Slow is not dead: under a burst of connections a live broker can be
                    // late to accept, and declaring it down would turn away every client.
                    // This client is refused; the probes judge the upstream.
                    warn!(upstream = %address, client_id, "cannot connect: timed out");
                    pair.pipe.borrow_mut().upstream_lost();
                    return self.after(&pair);
                }
            }
            // Refused or unreachable: nothing listens there, so the upstream is down now
            // and the client goes to the next live one.
            let now = self.shared.now();
            self.shared.balancer().connect_failed(now, &address);
            self.shared.tell_health(HealthCommand::Wake);
        }
    }

    /// Disconnects the clients served by `upstream`.
    fn evict(self: &Rc<Self>, upstream: &str, reason: ReasonCode) {
        let victims: Vec<Rc<Pair>> = self
            .pairs
            .borrow()
            .values()
            .filter(|p| p.upstream_address.borrow().as_deref() == Some(upstream))
            .cloned()
            .collect();
        for pair in victims {
            pair.pipe.borrow_mut().shut(reason);
            self.after(&pair);
        }
    }

    async fn shutdown(self: &Rc<Self>) {
        self.shutting_down.set(true);
        let all: Vec<Rc<Pair>> = self.pairs.borrow().values().cloned().collect();
        for pair in all {
            pair.pipe.borrow_mut().shut(ReasonCode::ServerShuttingDown);
            pair.closing.set(true);
            self.after(&pair);
        }
        // A moment for the last DISCONNECTs to be written.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while !self.pairs.borrow().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
