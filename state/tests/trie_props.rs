//! Property tests for the broker's topic matching: after any sequence of insertions and
//! removals, the subscription trie returns exactly the entries a naive level-by-level matcher
//! returns, for any topic; the retained-message tree returns exactly the topics the same
//! matcher accepts, for any filter; and both hold exactly the nodes their contents need
//! (removal prunes, so memory returns).
//!
//! Levels come from a small alphabet so that filters and topics collide often. It holds the
//! empty level, multi-byte characters, `$` levels and levels with spaces.

use std::collections::{BTreeMap, BTreeSet};

use petrel_codec::topic::{validate_topic_filter, validate_topic_name};
use petrel_state::broker::retained_tree::TopicTree;
use petrel_state::broker::trie::SubscriptionTrie;
use proptest::prelude::*;

/// Levels of topics (and literal levels of filters).
const LEVELS: &[&str] = &["", "a", "b", "é", "日本", "$SYS", "$x", "a b", " "];

/// The naive matcher the structures are checked against: MQTT 5.0 section 4.7, one level at a
/// time, straight from the text.
fn naive_matches(filter: &str, topic: &str) -> bool {
    let filter: Vec<&str> = filter.split('/').collect();
    let topic_levels: Vec<&str> = topic.split('/').collect();
    // [MQTT-4.7.2-1]: wildcards as the first level do not match `$` topics.
    if topic.starts_with('$') && (filter[0] == "+" || filter[0] == "#") {
        return false;
    }
    for (i, level) in filter.iter().enumerate() {
        if *level == "#" && i == filter.len() - 1 {
            // The parent level and any number of child levels.
            return true;
        }
        match topic_levels.get(i) {
            None => return false,
            Some(t) if *level == "+" || level == t => {}
            Some(_) => return false,
        }
    }
    filter.len() == topic_levels.len()
}

#[test]
fn naive_matcher_agrees_with_the_specification() {
    for (filter, topic, expected) in [
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/#", "sport", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/x", false),
        ("$SYS/#", "$SYS/x", true),
        ("$SYS/+/x", "$SYS/a/x", true),
        ("é/x", "é/x", true),
        ("a/b", "a/b/c", false),
        ("a/b/c", "a/b", false),
    ] {
        assert_eq!(naive_matches(filter, topic), expected, "{filter} {topic}");
    }
}

/// A valid plain filter: up to three levels from [`LEVELS`] or `+`, maybe ending in `#`.
fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(LEVELS.iter().copied().chain(["+", "+"]).collect::<Vec<_>>());
    (prop::collection::vec(level, 0..=3), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("valid filter", |f| validate_topic_filter(f).is_ok())
}

/// A valid topic name: one to four levels from [`LEVELS`].
fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(LEVELS), 1..=4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid topic", |t| validate_topic_name(t).is_ok())
}

/// A topic that `filter` matches (unless the `$` rule forbids it): `+` becomes a level from
/// [`LEVELS`] and `#` zero or more levels, chosen by `seed`.
fn instantiate(filter: &str, seed: usize) -> String {
    let mut out = Vec::new();
    for (i, level) in filter.split('/').enumerate() {
        let pick = LEVELS[(seed + i * 7) % LEVELS.len()];
        match level {
            "+" => out.push(pick),
            "#" => {
                for n in 0..(seed % 3) {
                    out.push(LEVELS[(seed + n) % LEVELS.len()]);
                }
            }
            literal => out.push(literal),
        }
    }
    if out.is_empty() {
        out.push("a");
    }
    out.join("/")
}

/// The number of nodes a trie or tree holding `paths` needs: the root, and one per distinct
/// non-empty prefix of levels.
fn needed_nodes<'a>(paths: impl IntoIterator<Item = &'a str>) -> usize {
    let mut prefixes = BTreeSet::new();
    for path in paths {
        let levels: Vec<&str> = path.split('/').collect();
        for end in 1..=levels.len() {
            prefixes.insert(levels[..end].to_vec());
        }
    }
    1 + prefixes.len()
}

#[derive(Debug, Clone)]
enum TrieOp {
    Insert(String, u8),
    Remove(String, u8),
}

fn trie_op() -> impl Strategy<Value = TrieOp> {
    prop_oneof![
        3 => (filter(), 0u8..10).prop_map(|(f, k)| TrieOp::Insert(f, k)),
        2 => (filter(), 0u8..10).prop_map(|(f, k)| TrieOp::Remove(f, k)),
    ]
}

/// Sorted (key, value) pairs the trie returns for `topic`.
fn trie_matches(trie: &SubscriptionTrie<u8, u32>, topic: &str) -> Vec<(u8, u32)> {
    let mut found = Vec::new();
    trie.for_each_match(topic, |k, v| found.push((*k, *v)));
    found.sort_unstable();
    found
}

/// Sorted (key, value) pairs whose filter the naive matcher accepts for `topic`.
fn model_matches(model: &BTreeMap<(String, u8), u32>, topic: &str) -> Vec<(u8, u32)> {
    let mut found: Vec<(u8, u32)> = model
        .iter()
        .filter(|((filter, _), _)| naive_matches(filter, topic))
        .map(|((_, key), value)| (*key, *value))
        .collect();
    found.sort_unstable();
    found
}

