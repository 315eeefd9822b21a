//! `Hooks::on_packet`, without a socket: every packet each way, with the client id, in the
//! order it crossed the connection, and nothing at all for hooks that do not ask.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use petrel_codec::{
    Connect, Disconnect, List, Packet, PacketId, Properties, ProtocolVersion, PubResponse, Publish,
    QoS, ReasonCode, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use petrel_state::broker::{
    describe_packet, Broker, BrokerConfig, ClientInfo, ConnectionId, Hooks, NoStorage,
    PacketDirection,
};
use petrel_state::Instant;

use ProtocolVersion::{V311, V5};

type Lines = Rc<RefCell<Vec<String>>>;

struct Recorder {
    lines: Lines,
    observe: bool,
}

impl Hooks for Recorder {
    fn observes_packets(&self) -> bool {
        self.observe
    }

    fn on_packet(
        &mut self,
        client: &ClientInfo<'_>,
        direction: PacketDirection,
        packet: &Packet<'_>,
        frame: &[u8],
    ) {
        let arrow = direction.arrow();
        // The frame is the packet's own bytes: its first byte names its type.
        assert_eq!(frame[0] >> 4, packet.packet_type() as u8);
        self.lines.borrow_mut().push(format!(
            "{} {arrow} {}",
            client.client_id,
            describe_packet(packet)
        ));
    }
}

struct Net {
    broker: Broker,
    lines: Lines,
    now: Instant,
}

impl Net {
    fn new(observe: bool) -> Net {
        let lines = Lines::default();
        let hooks = Recorder {
            lines: lines.clone(),
            observe,
        };
        Net {
            broker: Broker::new(
                BrokerConfig::default(),
                Box::new(hooks),
                Box::new(NoStorage),
            ),
            lines,
            now: Instant::from_secs(1),
        }
    }

    fn send(&mut self, id: ConnectionId, version: ProtocolVersion, packet: Packet<'_>) {
        let mut buf = BytesMut::new();
        packet.encode_to_bytes(version, &mut buf).unwrap();
        self.broker.handle_bytes(self.now, id, &buf);
    }

    /// Takes every byte the broker has for anyone, as the runtime's writers do.
    fn flush(&mut self) {
        let mut sink = BytesMut::new();
        while let Some(id) = self.broker.poll_ready() {
            while self.broker.poll_transmit(self.now, id, &mut sink) > 0 {}
        }
        while let Some(id) = self.broker.poll_closed() {
            while self.broker.poll_transmit(self.now, id, &mut sink) > 0 {}
            self.broker.release(id);
        }
    }

    fn connect(&mut self, client_id: &str, version: ProtocolVersion) -> ConnectionId {
        let id = self.broker.open(self.now, Some("127.0.0.1:5000"));
        self.send(
            id,
            version,
            Packet::Connect(Connect {
                protocol_version: version,
                clean_start: true,
                keep_alive: 30,
                properties: Properties::default(),
                client_id,
                will: None,
                username: None,
                password: None,
            }),
        );
        self.flush();
        id
    }

    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut *self.lines.borrow_mut())
    }
}

/// The lines of one client, without its id.
fn of(lines: &[String], client_id: &str) -> Vec<String> {
    let prefix = format!("{client_id} ");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(String::from))
        .collect()
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn publish(topic: &str, qos: QoS, id: u16) -> Packet<'_> {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(id)),
        properties: Properties::default(),
        payload: b"hello",
    })
}

#[test]
fn every_packet_both_ways_reaches_the_hook_in_order() {
    let mut net = Net::new(true);
    let sub = net.connect("sub", V5);
    let publisher = net.connect("pub", V311);
    assert_eq!(
        net.take(),
        [
            "sub <- CONNECT v5 client_id=\"sub\" username=None clean_start=true keep_alive=30",
            "sub -> CONNACK Success session_present=false",
            "pub <- CONNECT v4 client_id=\"pub\" username=None clean_start=true keep_alive=30",
            "pub -> CONNACK Success session_present=false",
        ]
    );

    let filters = [SubscribeFilter {
        filter: "t/#",
        options: SubscriptionOptions::qos(QoS::ExactlyOnce),
    }];
    net.send(
        sub,
        V5,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Properties::default(),
            filters: List::new(&filters),
        }),
    );
    net.send(sub, V5, Packet::PingReq);
    net.flush();
    assert_eq!(
        net.take(),
        [
            "sub <- SUBSCRIBE id=1 [\"t/#\"]",
            "sub <- PINGREQ",
            "sub -> SUBACK id=1 [GrantedQoS2]",
            "sub -> PINGRESP",
        ]
    );

    // QoS 1 in, QoS 1 out, and the acknowledgements of both. Each connection's packets
    // come in the order they crossed it; between connections, in the order their bytes
    // were taken.
    net.send(publisher, V311, publish("t/1", QoS::AtLeastOnce, 7));
    net.flush();
    net.send(sub, V5, Packet::PubAck(PubResponse::new(pid(1))));
    net.flush();
    let lines = net.take();
    assert_eq!(
        of(&lines, "pub"),
        [
            "<- PUBLISH topic=\"t/1\" qos=1 retain=false dup=false id=Some(7) payload=5B",
            "-> PUBACK id=7 Success",
        ]
    );
    assert_eq!(
        of(&lines, "sub"),
        [
            "-> PUBLISH topic=\"t/1\" qos=1 retain=false dup=false id=Some(1) payload=5B",
            "<- PUBACK id=1 Success",
        ]
    );

    // QoS 2 both ways: the four-packet flow on each side.
    net.send(publisher, V311, publish("t/2", QoS::ExactlyOnce, 8));
    net.flush();
    net.send(sub, V5, Packet::PubRec(PubResponse::new(pid(2))));
    net.send(publisher, V311, Packet::PubRel(PubResponse::new(pid(8))));
    net.flush();
    net.send(sub, V5, Packet::PubComp(PubResponse::new(pid(2))));
    net.flush();
    let lines = net.take();
    let kinds = |client| -> Vec<String> {
        of(&lines, client)
            .iter()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        kinds("pub"),
        ["<- PUBLISH", "-> PUBREC", "<- PUBREL", "-> PUBCOMP"]
    );
    assert_eq!(
        kinds("sub"),
        ["-> PUBLISH", "<- PUBREC", "-> PUBREL", "<- PUBCOMP"]
    );

    net.send(
        sub,
        V5,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        }),
    );
    net.flush();
    assert_eq!(net.take(), ["sub <- DISCONNECT Success"]);
}

#[test]
fn what_the_server_sends_on_its_own_reaches_the_hook() {
    let mut net = Net::new(true);
    let client = net.connect("c", V5);
    net.take();
    // A protocol violation: the server's DISCONNECT is a packet like any other.
    net.send(client, V5, Packet::PingResp);
    net.flush();
    assert_eq!(
        net.take(),
        ["c <- PINGRESP", "c -> DISCONNECT ProtocolError"]
    );
}

#[test]
fn hooks_that_do_not_observe_packets_are_never_called() {
    let mut net = Net::new(false);
    let client = net.connect("quiet", V5);
    net.send(client, V5, Packet::PingReq);
    net.send(client, V5, publish("t", QoS::AtLeastOnce, 1));
    net.flush();
    assert!(net.take().is_empty());
}
