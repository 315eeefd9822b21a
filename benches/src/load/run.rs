//! A run: plan the connections, open them, publish, drain, and turn the tallies into a
//! [`Report`].

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use petrel_codec::{ProtocolVersion, QoS};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::clock::Clock;
use super::ctx::{Ctx, Flow, Live, Phase, PubPlan, Role, SubPlan, TaskResult};
use super::mqtt::{self, publish_packet_len};
use super::procstat::Tracker;
use super::report::{fmt_rate, Connections, Delivered, Published, Report};
use super::stats::{merge, Percentiles};
use super::transport::{Connector, TransportConfig};

/// Who connects, and who publishes to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// `clients` connections that connect (and subscribe, if asked) and hold.
    Conn {
        /// How many.
        clients: usize,
        /// Whether each subscribes to a filter of its own once connected.
        subscribe: bool,
    },
    /// `clients` publishers on `topic` (`%i` becomes the publisher's index); whoever
    /// subscribes runs elsewhere.
    Pub {
        /// How many.
        clients: usize,
        /// The topic template.
        topic: String,
    },
    /// `clients` subscribers to `filter` (`%i` becomes the subscriber's index); whoever
    /// publishes runs elsewhere.
    Sub {
        /// How many.
        clients: usize,
        /// The filter template.
        filter: String,
    },
    /// `publishers` publishers on distinct topics, one subscriber to all with `+`.
    FanIn {
        /// How many publishers.
        publishers: usize,
    },
    /// One publisher, `subscribers` subscribers to its topic.
    FanOut {
        /// How many subscribers.
        subscribers: usize,
    },
    /// `pairs` publishers, each with its own subscriber on its own topic.
    Pairs {
        /// How many pairs.
        pairs: usize,
    },
}

/// Everything a run needs to know. [`Config::new`] gives the defaults of the CLI.
#[derive(Debug, Clone)]
pub struct Config {
    /// The scenario's name in the report.
    pub name: String,
    /// What is being measured (a broker's name), carried into the report.
    pub label: Option<String>,
    /// Who connects and publishes.
    pub topology: Topology,
    /// The broker (or relay) host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// MQTT version.
    pub version: ProtocolVersion,
    /// The target is `petrel-bench relay`: connect with its handshake, publish at QoS 0
    /// (see the `raw` module).
    pub relay: bool,
    /// TLS and WebSocket (default: plain TCP).
    pub transport: TransportConfig,
    /// QoS of the publishes.
    pub qos: QoS,
    /// QoS of the subscriptions.
    pub sub_qos: QoS,
    /// Payload size in bytes (at least the 16-byte stamp).
    pub payload: usize,
    /// Messages per publisher (`sub`: per subscriber); with `duration`, whichever ends first.
    pub count: Option<u64>,
    /// How long to publish after the warm-up.
    pub duration: Option<Duration>,
    /// Publishing before the measurement window starts (excluded from rates and latency).
    pub warmup: Duration,
    /// Total messages per second over all publishers; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Messages a publisher may have outstanding (see `--inflight`); `None`: the default of
    /// the publishes' QoS, [`default_window`].
    pub inflight: Option<usize>,
    /// The longest wait for deliveries after publishing stops.
    pub drain: Duration,
    /// New connections per second; `None`: all at once (at most [`MAX_CONNECTING`] at a time).
    pub connect_rate: Option<f64>,
    /// `conn`: how long to hold the connections once all are attempted.
    pub hold: Duration,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// Persistent sessions (clean session / clean start off).
    pub persistent: bool,
    /// User name for every connection.
    pub username: Option<String>,
    /// Password for every connection.
    pub password: Option<String>,
    /// Runtime worker threads of the generator.
    pub threads: usize,
    /// The broker's process id, for its CPU and memory.
    pub broker_pid: Option<u32>,
    /// Print a live progress line on stderr.
    pub progress: bool,
    /// Prefix of the presets' topics; default `petrel-bench/<run id>`, unique per run so
    /// that runs never see each other's messages.
    pub topic_prefix: Option<String>,
    /// Prefix of client identifiers; default `pb-<run id>-`.
    pub client_prefix: Option<String>,
}

