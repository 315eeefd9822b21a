//! The MQTT bridge: a connection from this broker to another MQTT broker, like mosquitto's
//! `connection`, carrying the configured topics out, in, or both, with prefixes swapped.
//!
//! Every bridge runs as a task on one thread of its own (`petrel-bridges`, a tokio-uring
//! runtime like a worker's), so that a slow remote broker or a DNS lookup never holds up a
//! shard. Local messages reach a bridge through the broker's taps (the mechanism behind
//! [`crate::RunningServer::subscribe`]); remote messages are published here as the
//! embedding program's are ([`crate::RunningServer::publish`]). The decisions are
//! [`link::Link`]'s, around the sans-IO [`petrel_state::client::Client`]; this file moves
//! bytes and time.

mod config;
mod link;

use std::future::Future;
use std::io;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use petrel_state::message::Message;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio_uring::net::TcpStream;
use tracing::{info, warn};

pub use config::{BridgeTopic, Direction, MqttBridgeConfig, Protocol};
use link::{Link, Progress};

use crate::shared::{Shared, WorkerMessage};

/// How long a TCP connection to the remote broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to the remote broker may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from, and written to, the remote broker per call.
const IO_CHUNK: usize = 64 << 10;

/// One bridge's figures, read by `/metrics` and `$SYS`.
#[derive(Debug, Default)]
pub(crate) struct BridgeStats {
    pub(crate) name: String,
    pub(crate) connected: AtomicBool,
    /// Connections the remote broker accepted.
    pub(crate) connects: AtomicU64,
    /// Local messages waiting to go out: the bridge's lag.
    pub(crate) queued: AtomicU64,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub(crate) inflight: AtomicU64,
    /// Messages the remote broker has (QoS 0: written; QoS 1/2: acknowledged).
    pub(crate) sent: AtomicU64,
    /// Messages received from the remote broker.
    pub(crate) received: AtomicU64,
    /// Outgoing messages dropped: queue full, too large, expired or refused by the remote.
    pub(crate) dropped: AtomicU64,
}

/// The figures of each configured bridge, in configuration order.
pub(crate) fn stats_for(configs: &[MqttBridgeConfig]) -> Vec<Arc<BridgeStats>> {
    configs
        .iter()
        .map(|c| {
            Arc::new(BridgeStats {
                name: c.name.clone(),
                ..BridgeStats::default()
            })
        })
        .collect()
}

