//! The proxy's configuration-driven hooks: who may connect, and tenant prefixes.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;

use petrel_codec::{ReasonCode, SubscriptionOptions};

use crate::broker::{AuthDecision, ClientInfo, Hooks, Verdict};
use crate::message::Message;
use crate::server::ConnectRequest;

/// Hooks built from the proxy's configuration.
///
/// With a tenant template such as `t/{username}/`, every client lives in its own part of
/// the upstream's topic tree: what it publishes to `a/b` goes upstream as `t/alice/a/b`,
/// its filter `a/#` becomes `t/alice/a/#` (`$share/g/a/#` becomes `$share/g/t/alice/a/#`),
/// and messages come back down with the prefix taken off again. A client without a user
/// name, or whose user name contains `/`, `+` or `#` (it could reach another tenant's
/// tree), is refused with "not authorized".
#[derive(Debug, Clone, Default)]
pub struct BuiltinHooks {
    /// Whether a client without a user name may connect.
    pub allow_anonymous: bool,
    /// The tenant prefix template; `{username}` stands for the client's user name.
    pub tenant_template: Option<Arc<str>>,
}

impl BuiltinHooks {
    /// The tenant prefix of `client`, if a template is set.
    pub fn prefix(&self, client: &ClientInfo<'_>) -> Option<String> {
        let template = self.tenant_template.as_deref()?;
        Some(template.replace("{username}", client.username.unwrap_or_default()))
    }
}

impl Hooks for BuiltinHooks {
    fn on_connect(&mut self, client: &ClientInfo<'_>, request: &ConnectRequest) -> AuthDecision {
        let username = request.username.as_deref();
        // A verified client certificate is a name too.
        if username.is_none() && client.identity.is_none() && !self.allow_anonymous {
            return AuthDecision::Reject(ReasonCode::NotAuthorized);
        }
        if self.tenant_template.is_some() {
            let usable = username.is_some_and(|u| !u.is_empty() && !u.contains(['/', '+', '#']));
            if !usable {
                return AuthDecision::Reject(ReasonCode::NotAuthorized);
            }
        }
        AuthDecision::Accept(None)
    }

    fn passes_messages(&mut self, _: &ClientInfo<'_>) -> bool {
        self.tenant_template.is_none()
    }

    fn authorize_publish(&mut self, client: &ClientInfo<'_>, message: &mut Message) -> Verdict {
        if let Some(prefix) = self.prefix(client) {
            message.topic = Arc::from(format!("{prefix}{}", message.topic));
        }
        Verdict::Allow
    }

    fn authorize_subscribe(
        &mut self,
        client: &ClientInfo<'_>,
        filter: &mut String,
        _options: &mut SubscriptionOptions,
    ) -> Verdict {
        if let Some(prefix) = self.prefix(client) {
            *filter = prefixed_filter(&prefix, filter);
        }
        Verdict::Allow
    }

    fn rewrite_unsubscribe(&mut self, client: &ClientInfo<'_>, filter: &mut String) {
        if let Some(prefix) = self.prefix(client) {
            *filter = prefixed_filter(&prefix, filter);
        }
    }

    fn authorize_delivery(&mut self, client: &ClientInfo<'_>, message: &Message) -> bool {
        // Only the tenant's own tree comes down; anything else (a subscription made
        // before the prefix was configured, say) would leak another tenant's topics.
        match self.prefix(client) {
            Some(prefix) => message.topic.starts_with(&prefix),
            None => true,
        }
    }

    fn rewrite_delivery(&mut self, client: &ClientInfo<'_>, message: &mut Message) {
        if let Some(prefix) = self.prefix(client) {
            if let Some(plain) = message.topic.strip_prefix(prefix.as_str()) {
                message.topic = Arc::from(plain);
            }
        }
    }
}

/// `filter` under `prefix`, keeping a shared subscription's `$share/{group}/` in front.
fn prefixed_filter(prefix: &str, filter: &str) -> String {
    if let Some(rest) = filter.strip_prefix("$share/") {
        if let Some((group, inner)) = rest.split_once('/') {
            return format!("$share/{group}/{prefix}{inner}");
        }
    }
    format!("{prefix}{filter}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::ConnectionId;
    use petrel_codec::ProtocolVersion;

    fn client(username: Option<&str>) -> ClientInfo<'_> {
        ClientInfo {
            connection: ConnectionId::detached(1),
            client_id: "c",
            username,
            version: ProtocolVersion::V5,
            remote: None,
            identity: None,
        }
    }

    fn tenant() -> BuiltinHooks {
        BuiltinHooks {
            allow_anonymous: false,
            tenant_template: Some(Arc::from("t/{username}/")),
        }
    }

    fn request(username: Option<&str>) -> ConnectRequest {
        ConnectRequest {
            version: ProtocolVersion::V5,
            client_id: String::from("c"),
            clean_start: true,
            keep_alive: 0,
            session_expiry_interval: 0,
            username: username.map(String::from),
            password: None,
            will: None,
            authentication_method: None,
            authentication_data: None,
            user_properties: alloc::vec::Vec::new(),
        }
    }

    #[test]
    fn usernames_that_could_escape_the_tenant_are_refused() {
        let mut hooks = tenant();
        let refused = AuthDecision::Reject(ReasonCode::NotAuthorized);
        for bad in [None, Some(""), Some("a/b"), Some("+"), Some("#")] {
            assert_eq!(
                hooks.on_connect(&client(bad), &request(bad)),
                refused,
                "{bad:?}"
            );
        }
        let ok = Some("alice");
        assert_eq!(
            hooks.on_connect(&client(ok), &request(ok)),
            AuthDecision::Accept(None)
        );
        let mut open = BuiltinHooks {
            allow_anonymous: true,
            tenant_template: None,
        };
        assert_eq!(
            open.on_connect(&client(None), &request(None)),
            AuthDecision::Accept(None)
        );
    }

    #[test]
    fn topics_go_up_prefixed_and_come_down_plain() {
        let mut hooks = tenant();
        let alice = client(Some("alice"));
        let mut message = Message::new("a/b", &b"x"[..]);
        assert_eq!(
            hooks.authorize_publish(&alice, &mut message),
            Verdict::Allow
        );
        assert_eq!(&*message.topic, "t/alice/a/b");
        assert!(hooks.authorize_delivery(&alice, &message));
        hooks.rewrite_delivery(&alice, &mut message);
        assert_eq!(&*message.topic, "a/b");
        assert!(!hooks.authorize_delivery(&alice, &Message::new("t/bob/a/b", &b""[..])));

        let mut options = SubscriptionOptions::default();
        for (filter, upstream) in [
            ("a/#", "t/alice/a/#"),
            ("#", "t/alice/#"),
            ("$share/g/a/+", "$share/g/t/alice/a/+"),
        ] {
            let mut f = String::from(filter);
            hooks.authorize_subscribe(&alice, &mut f, &mut options);
            assert_eq!(f, upstream);
            let mut f = String::from(filter);
            hooks.rewrite_unsubscribe(&alice, &mut f);
            assert_eq!(f, upstream);
        }
    }
}
