//! The health thread: runs the balancer's probes and acts on its verdicts.
//!
//! A probe is what a client does: connect, send an MQTT 3.1.1 CONNECT, wait for a CONNACK
//! (any return code: a broker that refuses the probe's anonymous login is still alive),
//! then DISCONNECT. Blocking sockets with timeouts are enough for a few upstreams every few
//! seconds, and keep the probes off the workers' rings.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use bytes::BytesMut;
use petrel_codec::{Connect, Packet, ProtocolVersion, ReasonCode, EMPTY_PROPERTIES};
use petrel_state::proxy::BalancerEvent;
use tracing::{info, warn};

use super::{HealthCommand, ProxyMessage, ProxyShared};

pub(super) fn run(shared: &ProxyShared, commands: &Receiver<HealthCommand>) {
    loop {
        let mut probes = Vec::new();
        let deadline = {
            let mut balancer = shared.balancer();
            balancer.handle_timeout(shared.now());
            while let Some(event) = balancer.poll_event() {
                match event {
                    BalancerEvent::Probe(address) => probes.push(address),
                    BalancerEvent::Down(address) => {
                        warn!(upstream = %address, "upstream down: disconnecting its clients");
                        evict(shared, address, ReasonCode::UnspecifiedError);
                    }
                    BalancerEvent::Up(address) => info!(upstream = %address, "upstream up"),
                    BalancerEvent::Removed(address) => {
                        info!(upstream = %address, "upstream removed: disconnecting its clients");
                        evict(shared, address, ReasonCode::AdministrativeAction);
                    }
                }
            }
            balancer.poll_timeout()
        };
        if !probes.is_empty() {
            // In parallel: one dead upstream's timeout must not delay the others' probes.
            let results: Vec<(String, bool)> = std::thread::scope(|scope| {
                let handles: Vec<_> = probes
                    .into_iter()
                    .map(|address| {
                        scope.spawn(move || {
                            let healthy = probe(&address, shared.probe_timeout);
                            (address, healthy)
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            let mut balancer = shared.balancer();
            for (address, healthy) in results {
                balancer.probe_result(shared.now(), &address, healthy);
            }
            continue;
        }
        let wait = deadline.map_or(Duration::from_secs(3600), |at| {
            at.saturating_duration_since(shared.now())
        });
        match commands.recv_timeout(wait) {
            Ok(HealthCommand::Wake) | Err(RecvTimeoutError::Timeout) => {}
            Ok(HealthCommand::Upstreams(addresses)) => {
                info!(upstreams = ?addresses, "configuration reloaded");
                shared.balancer().set_upstreams(shared.now(), &addresses);
            }
            Ok(HealthCommand::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn evict(shared: &ProxyShared, upstream: String, reason: ReasonCode) {
    shared.broadcast(|| ProxyMessage::Evict {
        upstream: upstream.clone(),
        reason,
    });
}

/// Whether the broker at `address` answers a CONNECT within `timeout`.
fn probe(address: &str, timeout: Duration) -> bool {
    let Ok(addr) = address.parse::<SocketAddr>() else {
        return false;
    };
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let connect = Packet::Connect(Connect {
            protocol_version: ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 0,
            properties: EMPTY_PROPERTIES,
            client_id: "",
            will: None,
            username: None,
            password: None,
        });
        let mut out = BytesMut::new();
        connect
            .encode_to_bytes(ProtocolVersion::V311, &mut out)
            .map_err(|_| std::io::ErrorKind::InvalidData)?;
        stream.write_all(&out)?;
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack)?;
        let _ = stream.write_all(&[0xE0, 0x00]);
        Ok(connack[0] == 0x20 && connack[1] == 0x02)
    };
    attempt().unwrap_or(false)
}
