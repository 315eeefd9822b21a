//! `petrel`: the Petrel MQTT broker on io_uring, as a binary and as a library.
//!
//! The runtime is thin: one [tokio-uring] runtime per worker thread, each driving one shard
//! of the sans-IO broker core ([`petrel_state::broker::Broker`]). It reads and writes bytes
//! and keeps time; every protocol decision is the core's.
//!
//! # Embedding
//!
//! ```no_run
//! use petrel::{Config, Server};
//! use petrel_state::message::Message;
//!
//! let mut config = Config::default();
//! config.listeners[0].bind = Some("127.0.0.1:0".parse().unwrap());
//! // Keep nothing on disk (the default is a store in `data_dir`).
//! config.store.kind = petrel::persistence::StoreKind::Memory;
//! let server = Server::new(config).start()?;
//! println!("listening on {:?}", server.local_addrs());
//!
//! // The inline client: subscribe and publish from the program itself.
//! let alerts = server.subscribe("alerts/#");
//! server.publish(Message::new("alerts/disk", &b"90%"[..]));
//! let message = alerts.recv()?;
//! assert_eq!(&*message.topic, "alerts/disk");
//! server.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Hooks that authenticate, authorize and rewrite are registered with
//! [`Server::with_hooks`]: implement [`Hooks`], whose every method has a default that
//! allows everything. They run behind the broker's own checks (the `[auth]` password and
//! ACL files, the `[limits]`). Examples in `runtime-uring/examples/`: `embedded.rs` (a
//! tenant prefix and the inline client), `authorize_rewrite.rs` (mProxy-style
//! AuthConnect / AuthPublish / AuthSubscribe with topic rewriting, driven by rumqttc
//! clients) and `log_hooks.rs` (a line for every event the hooks see, and for every packet
//! both ways through [`Hooks::on_packet`], which costs nothing unless
//! [`Hooks::observes_packets`] asks for it).
//!
//! [tokio-uring]: https://docs.rs/tokio-uring

mod auth;
pub mod bridge;
pub mod config;
mod hooks;
pub mod http;
mod idle;
mod limits;
pub mod passwd;
pub mod persistence;
pub mod proxy;
mod shared;
mod sys;
mod transport;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use auth::AuthConfig;
pub use config::{Anonymous, Config, ConfigError, ListenerConfig};
pub use petrel_state::broker::{
    describe_packet, AllowAll, AuthDecision, ClientInfo, Hooks, PacketDirection, Verdict,
};
use petrel_state::message::Message;
use shared::{Shared, WorkerMessage, WorkerStats};

/// Builds the hooks of one shard; called once per worker.
pub type HooksFactory = Arc<dyn Fn() -> Box<dyn Hooks> + Send + Sync>;

/// A broker to start.
pub struct Server {
    config: Config,
    hooks: Option<HooksFactory>,
}

impl Server {
    /// A broker with this configuration and no hooks of its own.
    pub fn new(config: Config) -> Self {
        Server {
            config,
            hooks: None,
        }
    }

    /// Registers hooks: `make` builds one instance per worker (shard).
    pub fn with_hooks(mut self, make: impl Fn() -> Box<dyn Hooks> + Send + Sync + 'static) -> Self {
        self.hooks = Some(Arc::new(make));
        self
    }

