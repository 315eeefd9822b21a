//! The `[[bridge.mqtt]]` tables, checked while they are parsed so that an error carries the
//! line of the table it is about.

use petrel_codec::topic::{matches, validate_topic_filter};
use petrel_codec::{ProtocolVersion, QoS};
use serde::Deserialize;

/// Which way a bridged topic carries messages (mosquitto's `in`, `out` and `both`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Subscribe on the remote broker and publish here.
    In,
    /// Publish local messages on the remote broker.
    Out,
    /// Both; messages the bridge brought in are not sent back out.
    Both,
}

impl Direction {
    /// Whether local messages go out.
    pub fn outward(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Whether remote messages come in.
    pub fn inward(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One bridged topic, with mosquitto's `topic` semantics: the local side matches
/// `local_prefix + filter`, the remote side `remote_prefix + filter`, and a message crossing
/// over has one prefix replaced by the other. An empty `filter` renames one topic: the
/// prefixes are then the whole topic names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawTopic")]
pub struct BridgeTopic {
    /// The topic filter, between the prefixes.
    pub filter: String,
    /// Which way messages go.
    pub direction: Direction,
    /// The highest QoS messages cross with: the remote subscription's for `in`, the cap on
    /// a local message's QoS for `out`.
    pub qos: QoS,
    /// Put before `filter` on this broker.
    pub local_prefix: String,
    /// Put before `filter` on the remote broker.
    pub remote_prefix: String,
    local_filter: String,
    remote_filter: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    #[serde(default)]
    filter: String,
    #[serde(default = "default_direction")]
    direction: Direction,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    local_prefix: String,
    #[serde(default)]
    remote_prefix: String,
}

fn default_direction() -> Direction {
    Direction::Out
}

impl TryFrom<RawTopic> for BridgeTopic {
    type Error = String;

    fn try_from(raw: RawTopic) -> Result<Self, String> {
        let checked = BridgeTopic::check(raw);
        checked.map_err(|(filter, message)| format!("topics: {{ filter = {filter:?} }}: {message}"))
    }
}

impl BridgeTopic {
    fn check(raw: RawTopic) -> Result<Self, (String, String)> {
        let fail = |message: String| (raw.filter.clone(), message);
        let qos = QoS::from_bits(raw.qos)
            .ok_or_else(|| fail(format!("qos: {} is not 0, 1 or 2", raw.qos)))?;
        if raw.filter.is_empty() && (raw.local_prefix.is_empty() || raw.remote_prefix.is_empty()) {
            return Err(fail(String::from(
                "filter: empty, which renames one topic and then needs both local_prefix and \
                 remote_prefix",
            )));
        }
        for (key, prefix) in [
            ("local_prefix", &raw.local_prefix),
            ("remote_prefix", &raw.remote_prefix),
        ] {
            if prefix.contains(['+', '#', '\0']) {
                return Err(fail(format!("{key}: {prefix:?} may not hold a wildcard")));
            }
        }
        let local_filter = format!("{}{}", raw.local_prefix, raw.filter);
        let remote_filter = format!("{}{}", raw.remote_prefix, raw.filter);
        for (key, filter) in [("local", &local_filter), ("remote", &remote_filter)] {
            if validate_topic_filter(filter).is_err() || filter.contains('\0') {
                return Err(fail(format!(
                    "filter: the {key} filter {filter:?} is not a valid topic filter"
                )));
            }
        }
        Ok(BridgeTopic {
            filter: raw.filter,
            direction: raw.direction,
            qos,
            local_prefix: raw.local_prefix,
            remote_prefix: raw.remote_prefix,
            local_filter,
            remote_filter,
        })
    }
}

impl BridgeTopic {
    /// The filter on this broker: `local_prefix + filter`.
    pub fn local_filter(&self) -> &str {
        &self.local_filter
    }

    /// The filter on the remote broker: `remote_prefix + filter`.
    pub fn remote_filter(&self) -> &str {
        &self.remote_filter
    }

    /// The remote topic for a local one, if this entry carries it out.
    pub fn outbound(&self, local: &str) -> Option<String> {
        if !self.direction.outward() || !matches(&self.local_filter, local) {
            return None;
        }
        let rest = local.strip_prefix(self.local_prefix.as_str())?;
        Some(format!("{}{rest}", self.remote_prefix))
    }

    /// The local topic for a remote one, if this entry brings it in.
    pub fn inbound(&self, remote: &str) -> Option<String> {
        if !self.direction.inward() || !matches(&self.remote_filter, remote) {
            return None;
        }
        let rest = remote.strip_prefix(self.remote_prefix.as_str())?;
        Some(format!("{}{rest}", self.local_prefix))
    }
}

/// The protocol the bridge speaks to the remote broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// MQTT 3.1.1.
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0.
    #[serde(rename = "5.0")]
    V5,
}

impl Protocol {
    /// The codec's version.
    pub fn version(self) -> ProtocolVersion {
        match self {
            Protocol::V311 => ProtocolVersion::V311,
            Protocol::V5 => ProtocolVersion::V5,
        }
    }
}

/// One `[[bridge.mqtt]]` table: a connection to another MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawBridge")]
pub struct MqttBridgeConfig {
    /// Names the bridge in logs, `/metrics` and `$SYS` (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The remote broker, `host:port`.
    pub address: String,
    /// The client identifier on the remote broker (default `petrel-bridge-NAME`).
    pub client_id: String,
    /// The user name on the remote broker.
    pub username: Option<String>,
    /// The password on the remote broker.
    pub password: Option<String>,
    /// `"3.1.1"` or `"5.0"`.
    pub protocol: Protocol,
    /// Start a new session at every connection; `false` (the default) keeps one, so QoS 1/2
    /// messages in flight are sent again after a reconnect.
    pub clean_start: bool,
    /// 5.0: seconds the remote broker keeps the session after a disconnection.
    pub session_expiry: u32,
    /// Keep-alive, in seconds.
    pub keep_alive: u16,
    /// The first reconnection delay, in milliseconds; it doubles after each failure.
    pub reconnect_min_ms: u64,
    /// The longest reconnection delay, in milliseconds.
    pub reconnect_max_ms: u64,
    /// Outgoing messages held while the remote broker is away or slow.
    pub max_queued: usize,
    /// The bridged topics.
    pub topics: Vec<BridgeTopic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    name: String,
    address: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default = "default_protocol")]
    protocol: Protocol,
    #[serde(default)]
    clean_start: bool,
    #[serde(default = "default_session_expiry")]
    session_expiry: u32,
    #[serde(default = "default_keep_alive")]
    keep_alive: u16,
    #[serde(default = "default_reconnect_min")]
    reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max")]
    reconnect_max_ms: u64,
    #[serde(default = "default_max_queued")]
    max_queued: usize,
    #[serde(default)]
    topics: Vec<BridgeTopic>,
}

