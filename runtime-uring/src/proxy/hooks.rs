//! The proxy's hooks: the built-in ones (anonymous access, tenant prefixes) and the
//! broker's password file and ACL file, read by the same code (`crate::auth`).
//!
//! The ACL speaks of the topics the device sees: a publish or a subscription is checked
//! before the tenant prefix goes on, a delivery after it comes off.

use petrel_codec::{ReasonCode, SubscriptionOptions};
use petrel_state::broker::{AuthDecision, ClientInfo, Hooks, Verdict};
use petrel_state::message::Message;
use petrel_state::proxy::BuiltinHooks;
use petrel_state::server::ConnectRequest;
use tracing::info;

use crate::auth::{subject, AccessView};

pub(super) struct ProxyHooks {
    pub(super) builtin: BuiltinHooks,
    pub(super) access: AccessView,
}

impl Hooks for ProxyHooks {
    fn on_connect(&mut self, client: &ClientInfo<'_>, request: &ConnectRequest) -> AuthDecision {
        let decision = self.builtin.on_connect(client, request);
        if decision != AuthDecision::Accept(None) {
            info!(client_id = client.client_id, "refused: {decision:?}");
            return decision;
        }
        if !self.access.credentials_pass(client, request) {
            info!(
                client_id = client.client_id,
                "refused: bad user name or password"
            );
            return AuthDecision::Reject(ReasonCode::BadUserNameOrPassword);
        }
        decision
    }

    fn passes_messages(&mut self, client: &ClientInfo<'_>) -> bool {
        // Asked at every read: a reloaded ACL file is seen from the next read on.
        self.access.current().acl.is_none() && self.builtin.passes_messages(client)
    }

    fn authorize_publish(&mut self, client: &ClientInfo<'_>, message: &mut Message) -> Verdict {
        if let Some(acl) = &self.access.current().acl {
            if !acl.can_publish(&subject(client), &message.topic) {
                return Verdict::Deny(ReasonCode::NotAuthorized);
            }
        }
        self.builtin.authorize_publish(client, message)
    }

    fn authorize_subscribe(
        &mut self,
        client: &ClientInfo<'_>,
        filter: &mut String,
        options: &mut SubscriptionOptions,
    ) -> Verdict {
        if let Some(acl) = &self.access.current().acl {
            if !acl.can_subscribe(&subject(client), filter) {
                return Verdict::Deny(ReasonCode::NotAuthorized);
            }
        }
        self.builtin.authorize_subscribe(client, filter, options)
    }

    fn rewrite_unsubscribe(&mut self, client: &ClientInfo<'_>, filter: &mut String) {
        self.builtin.rewrite_unsubscribe(client, filter);
    }

    fn authorize_delivery(&mut self, client: &ClientInfo<'_>, message: &Message) -> bool {
        if !self.builtin.authorize_delivery(client, message) {
            return false;
        }
        let Some(acl) = &self.access.current().acl else {
            return true;
        };
        let prefix = self.builtin.prefix(client);
        let topic = prefix
            .as_deref()
            .and_then(|p| message.topic.strip_prefix(p))
            .unwrap_or(&message.topic);
        acl.can_read(&subject(client), topic)
    }

    fn rewrite_delivery(&mut self, client: &ClientInfo<'_>, message: &mut Message) {
        self.builtin.rewrite_delivery(client, message);
    }
}