/// The running bridges' thread.
pub(crate) struct Bridges {
    thread: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Bridges {
    /// Starts every `[[bridge.mqtt]]` of the configuration; `None` when there is none.
    pub(crate) fn start(shared: &Arc<Shared>) -> io::Result<Option<Bridges>> {
        if shared.config.bridge.mqtt.is_empty() {
            return Ok(None);
        }
        let (stop, stopped) = watch::channel(false);
        let shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(String::from("petrel-bridges"))
            // Each link builds its client (megabytes of fixed buffers) before boxing it.
            .stack_size(32 << 20)
            .spawn(move || {
                tokio_uring::start(async move {
                    let tasks: Vec<_> = shared
                        .config
                        .bridge
                        .mqtt
                        .iter()
                        .zip(&shared.mqtt_bridges)
                        .map(|(config, stats)| {
                            tokio_uring::spawn(run(
                                shared.clone(),
                                config.clone(),
                                stats.clone(),
                                stopped.clone(),
                            ))
                        })
                        .collect();
                    for task in tasks {
                        let _ = task.await;
                    }
                });
            })?;
        Ok(Some(Bridges { thread, stop }))
    }

    /// Disconnects every bridge and waits for their thread.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

/// Registers the bridge's outward filters as taps, all feeding one channel.
///
/// Taps send through a blocking channel; a small thread moves what arrives to the bridge's
/// task, and ends once that task is gone.
fn tap(shared: &Shared, config: &MqttBridgeConfig) -> UnboundedReceiver<Arc<Message>> {
    let (to_task, from_taps) = tokio::sync::mpsc::unbounded_channel();
    let outward: Vec<&BridgeTopic> = config
        .topics
        .iter()
        .filter(|t| t.direction.outward())
        .collect();
    if outward.is_empty() {
        return from_taps;
    }
    let (sender, receiver) = std::sync::mpsc::channel();
    shared.add_taps(
        outward.iter().map(|topic| topic.local_filter().to_string()),
        &sender,
    );
    let spawned = std::thread::Builder::new()
        .name(format!("petrel-bridge-{}", config.name))
        .spawn(move || {
            while let Ok(message) = receiver.recv() {
                if to_task.send(message).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        warn!(bridge = config.name, "no thread for the bridge's taps: {e}");
    }
    from_taps
}

/// How a connection to the remote broker ended.
enum Ended {
    Stopped,
    Lost(String),
}

/// Local messages from the taps; `None` once the taps are gone.
struct Taps(Option<UnboundedReceiver<Arc<Message>>>);

impl Taps {
    async fn next(&mut self) -> Option<Arc<Message>> {
        match self.0.as_mut() {
            Some(receiver) => receiver.recv().await,
            None => std::future::pending().await,
        }
    }

    fn closed(&mut self) {
        self.0 = None;
    }
}

/// One bridge, from start to stop: connect, serve, wait, reconnect.
async fn run(
    shared: Arc<Shared>,
    config: MqttBridgeConfig,
    stats: Arc<BridgeStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut taps = Taps(Some(tap(&shared, &config)));
    let mut link = Link::new(&config, stats, shared.config.limits.max_packet_size);
    loop {
        let attempt = tokio::select! {
            attempt = connect(&config.address) => attempt,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok(stream) => {
                let ended = session(&shared, &mut link, &stream, &mut taps, &mut stop).await;
                link.lost(shared.now());
                publish_local(&shared, &mut link);
                match ended {
                    Ended::Stopped => {
                        info!(bridge = config.name, "bridge stopped");
                        return;
                    }
                    Ended::Lost(reason) => warn!(
                        bridge = config.name,
                        address = config.address,
                        queued = link.queued(),
                        "bridge connection lost: {reason}"
                    ),
                }
            }
            Err(e) => warn!(
                bridge = config.name,
                address = config.address,
                queued = link.queued(),
                "bridge cannot connect: {e}"
            ),
        }
        // Local messages keep queueing while the bridge waits to reconnect.
        let until = tokio::time::Instant::now() + link.next_delay();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                message = taps.next() => match message {
                    Some(message) => link.local(shared.now(), message),
                    None => taps.closed(),
                },
                _ = stop.changed() => return,
            }
        }
    }
}

async fn connect(address: &str) -> io::Result<TcpStream> {
    let addr = address.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{address} has no address"))
    })?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connection timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One connection to the remote broker, from CONNECT until it ends or the bridge stops.
///
/// Reading, writing, local messages and time are served side by side: a remote broker that
/// stops reading holds up neither the taps (their messages go on into the bounded queue)
/// nor the keep-alive.
async fn session(
    shared: &Shared,
    link: &mut Link<'_>,
    stream: &TcpStream,
    taps: &mut Taps,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    if let Err(e) = link.open(shared.now()) {
        return Ended::Lost(e.to_string());
    }
    let mut input = Vec::new();
    // Input the link cannot take until a write frees room for its acknowledgements: no
    // more is read meanwhile, so a remote broker cannot make it grow.
    let mut stalled = false;
    // Posted reads and writes are kept across iterations and never dropped while posted
    // (a read cancelled after the kernel filled it would lose those bytes).
    let mut read = Some(Box::pin(stream.read(Vec::with_capacity(IO_CHUNK))));
    let mut write = None;
    let mut write_deadline = tokio::time::Instant::now();
    loop {
        publish_local(shared, link);
        if write.is_none() {
            let mut buf = vec![0u8; IO_CHUNK];
            let n = link.poll_transmit(shared.now(), &mut buf);
            if n > 0 {
                buf.truncate(n);
                write = Some(Box::pin(stream.write_all(buf)));
                write_deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
            }
        }
        let mut deadline = match link.poll_timeout() {
            Some(at) => shared.to_tokio(at),
            None => tokio::time::Instant::now() + Duration::from_secs(3600),
        };
        if write.is_some() {
            // A PINGREQ that found no room is due until the write ends: no busy loop.
            deadline = deadline.max(tokio::time::Instant::now() + Duration::from_millis(50));
        }
        tokio::select! {
            (result, mut buf) = finish(&mut read), if !stalled => {
                match result {
                    Ok(0) => return Ended::Lost(String::from("closed by the remote broker")),
                    Err(e) => return Ended::Lost(e.to_string()),
                    Ok(n) => input.extend_from_slice(&buf[..n]),
                }
                match link.received(shared.now(), &mut input) {
                    Ok(progress) => stalled = progress == Progress::Flush,
                    Err(e) => return lost(shared, link, stream, write, e).await,
                }
                buf.clear();
                read = Some(Box::pin(stream.read(buf)));
            }
            (result, _) = finish(&mut write) => {
                write = None;
                if let Err(e) = result {
                    return Ended::Lost(e.to_string());
                }
                if stalled {
                    match link.received(shared.now(), &mut input) {
                        Ok(progress) => stalled = progress == Progress::Flush,
                        Err(e) => return lost(shared, link, stream, write, e).await,
                    }
                }
            }
            _ = tokio::time::sleep_until(write_deadline), if write.is_some() => {
                return Ended::Lost(String::from("write timed out"));
            }
            message = taps.next() => match message {
                Some(message) => link.local(shared.now(), message),
                None => taps.closed(),
            },
            _ = tokio::time::sleep_until(deadline) => {
                if let Err(e) = link.timeout(shared.now()) {
                    return lost(shared, link, stream, write, e).await;
                }
            }
            _ = stop.changed() => {
                link.disconnect(shared.now());
                finish_writes(shared, link, stream, write).await;
                return Ended::Stopped;
            }
        }
    }
}

/// The connection failed for `reason`: what the link still has to say (a 5.0 DISCONNECT
/// with the reason) goes out if it can.
async fn lost<F>(
    shared: &Shared,
    link: &mut Link<'_>,
    stream: &TcpStream,
    write: Option<F>,
    reason: String,
) -> Ended
where
    F: Future<Output = tokio_uring::BufResult<(), Vec<u8>>> + Unpin,
{
    finish_writes(shared, link, stream, write).await;
    Ended::Lost(reason)
}

/// Ends the write under way, then writes what is left, within the write timeout.
async fn finish_writes<F>(
    shared: &Shared,
    link: &mut Link<'_>,
    stream: &TcpStream,
    write: Option<F>,
) where
    F: Future<Output = tokio_uring::BufResult<(), Vec<u8>>> + Unpin,
{
    let rest = async {
        if let Some(write) = write {
            write.await.0.map_err(|e| e.to_string())?;
        }
        flush(shared, link, stream).await
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, rest).await;
}

/// The posted operation's result, or never if none is posted.
async fn finish<F: Future + Unpin>(operation: &mut Option<F>) -> F::Output {
    match operation {
        Some(operation) => operation.await,
        None => std::future::pending().await,
    }
}

/// Writes everything the link has for the remote broker.
async fn flush(shared: &Shared, link: &mut Link<'_>, stream: &TcpStream) -> Result<(), String> {
    loop {
        let mut buf = vec![0u8; IO_CHUNK];
        let n = link.poll_transmit(shared.now(), &mut buf);
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        stream.write_all(buf).await.0.map_err(|e| e.to_string())?;
    }
}

/// Publishes on this broker what the link brought in.
fn publish_local(shared: &Shared, link: &mut Link<'_>) {
    while let Some(message) = link.poll_local() {
        shared.send(0, WorkerMessage::Publish(message));
    }
}

/// `$SYS/broker/bridge/NAME/…` for every bridge, retained like the rest of `$SYS`.
pub(crate) fn sys_messages(shared: &Shared) -> Vec<Message> {
    let mut messages = Vec::new();
    for b in &shared.mqtt_bridges {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed).to_string();
        let connected = u8::from(b.connected.load(Ordering::Relaxed)).to_string();
        for (leaf, value) in [
            ("connected", connected),
            ("queued", load(&b.queued)),
            ("inflight", load(&b.inflight)),
            ("connects", load(&b.connects)),
            ("messages/sent", load(&b.sent)),
            ("messages/received", load(&b.received)),
            ("messages/dropped", load(&b.dropped)),
        ] {
            let topic = format!("$SYS/broker/bridge/{}/{leaf}", b.name);
            let mut message = Message::new(&topic, value.into_bytes());
            message.retain = true;
            messages.push(message);
        }
    }
    messages
}