fn default_protocol() -> Protocol {
    Protocol::V311
}
fn default_session_expiry() -> u32 {
    86_400
}
fn default_keep_alive() -> u16 {
    60
}
fn default_reconnect_min() -> u64 {
    1_000
}
fn default_reconnect_max() -> u64 {
    30_000
}
fn default_max_queued() -> usize {
    1_000
}

impl TryFrom<RawBridge> for MqttBridgeConfig {
    type Error = String;

    fn try_from(raw: RawBridge) -> Result<Self, String> {
        let name = raw.name;
        let fail = |message: String| format!("bridge.mqtt {name:?}: {message}");
        // The name becomes a `$SYS` topic level and a Prometheus label value as it is.
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(fail(String::from(
                "name: use letters, digits, '-', '_' and '.' only",
            )));
        }
        let port = raw
            .address
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|port| port.parse::<u16>().ok());
        if port.is_none_or(|p| p == 0) {
            return Err(fail(format!("address: {:?} is not host:port", raw.address)));
        }
        if raw.protocol == Protocol::V311 && raw.password.is_some() && raw.username.is_none() {
            return Err(fail(String::from(
                "password: MQTT 3.1.1 sends a password only with a username",
            )));
        }
        if raw.reconnect_min_ms == 0 || raw.reconnect_max_ms < raw.reconnect_min_ms {
            return Err(fail(String::from(
                "reconnect_min_ms / reconnect_max_ms: need 0 < min <= max",
            )));
        }
        if raw.max_queued == 0 {
            return Err(fail(String::from("max_queued: must be at least 1")));
        }
        if raw.topics.is_empty() {
            return Err(fail(String::from("topics: bridges nothing")));
        }
        let client_id = raw
            .client_id
            .unwrap_or_else(|| format!("petrel-bridge-{name}"));
        if client_id.is_empty() || client_id.contains('\0') {
            return Err(fail(String::from("client_id: must not be empty")));
        }
        Ok(MqttBridgeConfig {
            name,
            address: raw.address,
            client_id,
            username: raw.username,
            password: raw.password,
            protocol: raw.protocol,
            clean_start: raw.clean_start,
            session_expiry: raw.session_expiry,
            keep_alive: raw.keep_alive,
            reconnect_min_ms: raw.reconnect_min_ms,
            reconnect_max_ms: raw.reconnect_max_ms,
            max_queued: raw.max_queued,
            topics: raw.topics,
        })
    }
}

