//! A client speaking raw MQTT through the codec, for exact reason codes.

use std::io::{Read, Write};
use std::time::Duration;

use petrel_codec::{
    Connect, Decoded, Decoder, List, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode, Subscribe, SubscribeFilter, SubscriptionOptions,
};

use super::Broker;

/// A client speaking raw MQTT, to see exact reason codes.
pub struct Raw {
    pub stream: std::net::TcpStream,
    pub version: ProtocolVersion,
    inbox: Vec<u8>,
}

impl Raw {
    /// Connects and returns the CONNACK's reason (3.1.1 return codes mapped to reasons).
    pub fn connect(
        broker: &Broker,
        version: ProtocolVersion,
        client_id: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> (Raw, ReasonCode) {
        let stream = std::net::TcpStream::connect(broker.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut raw = Raw {
            stream,
            version,
            inbox: Vec::new(),
        };
        raw.send(&Packet::Connect(Connect {
            protocol_version: version,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id,
            will: None,
            username: user,
            password: password.map(str::as_bytes),
        }));
        let reason = raw
            .next(|p| match p {
                Packet::ConnAck(c) => Some(c.reason_code),
                _ => None,
            })
            .flatten()
            .expect("CONNACK");
        (raw, reason)
    }

    /// Connects over 5.0 announcing `receive_maximum`; returns the Receive Maximum the
    /// CONNACK announces.
    pub fn connect_v5(
        broker: &Broker,
        client_id: &str,
        receive_maximum: Option<u16>,
    ) -> (Raw, Option<u16>) {
        let stream = std::net::TcpStream::connect(broker.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut raw = Raw {
            stream,
            version: ProtocolVersion::V5,
            inbox: Vec::new(),
        };
        raw.send(&Packet::Connect(Connect {
            protocol_version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 0,
            properties: Properties {
                receive_maximum,
                ..Properties::default()
            },
            client_id,
            will: None,
            username: None,
            password: None,
        }));
        let announced = raw
            .next(|p| match p {
                Packet::ConnAck(c) => {
                    assert_eq!(c.reason_code, ReasonCode::Success);
                    Some(c.properties.receive_maximum)
                }
                _ => None,
            })
            .flatten()
            .expect("CONNACK");
        (raw, announced)
    }

    /// The packet identifiers of the PUBLISH packets that arrive until `quiet` passes
    /// without one.
    pub fn publishes_until_quiet(&mut self, quiet: Duration) -> Vec<PacketId> {
        self.stream.set_read_timeout(Some(quiet)).unwrap();
        let mut ids = Vec::new();
        while let Some(packet) = self.next(|p| match p {
            Packet::Publish(p) => p.packet_id,
            _ => None,
        }) {
            ids.extend(packet);
        }
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        ids
    }

    pub fn send(&mut self, packet: &Packet<'_>) {
        let mut buf = vec![0; packet.encoded_len(self.version).unwrap()];
        packet.encode(self.version, &mut buf).unwrap();
        self.stream.write_all(&buf).unwrap();
    }

    /// Reads the next packet and gives it to `f`; `None` at EOF.
    pub fn next<R>(&mut self, f: impl FnOnce(&Packet<'_>) -> R) -> Option<R> {
        let decoder = Decoder::new(self.version);
        loop {
            if let Ok(Decoded::Packet { packet, len }) = decoder.decode(&self.inbox) {
                let result = f(&packet);
                self.inbox.drain(..len);
                return Some(result);
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
            }
        }
    }

    pub fn subscribe(&mut self, filter: &str) -> ReasonCode {
        let filters = [SubscribeFilter {
            filter,
            options: SubscriptionOptions::qos(QoS::AtLeastOnce),
        }];
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Properties::default(),
            filters: List::new(&filters),
        }));
        self.next(|p| match p {
            Packet::SubAck(s) => s.reason_codes.iter().next(),
            _ => None,
        })
        .flatten()
        .expect("SUBACK")
    }

    pub fn publish_qos1(&mut self, topic: &str, id: u16) -> ReasonCode {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic,
            packet_id: PacketId::new(id),
            properties: Properties::default(),
            payload: b"x",
        }));
        self.next(|p| match p {
            Packet::PubAck(a) => Some(a.reason_code),
            _ => None,
        })
        .flatten()
        .expect("PUBACK")
    }

    pub fn publish_qos0(&mut self, topic: &str) {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            properties: Properties::default(),
            payload: b"x",
        }));
    }

    /// The reason of the DISCONNECT the server sends, skipping other packets; `None` when
    /// the connection ends without one.
    pub fn disconnect_reason(&mut self) -> Option<ReasonCode> {
        loop {
            match self.next(|p| match p {
                Packet::Disconnect(d) => Some(d.reason_code),
                _ => None,
            })? {
                Some(reason) => return Some(reason),
                None => continue,
            }
        }
    }
}
