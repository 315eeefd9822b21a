//! Bridges from the broker to other systems, each configured under `[bridge]`.

use serde::Deserialize;

pub mod mqtt;

/// The `[bridge]` table: one list per kind of bridge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// `[[bridge.mqtt]]`: connections to other MQTT brokers.
    #[serde(default)]
    pub mqtt: Vec<mqtt::MqttBridgeConfig>,
}