/// The window a publisher gets unless told otherwise: 64 messages at QoS 1/2, 1,024 at
/// QoS 0.
///
/// At QoS 1/2 the window is also what a broker must hold unacknowledged, and 64 is below
/// every broker's limit here. At QoS 0 it only bounds what sits in sockets and queues
/// between a publisher and its slowest subscriber, and 64 small messages are a few
/// kilobytes: each publisher then waits for a round trip through the broker after every
/// few kilobytes, so the run measures wake-up latency more than throughput, and the relay
/// (which has the longest chain of wake-ups: generator, relay, generator) most of all.
/// 1,024 messages of 64 bytes are about 90 KiB per publisher, a few socket buffers.
pub fn default_window(qos: QoS) -> usize {
    match qos {
        QoS::AtMostOnce => 1024,
        QoS::AtLeastOnce | QoS::ExactlyOnce => 64,
    }
}

/// At most this many connection attempts are in progress at once when connecting is not
/// paced: more would only overflow the broker's listen backlog and measure SYN retries.
pub const MAX_CONNECTING: usize = 256;

impl Config {
    /// A configuration with the CLI's defaults: 127.0.0.1:1883, MQTT 3.1.1, QoS 0, 64-byte
    /// payloads, 10 s after a 1 s warm-up, unpaced, the window of the QoS
    /// ([`default_window`]).
    pub fn new(name: &str, topology: Topology) -> Config {
        Config {
            name: name.to_owned(),
            label: None,
            topology,
            host: "127.0.0.1".into(),
            port: 1883,
            version: ProtocolVersion::V311,
            relay: false,
            transport: TransportConfig::default(),
            qos: QoS::AtMostOnce,
            sub_qos: QoS::AtMostOnce,
            payload: 64,
            count: None,
            duration: Some(Duration::from_secs(10)),
            warmup: Duration::from_secs(1),
            rate: None,
            inflight: None,
            drain: Duration::from_secs(5),
            connect_rate: None,
            hold: Duration::from_secs(5),
            keep_alive: 60,
            persistent: false,
            username: None,
            password: None,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            broker_pid: None,
            progress: false,
            topic_prefix: None,
            client_prefix: None,
        }
    }
}

/// Runs `config` on a runtime of its own and returns the report.
pub fn run_blocking(config: &Config) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads.max(1))
        // The publishers' sessions hold their buffers inline (the client is heap-free); a
        // debug build builds one on the stack before boxing it. Stacks are only reserved,
        // not touched, so this costs address space, not memory.
        .thread_stack_size(64 * 1024 * 1024)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run(config))
}

/// Who a subscriber expects messages from.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Every,
    One(u32),
    Unknown,
}

struct Plan {
    publishers: Vec<PubPlan>,
    subscribers: Vec<(SubPlan, Expect)>,
    idle: usize,
    /// Whether the idle connections subscribe, each to a filter of its own.
    idle_subscribe: bool,
    /// How many subscribers each message reaches, when the subscribers are ours.
    deliveries_per_message: Option<u64>,
}

