//! The `petrel-bench` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use petrel_codec::{ProtocolVersion, QoS};

use super::compare::{self, ReportOptions};
use super::payload::STAMP_LEN;
use super::run::{run_blocking, Config, Topology};
use super::transport::{TlsOptions, TransportConfig};

/// Load generator for MQTT brokers, driven by Petrel's own client session.
///
/// Every message carries its send time, publisher and sequence number, so the receiving
/// side counts exactly what was delivered, lost, duplicated and reordered, and measures
/// end-to-end latency (HdrHistogram). Publishers and subscribers of the presets run in
/// this one process, on one clock.
///
/// Rates are measured over a window: from the end of the warm-up to when publishing stops
/// (duration runs), or from the first publish to the last delivery (count runs). After
/// publishing stops the run waits (`--drain`) for messages still on their way; what has
/// not arrived then is lost.
#[derive(Debug, Parser)]
#[command(name = "petrel-bench", version, max_term_width = 100)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open N connections at a rate, hold them, and report connection rate, connect
    /// latency, failures and (with --broker-pid) the broker's memory per connection.
    Conn(ConnArgs),
    /// Publish from N clients (whoever subscribes runs elsewhere: mosquitto_sub,
    /// `petrel-bench sub`).
    Pub(PubArgs),
    /// Subscribe with N clients and count what arrives (from `petrel-bench pub` in another
    /// process: latency then relies on both processes reading the same wall clock).
    Sub(SubArgs),
    /// P publishers, each on its own topic, into 1 subscriber of `<prefix>/+`.
    FanIn(FanInArgs),
    /// 1 publisher to S subscribers of its topic.
    FanOut(FanOutArgs),
    /// K independent publisher → subscriber pairs, each on its own topic.
    Pairs(PairsArgs),
    /// K pairs at QoS 2 on both legs: the whole exactly-once flow (PUBLISH, PUBREC,
    /// PUBREL, PUBCOMP) to the broker and from it.
    #[command(name = "qos2-roundtrip")]
    Qos2Roundtrip(PairsArgs),
    /// The TCP relay ceiling: forwards raw frames from publishers to subscribers without
    /// parsing them. Drive it with a preset and `--relay`.
    Relay(RelayArgs),
    /// Turn the JSON results of benches/compare/run.sh into BENCHMARKS.md tables and SVG
    /// charts.
    Report(ReportArgs),
    /// Print a free TCP port on 127.0.0.1 (for scripts that start brokers).
    FreePort,
}

/// Where to connect and how.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Broker host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short, long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT version: 3.1.1 (also 3, 4 or 311) or 5 (also 5.0).
    #[arg(short = 'V', long = "mqtt", default_value = "3.1.1", value_parser = parse_version)]
    pub version: ProtocolVersion,
    /// User name sent by every client.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password sent by every client.
    #[arg(long)]
    pub password: Option<String>,
    /// Keep-alive in seconds (PINGREQ when a connection is otherwise idle).
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// Persistent sessions: clean session off (3.1.1) / clean start off with the longest
    /// session expiry (5.0), so a broker with a store keeps every client's state on disk.
    #[arg(long)]
    pub persistent: bool,
    /// New connections per second (default: as fast as possible, at most 256 attempts in
    /// progress at once).
    #[arg(long, value_name = "PER_SEC")]
    pub connect_rate: Option<f64>,
    /// Worker threads of the generator (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also report this process's CPU use and resident memory (Linux /proc).
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// Print the report as JSON on stdout (the summary then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// A label for what is measured (e.g. the broker's name), kept in the JSON report.
    #[arg(long)]
    pub label: Option<String>,
    /// The scenario's name in the report (default: the subcommand).
    #[arg(long)]
    pub name: Option<String>,
    /// Prefix of client identifiers (default `pb-<run id>-`; each client appends its role
    /// and index).
    #[arg(long)]
    pub client_prefix: Option<String>,
    /// MQTT over TLS (rustls, TLS 1.2 or 1.3). Every connection makes a full handshake (no
    /// session resumption), as a fleet of distinct devices would.
    #[arg(long)]
    pub tls: bool,
    /// PEM file of the authorities the broker's certificate must chain to (with --tls or
    /// --wss).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Accept any broker certificate (handshake signatures are still checked).
    #[arg(long)]
    pub insecure: bool,
    /// PEM certificate chain to present to the broker (mTLS), with --client-key.
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// The name the broker's certificate is checked against and sent as SNI (default:
    /// --host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// MQTT over WebSocket (subprotocol `mqtt`) on TCP.
    #[arg(long, conflicts_with_all = ["wss", "tls"])]
    pub ws: bool,
    /// MQTT over secure WebSocket: WebSocket on TLS (the TLS flags apply).
    #[arg(long)]
    pub wss: bool,
    /// The WebSocket path (with --ws or --wss).
    #[arg(long, default_value = "/mqtt")]
    pub ws_path: String,
}

