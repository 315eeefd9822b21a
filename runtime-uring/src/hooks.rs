//! The runtime's hooks: the anonymous-access policy, the password file and the ACL file,
//! connection logging and inline subscribers, in front of the embedder's own hooks.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use petrel_codec::topic::matches;
use petrel_codec::{Packet, ReasonCode, SubscriptionOptions};
use petrel_state::broker::{AuthDecision, ClientInfo, Hooks, PacketDirection, Verdict};
use petrel_state::message::Message;
use petrel_state::server::{AuthRequest, CloseInfo, ConnectRequest};
use tracing::{debug, info};

use crate::auth::{subject, AccessView};
use crate::config::Anonymous;
use crate::shared::Shared;

/// An inline subscription of the embedding program (or a bridge).
#[derive(Clone)]
pub(crate) struct Tap {
    /// Names it for removal once its receiver is gone.
    pub(crate) id: u64,
    pub(crate) filter: String,
    pub(crate) sender: Sender<Arc<Message>>,
}

pub(crate) struct RuntimeHooks {
    shared: Arc<Shared>,
    user: Option<Box<dyn Hooks>>,
    access: AccessView,
    /// This worker's copy of the taps, as of `tap_generation`.
    taps: Arc<Vec<Tap>>,
    tap_generation: u64,
}

impl RuntimeHooks {
    pub(crate) fn new(shared: Arc<Shared>, _worker: usize) -> Self {
        let user = shared.hooks_factory.as_ref().map(|make| make());
        let access = AccessView::new(shared.access.clone());
        RuntimeHooks {
            shared,
            user,
            access,
            taps: Arc::new(Vec::new()),
            tap_generation: 0,
        }
    }

    fn tap(&mut self, message: &Message) {
        let generation = self.shared.tap_generation.load(Ordering::Acquire);
        if generation != self.tap_generation {
            self.taps = self.shared.taps();
            self.tap_generation = generation;
        }
        if self.taps.is_empty() {
            return;
        }
        let mut shared: Option<Arc<Message>> = None;
        let mut gone = Vec::new();
        for tap in self.taps.iter() {
            if matches(&tap.filter, &message.topic) {
                let copy = shared.get_or_insert_with(|| Arc::new(message.clone()));
                if tap.sender.send(copy.clone()).is_err() {
                    gone.push(tap.id);
                }
            }
        }
        if !gone.is_empty() {
            self.shared.remove_taps(&gone);
        }
    }
}

fn is_local(remote: Option<&str>) -> bool {
    match remote {
        None | Some("unix") => true,
        Some(addr) => addr
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback()),
    }
}

impl Hooks for RuntimeHooks {
    fn on_connect(&mut self, client: &ClientInfo<'_>, request: &ConnectRequest) -> AuthDecision {
        // A verified client certificate is a name too: such a client is not anonymous.
        if request.username.is_none() && client.identity.is_none() {
            let allowed = match self.shared.config.anonymous {
                Anonymous::Allow => true,
                Anonymous::Deny => false,
                Anonymous::Loopback => is_local(client.remote),
            };
            if !allowed {
                info!(
                    client_id = client.client_id,
                    remote = client.remote.unwrap_or("-"),
                    "refused: anonymous clients are not allowed from this address"
                );
                return AuthDecision::Reject(ReasonCode::NotAuthorized);
            }
        }
        if !self.access.credentials_pass(client, request) {
            info!(
                client_id = client.client_id,
                remote = client.remote.unwrap_or("-"),
                "refused: bad user name or password"
            );
            return AuthDecision::Reject(ReasonCode::BadUserNameOrPassword);
        }
        match self.user.as_mut() {
            Some(user) => user.on_connect(client, request),
            None => AuthDecision::Accept(None),
        }
    }

    fn on_auth(&mut self, client: &ClientInfo<'_>, request: &AuthRequest) -> AuthDecision {
        match self.user.as_mut() {
            Some(user) => user.on_auth(client, request),
            None => AuthDecision::Reject(ReasonCode::BadAuthenticationMethod),
        }
    }

