//! The broker's configuration: one TOML file (every key documented in
//! `runtime-uring/petrel.example.toml`), overridden by command-line flags.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use petrel_codec::QoS;
use petrel_state::server::{QueueLimits, ServerConfig};
use serde::Deserialize;

mod transport;
pub use transport::{CertUsername, CertificateConfig, TlsConfig, TlsVersion, WebSocketConfig};

/// Who may connect without a user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Anonymous clients only from loopback addresses (mosquitto 2's local-only mode).
    #[default]
    Loopback,
    /// Anonymous clients from anywhere.
    Allow,
    /// Every client must give a user name.
    Deny,
}

/// One place the broker accepts connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A TCP address (`127.0.0.1:1883`; port 0 picks a free one).
    #[serde(default)]
    pub bind: Option<SocketAddr>,
    /// A Unix socket path.
    #[serde(default)]
    pub unix: Option<PathBuf>,
    /// TLS (with `bind` only).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// WebSocket (with `bind` only); with `tls`, secure WebSocket.
    #[serde(default)]
    pub websocket: Option<WebSocketConfig>,
}

/// Limits on what clients may do and hold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest packet accepted, in bytes.
    pub max_packet_size: u32,
    /// Inbound QoS 1/2 messages a client may have unacknowledged.
    pub receive_maximum: u16,
    /// Outbound QoS 1/2 messages in flight at once to one client (mosquitto's
    /// `max_inflight_messages`); a 5.0 client that announces a lower Receive Maximum gets
    /// that.
    pub max_inflight_messages: u16,
    /// Longest keep-alive granted to a 5.0 client, in seconds (0: no cap).
    pub max_keep_alive: u16,
    /// Messages queued per session while the client is away or slow.
    pub max_queued_messages: usize,
    /// Bytes queued per session.
    pub max_queued_bytes: usize,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_offline: bool,
    /// Bytes waiting for a slow socket before QoS 0 messages to it are dropped.
    pub max_outbound_buffer: usize,
    /// Topic aliases a 5.0 client may use.
    pub topic_alias_maximum: u16,
    /// Highest QoS supported (0, 1 or 2).
    pub maximum_qos: u8,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout: u64,
    /// Most retained messages kept.
    pub max_retained: usize,
    /// Open connections in all (0: no limit).
    pub max_connections: usize,
    /// Open connections from one remote address (0: no limit).
    pub max_connections_per_address: usize,
    /// New connections per second from one remote address (0: no limit).
    pub connection_rate_per_address: u32,
    /// New connections one address may open at once (0: the rate).
    pub connection_burst_per_address: u32,
    /// PUBLISH packets per second per client (0: no limit); past it, DISCONNECT 0x96.
    pub publish_rate: u32,
    /// PUBLISH packets a client may send at once (0: the rate).
    pub publish_burst: u32,
    /// Most levels in a topic name or filter (0: no limit).
    pub max_topic_levels: usize,
    /// Most bytes in a topic name or filter (0: no limit).
    pub max_topic_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let server = ServerConfig::default();
        Limits {
            max_packet_size: server.max_packet_size,
            receive_maximum: server.receive_maximum,
            max_inflight_messages: server.max_inflight,
            max_keep_alive: server.max_keep_alive,
            max_queued_messages: server.queue.max_messages,
            max_queued_bytes: server.queue.max_bytes,
            queue_qos0_offline: server.queue.queue_qos0_offline,
            max_outbound_buffer: server.max_outbound_buffer,
            topic_alias_maximum: server.topic_alias_maximum,
            maximum_qos: server.maximum_qos as u8,
            connect_timeout: server.connect_timeout.as_secs(),
            max_retained: 1_000_000,
            max_connections: 0,
            max_connections_per_address: 0,
            connection_rate_per_address: 0,
            connection_burst_per_address: 0,
            publish_rate: 0,
            publish_burst: 0,
            max_topic_levels: 0,
            max_topic_length: 0,
        }
    }
}