impl TargetArgs {
    /// The transport these flags ask for.
    pub fn transport(&self) -> Result<TransportConfig, String> {
        let tls = self.tls || self.wss;
        let tls_flags = self.ca_file.is_some()
            || self.insecure
            || self.client_cert.is_some()
            || self.server_name.is_some();
        if tls_flags && !tls {
            return Err(
                "--ca-file, --insecure, --client-cert and --server-name need --tls or --wss".into(),
            );
        }
        Ok(TransportConfig {
            tls: tls.then(|| TlsOptions {
                ca_file: self.ca_file.clone(),
                insecure: self.insecure,
                client_cert: self.client_cert.clone(),
                client_key: self.client_key.clone(),
                server_name: self.server_name.clone(),
            }),
            ws_path: (self.ws || self.wss).then(|| self.ws_path.clone()),
        })
    }
}

/// How much to publish.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// QoS of the publishes and (unless --sub-qos) of the subscriptions.
    #[arg(short, long, value_parser = parse_qos)]
    pub qos: Option<QoS>,
    /// QoS of the subscriptions, when it should differ from --qos.
    #[arg(long, value_parser = parse_qos)]
    pub sub_qos: Option<QoS>,
    /// Payload size in bytes (at least 16: the stamp with send time, publisher and
    /// sequence number; at most about 128 KiB).
    #[arg(short, long, default_value_t = 64)]
    pub size: usize,
    /// Messages per publisher. With --duration too, whichever comes first ends the run.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// How long to publish after the warm-up (e.g. 10s, 500ms, 2m). Default 10s unless
    /// --count is given.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Publishing before the measurement window opens (duration runs only): lets
    /// connections, buffers and the broker's caches settle.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Total messages per second over all publishers (default: as fast as possible,
    /// within --inflight).
    #[arg(short, long, value_name = "PER_SEC")]
    pub rate: Option<f64>,
    /// Messages each publisher may have outstanding. In the presets (fan-in, fan-out,
    /// pairs, qos2-roundtrip), at every QoS: sent but not yet received by all its
    /// subscribers, so an unpaced run measures what the broker sustains instead of how
    /// much the sockets and queues in between can hold. At QoS 1/2 also: sent but not yet
    /// acknowledged (the only bound for `pub`). Over 3.1.1 a client cannot learn the
    /// broker's limit: mosquitto closes a client with more than 20 QoS 2 messages awaiting
    /// PUBREL (its max_inflight_messages), so stay below it there. Default: 64 at QoS 1/2,
    /// 1024 at QoS 0, where the window holds nothing in the broker and a small one makes
    /// every publisher wait for a round trip every few kilobytes.
    #[arg(short, long)]
    pub inflight: Option<usize>,
    /// The longest wait for messages still on their way after publishing stops; what has
    /// not arrived by then counts as lost. The wait ends early once everything arrived or
    /// nothing arrived for a second.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// The target is `petrel-bench relay`, the ceiling measurement: the same sessions
    /// and payloads, with the relay's handshake instead of CONNACK and SUBACK, and QoS 0
    /// (the relay acknowledges nothing).
    #[arg(long)]
    pub relay: bool,
    /// Topic prefix of the presets (default `petrel-bench/<run id>`).
    #[arg(long)]
    pub topic_prefix: Option<String>,
}

