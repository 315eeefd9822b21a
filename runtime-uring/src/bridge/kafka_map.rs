//! What the Kafka bridge sends where: the `[[bridge.kafka]]` configuration, the topic
//! mapper (Easegress MQTTProxy's TopicMapper) and the record a publish becomes. No I/O.

use std::collections::BTreeMap;
use std::fmt;

use petrel_state::broker::ClientInfo;
use petrel_state::message::Message;
use regex::Regex;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// One `[[bridge.kafka]]`: a Kafka cluster, what goes to it and what comes from it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaBridgeConfig {
    /// Names the bridge in metrics and `$SYS` (`bridge/kafka/NAME/…`).
    #[serde(default = "default_name")]
    pub name: String,
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// `broker`: publishes go to Kafka and to local subscribers; `pipeline`: to Kafka only.
    #[serde(default)]
    pub mode: BridgeMode,
    /// MQTT topic filters whose publishes go to Kafka (none: this bridge only consumes).
    #[serde(default)]
    pub filters: Vec<String>,
    /// The Kafka topic for publishes the mapper does not place (or all, without a mapper).
    #[serde(default)]
    pub topic: Option<String>,
    /// The record key: `client_id`, `topic` (the MQTT topic), `none`, or `level:N` (the
    /// N-th level of the MQTT topic, from 0).
    #[serde(default)]
    pub key: KeySource,
    /// Records waiting for Kafka's acknowledgement before the bridge is full: past it QoS 0
    /// publishes are dropped (counted) and 5.0 QoS 1/2 publishes refused with 0x97.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Routes publishes to Kafka topics by their levels.
    #[serde(default)]
    pub mapper: Option<TopicMapper>,
    /// Kafka topics consumed and published into the broker.
    #[serde(default)]
    pub consume: Vec<ConsumeConfig>,
}

fn default_name() -> String {
    String::from("kafka")
}

fn default_max_pending() -> usize {
    10_000
}

/// Where publishes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeMode {
    /// To Kafka and to the broker's own subscribers.
    #[default]
    Broker,
    /// To Kafka only: neither delivered nor retained here.
    Pipeline,
}

/// What a record's key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeySource {
    /// The publisher's client identifier.
    #[default]
    ClientId,
    /// The MQTT topic.
    Topic,
    /// One level of the MQTT topic (from 0); no key when the topic has fewer levels.
    Level(usize),
    /// No key.
    None,
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "client_id" => Ok(KeySource::ClientId),
            "topic" => Ok(KeySource::Topic),
            "none" => Ok(KeySource::None),
            other => other
                .strip_prefix("level:")
                .and_then(|n| n.parse().ok())
                .map(KeySource::Level)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "`{other}`: expected client_id, topic, none or level:N"
                    ))
                }),
        }
    }
}

/// One Kafka topic consumed into the broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumeConfig {
    /// The Kafka topic (this instance reads the partitions its group gives it).
    pub topic: String,
    /// The Kafka consumer group: Kafka keeps its committed offsets, and Petrel instances
    /// with the same group share the topic's partitions.
    #[serde(default = "default_group")]
    pub group: String,
    /// The MQTT topic of each record: `{topic}`, `{partition}`, `{offset}` and `{key}` are
    /// replaced (a key that is not UTF-8, or none, gives an empty level).
    #[serde(default = "default_template")]
    pub mqtt_topic: String,
    /// The QoS the records are published at.
    #[serde(default)]
    pub qos: u8,
    /// Where to start without a committed offset: `earliest` or `latest`.
    #[serde(default)]
    pub start: StartAt,
}

fn default_group() -> String {
    String::from("petrel")
}

fn default_template() -> String {
    String::from("from-kafka/{topic}/{key}")
}

/// Where a consumer without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// The oldest record Kafka still has.
    #[default]
    Earliest,
    /// Only records produced from now on.
    Latest,
}

/// A regular expression that must match a whole topic level; checked when the file is read
/// (the error names the line).
#[derive(Clone)]
pub struct Pattern(Regex);

impl Pattern {
    fn is_match(&self, level: &str) -> bool {
        self.0.is_match(level)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Regex::new(&format!("^(?:{text})$"))
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("bad regular expression: {e}")))
    }
}