fn plan(topology: &Topology, prefix: &str) -> Plan {
    // Topic indices are zero-padded to one width, so that every publisher's PUBLISH has
    // the same size: through the relay, that size is the frame it cuts the stream at.
    let n = match topology {
        Topology::FanIn { publishers } => *publishers,
        Topology::Pairs { pairs } => *pairs,
        _ => 1,
    };
    let width = n.saturating_sub(1).to_string().len();
    let topic = |i: usize| format!("{prefix}/{i:0width$}");
    let publisher = |i: usize, topic: String, group: u32| PubPlan {
        id: i as u32,
        topic,
        group,
    };
    let subscriber = |i: usize, filter: String, group: u32, flow_slot: usize| SubPlan {
        id: i as u32,
        filter,
        group,
        flow_slot,
    };
    match topology {
        Topology::Conn { clients, subscribe } => Plan {
            publishers: vec![],
            subscribers: vec![],
            idle: *clients,
            idle_subscribe: *subscribe,
            deliveries_per_message: None,
        },
        Topology::Pub { clients, topic } => Plan {
            publishers: (0..*clients)
                .map(|i| publisher(i, topic.replace("%i", &i.to_string()), 0))
                .collect(),
            subscribers: vec![],
            idle: 0,
            idle_subscribe: false,
            deliveries_per_message: None,
        },
        Topology::Sub { clients, filter } => Plan {
            publishers: vec![],
            subscribers: (0..*clients)
                .map(|i| {
                    (
                        subscriber(i, filter.replace("%i", &i.to_string()), 0, 0),
                        Expect::Unknown,
                    )
                })
                .collect(),
            idle: 0,
            idle_subscribe: false,
            deliveries_per_message: None,
        },
        Topology::FanIn { publishers } => Plan {
            publishers: (0..*publishers)
                .map(|i| publisher(i, topic(i), 0))
                .collect(),
            subscribers: vec![(subscriber(0, format!("{prefix}/+"), 0, 0), Expect::Every)],
            idle: 0,
            idle_subscribe: false,
            deliveries_per_message: Some(1),
        },
        Topology::FanOut { subscribers } => Plan {
            publishers: vec![publisher(0, topic(0), 0)],
            subscribers: (0..*subscribers)
                .map(|i| (subscriber(i, topic(0), 0, i), Expect::One(0)))
                .collect(),
            idle: 0,
            idle_subscribe: false,
            deliveries_per_message: Some(*subscribers as u64),
        },
        Topology::Pairs { pairs } => Plan {
            publishers: (0..*pairs)
                .map(|i| publisher(i, topic(i), i as u32))
                .collect(),
            subscribers: (0..*pairs)
                .map(|i| (subscriber(i, topic(i), i as u32, 0), Expect::One(i as u32)))
                .collect(),
            idle: 0,
            idle_subscribe: false,
            deliveries_per_message: Some(1),
        },
    }
}

/// Tracks the broker's and the generator's own process while the coordinator waits.
struct Trackers {
    broker: Option<(u32, Tracker)>,
    own: Tracker,
}

impl Trackers {
    fn tick(&mut self) {
        if let Some((_, t)) = &mut self.broker {
            t.tick();
        }
        self.own.tick();
    }
    fn window_start(&mut self, t: f64) {
        if let Some((_, b)) = &mut self.broker {
            b.window_start(t);
        }
        self.own.window_start(t);
    }
    fn window_end(&mut self, t: f64) {
        if let Some((_, b)) = &mut self.broker {
            b.window_end(t);
        }
        self.own.window_end(t);
    }
}

/// The live progress line, printed once a second.
struct Progress {
    enabled: bool,
    tty: bool,
    last_ns: u64,
    last_sent: u64,
    last_unique: u64,
    last_connected: u64,
    printed: bool,
}