/// `conn`.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 1000)]
    pub clients: usize,
    /// How long to hold them once all were attempted.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Each connection also subscribes to a topic of its own, and counts as established
    /// at its SUBACK: the rate and latency are then of accept + subscribe.
    #[arg(long)]
    pub subscribe: bool,
}

/// `pub`.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub load: LoadArgs,
    /// Publishing clients.
    #[arg(short = 'c', long, default_value_t = 1)]
    pub clients: usize,
    /// Topic; `%i` becomes the client's index.
    #[arg(short, long, default_value = "petrel-bench/%i")]
    pub topic: String,
}

/// `sub`.
#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
    /// Subscribing clients.
    #[arg(short = 'c', long, default_value_t = 1)]
    pub clients: usize,
    /// Topic filter; `%i` becomes the client's index.
    #[arg(short, long, default_value = "petrel-bench/#")]
    pub topic: String,
    /// QoS of the subscriptions.
    #[arg(short, long, default_value = "0", value_parser = parse_qos)]
    pub qos: QoS,
    /// Stop once every subscriber received this many distinct messages.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Stop after this long (default 10s unless --count is given).
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// `fan-in`.
#[derive(Debug, Clone, Args)]
pub struct FanInArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub load: LoadArgs,
    /// Publishers.
    #[arg(short = 'P', long, default_value_t = 8)]
    pub publishers: usize,
}

/// `fan-out`.
#[derive(Debug, Clone, Args)]
pub struct FanOutArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub load: LoadArgs,
    /// Subscribers.
    #[arg(short = 'S', long, default_value_t = 8)]
    pub subscribers: usize,
}

/// `pairs` and `qos2-roundtrip`.
#[derive(Debug, Clone, Args)]
pub struct PairsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub load: LoadArgs,
    /// Publisher → subscriber pairs.
    #[arg(short = 'K', long, default_value_t = 8)]
    pub pairs: usize,
}

/// `relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Address to listen on.
    #[arg(short, long, default_value = "127.0.0.1:1884")]
    pub listen: SocketAddr,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Directory of JSON reports (`--json` output of each run, labelled with --label).
    #[arg(long)]
    pub results: PathBuf,
    /// Markdown file whose generated section is replaced (appended if absent); without
    /// it the section goes to stdout.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Directory for throughput.svg and latency.svg.
    #[arg(long)]
    pub svg_dir: Option<PathBuf>,
    /// How the markdown links to --svg-dir.
    #[arg(long, default_value = "docs/bench")]
    pub svg_link: String,
    /// Targets in table order (comma-separated); others found in the results follow.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "relay,petrel,mosquitto,rumqttd"
    )]
    pub targets: Vec<String>,
    /// Targets listed but not built yet: shown as "not yet built".
    #[arg(long, value_delimiter = ',')]
    pub not_built: Vec<String>,
    /// The target whose figures are the ceiling.
    #[arg(long, default_value = "relay")]
    pub ceiling: String,
    /// A line under the heading (machine, versions, the command); repeatable.
    #[arg(long)]
    pub note: Vec<String>,
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "3.1.1" | "3" | "4" | "311" => Ok(ProtocolVersion::V311),
        "5" | "5.0" => Ok(ProtocolVersion::V5),
        _ => Err(format!("unknown MQTT version {s:?}: use 3.1.1 or 5")),
    }
}

fn parse_qos(s: &str) -> Result<QoS, String> {
    match s {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        _ => Err(format!("QoS is 0, 1 or 2, not {s:?}")),
    }
}

