//! `petrel proxy`: Petrel in front of other MQTT brokers.
//!
//! Every protocol decision is [`petrel_state::proxy`]'s: a [`Pipe`](petrel_state::proxy::Pipe)
//! per client decides what crosses, a [`Balancer`] where each client goes and which
//! upstreams live. This runtime moves bytes and time:
//!
//! - one tokio-uring worker per core, each accepting on its own `SO_REUSEPORT` socket,
//!   over plain TCP or the broker's TLS and WebSocket transports (`crate::transport`);
//!   per client a reader per side; frames go out with one gathering send, in place from
//!   the reader when the socket takes them, else from a writer task that lives only while
//!   there is something left to write (either way a forwarded frame is never copied);
//! - a health thread that runs the balancer's probes (connect, CONNECT, CONNACK) and tells
//!   the workers to disconnect the clients of an upstream declared down or removed;
//! - [`RunningProxy::reload`] for new upstreams (SIGHUP in the `petrel proxy` command).

mod cli;
mod config;
mod health;
mod hooks;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use petrel_codec::ReasonCode;
use petrel_state::proxy::{Balancer, BuiltinHooks, PipeConfig};
use petrel_state::Instant;
use tokio::sync::mpsc::UnboundedSender;

use crate::transport::Endpoint;

pub use cli::main as cli_main;
pub use config::{HealthSettings, ProxyConfig};

/// A message to a proxy worker.
enum ProxyMessage {
    /// Disconnect every client served by this upstream.
    Evict {
        upstream: String,
        reason: ReasonCode,
    },
    /// Disconnect everyone and stop.
    Shutdown,
}

/// What the health thread is asked to do.
enum HealthCommand {
    /// A worker changed the balancer (a failed connection): drain its events now.
    Wake,
    /// The configuration was reloaded with these upstreams.
    Upstreams(Vec<String>),
    /// Stop.
    Stop,
}

/// What the workers and the health thread share.
struct ProxyShared {
    pipe_config: PipeConfig,
    access: Arc<crate::auth::Access>,
    hooks: BuiltinHooks,
    connect_timeout: Duration,
    upstream_connect_timeout: Duration,
    probe_timeout: Duration,
    origin: std::time::Instant,
    balancer: Mutex<Balancer>,
    inboxes: Mutex<Vec<UnboundedSender<ProxyMessage>>>,
    health: Mutex<mpsc::Sender<HealthCommand>>,
    next_pair: AtomicU32,
}

impl ProxyShared {
    fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    fn balancer(&self) -> std::sync::MutexGuard<'_, Balancer> {
        self.balancer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn broadcast(&self, message: impl Fn() -> ProxyMessage) {
        for inbox in self
            .inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = inbox.send(message());
        }
    }

    fn tell_health(&self, command: HealthCommand) {
        let _ = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(command);
    }
}

/// A proxy to start.
pub struct Proxy {
    config: ProxyConfig,
}

impl Proxy {
    /// A proxy with this configuration.
    pub fn new(config: ProxyConfig) -> Self {
        Proxy { config }
    }

    /// Binds the listeners, starts the workers and the health thread, and returns once
    /// clients can connect.
    pub fn start(self) -> io::Result<RunningProxy> {
        let config = self.config;
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let workers = config.worker_count();
        let mut per_worker: Vec<Vec<(std::net::TcpListener, Endpoint)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        let mut binds: Vec<(SocketAddr, Endpoint)> = config
            .listen
            .iter()
            .map(|&bind| (bind, Endpoint::default()))
            .collect();
        for listener in &config.listeners {
            let endpoint = Endpoint::for_listener(listener)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Some(bind) = listener.bind {
                binds.push((bind, endpoint));
            }
        }
        for (bind, endpoint) in binds {
            let mut addr = bind;
            for sockets in per_worker.iter_mut() {
                let socket = crate::reuseport_listener(addr)?;
                addr = socket.local_addr()?;
                sockets.push((socket, endpoint.clone()));
            }
            addrs.push(addr);
        }
        let access = crate::auth::Access::load(config.auth.clone())
            .map(Arc::new)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let watcher = if access.configured() {
            Some(access.clone().watch()?)
        } else {
            None
        };
        let (health_tx, health_rx) = mpsc::channel();
        let origin = std::time::Instant::now();
        let mut balancer = Balancer::new(config.health_config());
        balancer.set_upstreams(Instant::ZERO, &config.upstream_addresses());
        let shared = Arc::new(ProxyShared {
            pipe_config: config.pipe_config(),
            access,
            hooks: config.hooks(),
            connect_timeout: Duration::from_secs(config.connect_timeout.max(1)),
            upstream_connect_timeout: Duration::from_millis(
                config.upstream_connect_timeout_ms.max(1),
            ),
            probe_timeout: Duration::from_millis(config.health.timeout_ms),
            origin,
            balancer: Mutex::new(balancer),
            inboxes: Mutex::new(Vec::new()),
            health: Mutex::new(health_tx),
            next_pair: AtomicU32::new(0),
        });
        let mut threads = Vec::new();
        for (index, listeners) in per_worker.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            shared
                .inboxes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(tx);
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("petrel-proxy-{index}"))
                    .spawn(move || {
                        tokio_uring::start(worker::run(index, shared, listeners, rx));
                    })?,
            );
        }
        let health = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(String::from("petrel-proxy-health"))
                .spawn(move || health::run(&shared, &health_rx))?
        };
        Ok(RunningProxy {
            addrs,
            shared,
            threads,
            health,
            watcher,
        })
    }
}

/// A running proxy.
pub struct RunningProxy {
    addrs: Vec<SocketAddr>,
    shared: Arc<ProxyShared>,
    threads: Vec<JoinHandle<()>>,
    health: JoinHandle<()>,
    watcher: Option<JoinHandle<()>>,
}

impl RunningProxy {
    /// The addresses it listens on (with the ports chosen for port 0): the `listen` ones,
    /// then the `[[listener]]` ones.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Applies a reloaded configuration's upstreams: clients of removed upstreams are
    /// disconnected (DISCONNECT "administrative action"), everyone else stays connected.
    /// The password and ACL files are read again too (they are also re-read within a
    /// second of changing); an error there names the file and line and keeps the rules in
    /// force. The other settings take effect on restart.
    pub fn reload(&self, config: &ProxyConfig) -> Result<(), String> {
        self.shared
            .tell_health(HealthCommand::Upstreams(config.upstream_addresses()));
        self.shared.access.reload()
    }

    /// The configured upstreams and whether each is live, in configuration order.
    pub fn upstreams(&self) -> Vec<(String, bool)> {
        let balancer = self.shared.balancer();
        balancer
            .addresses()
            .map(|a| (a.to_string(), balancer.is_up(a)))
            .collect()
    }

    /// Stops: no new clients, DISCONNECT "server shutting down" to 5.0 clients, close.
    pub fn shutdown(self) {
        self.shared.broadcast(|| ProxyMessage::Shutdown);
        for thread in self.threads {
            let _ = thread.join();
        }
        self.shared.tell_health(HealthCommand::Stop);
        let _ = self.health.join();
        self.shared.access.stop();
        if let Some(watcher) = self.watcher {
            let _ = watcher.join();
        }
    }
}