#[derive(Debug, Clone)]
enum TreeOp {
    Insert(String),
    Remove(String),
}

fn tree_op() -> impl Strategy<Value = TreeOp> {
    prop_oneof![
        3 => topic().prop_map(TreeOp::Insert),
        2 => topic().prop_map(TreeOp::Remove),
    ]
}

/// Sorted values the tree visits for `filter`.
fn tree_matches(tree: &TopicTree<u32>, filter: &str) -> Vec<u32> {
    let mut found = Vec::new();
    tree.for_each_matching(filter, |v| found.push(*v));
    found.sort_unstable();
    found
}

/// Sorted values of the topics the naive matcher accepts for `filter`.
fn model_tree_matches(model: &BTreeMap<String, u32>, filter: &str) -> Vec<u32> {
    let mut found: Vec<u32> = model
        .iter()
        .filter(|(topic, _)| naive_matches(filter, topic))
        .map(|(_, v)| *v)
        .collect();
    found.sort_unstable();
    found
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The trie agrees with a map of (filter, key) entries and the naive matcher, and holds
    /// exactly the nodes its filters need, after every operation.
    #[test]
    fn trie_matches_like_the_naive_matcher(
        ops in prop::collection::vec(trie_op(), 1..48),
        topics in prop::collection::vec(topic(), 1..24),
        seed in any::<usize>(),
    ) {
        let mut trie = SubscriptionTrie::new();
        let mut model: BTreeMap<(String, u8), u32> = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            let value = n as u32;
            match op {
                TrieOp::Insert(filter, key) => {
                    let expected = model.insert((filter.clone(), *key), value);
                    prop_assert_eq!(trie.insert(filter, *key, value), expected);
                }
                TrieOp::Remove(filter, key) => {
                    let expected = model.remove(&(filter.clone(), *key));
                    prop_assert_eq!(trie.remove(filter, key), expected);
                }
            }
            prop_assert_eq!(trie.len(), model.len());
            prop_assert_eq!(
                trie.node_count(),
                needed_nodes(model.keys().map(|(f, _)| f.as_str()))
            );
        }
        for ((filter, key), value) in &model {
            prop_assert_eq!(trie.get(filter, key), Some(value));
        }

        // Random topics, and topics made to match the stored filters.
        let made: Vec<String> = model
            .keys()
            .enumerate()
            .map(|(i, (filter, _))| instantiate(filter, seed.wrapping_add(i)))
            .collect();
        for topic in topics.iter().chain(&made) {
            prop_assert_eq!(
                trie_matches(&trie, topic),
                model_matches(&model, topic),
                "topic {:?}", topic
            );
        }

        // Removing everything gives all the nodes back.
        for (filter, key) in model.keys() {
            prop_assert!(trie.remove(filter, key).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.node_count(), 1);
        for topic in &topics {
            prop_assert!(trie.matches(topic).is_empty());
        }
    }

    /// The retained tree agrees with a map of topics and the naive matcher, holds exactly the
    /// nodes its topics need, and `retain` removes exactly what it is told to.
    #[test]
    fn topic_tree_matches_like_the_naive_matcher(
        ops in prop::collection::vec(tree_op(), 1..48),
        filters in prop::collection::vec(filter(), 1..24),
        modulus in 2u32..5,
    ) {
        let mut tree = TopicTree::new();
        let mut model: BTreeMap<String, u32> = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            let value = n as u32;
            match op {
                TreeOp::Insert(topic) => {
                    let expected = model.insert(topic.clone(), value);
                    prop_assert_eq!(tree.insert(topic, value), expected);
                }
                TreeOp::Remove(topic) => {
                    let expected = model.remove(topic);
                    prop_assert_eq!(tree.remove(topic), expected);
                }
            }
            prop_assert_eq!(tree.len(), model.len());
            prop_assert_eq!(tree.node_count(), needed_nodes(model.keys().map(String::as_str)));
        }
        for (topic, value) in &model {
            prop_assert_eq!(tree.get(topic), Some(value));
        }
        // Random filters, and each stored topic as a filter of its own.
        for filter in filters.iter().chain(model.keys()) {
            prop_assert_eq!(
                tree_matches(&tree, filter),
                model_tree_matches(&model, filter),
                "filter {:?}", filter
            );
        }
        let mut all = Vec::new();
        tree.for_each(|v| all.push(*v));
        all.sort_unstable();
        let mut expected: Vec<u32> = model.values().copied().collect();
        expected.sort_unstable();
        prop_assert_eq!(all, expected);

        // An expiry sweep.
        let before = model.len();
        model.retain(|_, v| *v % modulus != 0);
        prop_assert_eq!(tree.retain(|v| *v % modulus != 0), before - model.len());
        prop_assert_eq!(tree.len(), model.len());
        prop_assert_eq!(tree.node_count(), needed_nodes(model.keys().map(String::as_str)));
        for filter in &filters {
            prop_assert_eq!(tree_matches(&tree, filter), model_tree_matches(&model, filter));
        }

        // Removing everything gives all the nodes back.
        prop_assert_eq!(tree.retain(|_| false), model.len());
        prop_assert!(tree.is_empty());
        prop_assert_eq!(tree.node_count(), 1);
    }
}
