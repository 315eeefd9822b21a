//! The proxy's configuration: its own TOML file (every key documented in
//! `runtime-uring/proxy.example.toml`), read at start and again on SIGHUP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use petrel_state::proxy::{BuiltinHooks, HealthConfig, PipeConfig};
use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::config::{describe, ConfigError, ListenerConfig};

/// How upstreams are probed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    /// Milliseconds between two probes of one upstream.
    pub interval_ms: u64,
    /// Milliseconds a probe may take (connect, CONNECT, CONNACK).
    pub timeout_ms: u64,
    /// Failed probes in a row before an upstream is declared down.
    pub fall: u32,
    /// Successful probes in a row before a dead upstream takes clients again.
    pub rise: u32,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            interval_ms: 2000,
            timeout_ms: 1000,
            fall: 1,
            rise: 1,
        }
    }
}

/// The proxy's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Addresses to accept plain MQTT over TCP on (port 0 picks a free one).
    pub listen: Vec<SocketAddr>,
    /// Listeners as the broker's `[[listener]]`: `bind` with `tls` (TLS termination, SNI,
    /// client certificates) and `websocket` (WebSocket, secure with `tls`).
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// The upstream brokers, `host:port`; a client id always lands on the same live one.
    pub upstreams: Vec<SocketAddr>,
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// `error`, `warn`, `info`, `debug` or `trace`, or a tracing filter.
    pub log_level: String,
    /// Whether clients without a user name may connect.
    pub allow_anonymous: bool,
    /// A tenant prefix such as `t/{username}/`: topics go upstream under it and come back
    /// without it. Empty: no prefix.
    pub tenant_prefix: String,
    /// Client ids whose every packet is logged (target `petrel::proxy::trace`).
    pub trace_clients: Vec<String>,
    /// The largest packet accepted from either side, in bytes (0: MQTT's maximum).
    pub max_packet_size: u32,
    /// Seconds a new client has to send CONNECT.
    pub connect_timeout: u64,
    /// Milliseconds the connection to an upstream may take before the client is refused
    /// (CONNACK "server unavailable"); a timeout alone does not declare the upstream down.
    pub upstream_connect_timeout_ms: u64,
    /// Upstream probing.
    pub health: HealthSettings,
    /// The password file and the ACL file, as the broker's `[auth]`.
    pub auth: AuthConfig,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            listeners: Vec::new(),
            upstreams: Vec::new(),
            workers: 0,
            log_level: String::from("info"),
            allow_anonymous: true,
            tenant_prefix: String::new(),
            trace_clients: Vec::new(),
            max_packet_size: 0,
            connect_timeout: 10,
            upstream_connect_timeout_ms: 5000,
            health: HealthSettings::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl ProxyConfig {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
        let error = |message| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        ProxyConfig::parse(&text).map_err(error)
    }

    /// Parses configuration text; the error names the line and the key.
    pub fn parse(text: &str) -> Result<ProxyConfig, String> {
        let config: ProxyConfig = toml::from_str(text).map_err(|e| describe(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.is_empty() && self.listeners.is_empty() {
            return Err(String::from(
                "listen and [[listener]]: the proxy would accept nothing",
            ));
        }
        for (n, listener) in self.listeners.iter().enumerate() {
            if listener.bind.is_none() || listener.unix.is_some() {
                return Err(format!("[[listener]] #{}: give `bind` (no `unix`)", n + 1));
            }
            if let Some(tls) = &listener.tls {
                tls.validate()
                    .map_err(|e| format!("[[listener]] #{}: {e}", n + 1))?;
            }
        }
        if self.upstreams.is_empty() {
            return Err(String::from("upstreams: at least one is needed"));
        }
        if !self.tenant_prefix.is_empty() && !self.tenant_prefix.contains("{username}") {
            return Err(String::from(
                "tenant_prefix: must contain {username}, or every client shares one tree",
            ));
        }
        if self.health.interval_ms == 0 || self.health.timeout_ms == 0 {
            return Err(String::from(
                "health.interval_ms and health.timeout_ms: must be above 0",
            ));
        }
        Ok(())
    }

    /// The number of workers to start.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    pub(crate) fn pipe_config(&self) -> PipeConfig {
        PipeConfig {
            max_packet_size: self.max_packet_size,
            trace_clients: self.trace_clients.iter().cloned().collect(),
        }
    }

    pub(crate) fn hooks(&self) -> BuiltinHooks {
        BuiltinHooks {
            allow_anonymous: self.allow_anonymous,
            tenant_template: (!self.tenant_prefix.is_empty())
                .then(|| Arc::from(self.tenant_prefix.as_str())),
        }
    }

    pub(crate) fn health_config(&self) -> HealthConfig {
        HealthConfig {
            interval: Duration::from_millis(self.health.interval_ms),
            fall: self.health.fall,
            rise: self.health.rise,
        }
    }

    pub(crate) fn upstream_addresses(&self) -> Vec<String> {
        self.upstreams.iter().map(|a| a.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses() {
        let config = ProxyConfig::parse(include_str!("../../proxy.example.toml")).unwrap();
        assert_eq!(config.upstreams.len(), 2);
    }

    #[test]
    fn errors_name_the_line() {
        let err = ProxyConfig::parse("upstreams = [\"127.0.0.1:1884\"]\nworkrs = 2\n").unwrap_err();
        assert!(
            err.starts_with("line 2:") && err.contains("workrs"),
            "{err}"
        );
        let err = ProxyConfig::parse("upstreams = [\"nowhere\"]\n").unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
        let err = ProxyConfig::parse("").unwrap_err();
        assert!(err.contains("upstreams"), "{err}");
        let err = ProxyConfig::parse("upstreams = [\"127.0.0.1:1\"]\ntenant_prefix = \"t/\"\n")
            .unwrap_err();
        assert!(err.contains("{username}"), "{err}");
    }
}
