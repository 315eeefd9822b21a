//! The demo scenario: every step a small MQTT device goes through, checked as it goes.
//!
//! 1. connect with a clean start (retrying: QEMU may still be opening the TCP connection);
//!    over 3.1.1, where a clean session ends with its connection, disconnect and connect
//!    again without clean session to open a persistent one;
//! 2. subscribe to `petrel/fw/{version}/#` at QoS 2;
//! 3. publish QoS 0, 1 and 2 messages there and receive each back;
//! 4. stay idle for two keep-alive periods: the client's PINGREQs keep the connection up;
//! 5. queue a QoS 1 publish and go silent for 10 s, far longer than the 2 s keep-alive
//!    allows: the broker closes the connection. The client finds out (its PINGREQ goes unanswered, or a 5.0
//!    DISCONNECT arrives), reconnects without clean start, checks that the broker resumed
//!    the session, and its stored publish is retransmitted and comes back through the
//!    subscription made before the break;
//! 6. publish once more on the resumed session, disconnect, and exit with status 0.
//!
//! Any failed step exits with its [`Failure`] code, so a test can tell which step broke.

use core::time::Duration;

use embedded_io::ReadReady;
use petrel_codec::{ProtocolVersion, QoS, ReasonCode, SubscribeFilter, SubscriptionOptions};
use petrel_state::client::{Client, ClientEvent, ClientOptions, ConnectionState};
use petrel_state::Instant;

use crate::clock::{self, now};
use crate::exit::exit;
use crate::link::Link;
use crate::uart::{Uart, UART0};

/// Receive buffer and largest packet accepted.
const RX: usize = 1024;
/// The client's buffer: QoS 1/2 publishes kept for retransmission, and the packets waiting
/// to be sent.
const BUF: usize = 1024;
/// Packet identifiers in flight.
const INFLIGHT: usize = 4;

/// Keep-alive in seconds: short, so the demo shows pings and a keep-alive close in seconds.
const KEEP_ALIVE: u16 = 2;

/// The messages the demo publishes, in order, under `petrel/fw/{version}/`. A host-side
/// subscriber to `petrel/fw/{version}/#` sees each of them.
pub const MESSAGES: [&str; 5] = ["qos0", "qos1", "qos2", "stalled", "resumed"];

/// Which step failed: the exit status of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u32)]
pub enum Failure {
    /// No CONNACK after every attempt, or the connection was refused.
    Connect = 2,
    /// SUBACK missing or refusing the subscription.
    Subscribe = 3,
    /// A publish was refused, or its acknowledgement or echo did not come back.
    PublishQos = 4,
    /// The connection did not survive idle keep-alive periods.
    KeepAlive = 5,
    /// The client did not notice that the broker closed the connection.
    NoticeClose = 6,
    /// The reconnection did not resume the session.
    Resume = 7,
    /// A publish on the resumed session did not come back.
    ResumedPublish = 8,
    /// DISCONNECT could not be sent.
    Disconnect = 9,
}

/// What the client has reported so far.
#[derive(Default)]
struct Seen {
    /// `session_present` of the last CONNACK.
    connected: Option<bool>,
    refused: bool,
    /// SUBACK granted QoS 2.
    subscribed: bool,
    suback_refused: bool,
    /// Bit `i` set when `MESSAGES[i]` came back through the subscription.
    messages: u8,
    /// Bit `i` set when the publish of `MESSAGES[i]` completed.
    published: u8,
    publish_failed: bool,
    pongs: u32,
}

type DemoClient = Client<'static, INFLIGHT, BUF>;

struct Demo {
    client: DemoClient,
    link: Link<Uart, RX>,
    seen: Seen,
    /// The packet identifier of each message published at QoS 1/2, by message index.
    ids: [Option<u16>; MESSAGES.len()],
    topics: Topics,
    version: ProtocolVersion,
}

/// `petrel/fw/{version}/{message}` for each message, built without `core::fmt`.
struct Topics {
    buf: [[u8; 32]; MESSAGES.len()],
    lens: [usize; MESSAGES.len()],
    filter: &'static str,
}

impl Topics {
    fn new(version: ProtocolVersion) -> Topics {
        let (prefix, filter) = if version.is_v5() {
            ("petrel/fw/5/", "petrel/fw/5/#")
        } else {
            ("petrel/fw/311/", "petrel/fw/311/#")
        };
        let mut topics = Topics {
            buf: [[0; 32]; MESSAGES.len()],
            lens: [0; MESSAGES.len()],
            filter,
        };
        for (i, name) in MESSAGES.iter().enumerate() {
            let len = prefix.len() + name.len();
            topics.buf[i][..prefix.len()].copy_from_slice(prefix.as_bytes());
            topics.buf[i][prefix.len()..len].copy_from_slice(name.as_bytes());
            topics.lens[i] = len;
        }
        topics
    }