/// Easegress MQTTProxy's TopicMapper: level `match_index` of the MQTT topic picks a policy
/// (first route whose pattern matches); the policy's level `topic_index` picks the Kafka
/// topic (first of its routes with a matching pattern), and its `headers` name levels that
/// travel as record headers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMapper {
    /// The level (from 0) that chooses the policy.
    pub match_index: usize,
    /// Level pattern → policy, first match wins.
    pub route: Vec<MapperRoute>,
    /// The policies.
    pub policy: Vec<MapperPolicy>,
}

/// A route of the mapper.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapperRoute {
    /// The policy's name.
    pub policy: Spanned<String>,
    /// The pattern level `match_index` must match.
    #[serde(rename = "match")]
    pub pattern: Pattern,
}

/// A policy of the mapper.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapperPolicy {
    /// Its name, as routes refer to it.
    pub name: String,
    /// The level (from 0) that chooses the Kafka topic.
    pub topic_index: usize,
    /// Kafka topic choices, first match wins.
    pub route: Vec<PolicyRoute>,
    /// Level index (as a string key, `"0"`) → header name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One Kafka topic of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRoute {
    /// The Kafka topic.
    pub topic: String,
    /// Patterns of level `topic_index`; any may match.
    #[serde(rename = "match")]
    pub patterns: Vec<Pattern>,
}

impl KafkaBridgeConfig {
    /// Checks what the types cannot: `text` is the whole file, for line numbers.
    pub(crate) fn validate(&self, n: usize, text: &str) -> Result<(), String> {
        let at = format!("[[bridge.kafka]] #{n} ({})", self.name);
        if self.brokers.is_empty() {
            return Err(format!("{at}: brokers: give at least one host:port"));
        }
        if self.max_pending == 0 {
            return Err(format!("{at}: max_pending: must be at least 1"));
        }
        if !self.filters.is_empty() && self.topic.is_none() && self.mapper.is_none() {
            return Err(format!(
                "{at}: filters: give `topic` or a `mapper` to say where publishes go"
            ));
        }
        for filter in &self.filters {
            if petrel_codec::topic::validate_topic_filter(filter).is_err() {
                return Err(format!("{at}: filters: `{filter}` is not a topic filter"));
            }
        }
        if let Some(mapper) = &self.mapper {
            for route in &mapper.route {
                if !mapper
                    .policy
                    .iter()
                    .any(|p| p.name == *route.policy.get_ref())
                {
                    let line = text[..route.policy.span().start.min(text.len())]
                        .matches('\n')
                        .count()
                        + 1;
                    return Err(format!(
                        "line {line}: {at}: mapper.route.policy: no policy named `{}`",
                        route.policy.get_ref()
                    ));
                }
            }
            for policy in &mapper.policy {
                if let Some(key) = policy.headers.keys().find(|k| k.parse::<usize>().is_err()) {
                    return Err(format!(
                        "{at}: mapper.policy `{}`: headers: `{key}` is not a level number",
                        policy.name
                    ));
                }
            }
        }
        for consume in &self.consume {
            if consume.qos > 2 {
                return Err(format!(
                    "{at}: consume `{}`: qos: must be 0, 1 or 2",
                    consume.topic
                ));
            }
            if petrel_codec::topic::validate_topic_name(&consume.mqtt_topic).is_err() {
                return Err(format!(
                    "{at}: consume `{}`: mqtt_topic: `{}` is not a topic name",
                    consume.topic, consume.mqtt_topic
                ));
            }
        }
        Ok(())
    }

    /// Whether a publish to `topic` is this bridge's.
    pub(crate) fn wants(&self, topic: &str) -> bool {
        self.filters
            .iter()
            .any(|filter| petrel_codec::topic::matches(filter, topic))
    }
}

/// A record for Kafka, built from a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutRecord {
    pub(crate) topic: String,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Vec<u8>,
    pub(crate) headers: BTreeMap<String, Vec<u8>>,
}

