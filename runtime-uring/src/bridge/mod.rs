//! Bridges from the broker to other systems, each configured under `[bridge]`: other MQTT
//! brokers (`mqtt.rs`) and Kafka (`kafka.rs`, its mapping in `kafka_map.rs`).

use serde::Deserialize;

pub mod kafka;
pub mod kafka_map;
pub mod mqtt;

/// The `[bridge]` table: one list per kind of bridge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// `[[bridge.mqtt]]`: connections to other MQTT brokers.
    #[serde(default)]
    pub mqtt: Vec<mqtt::MqttBridgeConfig>,
    /// `[[bridge.kafka]]`: Kafka clusters publishes go to and records come from.
    #[serde(default)]
    pub kafka: Vec<kafka_map::KafkaBridgeConfig>,
}