    fn get(&self, i: usize) -> &str {
        core::str::from_utf8(&self.buf[i][..self.lens[i]]).unwrap_or("")
    }

    fn index_of(&self, topic: &str) -> Option<usize> {
        (0..MESSAGES.len()).find(|&i| self.get(i) == topic)
    }
}

/// Runs the scenario over UART0 and exits with 0 or the failed step's [`Failure`] code.
pub fn run(version: ProtocolVersion, client_id: &'static str) -> ! {
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        exit(1)
    };
    clock::start(peripherals.SYST);
    // SAFETY: UART0 is used by nothing else in this program.
    let uart = unsafe { Uart::new(UART0) };
    let mut options = ClientOptions::new(version, client_id);
    options.keep_alive = KEEP_ALIVE;
    options.response_timeout = Duration::from_secs(2);
    options.max_packet_size = RX as u32;
    // 5.0 ends the session with the connection unless asked to keep it.
    options.session_expiry_interval = 300;
    let mut demo = Demo {
        client: Client::new(options),
        link: Link::new(uart),
        seen: Seen::default(),
        ids: [None; MESSAGES.len()],
        topics: Topics::new(version),
        version,
    };
    match demo.steps() {
        Ok(()) => {
            info!("demo finished");
            exit(0)
        }
        Err(failure) => {
            warn!("demo failed: {}", failure);
            exit(failure as u32)
        }
    }
}

impl Demo {
    fn steps(&mut self) -> Result<(), Failure> {
        info!("connecting with a clean start");
        if self.connect()? {
            return Err(Failure::Connect);
        }
        if self.version == ProtocolVersion::V311 {
            // A 3.1.1 clean session ends with its connection: having cleared any old session,
            // open a persistent one (5.0 keeps a clean-start session for its expiry interval).
            self.client
                .disconnect(now())
                .map_err(|_| Failure::Disconnect)?;
            self.link
                .flush(&mut self.client, now())
                .map_err(|_| Failure::Disconnect)?;
            // The broker closes the connection; QEMU opens a new one a second later.
            clock::wait_until(now() + Duration::from_millis(1500));
            self.client.set_clean_start(false);
            info!("connecting with a persistent session");
            if self.connect()? {
                return Err(Failure::Connect);
            }
        }
        info!("connected");

        let filters = [SubscribeFilter {
            filter: self.topics.filter,
            options: SubscriptionOptions::qos(QoS::ExactlyOnce),
        }];
        self.client
            .subscribe(now(), &filters)
            .map_err(|_| Failure::Subscribe)?;
        if !self.run_until(secs(5), |s| s.subscribed || s.suback_refused) || !self.seen.subscribed {
            return Err(Failure::Subscribe);
        }
        info!("subscribed to {}", self.topics.filter);

        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            self.publish(i, qos).map_err(|_| Failure::PublishQos)?;
        }
        // QoS 0 completes when it is sent; the others with PUBACK / PUBCOMP.
        let all = 0b111;
        if !self.run_until(secs(5), |s| {
            s.messages & all == all && s.published & 0b110 == 0b110 || s.publish_failed
        }) || self.seen.publish_failed
        {
            return Err(Failure::PublishQos);
        }
        info!("QoS 0, 1 and 2 published and received back");

        let idle_until = now() + Duration::from_secs(2 * u64::from(KEEP_ALIVE) + 1);
        self.run_until(idle_until, |_| false);
        if self.client.state() != ConnectionState::Connected || self.seen.pongs == 0 {
            return Err(Failure::KeepAlive);
        }
        info!("idle through keep-alive: {} PINGRESP", self.seen.pongs);

        // A publish queued as the device stalls: the broker never gets it on this connection.
        self.publish(3, QoS::AtLeastOnce)
            .map_err(|_| Failure::PublishQos)?;
        info!("stalling past the keep-alive");
        // Mosquitto checks keep-alives coarsely: it closes a 2 s keep-alive after about 7 s.
        clock::wait_until(secs(10));
        let noticed = self.run_until(secs(10), |_| false);
        if noticed {
            // run_until returns true only when its condition holds; `false` never does, so
            // this means the connection outlived the deadline.
            return Err(Failure::NoticeClose);
        }
        info!("the broker closed the connection; reconnecting");