/// Parses `10s`, `500ms`, `2m`, `1h` or plain seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 10s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?}")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn apply_target(c: &mut Config, t: &TargetArgs) -> Result<(), String> {
    c.transport = t.transport()?;
    c.host = t.host.clone();
    c.port = t.port;
    c.version = t.version;
    c.username = t.username.clone();
    c.password = t.password.clone();
    c.keep_alive = t.keep_alive;
    c.persistent = t.persistent;
    c.connect_rate = t.connect_rate.filter(|r| *r > 0.0);
    if let Some(n) = t.threads {
        c.threads = n.max(1);
    }
    c.broker_pid = t.broker_pid;
    c.progress = !t.quiet;
    c.label = t.label.clone();
    if let Some(name) = &t.name {
        c.name = name.clone();
    }
    c.client_prefix = t.client_prefix.clone();
    Ok(())
}

fn apply_load(c: &mut Config, l: &LoadArgs, default_qos: QoS) -> Result<(), String> {
    c.qos = l.qos.unwrap_or(default_qos);
    c.sub_qos = l.sub_qos.unwrap_or(c.qos);
    if l.size < STAMP_LEN {
        return Err(format!(
            "--size must be at least {STAMP_LEN} bytes (the stamp)"
        ));
    }
    c.payload = l.size;
    c.count = l.count;
    c.duration = match (l.count, l.duration) {
        (_, Some(d)) => Some(d),
        (Some(_), None) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    c.warmup = l.warmup;
    c.rate = l.rate.filter(|r| *r > 0.0);
    c.inflight = l.inflight;
    c.drain = l.drain;
    c.relay = l.relay;
    c.topic_prefix = l.topic_prefix.clone();
    Ok(())
}

/// Builds the run configuration of a load subcommand.
pub fn config_of(command: &Command) -> Result<(Config, bool), String> {
    Ok(match command {
        Command::Conn(a) => {
            let mut c = Config::new(
                "conn",
                Topology::Conn {
                    clients: a.clients,
                    subscribe: a.subscribe,
                },
            );
            apply_target(&mut c, &a.target)?;
            c.hold = a.hold;
            c.duration = Some(a.hold);
            (c, a.target.json)
        }
        Command::Pub(a) => {
            let topology = Topology::Pub {
                clients: a.clients,
                topic: a.topic.clone(),
            };
            let mut c = Config::new("pub", topology);
            apply_target(&mut c, &a.target)?;
            apply_load(&mut c, &a.load, QoS::AtMostOnce)?;
            if a.load.relay {
                return Err("--relay works with the presets only".into());
            }
            (c, a.target.json)
        }
        Command::Sub(a) => {
            let topology = Topology::Sub {
                clients: a.clients,
                filter: a.topic.clone(),
            };
            let mut c = Config::new("sub", topology);
            apply_target(&mut c, &a.target)?;
            c.qos = a.qos;
            c.sub_qos = a.qos;
            c.count = a.count;
            c.duration = match (a.count, a.duration) {
                (_, Some(d)) => Some(d),
                (Some(_), None) => None,
                (None, None) => Some(Duration::from_secs(10)),
            };
            c.warmup = Duration::ZERO;
            (c, a.target.json)
        }
        Command::FanIn(a) => {
            let topology = Topology::FanIn {
                publishers: a.publishers,
            };
            let mut c = Config::new("fan-in", topology);
            apply_target(&mut c, &a.target)?;
            apply_load(&mut c, &a.load, QoS::AtMostOnce)?;
            (c, a.target.json)
        }
        Command::FanOut(a) => {
            let topology = Topology::FanOut {
                subscribers: a.subscribers,
            };
            let mut c = Config::new("fan-out", topology);
            apply_target(&mut c, &a.target)?;
            apply_load(&mut c, &a.load, QoS::AtMostOnce)?;
            (c, a.target.json)
        }
        Command::Pairs(a) => {
            let mut c = Config::new("pairs", Topology::Pairs { pairs: a.pairs });
            apply_target(&mut c, &a.target)?;
            apply_load(&mut c, &a.load, QoS::AtMostOnce)?;
            (c, a.target.json)
        }
        Command::Qos2Roundtrip(a) => {
            let mut c = Config::new("qos2-roundtrip", Topology::Pairs { pairs: a.pairs });
            apply_target(&mut c, &a.target)?;
            apply_load(&mut c, &a.load, QoS::ExactlyOnce)?;
            if a.load.qos.is_some_and(|q| q != QoS::ExactlyOnce)
                || a.load.sub_qos.is_some_and(|q| q != QoS::ExactlyOnce)
            {
                return Err("qos2-roundtrip is QoS 2 on both legs; use pairs for others".into());
            }
            (c, a.target.json)
        }
        Command::Relay(_) | Command::Report(_) | Command::FreePort => {
            return Err("not a load subcommand".into())
        }
    })
}

/// The entry point of the `petrel-bench` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Relay(a) => relay(a),
        Command::Report(a) => report(a),
        Command::FreePort => match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => match l.local_addr() {
                Ok(a) => {
                    println!("{}", a.port());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            },
            Err(e) => fail(&e.to_string()),
        },
        command => {
            let (config, json) = match config_of(command) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let report = match run_blocking(&config) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            if json {
                eprint!("{}", report.human());
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => return fail(&e.to_string()),
                }
            } else {
                print!("{}", report.human());
            }
            let _ = std::io::stdout().flush();
            if report.connections.established == 0 {
                eprintln!("petrel-bench: no connection could be established");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("petrel-bench: {message}");
    ExitCode::FAILURE
}

fn relay(a: &RelayArgs) -> ExitCode {
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen).await?;
        println!("relay listening on {}", listener.local_addr()?);
        let _ = std::io::stdout().flush();
        super::relay::serve(listener).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn report(a: &ReportArgs) -> ExitCode {
    let opts = ReportOptions {
        results: a.results.clone(),
        markdown: a.markdown.clone(),
        svg_dir: a.svg_dir.clone(),
        svg_link: a.svg_link.clone(),
        targets: a.targets.clone(),
        not_built: a.not_built.clone(),
        ceiling: a.ceiling.clone(),
        notes: a.note.clone(),
    };
    let section = match compare::generate(&opts) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    match &opts.markdown {
        Some(path) => {
            let existing = std::fs::read_to_string(path).unwrap_or_default();
            if let Err(e) = std::fs::write(path, compare::splice(&existing, &section)) {
                return fail(&format!("{}: {e}", path.display()));
            }
        }
        None => print!("{section}"),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn presets_pick_their_defaults() {
        let cli = Cli::try_parse_from(["petrel-bench", "qos2-roundtrip", "-K", "2"]).unwrap();
        let (c, _) = config_of(&cli.command).unwrap();
        assert_eq!((c.qos, c.sub_qos), (QoS::ExactlyOnce, QoS::ExactlyOnce));
        let cli = Cli::try_parse_from(["petrel-bench", "qos2-roundtrip", "-q", "1"]).unwrap();
        assert!(config_of(&cli.command).is_err());
        let cli = Cli::try_parse_from(["petrel-bench", "fan-in", "-n", "100"]).unwrap();
        let (c, _) = config_of(&cli.command).unwrap();
        assert_eq!((c.count, c.duration), (Some(100), None));
    }

    #[test]
    fn transport_flags() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["petrel-bench", "conn"].iter().chain(args))
                .map_err(|e| e.to_string())?;
            config_of(&cli.command).map(|(c, _)| c.transport)
        };
        assert_eq!(parse(&[]).unwrap(), TransportConfig::default());
        let wss = parse(&["--wss", "--insecure", "--ws-path", "/x"]).unwrap();
        assert_eq!(wss.ws_path.as_deref(), Some("/x"));
        assert!(wss.tls.is_some_and(|t| t.insecure));
        let ws = parse(&["--ws"]).unwrap();
        assert_eq!((ws.ws_path.as_deref(), ws.tls), (Some("/mqtt"), None));
        assert!(parse(&["--ca-file", "ca.pem"]).is_err());
        assert!(parse(&["--ws", "--tls"]).is_err());
        assert!(parse(&["--tls", "--client-cert", "c.pem"]).is_err());
    }
}