/// `$SYS` topics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// Seconds between `$SYS` updates; 0 turns them off.
    pub interval: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig { interval: 10 }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Worker threads, one broker shard each; 0 means one per core.
    pub workers: usize,
    /// `error`, `warn`, `info`, `debug` (packet-level tracing) or `trace`.
    pub log_level: String,
    /// Directory for the broker's on-disk state.
    pub data_dir: PathBuf,
    /// Who may connect without a user name.
    pub anonymous: Anonymous,
    /// Where to accept connections.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Limits.
    pub limits: Limits,
    /// `$SYS` topics.
    pub sys: SysConfig,
    /// The password file and the ACL file.
    pub auth: crate::auth::AuthConfig,
    /// Persistence: where sessions and retained messages are kept.
    pub store: crate::persistence::StoreConfig,
    /// The HTTP API (`[http]`); off when absent.
    pub http: Option<crate::http::HttpConfig>,
    /// Bridges to other systems (`[[bridge.mqtt]]`, `[[bridge.kafka]]`).
    pub bridge: crate::bridge::BridgeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 0,
            log_level: String::from("info"),
            data_dir: PathBuf::from("data"),
            anonymous: Anonymous::Loopback,
            listeners: vec![ListenerConfig {
                bind: Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
                ..ListenerConfig::default()
            }],
            limits: Limits::default(),
            sys: SysConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            store: crate::persistence::StoreConfig::default(),
            http: None,
            bridge: crate::bridge::BridgeConfig::default(),
        }
    }
}

/// A configuration file that could not be used: where and why.
#[derive(Debug)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, naming the key and line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Config::parse(&text).map_err(|message| ConfigError {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses configuration text; the error names the line and the key.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| describe(text, &e))?;
        config.validate()?;
        for (n, kafka) in config.bridge.kafka.iter().enumerate() {
            kafka.validate(n + 1, text)?;
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.listeners.is_empty() {
            return Err(String::from(
                "no [[listener]]: the broker would accept nothing",
            ));
        }
        for (n, listener) in self.listeners.iter().enumerate() {
            if listener.bind.is_none() == listener.unix.is_none() {
                return Err(format!(
                    "[[listener]] #{}: give exactly one of `bind` or `unix`",
                    n + 1
                ));
            }
            if listener.unix.is_some() && (listener.tls.is_some() || listener.websocket.is_some()) {
                return Err(format!(
                    "[[listener]] #{}: `tls` and `websocket` need `bind`",
                    n + 1
                ));
            }
            if let Some(tls) = &listener.tls {
                tls.validate()
                    .map_err(|e| format!("[[listener]] #{}: {e}", n + 1))?;
            }
        }
        if self.limits.maximum_qos > 2 {
            return Err(String::from("limits.maximum_qos: must be 0, 1 or 2"));
        }
        if self.limits.max_inflight_messages == 0 {
            return Err(String::from(
                "limits.max_inflight_messages: must be at least 1",
            ));
        }
        if let Some(http) = &self.http {
            http.validate()?;
        }
        if self.limits.receive_maximum == 0 {
            return Err(String::from("limits.receive_maximum: must be at least 1"));
        }
        self.store.validate()?;
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

    /// The per-connection settings of the state machines.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let l = &self.limits;
        Arc::new(ServerConfig {
            connect_timeout: Duration::from_secs(l.connect_timeout),
            max_keep_alive: l.max_keep_alive,
            receive_maximum: l.receive_maximum,
            max_inflight: l.max_inflight_messages,
            max_packet_size: l.max_packet_size,
            topic_alias_maximum: l.topic_alias_maximum,
            maximum_qos: QoS::from_bits(l.maximum_qos).unwrap_or(QoS::ExactlyOnce),
            max_outbound_buffer: l.max_outbound_buffer,
            queue: QueueLimits {
                max_messages: l.max_queued_messages,
                max_bytes: l.max_queued_bytes,
                queue_qos0_offline: l.queue_qos0_offline,
            },
            ..ServerConfig::default()
        })
    }
}