        self.client.set_clean_start(false);
        if !self.connect()? {
            return Err(Failure::Resume);
        }
        info!("session resumed");
        let stalled = 1 << 3;
        if !self.run_until(secs(5), |s| {
            s.messages & stalled != 0 && s.published & stalled != 0
        }) {
            return Err(Failure::Resume);
        }
        info!("the stored publish was retransmitted and came back");

        self.publish(4, QoS::AtLeastOnce)
            .map_err(|_| Failure::ResumedPublish)?;
        let resumed = 1 << 4;
        if !self.run_until(secs(5), |s| {
            s.messages & resumed != 0 && s.published & resumed != 0
        }) {
            return Err(Failure::ResumedPublish);
        }
        info!("published and received on the resumed session");

        self.client
            .disconnect(now())
            .map_err(|_| Failure::Disconnect)?;
        self.link
            .flush(&mut self.client, now())
            .map_err(|_| Failure::Disconnect)?;
        Ok(())
    }

    /// Connects, retrying until a CONNACK comes; returns its `session_present`.
    fn connect(&mut self) -> Result<bool, Failure> {
        for attempt in 1..=8u32 {
            self.client.connection_lost(now());
            self.link.reset();
            self.seen.connected = None;
            self.client.connect(now()).map_err(|_| Failure::Connect)?;
            if self.run_until(secs(3), |s| s.connected.is_some() || s.refused) {
                if self.seen.refused {
                    return Err(Failure::Connect);
                }
                return Ok(self.seen.connected == Some(true));
            }
            info!("no CONNACK (attempt {}), retrying", attempt);
            clock::wait_until(now() + Duration::from_millis(500));
        }
        Err(Failure::Connect)
    }

    fn publish(&mut self, i: usize, qos: QoS) -> Result<(), ()> {
        let topic = self.topics.get(i);
        let id = self
            .client
            .publish(now(), topic, MESSAGES[i].as_bytes(), qos, false)
            .map_err(|_| ())?;
        self.ids[i] = id.map(|id| id.get());
        Ok(())
    }

    /// Polls the link until `done` holds (`true`), or until `deadline`, the connection ends
    /// or the link fails (`false`).
    fn run_until(&mut self, deadline: Instant, done: impl Fn(&Seen) -> bool) -> bool {
        let Demo {
            client,
            link,
            seen,
            ids,
            topics,
            ..
        } = self;
        loop {
            let polled = link.poll(client, now(), |_, event| {
                record(seen, ids, topics, event);
            });
            if done(seen) {
                return true;
            }
            let live = matches!(
                client.state(),
                ConnectionState::Connected | ConnectionState::Connecting
            );
            if polled.is_err() || !live || now() >= deadline {
                return false;
            }
            if !link.io().read_ready().unwrap_or(true) {
                clock::idle();
            }
        }
    }
}

fn record(seen: &mut Seen, ids: &[Option<u16>], topics: &Topics, event: &ClientEvent<'_>) {
    match event {
        ClientEvent::Connected { session_present } => seen.connected = Some(*session_present),
        ClientEvent::Refused(_) => seen.refused = true,
        ClientEvent::Subscribed { reason_codes, .. } => {
            let granted = reason_codes.iter().all(|c| c == ReasonCode::GrantedQoS2);
            seen.subscribed = granted;
            seen.suback_refused = !granted;
        }
        ClientEvent::Message(publish) => {
            if let Some(i) = topics.index_of(publish.topic) {
                info!("received {} at {}", publish.topic, publish.qos);
                seen.messages |= 1 << i;
                if i == 0 {
                    // QoS 0 has no acknowledgement: its echo completes it.
                    seen.published |= 1;
                }
            }
        }
        ClientEvent::Published { packet_id } => {
            if let Some(i) = ids.iter().position(|id| *id == Some(packet_id.get())) {
                seen.published |= 1 << i;
            }
        }
        ClientEvent::PublishFailed { .. } => seen.publish_failed = true,
        ClientEvent::Pong => seen.pongs += 1,
        ClientEvent::Disconnected { reason, .. } => {
            info!("the broker sent DISCONNECT ({})", reason);
        }
        ClientEvent::Unsubscribed { .. } | ClientEvent::SessionLost { .. } => {}
    }
}

fn secs(n: u64) -> Instant {
    now() + Duration::from_secs(n)
}