/// Builds the record for a publish, or `None` when neither the mapper nor the default topic
/// places it.
pub(crate) fn record_for(
    config: &KafkaBridgeConfig,
    publisher: &ClientInfo<'_>,
    message: &Message,
) -> Option<OutRecord> {
    let levels: Vec<&str> = message.topic.split('/').collect();
    let mut headers = BTreeMap::new();
    // Kafka headers are a list and may repeat a name; the client takes a map, so of
    // repeated user properties the last one wins.
    for (name, value) in &message.properties.user_properties {
        headers.insert(name.clone(), value.as_bytes().to_vec());
    }
    let mapped = config.mapper.as_ref().and_then(|m| map(m, &levels));
    let topic = match mapped {
        Some((topic, named)) => {
            for (name, level) in named {
                headers.insert(name, level.as_bytes().to_vec());
            }
            topic
        }
        None => config.topic.clone()?,
    };
    headers.insert(
        String::from("clientID"),
        publisher.client_id.as_bytes().to_vec(),
    );
    headers.insert(
        String::from("username"),
        publisher.username.unwrap_or("").as_bytes().to_vec(),
    );
    headers.insert(String::from("mqttTopic"), message.topic.as_bytes().to_vec());
    let key = match config.key {
        KeySource::ClientId => Some(publisher.client_id.as_bytes().to_vec()),
        KeySource::Topic => Some(message.topic.as_bytes().to_vec()),
        KeySource::Level(n) => levels.get(n).map(|l| l.as_bytes().to_vec()),
        KeySource::None => None,
    };
    Some(OutRecord {
        topic,
        key,
        value: message.payload.to_vec(),
        headers,
    })
}