/// One Prometheus family per bridge figure: name, type, help and one sample per bridge.
pub(crate) type Family = (&'static str, &'static str, &'static str, Vec<(String, u64)>);

/// The bridges' `/metrics` families; none without bridges.
pub(crate) fn metric_families(bridges: &[Arc<BridgeStats>]) -> Vec<Family> {
    if bridges.is_empty() {
        return Vec::new();
    }
    let samples = |f: &dyn Fn(&BridgeStats) -> u64| -> Vec<(String, u64)> {
        bridges
            .iter()
            .map(|b| (format!("{{bridge=\"{}\"}}", b.name), f(b)))
            .collect()
    };
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    vec![
        (
            "bridge_connected",
            "gauge",
            "1 while the bridge is connected to its remote broker.",
            samples(&|b| u64::from(b.connected.load(Ordering::Relaxed))),
        ),
        (
            "bridge_queued",
            "gauge",
            "Local messages queued for the remote broker and not yet sent (the bridge's lag).",
            samples(&|b| load(&b.queued)),
        ),
        (
            "bridge_inflight",
            "gauge",
            "QoS 1/2 messages sent to the remote broker and not yet acknowledged.",
            samples(&|b| load(&b.inflight)),
        ),
        (
            "bridge_connects_total",
            "counter",
            "Connections the remote broker accepted.",
            samples(&|b| load(&b.connects)),
        ),
        (
            "bridge_messages_sent_total",
            "counter",
            "Messages the remote broker took.",
            samples(&|b| load(&b.sent)),
        ),
        (
            "bridge_messages_received_total",
            "counter",
            "Messages received from the remote broker.",
            samples(&|b| load(&b.received)),
        ),
        (
            "bridge_messages_dropped_total",
            "counter",
            "Outgoing messages dropped (queue full, too large, expired, refused).",
            samples(&|b| load(&b.dropped)),
        ),
    ]
}