/// toml's message, with the line number first: `line 3, key limits.maximum_qos: …`.
pub(crate) fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end().to_string();
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {message} (`{source}`)")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback() {
        let config = Config::parse("").unwrap();
        assert_eq!(
            config.listeners[0].bind,
            Some(SocketAddr::from(([127, 0, 0, 1], 1883)))
        );
        assert_eq!(config.anonymous, Anonymous::Loopback);
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../petrel.example.toml");
        Config::parse(text).unwrap();
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let err = Config::parse("workers = 2\n[limits]\nmax_packet_size = \"big\"\n").unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
        let err = Config::parse("workers = 2\nwrokers = 3\n").unwrap_err();
        assert!(
            err.starts_with("line 2:") && err.contains("wrokers"),
            "{err}"
        );
        let err = Config::parse("[limits]\nmaximum_qos = 3\n").unwrap_err();
        assert!(err.contains("limits.maximum_qos"), "{err}");
    }

    /// The commented-out settings of a part of the example file, uncommented: table headers
    /// and `key = value` lines, without the prose around them.
    fn uncommented_settings(section: &str) -> String {
        section
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| {
                line.starts_with('[')
                    || line.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
            })
            .map(|line| format!("{line}\n"))
            .collect()
    }

    #[test]
    fn the_example_files_commented_transport_listeners_parse() {
        let text = include_str!("../petrel.example.toml");
        let start = text.find("# bind = \"0.0.0.0:8883\"").unwrap();
        let start = text[..start].rfind("# [[listener]]").unwrap();
        let end = start + text[start..].find("[limits]").unwrap();
        let uncommented = uncommented_settings(&text[start..end]);
        let config = Config::parse(&uncommented).unwrap();
        assert_eq!(config.listeners.len(), 3, "{uncommented}");
        let tls = config.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.certs.len(), 2);
        assert_eq!(tls.cert_username, Some(CertUsername::Cn));
        assert!(config.listeners[1].websocket.is_some());
        assert!(config.listeners[2].tls.is_some() && config.listeners[2].websocket.is_some());
    }

    #[test]
    fn the_example_files_commented_kafka_bridge_parses() {
        let text = include_str!("../petrel.example.toml");
        let start = text.find("# [[bridge.kafka]]").unwrap();
        let end = text.find("# Bridges to other MQTT brokers").unwrap();
        let uncommented = uncommented_settings(&text[start..end]);
        let config = Config::parse(&uncommented).unwrap();
        let kafka = &config.bridge.kafka[0];
        assert_eq!(kafka.mapper.as_ref().unwrap().policy.len(), 2);
        assert_eq!(kafka.consume[0].qos, 1);
        let err =
            Config::parse("[[bridge.kafka]]\nbrokers = [\"k:1\"]\nmode = \"both\"\n").unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
    }

    #[test]
    fn transport_keys_parse_and_are_checked() {
        let config = Config::parse(
            "[[listener]]\nbind = \"127.0.0.1:8883\"\n\
             tls = { certs = [{ cert = \"a.pem\", key = \"a.key\" }], client_ca = \"ca.pem\", \
             cert_username = \"cn\", min_version = \"1.3\" }\n\
             websocket = { path = \"/ws\" }\n",
        )
        .unwrap();
        let listener = &config.listeners[0];
        let tls = listener.tls.as_ref().unwrap();
        assert!(tls.requires_client_cert());
        assert_eq!(tls.cert_username, Some(CertUsername::Cn));
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(tls.watch_interval, 5);
        assert_eq!(listener.websocket.as_ref().unwrap().path, "/ws");

        let err = Config::parse(
            "[[listener]]\nbind = \"127.0.0.1:8883\"\ntls = { certs = [], crl = \"c.pem\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("#1") && err.contains("tls.certs"), "{err}");
        let err = Config::parse(
            "[[listener]]\nbind = \"127.0.0.1:8883\"\n\
             tls = { certs = [{ cert = \"a\", key = \"b\" }], crl = \"c.pem\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("tls.crl"), "{err}");
        let err = Config::parse("[[listener]]\nunix = \"s\"\nwebsocket = {}\n").unwrap_err();
        assert!(err.contains("need `bind`"), "{err}");
        let err = Config::parse(
            "[[listener]]\nbind = \"127.0.0.1:1\"\ntls = { certs = [], min_version = \"1.1\" }\n",
        )
        .unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
    }
}
