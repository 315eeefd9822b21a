//! Access control lists: which client may publish to and read from which topics.
//!
//! One rule per line: conditions on who, an access, and a topic filter.
//!
//! ```text
//! # conditions          access     filter
//! user admin            readwrite  #
//! user alice            readwrite  home/alice/#
//! client gateway-1      write      sensors/+/temperature
//! address 10.0.0.0/8    read       public/#
//! user bob address 192.168.1.0/24 read office/#
//! anonymous             read       public/#
//!                       deny       secret/#
//!                       readwrite  devices/%c/#
//!                       read       users/%u/inbox
//! ```
//!
//! - **Conditions** (all must hold; none means everyone): `user NAME`, `client ID`,
//!   `address IP` or `address IP/PREFIX` (IPv4 or IPv6; an IPv4-mapped IPv6 peer counts
//!   as IPv4), and `anonymous` (no user name).
//! - **Access**: `read` (subscribe and receive), `write` (publish), `readwrite`, `deny`.
//! - **Filter**: the rest of the line, a topic filter in which `%c` stands for the client
//!   identifier and `%u` for the user name, as in mosquitto. A client identifier or user
//!   name that contains `/`, `+` or `#` never fills a pattern (it would reach other
//!   clients' topics): an allowing rule with such a pattern does not apply to that client,
//!   and a denying one denies.
//!
//! **First match wins.** For a publication to topic `t`, the first rule whose conditions
//! hold and that either denies with a filter matching `t` or allows `write` with a filter
//! matching `t` decides. For a subscription to filter `f`, the first rule whose conditions
//! hold and that either denies a filter overlapping `f` or allows `read` with a filter
//! covering all of `f` decides (a shared subscription `$share/g/f` is judged by `f`). A
//! delivery of topic `t` is judged like a publication, with `read`. When no rule decides,
//! the answer is no: with an ACL file, what is not allowed is denied.

use std::net::IpAddr;

use petrel_codec::topic::{validate_topic_filter, SharedFilter};

use crate::topic::{covers, matches, overlaps};
use crate::ParseError;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe and receive.
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Neither: a matching publication, subscription or delivery is refused.
    Deny,
}

impl Access {
    fn allows(self, wanted: Access) -> bool {
        self == Access::ReadWrite || self == wanted
    }
}

/// A network and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a single address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or network"))?;
        let network = network.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| format!("`{text}`: prefix must be 0 to {bits}"))?,
            None => bits,
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `address` is in this network.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    User(String),
    Client(String),
    Address(Cidr),
    Anonymous,
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    conditions: Vec<Condition>,
    access: Access,
    filter: String,
}

/// The client a question is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The client identifier.
    pub client_id: &'a str,
    /// The user name it authenticated with.
    pub username: Option<&'a str>,
    /// Its remote address (`None` for Unix sockets and in-process clients).
    pub address: Option<IpAddr>,
}

impl Rule {
    fn applies_to(&self, who: &Subject<'_>) -> bool {
        self.conditions.iter().all(|condition| match condition {
            Condition::User(name) => who.username == Some(name.as_str()),
            Condition::Client(id) => who.client_id == id,
            Condition::Address(net) => who.address.is_some_and(|a| net.contains(a)),
            Condition::Anonymous => who.username.is_none(),
        })
    }

    /// The filter with `%c` and `%u` filled in; `None` when the client cannot fill them.
    fn filter_for(&self, who: &Subject<'_>) -> Option<std::borrow::Cow<'_, str>> {
        if !self.filter.contains('%') {
            return Some(std::borrow::Cow::Borrowed(&self.filter));
        }
        let safe = |value: &str| !value.is_empty() && !value.contains(['/', '+', '#']);
        let mut filter = self.filter.clone();
        if filter.contains("%c") {
            if !safe(who.client_id) {
                return None;
            }
            filter = filter.replace("%c", who.client_id);
        }
        if filter.contains("%u") {
            let user = who.username.filter(|u| safe(u))?;
            filter = filter.replace("%u", user);
        }
        Some(std::borrow::Cow::Owned(filter))
    }
}

/// A parsed ACL file. See the [module documentation](self) for the format and the rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acl {
    rules: Vec<Rule>,
}

