//! The pipeline barrier of the broker core (what the Kafka bridge rides on), without a
//! socket: a client's QoS 1/2 acknowledgement waits for the pipeline's ticket, pipeline
//! mode keeps messages from local subscribers, a full pipeline refuses or drops, and a
//! completion still waits for a pending store.

mod broker_wire;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use petrel_codec::{
    Connect, Decoded, Decoder, List, Packet, PacketId, PacketType, Properties, ProtocolVersion,
    PubResponse, Publish, QoS, ReasonCode, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use petrel_state::broker::{
    AllowAll, Broker, BrokerConfig, ClientInfo, ConnectionId, Durability, NoStorage, Offer,
    Pipeline, PipelineTicket, SessionView, Storage,
};
use petrel_state::message::Message;
use petrel_state::server::ServerConfig;
use petrel_state::Instant;

use ProtocolVersion::{V311, V5};

/// What the test pipeline saw: client id, topic, QoS, ticket, must_take.
type Seen = (String, String, QoS, Option<PipelineTicket>, bool);

/// Takes topics under `k/`, as a bridge with one filter would.
struct TestPipeline {
    seen: Rc<RefCell<Vec<Seen>>>,
    local: bool,
    full: Rc<RefCell<bool>>,
}

impl Pipeline for TestPipeline {
    fn offer(
        &mut self,
        publisher: &ClientInfo<'_>,
        message: &Arc<Message>,
        ticket: Option<PipelineTicket>,
        must_take: bool,
    ) -> Offer {
        if !message.topic.starts_with("k/") {
            return Offer::Pass;
        }
        if *self.full.borrow() && !must_take {
            return Offer::Full { local: self.local };
        }
        self.seen.borrow_mut().push((
            publisher.client_id.to_string(),
            message.topic.to_string(),
            message.qos,
            ticket,
            must_take,
        ));
        Offer::Taken { local: self.local }
    }
}

struct Peer {
    id: ConnectionId,
    version: ProtocolVersion,
    inbox: BytesMut,
}

struct Net {
    broker: Broker,
    now: Instant,
    seen: Rc<RefCell<Vec<Seen>>>,
    full: Rc<RefCell<bool>>,
}

impl Net {
    fn new(local: bool) -> Self {
        Net::with_storage(local, Box::new(NoStorage), ServerConfig::default())
    }

    fn with_storage(local: bool, storage: Box<dyn Storage>, server: ServerConfig) -> Self {
        let config = BrokerConfig {
            server: Arc::new(server),
            ..BrokerConfig::default()
        };
        let mut broker = Broker::new(config, Box::new(AllowAll), storage);
        let seen = Rc::new(RefCell::new(Vec::new()));
        let full = Rc::new(RefCell::new(false));
        broker.set_pipeline(Box::new(TestPipeline {
            seen: seen.clone(),
            local,
            full: full.clone(),
        }));
        Net {
            broker,
            now: Instant::ZERO,
            seen,
            full,
        }
    }

    fn send(&mut self, peer: &Peer, packet: Packet<'_>) {
        broker_wire::send(&mut self.broker, self.now, peer.id, peer.version, packet);
    }

    fn frames(&mut self, peer: &mut Peer) -> Vec<Bytes> {
        broker_wire::frames(
            &mut self.broker,
            self.now,
            peer.id,
            peer.version,
            &mut peer.inbox,
        )
    }

    /// The packet types and reason codes of what the peer received.
    fn got(&mut self, peer: &mut Peer) -> Vec<(PacketType, Option<ReasonCode>, String)> {
        self.frames(peer)
            .iter()
            .map(|f| match decode(peer.version, f) {
                Packet::PubAck(r) => (PacketType::PubAck, Some(r.reason_code), String::new()),
                Packet::PubRec(r) => (PacketType::PubRec, Some(r.reason_code), String::new()),
                Packet::Publish(p) => (PacketType::Publish, None, p.topic.to_string()),
                other => (other.packet_type(), None, String::new()),
            })
            .collect()
    }

    fn connect(&mut self, client_id: &str, version: ProtocolVersion) -> Peer {
        let id = self.broker.open(self.now, Some("127.0.0.1:5000"));
        let mut peer = Peer {
            id,
            version,
            inbox: BytesMut::new(),
        };
        self.send(
            &peer,
            Packet::Connect(Connect {
                protocol_version: version,
                clean_start: true,
                keep_alive: 0,
                properties: Properties::default(),
                client_id,
                will: None,
                username: None,
                password: None,
            }),
        );
        let frames = self.frames(&mut peer);
        assert_eq!(
            decode(version, &frames[0]).packet_type(),
            PacketType::ConnAck
        );
        peer
    }

    fn subscribe(&mut self, peer: &mut Peer, filter: &str) {
        self.send(
            peer,
            Packet::Subscribe(Subscribe {
                packet_id: pid(100),
                properties: Properties::default(),
                filters: List::new(&[SubscribeFilter {
                    filter,
                    options: SubscriptionOptions::qos(QoS::AtLeastOnce),
                }]),
            }),
        );
        assert_eq!(self.got(peer)[0].0, PacketType::SubAck);
    }