    fn authorize_publish(&mut self, client: &ClientInfo<'_>, message: &mut Message) -> Verdict {
        if let Some(acl) = &self.access.current().acl {
            if !acl.can_publish(&subject(client), &message.topic) {
                self.access
                    .stats()
                    .publish_denied
                    .fetch_add(1, Ordering::Relaxed);
                debug!(
                    client_id = client.client_id,
                    topic = &*message.topic,
                    "publish denied by the ACL"
                );
                return Verdict::Deny(ReasonCode::NotAuthorized);
            }
        }
        match self.user.as_mut() {
            Some(user) => user.authorize_publish(client, message),
            None => Verdict::Allow,
        }
    }

    fn authorize_subscribe(
        &mut self,
        client: &ClientInfo<'_>,
        filter: &mut String,
        options: &mut SubscriptionOptions,
    ) -> Verdict {
        if let Some(acl) = &self.access.current().acl {
            if !acl.can_subscribe(&subject(client), filter) {
                self.access
                    .stats()
                    .subscribe_denied
                    .fetch_add(1, Ordering::Relaxed);
                debug!(
                    client_id = client.client_id,
                    filter = filter.as_str(),
                    "subscription denied by the ACL"
                );
                return Verdict::Deny(ReasonCode::NotAuthorized);
            }
        }
        match self.user.as_mut() {
            Some(user) => user.authorize_subscribe(client, filter, options),
            None => Verdict::Allow,
        }
    }

    fn authorize_delivery(&mut self, client: &ClientInfo<'_>, message: &Message) -> bool {
        // Checked per delivery as well as at SUBSCRIBE: an ACL reloaded since then, or a
        // deny rule inside a wider subscription, applies to every message.
        if let Some(acl) = &self.access.current().acl {
            if !acl.can_read(&subject(client), &message.topic) {
                return false;
            }
        }
        match self.user.as_mut() {
            Some(user) => user.authorize_delivery(client, message),
            None => true,
        }
    }

    fn on_connected(&mut self, client: &ClientInfo<'_>, session_present: bool) {
        info!(
            client_id = client.client_id,
            remote = client.remote.unwrap_or("-"),
            username = client.username.unwrap_or("-"),
            certificate = client.identity.unwrap_or("-"),
            version = ?client.version,
            session_present,
            "connected"
        );
        if let Some(user) = self.user.as_mut() {
            user.on_connected(client, session_present);
        }
    }

    fn on_disconnected(&mut self, client: &ClientInfo<'_>, close: &CloseInfo) {
        info!(
            client_id = client.client_id,
            remote = client.remote.unwrap_or("-"),
            reason = ?close.reason,
            by = ?close.initiator,
            "disconnected"
        );
        if let Some(user) = self.user.as_mut() {
            user.on_disconnected(client, close);
        }
    }

    fn on_subscribed(&mut self, client: &ClientInfo<'_>, filter: &str, granted: ReasonCode) {
        if let Some(user) = self.user.as_mut() {
            user.on_subscribed(client, filter, granted);
        }
    }

    fn on_unsubscribed(&mut self, client: &ClientInfo<'_>, filter: &str) {
        if let Some(user) = self.user.as_mut() {
            user.on_unsubscribed(client, filter);
        }
    }

    fn on_published(
        &mut self,
        client: Option<&ClientInfo<'_>>,
        message: &Message,
        receivers: usize,
    ) {
        self.tap(message);
        if let Some(user) = self.user.as_mut() {
            user.on_published(client, message, receivers);
        }
    }

    fn on_will(&mut self, client_id: &str, message: &Message) {
        self.tap(message);
        if let Some(user) = self.user.as_mut() {
            user.on_will(client_id, message);
        }
    }

    fn on_session_expired(&mut self, client_id: &str) {
        if let Some(user) = self.user.as_mut() {
            user.on_session_expired(client_id);
        }
    }

    fn observes_packets(&self) -> bool {
        self.user
            .as_ref()
            .is_some_and(|user| user.observes_packets())
    }

    fn on_packet(
        &mut self,
        client: &ClientInfo<'_>,
        direction: PacketDirection,
        packet: &Packet<'_>,
        frame: &[u8],
    ) {
        if let Some(user) = self.user.as_mut() {
            user.on_packet(client, direction, packet, frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local() {
        assert!(is_local(Some("127.0.0.1:4000")));
        assert!(is_local(Some("[::1]:4000")));
        assert!(is_local(Some("unix")));
        assert!(!is_local(Some("10.0.0.2:4000")));
    }
}