    /// Binds every listener, starts the workers, and returns once they accept connections.
    pub fn start(self) -> io::Result<RunningServer> {
        let workers = self.config.worker_count();
        let mut per_worker_tcp: Vec<Vec<(std::net::TcpListener, transport::Endpoint)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut unix = Vec::new();
        let mut addrs = Vec::new();
        let mut tls = Vec::new();
        for listener in &self.config.listeners {
            if let Some(bind) = listener.bind {
                let endpoint = transport::Endpoint::for_listener(listener)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                tls.extend(endpoint.tls.clone());
                // One socket per worker on the same port (SO_REUSEPORT): the kernel spreads
                // connections over the workers without an acceptor thread.
                let mut addr = bind;
                for sockets in per_worker_tcp.iter_mut() {
                    let socket = reuseport_listener(addr)?;
                    addr = socket.local_addr()?;
                    sockets.push((socket, endpoint.clone()));
                }
                addrs.push(addr);
            }
            if let Some(path) = &listener.unix {
                let _ = std::fs::remove_file(path);
                unix.push(std::os::unix::net::UnixListener::bind(path)?);
            }
        }
        let mut inboxes = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            inboxes.push(tx);
            receivers.push(rx);
        }
        let access = auth::Access::load(self.config.auth.clone())
            .map(Arc::new)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let watcher = if access.configured() {
            Some(access.clone().watch()?)
        } else {
            None
        };
        let shared_limits = limits::Limits::new(&self.config.limits);
        let mqtt_bridges = bridge::mqtt::stats_for(&self.config.bridge.mqtt);
        let kafka = bridge::kafka::KafkaBridges::start(&self.config.bridge.kafka, inboxes.clone())?;
        let shared = Arc::new(Shared {
            server_config: self.config.server_config(),
            config: self.config,
            origin: std::time::Instant::now(),
            stats: (0..workers).map(|_| WorkerStats::default()).collect(),
            shards: Mutex::new(Vec::new()),
            inboxes,
            taps: Mutex::new(shared::TapList::default()),
            tap_generation: AtomicU64::new(0),
            hooks_factory: self.hooks,
            access,
            limits: shared_limits,
            tls,
            mqtt_bridges,
            kafka: kafka.bridges.clone(),
            handovers: AtomicUsize::new(0),
            draining: AtomicUsize::new(0),
        });
        transport::certs::watch(Arc::downgrade(&shared));
        let mut persistence =
            persistence::Persistence::open(&shared.config, shared.origin, shared.inboxes.clone())?;
        let restored = Arc::new(std::sync::Barrier::new(workers));
        let mut threads = Vec::new();
        for (index, (tcp, inbox)) in per_worker_tcp.into_iter().zip(receivers).enumerate() {
            let shared = shared.clone();
            let (storage, state, durable) = persistence.shard(index);
            let restored = restored.clone();
            // The Unix listeners go to worker 0; connections move to their owner shard.
            let unix = if index == 0 {
                std::mem::take(&mut unix)
            } else {
                Vec::new()
            };
            let thread = std::thread::Builder::new()
                .name(format!("petrel-worker-{index}"))
                .spawn(move || {
                    tokio_uring::start(async move {
                        let worker = worker::Worker::new(index, shared, storage, state, durable);
                        worker.run(tcp, unix, inbox, restored).await;
                    });
                })?;
            threads.push(thread);
        }
        let http = match &shared.config.http {
            Some(config) => Some(http::HttpServer::start(shared.clone(), config)?),
            None => None,
        };
        let bridges = bridge::mqtt::Bridges::start(&shared)?;
        Ok(RunningServer {
            addrs,
            shared,
            threads,
            watcher,
            persistence,
            http,
            bridges,
            kafka,
        })
    }
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Linux copies it to every socket the listener accepts: no system call per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A running broker.
pub struct RunningServer {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
    persistence: persistence::Persistence,
    http: Option<http::HttpServer>,
    bridges: Option<bridge::mqtt::Bridges>,
    kafka: bridge::kafka::KafkaBridges,
}

impl RunningServer {
    /// The address of the HTTP API, when `[http]` is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(http::HttpServer::local_addr)
    }

    /// Reads the password file and the ACL file again (the broker does this on SIGHUP, and
    /// by itself within a second of a file changing). On an error, which names the file
    /// and the line, the rules in force stay as they were.
    pub fn reload_auth(&self) -> Result<(), String> {
        self.shared.access.reload()
    }

    /// The TCP addresses it listens on (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Reads every TLS listener's certificates, keys, client CAs and CRLs again (what
    /// SIGHUP does). New connections get the new ones; a listener whose files fail to load
    /// keeps those it has, and the error says which file and why.
    ///
    /// Returns how many TLS listeners were reloaded.
    pub fn reload_tls(&self) -> Result<usize, String> {
        let errors: Vec<String> = self
            .shared
            .tls
            .iter()
            .filter_map(|acceptor| acceptor.reload().err())
            .collect();
        if errors.is_empty() {
            Ok(self.shared.tls.len())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Publishes a message from the embedding program, as if a client had.
    pub fn publish(&self, message: Message) {
        self.shared.send(0, WorkerMessage::Publish(message));
    }

    /// Receives every message published (by clients, wills and the program) whose topic
    /// matches `filter`, for as long as the receiver lives.
    pub fn subscribe(&self, filter: &str) -> Receiver<Arc<Message>> {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.shared.add_taps([filter.to_string()], &sender);
        receiver
    }

    /// Stops gracefully: no new connections, DISCONNECT 0x8B to 5.0 clients, flush, stop.
    pub fn shutdown(mut self) {
        if let Some(http) = self.http {
            http.stop();
        }
        // Before the workers: the bridges' last messages still reach a shard.
        if let Some(bridges) = self.bridges {
            bridges.stop();
        }
        // Before the workers: a consumer waits for worker 0 to route what it fetched.
        self.kafka.stop();
        for worker in 0..self.threads.len() {
            self.shared.send(worker, WorkerMessage::Shutdown);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        self.shared.access.stop();
        if let Some(watcher) = self.watcher {
            let _ = watcher.join();
        }
        self.persistence.finish();
    }
}
