//! Hooks that log every packet and every event: each packet a client sends and each one
//! the broker sends it (`<-` received, `->` sent: PUBACK, PUBREC/PUBREL/PUBCOMP,
//! PINGREQ/PINGRESP, SUBACK, CONNACK and DISCONNECT as much as PUBLISH), through
//! `on_packet`, and what the broker decides on the way: CONNECT (and AUTH), the
//! connection's acceptance and end, every PUBLISH with its receivers, every SUBSCRIBE and
//! UNSUBSCRIBE filter, every delivery to a subscriber, wills and expired sessions. They
//! allow everything, so they can sit in front of any deployment to see what clients do.
//!
//! `on_packet` is called only because `observes_packets` says so: a broker whose hooks
//! do not ask keeps no packet for them and decodes nothing twice.
//!
//! Run it with `cargo run -p petrel --example log_hooks`, then talk to it, for example
//! `mosquitto_sub -p PORT -t 'demo/#'` and `mosquitto_pub -p PORT -t demo/x -m hi` with the
//! port it prints. It publishes one message itself, then serves until Ctrl-C.

use petrel::{describe_packet, Config, PacketDirection, Server};
use petrel_codec::{Packet, ReasonCode, SubscriptionOptions};
use petrel_state::broker::{AuthDecision, ClientInfo, Hooks, Verdict};
use petrel_state::message::Message;
use petrel_state::server::{AuthRequest, CloseInfo, ConnectRequest};

/// Prints one line per event to standard output.
struct LogHooks {
    worker: usize,
}

impl LogHooks {
    fn who(client: &ClientInfo<'_>) -> String {
        format!(
            "[{}] {} ({}, {:?})",
            client.connection.index(),
            client.client_id,
            client.remote.unwrap_or("in-process"),
            client.version
        )
    }
}

impl Hooks for LogHooks {
    fn on_connect(&mut self, client: &ClientInfo<'_>, request: &ConnectRequest) -> AuthDecision {
        println!(
            "w{} CONNECT {} user={:?} clean_start={} keep_alive={} will={}",
            self.worker,
            Self::who(client),
            request.username,
            request.clean_start,
            request.keep_alive,
            request.will.is_some()
        );
        AuthDecision::Accept(None)
    }

    fn on_auth(&mut self, client: &ClientInfo<'_>, request: &AuthRequest) -> AuthDecision {
        println!(
            "w{} AUTH {} method={}",
            self.worker,
            Self::who(client),
            request.method
        );
        AuthDecision::Reject(ReasonCode::BadAuthenticationMethod)
    }

    fn authorize_publish(&mut self, client: &ClientInfo<'_>, message: &mut Message) -> Verdict {
        println!(
            "w{} PUBLISH {} topic={} qos={:?} retain={} bytes={}",
            self.worker,
            Self::who(client),
            message.topic,
            message.qos,
            message.retain,
            message.payload.len()
        );
        Verdict::Allow
    }

    fn authorize_subscribe(
        &mut self,
        client: &ClientInfo<'_>,
        filter: &mut String,
        options: &mut SubscriptionOptions,
    ) -> Verdict {
        println!(
            "w{} SUBSCRIBE {} filter={} qos={:?}",
            self.worker,
            Self::who(client),
            filter,
            options.qos
        );
        Verdict::Allow
    }

    fn authorize_delivery(&mut self, client: &ClientInfo<'_>, message: &Message) -> bool {
        println!(
            "w{} deliver {} to {}",
            self.worker,
            message.topic,
            Self::who(client)
        );
        true
    }

    fn on_connected(&mut self, client: &ClientInfo<'_>, session_present: bool) {
        println!(
            "w{} CONNACK {} session_present={session_present}",
            self.worker,
            Self::who(client)
        );
    }

    fn on_disconnected(&mut self, client: &ClientInfo<'_>, info: &CloseInfo) {
        println!(
            "w{} closed {} reason={:?} by={:?}",
            self.worker,
            Self::who(client),
            info.reason,
            info.initiator
        );
    }

    fn on_subscribed(&mut self, client: &ClientInfo<'_>, filter: &str, granted: ReasonCode) {
        println!(
            "w{} SUBACK {} filter={filter} granted={granted:?}",
            self.worker,
            Self::who(client)
        );
    }

    fn on_unsubscribed(&mut self, client: &ClientInfo<'_>, filter: &str) {
        println!(
            "w{} UNSUBSCRIBE {} filter={filter}",
            self.worker,
            Self::who(client)
        );
    }

    fn on_published(
        &mut self,
        client: Option<&ClientInfo<'_>>,
        message: &Message,
        receivers: usize,
    ) {
        let from = client.map_or_else(|| String::from("the program"), Self::who);
        println!(
            "w{} routed {} from {from} to {receivers} receiver(s)",
            self.worker, message.topic
        );
    }

    fn on_will(&mut self, client_id: &str, message: &Message) {
        println!("w{} will of {client_id} on {}", self.worker, message.topic);
    }

    fn on_session_expired(&mut self, client_id: &str) {
        println!("w{} session of {client_id} expired", self.worker);
    }

    fn observes_packets(&self) -> bool {
        true
    }

    fn on_packet(
        &mut self,
        client: &ClientInfo<'_>,
        direction: PacketDirection,
        packet: &Packet<'_>,
        _frame: &[u8],
    ) {
        let arrow = direction.arrow();
        println!(
            "w{} {arrow} {} {}",
            self.worker,
            Self::who(client),
            describe_packet(packet)
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.listeners[0].bind = Some("127.0.0.1:0".parse()?);
    // A demonstration keeps nothing on disk.
    config.store.kind = petrel::persistence::StoreKind::Memory;
    // No $SYS: its messages every ten seconds would drown the clients' lines.
    config.sys.interval = 0;
    let next_worker = std::sync::atomic::AtomicUsize::new(0);
    let server = Server::new(config)
        .with_hooks(move || {
            let worker = next_worker.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::new(LogHooks { worker })
        })
        .start()?;
    println!("listening on {:?}", server.local_addrs());
    server.publish(Message::new("demo/started", &b"yes"[..]));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    signals.forever().next();
    server.shutdown();
    Ok(())
}