impl Acl {
    /// Parses an ACL file; the error names the line.
    pub fn parse(text: &str) -> Result<Acl, ParseError> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let rule = parse_rule(line).map_err(|message| ParseError {
                line: n + 1,
                message,
            })?;
            rules.push(rule);
        }
        Ok(Acl { rules })
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `who` may publish to `topic`.
    pub fn can_publish(&self, who: &Subject<'_>, topic: &str) -> bool {
        self.decide_topic(who, topic, Access::Write)
    }

    /// Whether a message on `topic` may be delivered to `who`.
    pub fn can_read(&self, who: &Subject<'_>, topic: &str) -> bool {
        self.decide_topic(who, topic, Access::Read)
    }

    /// Whether `who` may subscribe to `filter`.
    pub fn can_subscribe(&self, who: &Subject<'_>, filter: &str) -> bool {
        let filter = match SharedFilter::parse(filter) {
            Ok(Some(shared)) => shared.filter,
            Ok(None) => filter,
            Err(_) => return false,
        };
        for rule in self.rules.iter().filter(|r| r.applies_to(who)) {
            let own = rule.filter_for(who);
            match (rule.access, own) {
                (Access::Deny, None) => return false,
                (Access::Deny, Some(own)) if overlaps(&own, filter) => return false,
                (access, Some(own)) if access.allows(Access::Read) && covers(&own, filter) => {
                    return true
                }
                _ => {}
            }
        }
        false
    }

    fn decide_topic(&self, who: &Subject<'_>, topic: &str, wanted: Access) -> bool {
        for rule in self.rules.iter().filter(|r| r.applies_to(who)) {
            let own = rule.filter_for(who);
            match (rule.access, own) {
                (Access::Deny, None) => return false,
                (Access::Deny, Some(own)) if matches(&own, topic) => return false,
                (access, Some(own)) if access.allows(wanted) && matches(&own, topic) => {
                    return true
                }
                _ => {}
            }
        }
        false
    }
}

/// Splits off the first whitespace-separated word.
fn word(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    Some((&text[..end], &text[end..]))
}

