//! Hooks that authorize and rewrite, in the style of mProxy's `AuthConnect`, `AuthPublish`
//! and `AuthSubscribe`: devices speak short topics (`channels/{id}/messages`), and the
//! broker keeps each user's traffic under its own prefix (`users/{user}/channels/{id}`).
//!
//! - **on_connect**: only users named `device-…` get in (a real deployment would check a
//!   password file or a token; see `[auth]` in `petrel.example.toml`).
//! - **authorize_publish**: `channels/{id}/messages` becomes `users/{user}/channels/{id}`;
//!   anything else is refused with 0x87 (a 3.1.1 publisher's message is acknowledged and
//!   dropped). Payloads over 1 KiB are refused with 0x97 "quota exceeded".
//! - **authorize_subscribe**: the same rewrite for filters, so a device reads only its own
//!   user's channels. Messages reach it under the stored topic: hooks rewrite what comes
//!   in, not what goes out.
//! - **authorize_delivery**: nothing from another user's prefix is ever delivered, even
//!   if a rule above were wrong.
//!
//! Run it with `cargo run -p petrel --example authorize_rewrite`: it starts a broker on a
//! free loopback port, connects two rumqttc clients as two devices of the same user,
//! shows one device's publication reaching the other, and a refused one.

use std::sync::Arc;
use std::time::Duration;

use petrel::{Config, Server};
use petrel_codec::{ReasonCode, SubscriptionOptions};
use petrel_state::broker::{AuthDecision, ClientInfo, Hooks, Verdict};
use petrel_state::message::Message;
use petrel_state::server::ConnectRequest;

/// Channel topics under one prefix per user.
struct ChannelHooks;

impl ChannelHooks {
    fn prefix(client: &ClientInfo<'_>) -> String {
        format!("users/{}/", client.username.unwrap_or("-"))
    }

    /// `channels/{id}/messages` (or a filter with `+` for the id) to the stored topic.
    fn rewrite(client: &ClientInfo<'_>, topic: &str) -> Option<String> {
        let mut levels = topic.split('/');
        match (levels.next(), levels.next(), levels.next(), levels.next()) {
            (Some("channels"), Some(id), Some("messages"), None) if !id.is_empty() => {
                Some(format!("{}channels/{id}", Self::prefix(client)))
            }
            _ => None,
        }
    }
}

impl Hooks for ChannelHooks {
    fn on_connect(&mut self, _client: &ClientInfo<'_>, request: &ConnectRequest) -> AuthDecision {
        match request.username.as_deref() {
            Some(user) if user.starts_with("device-") => AuthDecision::Accept(None),
            _ => AuthDecision::Reject(ReasonCode::NotAuthorized),
        }
    }

    fn authorize_publish(&mut self, client: &ClientInfo<'_>, message: &mut Message) -> Verdict {
        if message.payload.len() > 1024 {
            return Verdict::Deny(ReasonCode::QuotaExceeded);
        }
        match Self::rewrite(client, &message.topic) {
            Some(topic) => {
                message.topic = Arc::from(topic.as_str());
                Verdict::Allow
            }
            None => Verdict::Deny(ReasonCode::NotAuthorized),
        }
    }

    fn authorize_subscribe(
        &mut self,
        client: &ClientInfo<'_>,
        filter: &mut String,
        _options: &mut SubscriptionOptions,
    ) -> Verdict {
        match Self::rewrite(client, filter) {
            Some(rewritten) => {
                *filter = rewritten;
                Verdict::Allow
            }
            None => Verdict::Deny(ReasonCode::NotAuthorized),
        }
    }

    fn authorize_delivery(&mut self, client: &ClientInfo<'_>, message: &Message) -> bool {
        message.topic.starts_with(&Self::prefix(client))
    }
}

fn device(port: u16, name: &str) -> (rumqttc::Client, rumqttc::Connection) {
    let mut options = rumqttc::MqttOptions::new(name, "127.0.0.1", port);
    options.set_credentials("device-alice", "unused");
    rumqttc::Client::new(options, 10)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.listeners[0].bind = Some("127.0.0.1:0".parse()?);
    config.workers = 1;
    let server = Server::new(config)
        .with_hooks(|| Box::new(ChannelHooks))
        .start()?;
    let port = server.local_addrs()[0].port();
    let everything = server.subscribe("#");

    // rumqttc sends only while its connection is polled: one thread per device.
    let (reader, mut reader_events) = device(port, "reader");
    reader.subscribe("channels/7/messages", rumqttc::QoS::AtLeastOnce)?;
    let (subscribed, wait_subscribed) = std::sync::mpsc::channel();
    let reader_thread = std::thread::spawn(move || {
        for event in reader_events.iter() {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = subscribed.send(());
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                    println!(
                        "reader got {} = {:?}",
                        publish.topic,
                        String::from_utf8_lossy(&publish.payload)
                    );
                    return;
                }
                Ok(_) => {}
                Err(e) => return println!("reader: {e}"),
            }
        }
    });
    wait_subscribed.recv_timeout(Duration::from_secs(5))?;

    let (writer, mut writer_events) = device(port, "writer");
    writer.publish(
        "channels/7/messages",
        rumqttc::QoS::AtLeastOnce,
        false,
        "21.5",
    )?;
    writer.publish("elsewhere", rumqttc::QoS::AtLeastOnce, false, "refused")?;
    let writer_thread = std::thread::spawn(move || {
        // Both are acknowledged: the refused one too, since 3.1.1 cannot say no (a 5.0
        // client would see 0x87 in its PUBACK).
        let mut acks = 0;
        for event in writer_events.iter() {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack))) => {
                    println!("writer: PUBACK for packet {}", ack.pkid);
                    acks += 1;
                    if acks == 2 {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => return println!("writer: {e}"),
            }
        }
    });

    // The inline subscriber sees the stored (rewritten) topic, and only that message.
    let stored = everything.recv_timeout(Duration::from_secs(5))?;
    println!("stored as {}", stored.topic);
    let _ = writer_thread.join();
    let _ = reader_thread.join();
    if let Ok(other) = everything.recv_timeout(Duration::from_millis(200)) {
        println!("unexpected: {} was routed", other.topic);
    }
    server.shutdown();
    Ok(())
}
