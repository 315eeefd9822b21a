//! The real `petrel` binary against the paho-mqtt Python client (PyPI `paho-mqtt`), over
//! MQTT 3.1.1 and 5.0: QoS 0/1/2 both ways and 5.0 user properties end to end.

mod common;

use std::process::Command;

use common::Broker;

#[test]
fn paho_python_client_publishes_and_receives_at_every_qos() {
    let broker = Broker::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_client.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(broker.port())
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "paho checks failed (pip install paho-mqtt):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