impl Progress {
    fn tick(&mut self, ctx: &Ctx, stage: &str) {
        if !self.enabled {
            return;
        }
        let now = ctx.clock.elapsed_ns();
        if now < self.last_ns + 1_000_000_000 {
            return;
        }
        let span = (now - self.last_ns) as f64 / 1e9;
        let live = &ctx.live;
        let sent = Live::get(&live.sent);
        let unique = Live::get(&live.unique);
        let connected = Live::get(&live.connected);
        let line = format!(
            "[{:>6.1}s] {stage:<8} conns {} (+{}/s, {} failed)  sent {} msg/s  delivered {} msg/s  acked {}",
            now as f64 / 1e9,
            connected,
            fmt_rate((connected - self.last_connected) as f64 / span),
            Live::get(&live.failed),
            fmt_rate((sent - self.last_sent) as f64 / span),
            fmt_rate((unique - self.last_unique) as f64 / span),
            Live::get(&live.acked),
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.printed = true;
        self.last_ns = now;
        self.last_sent = sent;
        self.last_unique = unique;
        self.last_connected = connected;
    }

    fn finish(&mut self) {
        if self.enabled && self.tty && self.printed {
            eprintln!();
        }
    }
}

/// How often the coordinator wakes to print progress, sample processes and check limits.
const TICK: Duration = Duration::from_millis(100);

async fn spawn_all(
    ctx: &Arc<Ctx>,
    roles: Vec<(Role, String)>,
    connect_rate: Option<f64>,
    tasks: &mut JoinSet<TaskResult>,
    trackers: &mut Trackers,
    progress: &mut Progress,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTING));
    let first = ctx.clock.elapsed_ns();
    for (i, (role, client_id)) in roles.into_iter().enumerate() {
        if let Some(rate) = connect_rate {
            let due = first + (i as f64 / rate * 1e9) as u64;
            let now = ctx.clock.elapsed_ns();
            if due > now {
                tokio::time::sleep(Duration::from_nanos(due - now)).await;
            }
        }
        trackers.tick();
        progress.tick(ctx, "connect");
        // Unpaced, bound the attempts in flight: the task drops its permit once its
        // connection is established or has failed.
        let permit = if connect_rate.is_none() {
            limit.clone().acquire_owned().await.ok()
        } else {
            None
        };
        let ctx = ctx.clone();
        tasks.spawn(mqtt::run(ctx, role, client_id, permit));
    }
}

/// Waits until `done()` or the deadline, ticking progress and trackers.
async fn wait_until(
    ctx: &Ctx,
    trackers: &mut Trackers,
    progress: &mut Progress,
    stage: &str,
    deadline_ns: u64,
    mut done: impl FnMut() -> bool,
) -> bool {
    loop {
        if done() {
            return true;
        }
        let now = ctx.clock.elapsed_ns();
        if now >= deadline_ns {
            return false;
        }
        trackers.tick();
        progress.tick(ctx, stage);
        let wait = TICK.min(Duration::from_nanos(deadline_ns - now));
        let _ = tokio::time::timeout(wait, ctx.live.changed.notified()).await;
    }
}