    fn publish(&mut self, peer: &Peer, topic: &str, qos: QoS, id: u16, retain: bool) {
        self.send(
            peer,
            Packet::Publish(Publish {
                dup: false,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then(|| pid(id)),
                properties: Properties::default(),
                payload: b"v",
            }),
        );
    }

    fn done(&mut self, ticket: PipelineTicket, result: Result<(), ReasonCode>) {
        self.broker.pipeline_done(self.now, ticket, result);
    }

    fn ticket(&self, n: usize) -> PipelineTicket {
        self.seen.borrow()[n].3.expect("a ticket")
    }
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn decode(version: ProtocolVersion, frame: &Bytes) -> Packet<'_> {
    match Decoder::new(version).decode(frame).unwrap() {
        Decoded::Packet { packet, .. } => packet,
        Decoded::Incomplete { .. } => panic!("a frame is a whole packet"),
    }
}

#[test]
fn puback_waits_for_the_pipeline_and_broker_mode_delivers_at_once() {
    let mut net = Net::new(true);
    let mut sub = net.connect("sub", V5);
    net.subscribe(&mut sub, "k/#");
    let mut publisher = net.connect("pub", V5);
    net.publish(&publisher, "k/a", QoS::AtLeastOnce, 1, false);
    assert!(
        net.got(&mut publisher).is_empty(),
        "PUBACK before the pipeline had it"
    );
    let got = net.got(&mut sub);
    assert_eq!(
        got[0].0,
        PacketType::Publish,
        "broker mode delivers locally"
    );
    assert_eq!(net.broker.pipeline_pending(), 1);
    let seen = net.seen.borrow()[0].clone();
    assert_eq!(
        (&*seen.0, &*seen.1, seen.2, seen.4),
        ("pub", "k/a", QoS::AtLeastOnce, false)
    );
    net.done(net.ticket(0), Ok(()));
    assert_eq!(
        net.got(&mut publisher),
        vec![(PacketType::PubAck, Some(ReasonCode::Success), String::new())]
    );
    assert_eq!(net.broker.pipeline_pending(), 0);
    // A second report of the same ticket changes nothing.
    net.done(net.ticket(0), Ok(()));
    assert!(net.got(&mut publisher).is_empty());
}

#[test]
fn topics_the_pipeline_passes_are_acknowledged_as_usual() {
    let mut net = Net::new(false);
    let mut publisher = net.connect("pub", V5);
    net.publish(&publisher, "other/a", QoS::AtLeastOnce, 1, false);
    assert_eq!(net.got(&mut publisher)[0].0, PacketType::PubAck);
    assert!(net.seen.borrow().is_empty());
}

#[test]
fn pipeline_mode_neither_delivers_nor_retains_locally() {
    let mut net = Net::new(false);
    let mut sub = net.connect("sub", V5);
    net.subscribe(&mut sub, "k/#");
    let mut publisher = net.connect("pub", V5);
    net.publish(&publisher, "k/a", QoS::AtMostOnce, 0, true);
    net.publish(&publisher, "k/b", QoS::AtLeastOnce, 1, true);
    net.done(net.ticket(1), Ok(()));
    // Success, not 0x10 "no matching subscribers": the pipeline received it.
    assert_eq!(
        net.got(&mut publisher),
        vec![(PacketType::PubAck, Some(ReasonCode::Success), String::new())]
    );
    assert!(net.got(&mut sub).is_empty());
    assert_eq!(net.broker.retained_count(), 0);
    assert_eq!(net.seen.borrow().len(), 2);
    assert_eq!(net.seen.borrow()[0].3, None, "QoS 0 holds nothing");
}

#[test]
fn qos2_pubrec_waits_and_a_resent_publish_is_not_offered_twice() {
    let mut net = Net::new(true);
    let mut publisher = net.connect("pub", V5);
    net.publish(&publisher, "k/a", QoS::ExactlyOnce, 7, false);
    net.publish(&publisher, "k/a", QoS::ExactlyOnce, 7, false);
    assert!(net.got(&mut publisher).is_empty());
    assert_eq!(net.seen.borrow().len(), 1);
    net.done(net.ticket(0), Ok(()));
    assert_eq!(net.got(&mut publisher)[0].0, PacketType::PubRec);
    // After PUBREC the exactly-once marker answers a re-send without offering it again.
    net.publish(&publisher, "k/a", QoS::ExactlyOnce, 7, false);
    assert_eq!(net.got(&mut publisher)[0].0, PacketType::PubRec);
    assert_eq!(net.seen.borrow().len(), 1);
    net.send(&publisher, Packet::PubRel(PubResponse::new(pid(7))));
    assert_eq!(net.got(&mut publisher)[0].0, PacketType::PubComp);
}

#[test]
fn a_failed_record_is_reported_to_a_v5_publisher() {
    let mut net = Net::new(true);
    let mut publisher = net.connect("pub", V5);
    net.publish(&publisher, "k/a", QoS::AtLeastOnce, 1, false);
    net.done(net.ticket(0), Err(ReasonCode::UnspecifiedError));
    assert_eq!(
        net.got(&mut publisher),
        vec![(
            PacketType::PubAck,
            Some(ReasonCode::UnspecifiedError),
            String::new()
        )]
    );
}

#[test]
fn a_full_pipeline_refuses_v5_qos1_and_drops_qos0() {
    let mut net = Net::new(true);
    let mut sub = net.connect("sub", V5);
    net.subscribe(&mut sub, "k/#");
    let mut publisher = net.connect("pub", V5);
    *net.full.borrow_mut() = true;
    net.publish(&publisher, "k/a", QoS::AtLeastOnce, 1, false);
    net.publish(&publisher, "k/b", QoS::AtMostOnce, 0, false);
    assert_eq!(
        net.got(&mut publisher),
        vec![(
            PacketType::PubAck,
            Some(ReasonCode::QuotaExceeded),
            String::new()
        )]
    );
    // The refused QoS 1 message went nowhere; the QoS 0 one still reached the local
    // subscriber (broker mode), only the pipeline's copy was dropped.
    let got = net.got(&mut sub);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, "k/b");
    assert_eq!(net.broker.pipeline_pending(), 0);
}

