//! The `petrel proxy` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info, warn};

use super::{Proxy, ProxyConfig};

/// Petrel as a proxy in front of other MQTT brokers: every packet both ways through the
/// codec and the hooks, clients spread over the upstreams by client id, upstreams probed.
///
/// Every option of the configuration file is documented in
/// runtime-uring/proxy.example.toml. SIGHUP re-reads the file and applies its upstreams.
#[derive(Debug, Parser)]
#[command(name = "petrel proxy", version)]
struct Args {
    /// The TOML configuration file.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on this address instead of the configured ones (repeatable; port 0 picks a
    /// free port, printed at start).
    #[arg(short, long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// An upstream broker instead of the configured ones (repeatable).
    #[arg(short, long, value_name = "ADDR")]
    upstream: Vec<SocketAddr>,
    /// error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Worker threads (0: one per core).
    #[arg(short, long)]
    workers: Option<usize>,
}

impl Args {
    /// The configuration file with the command line's overrides.
    fn config(&self) -> Result<ProxyConfig, String> {
        let mut config = match &self.config {
            Some(path) => ProxyConfig::load(path).map_err(|e| e.to_string())?,
            None => ProxyConfig::default(),
        };
        if !self.listen.is_empty() {
            config.listen = self.listen.clone();
        }
        if !self.upstream.is_empty() {
            config.upstreams = self.upstream.clone();
        }
        if let Some(level) = &self.log_level {
            config.log_level = level.clone();
        }
        if let Some(workers) = self.workers {
            config.workers = workers;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs `petrel proxy` with `args` (the first one being `proxy`) until SIGINT or SIGTERM.
pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args = Args::parse_from(args);
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("petrel proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();

    let proxy = match Proxy::new(config).start() {
        Ok(proxy) => proxy,
        Err(e) => {
            error!("could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in proxy.local_addrs() {
        info!(%addr, "proxy listening");
        // A line for scripts and tests that started us on port 0.
        println!("listening on {addr}");
    }
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            error!("cannot watch signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    for signal in signals.forever() {
        if signal != SIGHUP {
            info!(signal, "shutting down");
            break;
        }
        match args.config() {
            Ok(config) => {
                if let Err(e) = proxy.reload(&config) {
                    warn!("auth files not reloaded, the rules in force stay: {e}");
                }
            }
            Err(e) => warn!("reload refused, keeping the running configuration: {e}"),
        }
    }
    proxy.shutdown();
    info!("stopped");
    ExitCode::SUCCESS
}
