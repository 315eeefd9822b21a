//! Topic matching for ACL rules: level by level on `/`, never on byte offsets.

pub(crate) use petrel_codec::topic::matches;

/// Whether every topic that `inner` matches is matched by `outer` too: a subscription to
/// `inner` reads nothing `outer` does not allow.
pub(crate) fn covers(outer: &str, inner: &str) -> bool {
    if inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    // A filter beginning with a wildcard matches no `$` topic, so it is covered by an
    // outer filter whose first level is a wildcard as well.
    let mut outer_levels = outer.split('/');
    let mut inner_levels = inner.split('/');
    loop {
        match (outer_levels.next(), inner_levels.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(o), Some(i)) if o == i => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic could match both filters.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    let mut a_levels = a.split('/');
    let mut b_levels = b.split('/');
    loop {
        match (a_levels.next(), b_levels.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn coverage() {
        assert!(covers("home/#", "home/+/temp"));
        assert!(covers("home/#", "home/#"));
        assert!(covers("home/+/temp", "home/kitchen/temp"));
        assert!(!covers("home/+/temp", "home/#"));
        assert!(!covers("home/+", "home/+/x"));
        assert!(!covers("#", "$SYS/#"));
        assert!(covers("$SYS/#", "$SYS/broker/+"));
    }

    #[test]
    fn overlap() {
        assert!(overlaps("#", "secret/x"));
        assert!(overlaps("a/+/c", "a/b/+"));
        assert!(!overlaps("a/b", "a/c"));
        assert!(!overlaps("a/b", "a/b/c"));
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new())
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..4).prop_map(|l| l.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(prop_oneof![level(), Just("+".to_string())], 0..4),
            any::<bool>(),
        )
            .prop_filter_map("empty", |(mut levels, hash)| {
                if hash {
                    levels.push("#".to_string());
                }
                (!levels.is_empty()).then(|| levels.join("/"))
            })
    }

    proptest! {
        /// `covers` never allows more than matching does, and `overlaps` finds every
        /// topic two filters share.
        #[test]
        fn covers_and_overlaps_agree_with_matching(
            outer in filter(), inner in filter(), t in topic()
        ) {
            if covers(&outer, &inner) && matches(&inner, &t) {
                prop_assert!(matches(&outer, &t));
            }
            if matches(&outer, &t) && matches(&inner, &t) {
                prop_assert!(overlaps(&outer, &inner));
            }
        }
    }
}