#[test]
fn a_v311_publisher_is_never_refused_but_slowed_down() {
    let server = ServerConfig {
        receive_maximum: 2,
        ..ServerConfig::default()
    };
    let mut net = Net::with_storage(true, Box::new(NoStorage), server);
    let mut publisher = net.connect("old", V311);
    *net.full.borrow_mut() = true;
    net.publish(&publisher, "k/a", QoS::AtLeastOnce, 1, false);
    assert!(net.broker.wants_read(publisher.id));
    net.publish(&publisher, "k/b", QoS::AtLeastOnce, 2, false);
    assert!(net.got(&mut publisher).is_empty());
    assert!(
        net.seen.borrow().iter().all(|s| s.4),
        "offered with must_take"
    );
    // Two acknowledgements held: the broker reads no more from this client.
    assert!(!net.broker.wants_read(publisher.id));
    net.done(net.ticket(0), Ok(()));
    assert_eq!(net.got(&mut publisher)[0].0, PacketType::PubAck);
    assert!(net.broker.wants_read(publisher.id));
}

#[test]
fn a_completion_for_a_closed_connection_is_ignored() {
    let mut net = Net::new(true);
    let mut publisher = net.connect("pub", V5);
    net.publish(&publisher, "k/a", QoS::AtLeastOnce, 1, false);
    net.broker.connection_lost(net.now, publisher.id);
    net.frames(&mut publisher);
    while let Some(id) = net.broker.poll_closed() {
        net.broker.release(id);
    }
    // The slot is reused by a new connection, which must not get the old PUBACK.
    let mut again = net.connect("pub", V5);
    assert_eq!(again.id.index(), publisher.id.index());
    net.done(net.ticket(0), Ok(()));
    assert!(net.got(&mut again).is_empty());
    assert_eq!(net.broker.pipeline_pending(), 0);
}

/// A store whose every batch is pending until the test says so.
#[derive(Default)]
struct SlowStore {
    next: u64,
}

impl Storage for SlowStore {
    fn save_session(&mut self, _session: SessionView<'_>) {}
    fn delete_session(&mut self, _client_id: &str) {}
    fn set_retained(&mut self, _topic: &str, _message: Option<&Arc<Message>>) {}
    fn commit(&mut self) -> Durability {
        self.next += 1;
        Durability::Pending(self.next)
    }
}

#[test]
fn a_released_acknowledgement_still_waits_for_the_store() {
    let mut net = Net::with_storage(true, Box::<SlowStore>::default(), ServerConfig::default());
    let mut publisher = net.connect_committed("pub");
    net.publish(&publisher, "k/a", QoS::AtLeastOnce, 1, false);
    // Batch 2 (the publish) becomes durable; the pipeline still holds the PUBACK.
    net.broker.storage_committed(net.now, 2);
    assert!(net.got(&mut publisher).is_empty());
    net.done(net.ticket(0), Ok(()));
    assert!(
        net.got(&mut publisher).is_empty(),
        "store batch 3 is pending"
    );
    net.broker.storage_committed(net.now, 3);
    assert_eq!(net.got(&mut publisher)[0].0, PacketType::PubAck);
}

impl Net {
    /// Connects through a store whose first batch (the CONNECT) is then made durable.
    fn connect_committed(&mut self, client_id: &str) -> Peer {
        let id = self.broker.open(self.now, None);
        let mut peer = Peer {
            id,
            version: V5,
            inbox: BytesMut::new(),
        };
        self.send(
            &peer,
            Packet::Connect(Connect {
                protocol_version: V5,
                clean_start: true,
                keep_alive: 0,
                properties: Properties::default(),
                client_id,
                will: None,
                username: None,
                password: None,
            }),
        );
        assert!(
            self.frames(&mut peer).is_empty(),
            "CONNACK waits for the store"
        );
        self.broker.storage_committed(self.now, 1);
        assert_eq!(
            decode(V5, &self.frames(&mut peer)[0]).packet_type(),
            PacketType::ConnAck
        );
        peer
    }
}