/// The Kafka topic and the named levels for a topic's levels, if a route and a policy
/// route match.
fn map<'a>(mapper: &TopicMapper, levels: &[&'a str]) -> Option<(String, Vec<(String, &'a str)>)> {
    let level = levels.get(mapper.match_index)?;
    let route = mapper.route.iter().find(|r| r.pattern.is_match(level))?;
    let policy = mapper
        .policy
        .iter()
        .find(|p| p.name == *route.policy.get_ref())?;
    let level = levels.get(policy.topic_index)?;
    let target = policy
        .route
        .iter()
        .find(|r| r.patterns.iter().any(|p| p.is_match(level)))?;
    let named = policy
        .headers
        .iter()
        .filter_map(|(index, name)| {
            let level = levels.get(index.parse::<usize>().ok()?)?;
            Some((name.clone(), *level))
        })
        .collect();
    Some((target.topic.clone(), named))
}

/// The MQTT topic of a consumed record.
pub(crate) fn consumed_topic(
    template: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
) -> String {
    let key = key
        .and_then(|k| std::str::from_utf8(k).ok())
        // A key must not add levels or wildcards to the topic it lands in.
        .map(|k| k.replace(['/', '+', '#'], "_"))
        .unwrap_or_default();
    template
        .replace("{topic}", topic)
        .replace("{partition}", &partition.to_string())
        .replace("{offset}", &offset.to_string())
        .replace("{key}", &key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_codec::ProtocolVersion;
    use petrel_state::broker::{AllowAll, Broker, BrokerConfig, NoStorage};
    use petrel_state::Instant;

    /// Easegress's documented example, in TOML.
    const EASEGRESS: &str = r##"
        name = "devices"
        brokers = ["127.0.0.1:9092"]
        filters = ["#"]
        key = "level:2"
        [mapper]
        match_index = 0
        route = [{ policy = "g2s", match = "g2s" }, { policy = "d2s", match = "d2s" }]
        [[mapper.policy]]
        name = "g2s"
        topic_index = 1
        route = [{ topic = "to_cloud", match = ["bar", "foo"] }, { topic = "to_raspberry", match = [".*"] }]
        headers = { "0" = "mqtt_channel", "1" = "gateway", "2" = "device" }
        [[mapper.policy]]
        name = "d2s"
        topic_index = 2
        route = [{ topic = "iot_phone", match = ["iphone", "xiaomi"] }]
        headers = { "0" = "mqtt_channel", "1" = "device", "2" = "phone" }
    "##;

    fn client(id: &str) -> ClientInfo<'_> {
        ClientInfo {
            connection: Broker::new(
                BrokerConfig::default(),
                Box::new(AllowAll),
                Box::new(NoStorage),
            )
            .open(Instant::ZERO, None),
            client_id: id,
            username: Some("alice"),
            version: ProtocolVersion::V5,
            remote: None,
            identity: None,
        }
    }

    fn header(record: &OutRecord, name: &str) -> String {
        String::from_utf8(record.headers[name].clone()).unwrap()
    }

    #[test]
    fn the_mapper_routes_like_easegress() {
        let config: KafkaBridgeConfig = toml::from_str(EASEGRESS).unwrap();
        config.validate(1, EASEGRESS).unwrap();
        let mut message = Message::new("g2s/foo/dev7", &b"22.5"[..]);
        message
            .properties
            .user_properties
            .push((String::from("unit"), String::from("C")));
        let record = record_for(&config, &client("c1"), &message).unwrap();
        assert_eq!(record.topic, "to_cloud");
        assert_eq!(record.key.as_deref(), Some(&b"dev7"[..]));
        assert_eq!(record.value, b"22.5");
        assert_eq!(header(&record, "mqtt_channel"), "g2s");
        assert_eq!(header(&record, "gateway"), "foo");
        assert_eq!(header(&record, "device"), "dev7");
        assert_eq!(header(&record, "clientID"), "c1");
        assert_eq!(header(&record, "username"), "alice");
        assert_eq!(header(&record, "mqttTopic"), "g2s/foo/dev7");
        assert_eq!(header(&record, "unit"), "C");

        let other = Message::new("g2s/zzz/dev7", &b""[..]);
        let record = record_for(&config, &client("c1"), &other).unwrap();
        assert_eq!(record.topic, "to_raspberry");
        let phone = Message::new("d2s/home/xiaomi", &b""[..]);
        let record = record_for(&config, &client("c1"), &phone).unwrap();
        assert_eq!(record.topic, "iot_phone");
        assert_eq!(header(&record, "phone"), "xiaomi");
        // Patterns match whole levels; no route, no default topic: not sent.
        let unmatched = Message::new("g2sx/foo/dev7", &b""[..]);
        assert_eq!(record_for(&config, &client("c1"), &unmatched), None);
        let short = Message::new("d2s/home", &b""[..]);
        assert_eq!(record_for(&config, &client("c1"), &short), None);
    }

    #[test]
    fn without_a_mapper_the_default_topic_and_key_apply() {
        let text = "brokers = [\"k:9092\"]\nfilters = [\"s/#\"]\ntopic = \"mqtt\"\n";
        let config: KafkaBridgeConfig = toml::from_str(text).unwrap();
        config.validate(1, text).unwrap();
        assert!(config.wants("s/a/b") && !config.wants("t/a"));
        let record = record_for(&config, &client("c9"), &Message::new("s/a", &b"x"[..])).unwrap();
        assert_eq!(record.topic, "mqtt");
        assert_eq!(record.key.as_deref(), Some(&b"c9"[..]));
        let text = "brokers = [\"k:9092\"]\ntopic = \"mqtt\"\nkey = \"none\"\n";
        let config: KafkaBridgeConfig = toml::from_str(text).unwrap();
        let record = record_for(&config, &client("c9"), &Message::new("s/a", &b"x"[..])).unwrap();
        assert_eq!(record.key, None);
    }

    #[test]
    fn bad_entries_are_named() {
        let err = toml::from_str::<KafkaBridgeConfig>("brokers = []\nkey = \"level:x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("level:N") && err.contains("line 2"), "{err}");
        let text = "brokers = [\"k:1\"]\n[mapper]\nmatch_index = 0\nroute = [{ policy = \"p\", match = \"(\" }]\npolicy = []\n";
        let err = toml::from_str::<KafkaBridgeConfig>(text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("regular expression") && err.contains("line 4"),
            "{err}"
        );
        let text = "brokers = [\"k:1\"]\nfilters = [\"a\"]\n[mapper]\nmatch_index = 0\n\
                    route = [{ policy = \"nope\", match = \"a\" }]\npolicy = []\n";
        let config: KafkaBridgeConfig = toml::from_str(text).unwrap();
        let err = config.validate(1, text).unwrap_err();
        assert!(err.starts_with("line 5:") && err.contains("nope"), "{err}");
        let text = "brokers = [\"k:1\"]\nfilters = [\"a\"]\n";
        let config: KafkaBridgeConfig = toml::from_str(text).unwrap();
        assert!(config.validate(1, text).unwrap_err().contains("filters"));
    }

    #[test]
    fn consumed_topics_come_from_the_template() {
        assert_eq!(
            consumed_topic("from-kafka/{topic}/{key}", "cmd", 0, 5, Some(b"dev/1")),
            "from-kafka/cmd/dev_1"
        );
        assert_eq!(
            consumed_topic("k/{topic}/{partition}/{offset}", "cmd", 2, 5, None),
            "k/cmd/2/5"
        );
    }
}