async fn run(config: &Config) -> Result<Report, String> {
    let addr: SocketAddr = tokio::net::lookup_host((config.host.as_str(), config.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", config.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", config.host))?;
    if config.count.is_none() && config.duration.is_none() {
        return Err("give a message count, a duration, or both".into());
    }
    let clock = Clock::new();
    let run_id = (clock.stamp_ns() / 1_000) as u32;
    let prefix = config
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("petrel-bench/{run_id:08x}"));
    let client_prefix = config
        .client_prefix
        .clone()
        .unwrap_or_else(|| format!("pb-{run_id:08x}-"));
    let plan = plan(&config.topology, &prefix);
    if config.relay
        && matches!(
            config.topology,
            Topology::Conn { .. } | Topology::Pub { .. } | Topology::Sub { .. }
        )
    {
        return Err(
            "--relay works with the presets (fan-in, fan-out, pairs, qos2-roundtrip)".into(),
        );
    }
    if config.relay && config.transport != TransportConfig::default() {
        return Err("the relay speaks plain TCP only (no --tls, --ws or --wss)".into());
    }
    let connector = Connector::new(&config.transport, &config.host, config.port)?;
    // The relay acknowledges nothing: QoS 0 through it (see the `raw` module).
    let (qos, sub_qos) = if config.relay {
        (QoS::AtMostOnce, QoS::AtMostOnce)
    } else {
        (config.qos, config.sub_qos)
    };
    let frame_len = plan.publishers.first().map_or(0, |p| {
        publish_packet_len(config.version, &p.topic, config.payload, qos)
    });
    let publishers = plan.publishers.len();
    // End-to-end windows when the subscribers are ours: one slot per subscriber of each
    // publisher (fan-out: all subscribers of publisher 0; otherwise one).
    let flows = match plan.deliveries_per_message {
        Some(per) => (0..publishers).map(|_| Flow::new(per)).collect(),
        None => Vec::new(),
    };
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let ctx = Arc::new(Ctx {
        clock,
        addr,
        version: config.version,
        relay: config.relay,
        connector,
        qos,
        sub_qos,
        payload: config.payload,
        // A PINGREQ in a publisher's stream would reach the relay's subscribers as a frame.
        keep_alive: if config.relay { 0 } else { config.keep_alive },
        persistent: config.persistent,
        username: config.username.clone(),
        password: config.password.clone(),
        count: match config.topology {
            Topology::Sub { .. } => None,
            _ => config.count,
        },
        rate_per_publisher: config.rate.map(|r| r / publishers.max(1) as f64),
        // The QoS asked for, not the relay's: a relay run of a QoS 1 scenario keeps that
        // scenario's window, so that it is the same load as against the brokers.
        inflight: config
            .inflight
            .unwrap_or_else(|| default_window(config.qos))
            .max(1),
        sub_count: match config.topology {
            Topology::Sub { .. } => config.count,
            _ => None,
        },
        frame_len,
        publishers,
        live: Live::default(),
        start_ns: AtomicU64::new(0),
        end_ns: AtomicU64::new(u64::MAX),
        window_start_ns: AtomicU64::new(0),
        phase: phase_rx,
        flows,
    });
    let mut trackers = Trackers {
        broker: config
            .broker_pid
            .map(|pid| (pid, Tracker::new(&pid.to_string()))),
        own: Tracker::new("self"),
    };
    let mut progress = Progress {
        enabled: config.progress,
        tty: std::io::stderr().is_terminal(),
        last_ns: 0,
        last_sent: 0,
        last_unique: 0,
        last_connected: 0,
        printed: false,
    };
    let mut tasks = JoinSet::new();
    let setup_limit = |n: usize| -> u64 {
        let paced = config.connect_rate.map_or(0.0, |r| n as f64 / r);
        ctx.clock.elapsed_ns() + ((30.0 + paced) * 1e9) as u64
    };
    let settled =
        |ctx: &Ctx, n: usize| Live::get(&ctx.live.ready) + Live::get(&ctx.live.failed) >= n as u64;
    let conn_started_ns = ctx.clock.elapsed_ns();
    let is_conn = matches!(config.topology, Topology::Conn { .. });
    if is_conn {
        // `conn` measures the broker while it accepts the connections and holds them.
        trackers.window_start(conn_started_ns as f64 / 1e9);
    }

    // Subscribers first, so that nothing published is missed; then publishers.
    let subscribers = plan.subscribers.len();
    let sub_roles = plan
        .subscribers
        .iter()
        .map(|(s, _)| {
            (
                Role::Subscriber(s.clone()),
                format!("{client_prefix}s{}", s.id),
            )
        })
        .collect();
    spawn_all(
        &ctx,
        sub_roles,
        config.connect_rate,
        &mut tasks,
        &mut trackers,
        &mut progress,
    )
    .await;
    let deadline = setup_limit(subscribers);
    wait_until(
        &ctx,
        &mut trackers,
        &mut progress,
        "connect",
        deadline,
        || settled(&ctx, subscribers),
    )
    .await;
    let mut roles: Vec<(Role, String)> = plan
        .publishers
        .iter()
        .map(|p| {
            (
                Role::Publisher(p.clone()),
                format!("{client_prefix}p{}", p.id),
            )
        })
        .collect();
    roles.extend((0..plan.idle).map(|i| {
        let filter = plan.idle_subscribe.then(|| format!("{prefix}/idle/{i}"));
        (Role::Idle(filter), format!("{client_prefix}c{i}"))
    }));
    let others = roles.len();
    spawn_all(
        &ctx,
        roles,
        config.connect_rate,
        &mut tasks,
        &mut trackers,
        &mut progress,
    )
    .await;
    let deadline = setup_limit(others);
    wait_until(
        &ctx,
        &mut trackers,
        &mut progress,
        "connect",
        deadline,
        || settled(&ctx, subscribers + others),
    )
    .await;
    let mut warnings = Vec::new();
    let failed_setup = Live::get(&ctx.live.failed);
    if failed_setup > 0 {
        warnings.push(format!("{failed_setup} connections failed to set up"));
    }

    // Publishing.
    let start = ctx.clock.elapsed_ns();
    // A count-bounded run measures every message: no warm-up.
    let warmup = if is_conn || config.duration.is_none() {
        0
    } else {
        config.warmup.as_nanos() as u64
    };
    let window_start = start + warmup;
    let end = match (is_conn, config.duration) {
        (true, _) => start + config.hold.as_nanos() as u64,
        (false, Some(d)) => window_start + d.as_nanos() as u64,
        (false, None) => u64::MAX,
    };
    ctx.start_ns.store(start, Ordering::Release);
    ctx.window_start_ns.store(window_start, Ordering::Release);
    ctx.end_ns.store(end, Ordering::Release);
    let _ = phase_tx.send(Phase::Run);
    if warmup == 0 && !is_conn {
        trackers.window_start(start as f64 / 1e9);
    }
    let mut window_started = warmup == 0;
    let ready = Live::get(&ctx.live.ready) as usize;
    // Everything the publishers of a count-bounded run will send.
    let total = ctx.count.map(|n| n.saturating_mul(publishers as u64));
    let all_sent = || total.is_some_and(|t| Live::get(&ctx.live.sent) >= t);
    let publishers_done = || Live::get(&ctx.live.publishers_done) as usize >= publishers;
    let stop_now = || match config.topology {
        Topology::Conn { .. } => false,
        Topology::Sub { .. } => Live::get(&ctx.live.subscribers_done) as usize >= ready,
        _ => publishers_done() || all_sent(),
    };
    loop {
        let now = ctx.clock.elapsed_ns();
        if !window_started && now >= window_start {
            trackers.window_start(now as f64 / 1e9);
            window_started = true;
        }
        if now >= end || stop_now() {
            if !publishers_done() && publishers > 0 {
                // Publishers stop on their own; wait for their last acknowledgements, but
                // not for ever (a broker may never acknowledge).
                let limit = ctx.clock.elapsed_ns() + config.drain.as_nanos() as u64;
                wait_until(&ctx, &mut trackers, &mut progress, "finish", limit, || {
                    publishers_done()
                })
                .await;
            }
            break;
        }
        let next = if window_started { end } else { window_start };
        wait_until(&ctx, &mut trackers, &mut progress, "run", next, || {
            stop_now()
        })
        .await;
    }
    let stopped = ctx.clock.elapsed_ns();
    if !window_started {
        trackers.window_start(stopped as f64 / 1e9);
    }
    trackers.window_end(stopped as f64 / 1e9);

    // Drain: wait for what is still on its way, until it has all arrived or nothing has
    // arrived for a while.
    if let Some(per) = plan.deliveries_per_message {
        let expected = Live::get(&ctx.live.sent) * per;
        let limit = ctx.clock.elapsed_ns() + config.drain.as_nanos() as u64;
        let idle = Duration::from_secs(1).min(config.drain).as_nanos() as u64;
        let mut last = Live::get(&ctx.live.unique);
        let mut last_change = ctx.clock.elapsed_ns();
        wait_until(&ctx, &mut trackers, &mut progress, "drain", limit, || {
            let unique = Live::get(&ctx.live.unique);
            let now = ctx.clock.elapsed_ns();
            if unique != last {
                last = unique;
                last_change = now;
            }
            unique >= expected || now - last_change > idle
        })
        .await;
    }
    let _ = phase_tx.send(Phase::Stop);
    progress.finish();
    let mut results = Vec::new();
    let collect = async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .is_err()
    {
        warnings.push("some connections did not finish within 10 s of the stop".into());
        tasks.abort_all();
    }
    drop(phase_tx);

    Ok(build_report(
        config,
        &ctx,
        &plan,
        results,
        Spans {
            conn_started_ns,
            start,
            window_start,
            stopped,
            end,
        },
        &trackers,
        warnings,
    ))
}

