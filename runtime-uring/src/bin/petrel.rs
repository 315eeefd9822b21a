//! The `petrel` command: the broker, and `petrel proxy`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use petrel::{Config, ListenerConfig, Server};
use tracing::{error, info};

/// Petrel, an MQTT 3.1.1 and 5.0 broker on io_uring.
///
/// Without options it listens on 127.0.0.1:1883 and accepts anonymous clients from loopback
/// only. Every option of the configuration file is documented in
/// runtime-uring/petrel.example.toml. `petrel proxy --help`: Petrel in front of other brokers.
#[derive(Debug, Parser)]
#[command(name = "petrel", version)]
struct Args {
    /// The TOML configuration file.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on this TCP address instead of the configured ones (repeatable; port 0
    /// picks a free port, printed at start).
    #[arg(short, long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Directory for the broker's on-disk state.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// error, warn, info, debug (packet-level tracing) or trace.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Worker threads (0: one per core).
    #[arg(short, long)]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add, change or remove a user in a password file (like mosquitto_passwd).
    Passwd(petrel::passwd::PasswdArgs),
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("proxy") {
        return petrel::proxy::cli_main(std::env::args().skip(1));
    }
    let args = Args::parse();
    if let Some(Command::Passwd(passwd)) = &args.command {
        return match petrel::passwd::run(passwd) {
            Ok(done) => {
                eprintln!("petrel passwd: {done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("petrel passwd: {e}");
                ExitCode::from(2)
            }
        };
    }
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("petrel: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listeners = args
            .listen
            .iter()
            .map(|&bind| ListenerConfig {
                bind: Some(bind),
                ..ListenerConfig::default()
            })
            .collect();
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(level) = args.log_level {
        config.log_level = level;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();

    let workers = config.worker_count();
    let server = match Server::new(config).start() {
        Ok(server) => server,
        Err(e) => {
            error!("could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in server.local_addrs() {
        info!(%addr, workers, "listening");
        // A line for scripts and tests that started us on port 0.
        println!("listening on {addr}");
    }
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(signals) => signals,
        Err(e) => {
            error!("cannot watch signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGHUP {
            match server.reload_auth() {
                Ok(()) => info!("SIGHUP: password and ACL files reloaded"),
                Err(e) => error!("SIGHUP: reload failed, the previous rules stay: {e}"),
            }
            match server.reload_tls() {
                Ok(0) => {}
                Ok(listeners) => info!(listeners, "SIGHUP: TLS files reloaded"),
                Err(e) => error!("SIGHUP: TLS files not reloaded: {e}"),
            }
            continue;
        }
        info!(signal, "shutting down");
        break;
    }
    server.shutdown();
    info!("stopped");
    ExitCode::SUCCESS
}
