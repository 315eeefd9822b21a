//! A broker inside your own program: hooks that authorize and rewrite what clients send,
//! and the inline client publishing and subscribing from the program itself.
//!
//! Run it with `cargo run -p petrel --example embedded`; it starts a broker on a free
//! loopback port, exercises it, and stops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use petrel::{Config, Server};
use petrel_codec::{ReasonCode, SubscriptionOptions};
use petrel_state::broker::{ClientInfo, Hooks, Verdict};
use petrel_state::message::Message;

/// Multi-tenant rules in the style of mProxy's AuthPublish / AuthSubscribe: a client may
/// only publish and subscribe under `tenants/{its user name}/`, and sees plain topics.
struct TenantHooks {
    refused: Arc<AtomicUsize>,
}

impl TenantHooks {
    fn prefix(client: &ClientInfo<'_>) -> String {
        format!("tenants/{}/", client.username.unwrap_or("anonymous"))
    }
}

impl Hooks for TenantHooks {
    fn authorize_publish(&mut self, client: &ClientInfo<'_>, message: &mut Message) -> Verdict {
        if message.topic.starts_with("tenants/") || message.topic.starts_with('$') {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Verdict::Deny(ReasonCode::NotAuthorized);
        }
        message.topic = Arc::from(format!("{}{}", Self::prefix(client), message.topic).as_str());
        Verdict::Allow
    }

    fn authorize_subscribe(
        &mut self,
        client: &ClientInfo<'_>,
        filter: &mut String,
        _options: &mut SubscriptionOptions,
    ) -> Verdict {
        *filter = format!("{}{}", Self::prefix(client), filter);
        Verdict::Allow
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.listeners[0].bind = Some("127.0.0.1:0".parse()?);
    config.workers = 2;
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    let server = Server::new(config)
        .with_hooks(move || {
            Box::new(TenantHooks {
                refused: counter.clone(),
            })
        })
        .start()?;
    println!("broker listening on {:?}", server.local_addrs());

    // The inline client sees every message, with its full (rewritten) topic.
    let everything = server.subscribe("#");
    server.publish(Message::new(
        "tenants/acme/greeting",
        &b"hello from the program"[..],
    ));
    let message = everything.recv_timeout(Duration::from_secs(5))?;
    println!(
        "inline subscriber got {} = {:?}",
        message.topic,
        String::from_utf8_lossy(&message.payload)
    );
    println!(
        "publishes refused by the hooks so far: {}",
        refused.load(Ordering::Relaxed)
    );

    server.shutdown();
    println!("stopped");
    Ok(())
}