fn parse_rule(line: &str) -> Result<Rule, String> {
    let mut conditions = Vec::new();
    let mut rest = line;
    let access = loop {
        let Some((keyword, after)) = word(rest) else {
            return Err(String::from(
                "expected an access (read, write, readwrite or deny) and a topic filter",
            ));
        };
        rest = after;
        let mut value = |what: &str| -> Result<String, String> {
            let (value, after) =
                word(rest).ok_or_else(|| format!("`{keyword}` needs {what} after it"))?;
            rest = after;
            Ok(value.to_string())
        };
        match keyword {
            "user" => conditions.push(Condition::User(value("a user name")?)),
            "client" => conditions.push(Condition::Client(value("a client identifier")?)),
            "address" => conditions.push(Condition::Address(Cidr::parse(&value(
                "an address or network",
            )?)?)),
            "anonymous" => conditions.push(Condition::Anonymous),
            "read" => break Access::Read,
            "write" => break Access::Write,
            "readwrite" => break Access::ReadWrite,
            "deny" => break Access::Deny,
            other => {
                return Err(format!(
                    "unknown word `{other}`: expected user, client, address, anonymous, \
                     read, write, readwrite or deny"
                ))
            }
        }
    };
    let filter = rest.trim();
    if filter.is_empty() {
        return Err(String::from("the rule has no topic filter"));
    }
    if validate_topic_filter(filter).is_err() {
        return Err(format!("`{filter}` is not a valid topic filter"));
    }
    Ok(Rule {
        conditions,
        access,
        filter: filter.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "\
# conditions          access     filter
user admin            readwrite  #
user alice            readwrite  home/alice/#
client gateway-1      write      sensors/+/temperature
address 10.0.0.0/8    read       public/#
user bob address 192.168.1.0/24 read office/#
anonymous             read       anon/#
                      deny       secret/#
                      readwrite  devices/%c/#
                      read       users/%u/inbox
";

    fn who<'a>(client_id: &'a str, username: Option<&'a str>, address: &str) -> Subject<'a> {
        Subject {
            client_id,
            username,
            address: address.parse().ok(),
        }
    }

    #[test]
    fn rules_by_user_client_and_address() {
        let acl = Acl::parse(EXAMPLE).unwrap();
        assert_eq!(acl.len(), 9);
        let alice = who("c1", Some("alice"), "127.0.0.1");
        assert!(acl.can_publish(&alice, "home/alice/lamp"));
        assert!(acl.can_subscribe(&alice, "home/alice/+"));
        assert!(!acl.can_publish(&alice, "home/bob/lamp"));
        assert!(!acl.can_subscribe(&alice, "home/#"));

        let gateway = who("gateway-1", None, "127.0.0.1");
        assert!(acl.can_publish(&gateway, "sensors/k/temperature"));
        assert!(!acl.can_subscribe(&gateway, "sensors/k/temperature"));

        let inside = who("x", None, "10.1.2.3");
        assert!(acl.can_subscribe(&inside, "public/news"));
        assert!(!acl.can_publish(&inside, "public/news"));
        assert!(!acl.can_subscribe(&who("x", None, "11.1.2.3"), "public/news"));

        let bob_office = who("b", Some("bob"), "192.168.1.77");
        assert!(acl.can_subscribe(&bob_office, "office/#"));
        assert!(!acl.can_subscribe(&who("b", Some("bob"), "192.168.2.77"), "office/#"));

        assert!(acl.can_subscribe(&who("a", None, "::1"), "anon/x"));
        assert!(!acl.can_subscribe(&who("a", Some("u"), "::1"), "anon/x"));
    }

    #[test]
    fn first_match_wins_and_default_denies() {
        let acl = Acl::parse(EXAMPLE).unwrap();
        // admin's readwrite # comes before the deny.
        let admin = who("a", Some("admin"), "127.0.0.1");
        assert!(acl.can_publish(&admin, "secret/x"));
        assert!(acl.can_subscribe(&admin, "#"));
        // Anyone else: deny secret/# comes before devices/%c/#.
        let other = who("secret", Some("zed"), "127.0.0.1");
        assert!(!acl.can_publish(&other, "secret/x"));
        assert!(!acl.can_subscribe(&other, "#"));
        assert!(!acl.can_read(&other, "secret/x"));
        assert!(!acl.can_publish(&other, "elsewhere"));
        assert!(Acl::parse("").unwrap().is_empty());
        assert!(!Acl::parse("").unwrap().can_publish(&other, "x"));
    }

    #[test]
    fn patterns() {
        let acl = Acl::parse(EXAMPLE).unwrap();
        let dev = who("dev7", Some("carol"), "127.0.0.1");
        assert!(acl.can_publish(&dev, "devices/dev7/state"));
        assert!(acl.can_subscribe(&dev, "devices/dev7/#"));
        assert!(!acl.can_publish(&dev, "devices/dev8/state"));
        assert!(acl.can_subscribe(&dev, "users/carol/inbox"));
        assert!(acl.can_read(&dev, "users/carol/inbox"));
        assert!(!acl.can_subscribe(&dev, "users/dave/inbox"));
        // An identifier with a separator or a wildcard fills no pattern.
        let sly = who("dev8/x", Some("+"), "127.0.0.1");
        assert!(!acl.can_publish(&sly, "devices/dev8/x/state"));
        assert!(!acl.can_subscribe(&sly, "users/+/inbox"));
        // …and a denying pattern it cannot fill denies.
        let deny = Acl::parse("deny users/%u/#\nreadwrite #\n").unwrap();
        assert!(!deny.can_publish(&who("c", None, "127.0.0.1"), "anything"));
        assert!(deny.can_publish(&who("c", Some("u"), "127.0.0.1"), "anything"));
    }

    #[test]
    fn shared_subscriptions_are_judged_by_their_filter() {
        let acl = Acl::parse("read jobs/#\n").unwrap();
        let w = who("w", None, "127.0.0.1");
        assert!(acl.can_subscribe(&w, "$share/workers/jobs/+"));
        assert!(!acl.can_subscribe(&w, "$share/workers/other"));
    }

    #[test]
    fn networks() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }

    #[test]
    fn errors_name_the_line() {
        let err = Acl::parse("read a\nuser bob\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = Acl::parse("\n\nwrite a/#/b\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("a/#/b"), "{err}");
        let err = Acl::parse("group x read a\n").unwrap_err();
        assert!(err.message.contains("group"), "{err}");
        let err = Acl::parse("address 1.2.3.4/40 read a\n").unwrap_err();
        assert!(err.message.contains("prefix"), "{err}");
    }

    proptest! {
        /// Parsing never panics, and a client allowed to subscribe to a filter may read
        /// every topic that filter matches (no read is granted by the subscription alone).
        #[test]
        fn subscribe_implies_read(
            text in "((user u |client c |anonymous )?(read|write|readwrite|deny) [ab+#/]{1,5}\n){0,5}",
            filter in "[ab+/]{1,5}",
            topic in "[ab/]{1,5}",
        ) {
            let Ok(acl) = Acl::parse(&text) else { return Ok(()); };
            let who = Subject { client_id: "c", username: Some("u"), address: None };
            if validate_topic_filter(&filter).is_ok()
                && acl.can_subscribe(&who, &filter)
                && matches(&filter, &topic)
            {
                prop_assert!(acl.can_read(&who, &topic), "{text:?} {filter} {topic}");
            }
        }
    }
}
