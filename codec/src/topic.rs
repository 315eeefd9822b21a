//! Topic name and topic filter rules (MQTT 5.0 section 4.7, 3.1.1 section 4.7), and the
//! shared-subscription syntax (5.0 section 4.8.2).
//!
//! Topics are `/`-separated levels of UTF-8 text; every check here works on levels, never on
//! byte offsets into a level, so multi-byte characters are handled like any other.

use crate::error::DecodeError;

/// The prefix that marks a shared subscription filter.
pub const SHARED_PREFIX: &str = "$share/";

/// Checks a PUBLISH or will topic name: non-empty [MQTT-4.7.3-1] and free of the wildcards
/// `+` and `#` [MQTT-3.3.2-2]. (A v5 PUBLISH may have an empty name when it carries a topic
/// alias; the PUBLISH decoder handles that case before calling this.)
pub fn validate_topic_name(topic: &str) -> Result<(), DecodeError> {
    if topic.is_empty() || has_wildcard(topic) {
        return Err(DecodeError::InvalidTopicName);
    }
    Ok(())
}

/// Checks a topic filter: non-empty [MQTT-4.7.3-1]; `#` only as the whole last level
/// [MQTT-4.7.1-2]; `+` only as a whole level [MQTT-4.7.1-3]; and, for a filter that starts
/// with `$share/`, a non-empty share name without wildcards followed by a valid filter
/// [MQTT-4.8.2-1], [MQTT-4.8.2-2].
pub fn validate_topic_filter(filter: &str) -> Result<(), DecodeError> {
    let inner = match SharedFilter::parse(filter)? {
        Some(shared) => shared.filter,
        None => filter,
    };
    validate_plain_filter(inner)
}

fn validate_plain_filter(filter: &str) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::InvalidTopicFilter);
    }
    // Every SUBSCRIBE filter comes through here: look only at the wildcards, found a word
    // at a time, rather than splitting the filter into levels.
    if !has_wildcard(filter) {
        return Ok(());
    }
    let bytes = filter.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        if byte != b'+' && byte != b'#' {
            continue;
        }
        let before = i.checked_sub(1).and_then(|j| bytes.get(j));
        let after = bytes.get(i + 1);
        let whole_level = before.is_none_or(|&b| b == b'/') && after.is_none_or(|&b| b == b'/');
        // `#` must also be the last level.
        if !whole_level || (byte == b'#' && after.is_some()) {
            return Err(DecodeError::InvalidTopicFilter);
        }
    }
    Ok(())
}

/// Whether a topic filter contains a wildcard level.
pub fn has_wildcard(filter: &str) -> bool {
    // Runs on every topic of every PUBLISH: a word at a time, not a byte.
    crate::wire::contains_either(filter.as_bytes(), b'+', b'#')
}

/// Whether topic name `topic` matches `filter`, level by level on `/`, with the `$` rule:
/// a filter that starts with a wildcard matches no topic that starts with `$`
/// [MQTT-4.7.2-1]. Both are taken as valid; nothing is checked here.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A `$share/{group}/{filter}` subscription split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SharedFilter<'a> {
    /// The share name: the group whose members take turns receiving messages.
    pub group: &'a str,
    /// The filter the group subscribes to.
    pub filter: &'a str,
}

impl<'a> SharedFilter<'a> {
    /// Splits a shared-subscription filter; `Ok(None)` for a filter that is not shared.
    ///
    /// The share name must be non-empty and contain neither `+` nor `#` [MQTT-4.8.2-2], and a
    /// `/` and a non-empty filter must follow it [MQTT-4.8.2-1].
    pub fn parse(filter: &'a str) -> Result<Option<SharedFilter<'a>>, DecodeError> {
        let Some(rest) = filter.strip_prefix(SHARED_PREFIX) else {
            return Ok(None);
        };
        let (group, inner) = rest
            .split_once('/')
            .ok_or(DecodeError::InvalidTopicFilter)?;
        if group.is_empty() || has_wildcard(group) || inner.is_empty() {
            return Err(DecodeError::InvalidTopicFilter);
        }
        Ok(Some(SharedFilter {
            group,
            filter: inner,
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matching_follows_the_specification() {
        assert!(super::matches("sport/#", "sport"));
        assert!(super::matches("sport/+", "sport/"));
        assert!(!super::matches("sport/+", "sport"));
        assert!(super::matches("+/+", "/finance"));
        assert!(!super::matches("#", "$SYS/x"));
        assert!(super::matches("$SYS/#", "$SYS/x"));
        assert!(super::matches("é/+", "é/x"));
    }

    use super::*;

    #[test]
    fn topic_names() {
        for ok in [
            "a",
            "/",
            "a/b",
            "sport/tennis/player1",
            "$SYS/x",
            "é/x",
            " ",
            "//",
        ] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok:?}");
        }
        for bad in ["", "a/+", "#", "a+b", "sport/#"] {
            assert_eq!(
                validate_topic_name(bad),
                Err(DecodeError::InvalidTopicName),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn topic_filters_from_the_specification() {
        // Examples of section 4.7.1.
        for ok in [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+",
            "+/tennis/#",
            "sport/+/player1",
            "/+",
            "+/+",
            "sport/",
            "$SYS/#",
            "a//b",
            "é/+/ü",
            "$share/group/a/b",
            "$share/g/#",
            "$share/g//",
            "+/+/#",
            "a/+/b/+",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "sport+",
            "#/",
            "a/#/",
            "$share/",
            "$share/group",
            "$share/group/",
            "$share//a",
            "$share/g+/a",
            "$share/g#/a",
            "$share/g/a#",
            "+a",
            "a+",
            "a/b+/c",
            "a/+b/c",
            "##",
            "++",
            "+#",
            "#+",
            "a/#b",
            "/#/",
        ] {
            assert_eq!(
                validate_topic_filter(bad),
                Err(DecodeError::InvalidTopicFilter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shared_filters_split_at_the_first_level() {
        assert_eq!(
            SharedFilter::parse("$share/consumer1/sport/tennis/+"),
            Ok(Some(SharedFilter {
                group: "consumer1",
                filter: "sport/tennis/+"
            }))
        );
        assert_eq!(SharedFilter::parse("$SYS/x"), Ok(None));
        assert_eq!(SharedFilter::parse("share/x/y"), Ok(None));
    }
}