impl MqttBridgeConfig {
    /// The remote topic for a local message: the first outward topic that matches, with the
    /// QoS cap of that entry (mosquitto also takes the first match).
    pub fn outbound(&self, local: &str) -> Option<(String, QoS)> {
        self.topics
            .iter()
            .find_map(|t| t.outbound(local).map(|remote| (remote, t.qos)))
    }

    /// The local topic for a remote message: the first inward topic that matches.
    pub fn inbound(&self, remote: &str) -> Option<(String, QoS)> {
        self.topics
            .iter()
            .find_map(|t| t.inbound(remote).map(|local| (local, t.qos)))
    }

    /// Whether a remote topic would come back in through one of the inward topics.
    pub fn comes_back(&self, remote: &str) -> bool {
        self.topics
            .iter()
            .any(|t| t.direction.inward() && matches(t.remote_filter(), remote))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(text: &str) -> Result<MqttBridgeConfig, String> {
        toml::from_str(text).map_err(|e| crate::config::describe(text, &e))
    }

    const BASE: &str = "name = \"up\"\naddress = \"127.0.0.1:1884\"\n";

    #[test]
    fn prefixes_swap_like_mosquitto() {
        let config = bridge(&format!(
            "{BASE}topics = [\
             {{ filter = \"sensors/#\", direction = \"out\", qos = 1, local_prefix = \"site/\", \
                remote_prefix = \"plant/a/\" }},\
             {{ filter = \"cmd/+\", direction = \"in\", qos = 2, local_prefix = \"site/\", \
                remote_prefix = \"plant/a/\" }},\
             {{ filter = \"\", direction = \"both\", local_prefix = \"here/x\", \
                remote_prefix = \"there/y\" }}]\n"
        ))
        .unwrap();
        assert_eq!(config.client_id, "petrel-bridge-up");
        assert_eq!(config.protocol, Protocol::V311);
        assert_eq!(
            config.outbound("site/sensors/t1"),
            Some((String::from("plant/a/sensors/t1"), QoS::AtLeastOnce))
        );
        assert_eq!(config.outbound("sensors/t1"), None);
        // `cmd/+` is inward only.
        assert_eq!(config.outbound("site/cmd/x"), None);
        assert_eq!(
            config.inbound("plant/a/cmd/x"),
            Some((String::from("site/cmd/x"), QoS::ExactlyOnce))
        );
        assert_eq!(config.inbound("plant/a/sensors/t1"), None);
        // An empty filter renames exactly one topic, both ways.
        assert_eq!(
            config.outbound("here/x"),
            Some((String::from("there/y"), QoS::AtMostOnce))
        );
        assert_eq!(
            config.inbound("there/y"),
            Some((String::from("here/x"), QoS::AtMostOnce))
        );
        assert_eq!(config.inbound("there/y/z"), None);
        assert!(config.comes_back("plant/a/cmd/1"));
        assert!(!config.comes_back("plant/a/sensors/1"));
    }

    #[test]
    fn the_first_matching_topic_wins() {
        let config = bridge(&format!(
            "{BASE}topics = [{{ filter = \"a/b\", qos = 0 }}, {{ filter = \"a/#\", qos = 2 }}]\n"
        ))
        .unwrap();
        assert_eq!(config.outbound("a/b").unwrap().1, QoS::AtMostOnce);
        assert_eq!(config.outbound("a/c").unwrap().1, QoS::ExactlyOnce);
        // The default direction is out, as in mosquitto.
        assert_eq!(config.inbound("a/b"), None);
    }

    #[test]
    fn the_example_files_commented_bridge_parses() {
        let text = include_str!("../../../petrel.example.toml");
        let start = text.find("# [[bridge.mqtt]]").unwrap();
        let uncommented: String = text[start..]
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .map(|line| format!("{line}\n"))
            .collect();
        let config = crate::config::Config::parse(&uncommented).unwrap();
        let bridge = &config.bridge.mqtt[0];
        assert_eq!(bridge.name, "cloud");
        assert_eq!(
            bridge.outbound("sensors/t"),
            Some((String::from("site-7/sensors/t"), QoS::AtLeastOnce))
        );
        assert_eq!(
            bridge.inbound("site-7/commands/reboot"),
            Some((String::from("commands/reboot"), QoS::AtLeastOnce))
        );
    }

    #[test]
    fn errors_carry_the_line() {
        let err = crate::config::Config::parse(
            "workers = 1\n[[bridge.mqtt]]\nname = \"up\"\naddress = \"h:1\"\n\
             topics = [\n  { filter = \"a\" },\n  { filter = \"b\", qos = 7 },\n]\n",
        )
        .unwrap_err();
        // The line of the `topics` key, and the entry by its filter.
        assert!(
            err.starts_with("line 5:") && err.contains("filter = \"b\"") && err.contains("qos: 7"),
            "{err}"
        );
        let err = crate::config::Config::parse(
            "[[bridge.mqtt]]\nname = \"up\"\naddress = \"h:1\"\nmax_queued = 0\n\
             topics = [{ filter = \"a\" }]\n",
        )
        .unwrap_err();
        assert!(err.contains("line ") && err.contains("max_queued"), "{err}");
    }

    #[test]
    fn bad_entries_are_refused_by_key() {
        let cases = [
            ("topics = [{ filter = \"a\", qos = 3 }]", "qos"),
            ("topics = [{ filter = \"a/#/b\" }]", "filter"),
            (
                "topics = [{ filter = \"\", local_prefix = \"x\" }]",
                "filter",
            ),
            (
                "topics = [{ filter = \"a\", local_prefix = \"+/\" }]",
                "local_prefix",
            ),
            (
                "topics = [{ filter = \"a\", direction = \"sideways\" }]",
                "sideways",
            ),
            ("topics = []", "topics"),
            (
                "topics = [{ filter = \"a\" }]\nreconnect_min_ms = 0",
                "reconnect_min_ms",
            ),
            (
                "topics = [{ filter = \"a\" }]\nmax_queued = 0",
                "max_queued",
            ),
            (
                "topics = [{ filter = \"a\" }]\npassword = \"p\"",
                "password",
            ),
            (
                "topics = [{ filter = \"a\" }]\nprotocol = \"4\"",
                "protocol",
            ),
            ("topics = [{ filter = \"a\" }]\nkeepalive = 3", "keepalive"),
        ];
        for (extra, key) in cases {
            let err = bridge(&format!("{BASE}{extra}\n")).unwrap_err();
            assert!(err.contains(key), "{extra}: {err}");
        }
        let err = bridge("name = \"a b\"\naddress = \"h:1\"\ntopics = [{ filter = \"a\" }]\n")
            .unwrap_err();
        assert!(err.contains("name"), "{err}");
        let err =
            bridge("name = \"a\"\naddress = \"h\"\ntopics = [{ filter = \"a\" }]\n").unwrap_err();
        assert!(err.contains("address"), "{err}");
    }
}