struct Spans {
    conn_started_ns: u64,
    start: u64,
    window_start: u64,
    stopped: u64,
    end: u64,
}

fn qos_number(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

fn build_report(
    config: &Config,
    ctx: &Ctx,
    plan: &Plan,
    mut results: Vec<TaskResult>,
    spans: Spans,
    trackers: &Trackers,
    mut warnings: Vec<String>,
) -> Report {
    let duration_run = config.duration.is_some() && spans.end != u64::MAX;
    let measured_ns = if duration_run {
        spans
            .stopped
            .min(spans.end)
            .saturating_sub(spans.window_start)
    } else {
        0
    };

    // Connections.
    let mut connections = Connections {
        attempted: results.len() as u64,
        ..Connections::default()
    };
    let mut connect_hist = None;
    let mut last_established = None::<u64>;
    for r in &results {
        if let Some(ns) = r.conn.connect_ns {
            connections.established += 1;
            let h = connect_hist.get_or_insert_with(super::stats::histogram);
            h.saturating_record(ns.max(1));
        }
        if let Some(at) = r.conn.established_at_ns {
            last_established = Some(last_established.map_or(at, |l: u64| l.max(at)));
        }
        if let Some(e) = &r.conn.error {
            if r.conn.failed_to_connect {
                connections.failed += 1;
            } else {
                connections.dropped += 1;
            }
            *connections.errors.entry(e.clone()).or_insert(0) += 1;
        }
    }
    if let Some(last) = last_established {
        let span = last.saturating_sub(spans.conn_started_ns).max(1) as f64 / 1e9;
        connections.per_sec = connections.established as f64 / span;
    }
    connections.connect_latency_us = connect_hist.as_ref().and_then(Percentiles::of);
    if connections.dropped > 0 {
        warnings.push(format!(
            "{} connections ended with an error during the run",
            connections.dropped
        ));
    }

    // Publishers.
    let mut sent_by = BTreeMap::new();
    let mut published = Published::default();
    let mut ack_hist = None;
    let (mut sent_in_window, mut last_sent) = (0u64, 0u64);
    for t in results.iter().filter_map(|r| r.publisher.as_ref()) {
        sent_by.insert(t.id, t.sent);
        published.sent += t.sent;
        published.acked += t.acked;
        published.refused += t.refused;
        published.session_lost += t.session_lost;
        published.max_inflight = published.max_inflight.max(t.max_inflight);
        sent_in_window += t.sent_in_window;
        last_sent = last_sent.max(t.last_ns.unwrap_or(0));
        merge(&mut ack_hist, t.ack_latency.as_ref());
    }
    published.ack_latency_us = ack_hist.as_ref().and_then(Percentiles::of);
    let count_span_s = |last: u64| last.saturating_sub(spans.start).max(1) as f64 / 1e9;
    published.per_sec = if duration_run {
        sent_in_window as f64 / (measured_ns.max(1) as f64 / 1e9)
    } else {
        published.sent as f64 / count_span_s(last_sent)
    };

    // Subscribers.
    let mut latency = None;
    for t in results.iter_mut().filter_map(|r| r.subscriber.as_mut()) {
        t.merge_latency_into(&mut latency);
    }
    let subscriber_results: Vec<_> = results
        .iter()
        .filter_map(|r| r.subscriber.as_ref())
        .collect();
    let delivered = if plan.subscribers.is_empty() {
        None
    } else {
        let mut d = Delivered::default();
        let (mut in_window, mut last_recv) = (0u64, 0u64);
        let mut skewed = 0;
        for t in &subscriber_results {
            d.received += t.received;
            d.unique += t.unique;
            d.duplicates += t.duplicates;
            d.reordered += t.reordered;
            d.foreign += t.foreign;
            skewed += t.clock_skewed;
            in_window += t.in_window;
            last_recv = last_recv.max(t.last_ns.unwrap_or(0));
            for set in &t.per_publisher {
                if let Some(max) = set.max() {
                    d.gaps += set.missing_below(max + 1);
                }
            }
        }
        d.clock_skewed = skewed;
        if skewed > 0 {
            warnings.push(format!(
                "{skewed} messages arrived before their send time: the publishing process's clock disagrees with this one"
            ));
        }
        d.latency_us = latency.as_ref().and_then(Percentiles::of);
        d.per_sec = if duration_run {
            in_window as f64 / (measured_ns.max(1) as f64 / 1e9)
        } else {
            d.unique as f64 / count_span_s(last_recv)
        };
        if plan.deliveries_per_message.is_some() {
            // Expected and lost per (publisher, subscriber) pair; a subscriber that never
            // came up expects nothing (its connection failure is reported instead).
            let mut expected = 0;
            let mut lost = 0;
            for (r, (_, expect)) in subscriber_pairs(&results, plan) {
                let pubs: Vec<u32> = match expect {
                    Expect::Every => sent_by.keys().copied().collect(),
                    Expect::One(p) => vec![p],
                    Expect::Unknown => vec![],
                };
                for p in pubs {
                    let sent = sent_by.get(&p).copied().unwrap_or(0);
                    let got = r.unique_from(p).min(sent);
                    expected += sent;
                    lost += sent - got;
                }
            }
            d.expected = Some(expected);
            d.lost = Some(lost);
        }
        Some(d)
    };

    let broker = trackers.broker.as_ref().and_then(|(pid, t)| t.usage(*pid));
    if config.broker_pid.is_some() && broker.is_none() {
        warnings.push("could not read the broker's /proc entry".into());
    }
    let generator = trackers.own.usage(0);
    let messages_in_window = if duration_run {
        sent_in_window + subscriber_results.iter().map(|t| t.in_window).sum::<u64>()
    } else {
        published.sent + delivered.as_ref().map_or(0, |d| d.received)
    };
    let generator_cpu_us_per_message = generator.and_then(|g| {
        (messages_in_window > 0).then(|| g.cpu_seconds * 1e6 / messages_in_window as f64)
    });
    let measured_s = if duration_run {
        measured_ns as f64 / 1e9
    } else {
        spans.stopped.saturating_sub(spans.start) as f64 / 1e9
    };
    Report {
        tool: format!("petrel-bench {}", env!("CARGO_PKG_VERSION")),
        scenario: config.name.clone(),
        label: config.label.clone(),
        target: format!("{}:{}", config.host, config.port),
        transport: format!(
            "mqtt-{}{}{}",
            match config.version {
                ProtocolVersion::V311 => "3.1.1",
                ProtocolVersion::V5 => "5.0",
            },
            config.transport.suffix(),
            if config.relay { " via relay" } else { "" }
        ),
        qos: qos_number(ctx.qos),
        sub_qos: qos_number(ctx.sub_qos),
        payload_bytes: config.payload,
        publishers: plan.publishers.len(),
        subscribers: plan.subscribers.len(),
        idle_subscribe: plan.idle_subscribe,
        rate_limit: config.rate,
        inflight: ctx.inflight,
        count: config.count,
        duration_s: config.duration.map(|d| d.as_secs_f64()),
        warmup_s: if duration_run && !matches!(config.topology, Topology::Conn { .. }) {
            config.warmup.as_secs_f64()
        } else {
            0.0
        },
        measured_s,
        published,
        delivered,
        connections,
        broker,
        generator,
        generator_cpu_us_per_message,
        warnings,
    }
}

/// Each subscriber's tally with what it expects, matched by subscriber id.
fn subscriber_pairs<'r>(
    results: &'r [TaskResult],
    plan: &Plan,
) -> Vec<(&'r super::stats::SubTally, (u32, Expect))> {
    results
        .iter()
        .filter_map(|r| {
            let tally = r.subscriber.as_ref()?;
            let id = r.subscriber_id?;
            let (s, expect) = plan.subscribers.iter().find(|(s, _)| s.id == id)?;
            Some((tally, (s.id, *expect)))
        })
        .collect()
}
