//! The retained-message tree: one value per topic name, found by topic filter.
//!
//! The mirror image of the [subscription trie](super::trie): here the stored keys are topic
//! names and the query is a filter, with the same rules (MQTT 5.0 section 4.7): `+` is one
//! level, `#` is the parent level and any number of child levels, empty levels are levels,
//! and a filter whose first level is `+` or `#` does not match topics that start with `$`
//! [MQTT-4.7.2-1]. Levels are found by splitting at `/`, never by byte offsets, and nothing
//! recurses over levels (see the trie's module documentation for both).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::trie::{split_level, Iter, SmallMap, Stack, INLINE_FRAMES};

/// A node: the topics that continue below it, and the value of the topic that ends here.
struct Node<V> {
    children: SmallMap<Box<str>, Node<V>>,
    value: Option<V>,
}

impl<V> Node<V> {
    const fn new() -> Self {
        Node {
            children: SmallMap::new(),
            value: None,
        }
    }
}

impl<V> Drop for Node<V> {
    /// Takes the subtree apart with a heap worklist instead of recursing once per level.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut pending = Vec::new();
        self.children.drain_values_into(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.children.drain_values_into(&mut pending);
        }
    }
}

/// Work left over while matching a filter, kept on an explicit stack.
enum Frame<'t, 'f, V> {
    /// Children still to match against the rest of the filter after a `+`.
    Plus {
        children: Iter<'t, Box<str>, Node<V>>,
        rest: Option<&'f str>,
        /// The children are first levels, and `$` topics are not matched by wildcards.
        skip_dollar: bool,
    },
    /// Children whose whole subtrees match a `#` (or everything, for `for_each`).
    All {
        children: Iter<'t, Box<str>, Node<V>>,
        skip_dollar: bool,
    },
}

/// What to do after looking at the top frame.
enum Step<'t, 'f, V> {
    Pop,
    Match(&'t Node<V>, Option<&'f str>),
    All(&'t Node<V>),
}

/// The next child, skipping `$` levels when asked to.
fn next_child<'t, V>(
    children: &mut Iter<'t, Box<str>, Node<V>>,
    skip_dollar: bool,
) -> Option<&'t Node<V>> {
    children
        .find(|(level, _)| !(skip_dollar && level.starts_with('$')))
        .map(|(_, child)| child)
}

/// Values stored by topic name, such as the retained message of each topic, found by exact
/// name or by topic filter.
///
/// ```
/// use petrel_state::broker::retained_tree::TopicTree;
///
/// let mut retained = TopicTree::new();
/// retained.insert("sport/tennis/player1", 1);
/// retained.insert("sport", 2);
/// retained.insert("$SYS/uptime", 3);
///
/// let mut found = Vec::new();
/// retained.for_each_matching("sport/#", |v| found.push(*v));
/// found.sort();
/// assert_eq!(found, [1, 2]);
///
/// found.clear();
/// retained.for_each_matching("#", |v| found.push(*v));
/// found.sort();
/// assert_eq!(found, [1, 2]); // not `$SYS/uptime`
/// ```
pub struct TopicTree<V> {
    root: Node<V>,
    len: usize,
}

impl<V> TopicTree<V> {
    /// An empty tree (does not allocate).
    pub const fn new() -> Self {
        TopicTree {
            root: Node::new(),
            len: 0,
        }
    }

    /// The number of stored topics.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no topic is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every value.
    pub fn clear(&mut self) {
        *self = TopicTree::new();
    }

    /// The number of tree nodes, the root included: 1 for an empty tree. Walks the whole tree;
    /// meant for tests and diagnostics (removal prunes nodes no topic needs any more).
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = alloc::vec![&self.root];
        while let Some(node) = pending.pop() {
            count += 1;
            node.children.for_each(|_, child| pending.push(child));
        }
        count
    }

    /// Stores `value` for `topic`; returns the value it replaces.
    ///
    /// `topic` is a topic name (validated by the caller with
    /// `petrel_codec::topic::validate_topic_name`); a `+` or `#` level in it would be stored as
    /// a literal level that filters cannot name.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node
                .children
                .get_or_insert_with(level, || (Box::from(level), Node::new()));
        }
        let old = node.value.replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value stored for `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref()
    }

    /// The value stored for `topic`, mutably.
    pub fn get_mut(&mut self, topic: &str) -> Option<&mut V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        node.value.as_mut()
    }

    /// Removes the value of `topic` and returns it. Nodes that no other topic needs are
    /// freed.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        // As in the subscription trie: a read-only pass finds the value and the deepest node
        // on the path that keeps something besides the path (`cut`, the root at least).
        let mut node = &self.root;
        let mut cut = 0;
        for (depth, level) in topic.split('/').enumerate() {
            if node.value.is_some() || node.children.len() > 1 {
                cut = depth;
            }
            node = node.children.get(level)?;
        }
        node.value.as_ref()?;
        let prune = node.children.is_empty();

        let mut levels = topic.split('/');
        let mut node = &mut self.root;
        let value = if prune {
            for level in levels.by_ref().take(cut) {
                node = node.children.get_mut(level)?;
            }
            let mut detached = node.children.remove(levels.next()?)?;
            let mut target = &mut detached;
            for level in levels {
                target = target.children.get_mut(level)?;
            }
            target.value.take()
        } else {
            for level in levels {
                node = node.children.get_mut(level)?;
            }
            node.value.take()
        };
        if value.is_some() {
            self.len -= 1;
        }
        value
    }

    /// Calls `f` on the value of every stored topic that `filter` matches, in no particular
    /// order.
    ///
    /// `filter` is a plain topic filter (without `$share/{group}/`), validated by the caller.
    /// Allocates only when the walk is more than 32 wildcard levels deep.
    pub fn for_each_matching<'t>(&'t self, filter: &str, mut f: impl FnMut(&'t V)) {
        let mut stack: Stack<Frame<'_, '_, V>, INLINE_FRAMES> = Stack::new();
        Self::follow(&self.root, Some(filter), true, &mut stack, &mut f);
        self.drain(&mut stack, &mut f);
    }

    /// Calls `f` on every stored value (`$` topics included), in no particular order.
    pub fn for_each<'t>(&'t self, mut f: impl FnMut(&'t V)) {
        let mut stack: Stack<Frame<'_, '_, V>, INLINE_FRAMES> = Stack::new();
        stack.push(Frame::All {
            children: self.root.children.iter(),
            skip_dollar: false,
        });
        self.drain(&mut stack, &mut f);
    }

    /// Keeps only the values for which `keep` returns `true`, freeing the nodes of the
    /// others; returns how many were removed. Meant for expiry sweeps: it visits every value,
    /// and builds the topic string of each removed one to remove it.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) -> usize {
        let mut doomed: Vec<String> = Vec::new();
        {
            // Depth-first, with the path of levels to the current node.
            let mut path: Vec<&str> = Vec::new();
            let mut stack = alloc::vec![self.root.children.iter()];
            while let Some(children) = stack.last_mut() {
                match children.next() {
                    Some((level, node)) => {
                        path.push(level);
                        if let Some(value) = &node.value {
                            if !keep(value) {
                                doomed.push(path.join("/"));
                            }
                        }
                        stack.push(node.children.iter());
                    }
                    None => {
                        stack.pop();
                        path.pop();
                    }
                }
            }
        }
        for topic in &doomed {
            self.remove(topic);
        }
        doomed.len()
    }

    /// Walks `filter`'s remaining levels from `node` while they are literal; leaves the work
    /// of a wildcard level on the stack.
    fn follow<'t, 'f>(
        mut node: &'t Node<V>,
        mut rest: Option<&'f str>,
        mut at_root: bool,
        stack: &mut Stack<Frame<'t, 'f, V>, INLINE_FRAMES>,
        f: &mut impl FnMut(&'t V),
    ) {
        loop {
            let Some(levels) = rest else {
                if let Some(value) = &node.value {
                    f(value);
                }
                return;
            };
            let (level, next) = split_level(levels);
            match level {
                "#" if next.is_none() => {
                    // The parent level (the root has no value: a topic has at least one level)…
                    if let Some(value) = &node.value {
                        f(value);
                    }
                    // …and every level below it.
                    if !node.children.is_empty() {
                        stack.push(Frame::All {
                            children: node.children.iter(),
                            skip_dollar: at_root,
                        });
                    }
                    return;
                }
                "+" => {
                    if !node.children.is_empty() {
                        stack.push(Frame::Plus {
                            children: node.children.iter(),
                            rest: next,
                            skip_dollar: at_root,
                        });
                    }
                    return;
                }
                _ => match node.children.get(level) {
                    Some(child) => {
                        node = child;
                        rest = next;
                        at_root = false;
                    }
                    None => return,
                },
            }
        }
    }

    /// Runs the stack's frames until none is left.
    fn drain<'t, 'f>(
        &'t self,
        stack: &mut Stack<Frame<'t, 'f, V>, INLINE_FRAMES>,
        f: &mut impl FnMut(&'t V),
    ) {
        loop {
            let step = match stack.last_mut() {
                None => return,
                Some(Frame::Plus {
                    children,
                    rest,
                    skip_dollar,
                }) => match next_child(children, *skip_dollar) {
                    Some(child) => Step::Match(child, *rest),
                    None => Step::Pop,
                },
                Some(Frame::All {
                    children,
                    skip_dollar,
                }) => match next_child(children, *skip_dollar) {
                    Some(child) => Step::All(child),
                    None => Step::Pop,
                },
            };
            match step {
                Step::Pop => {
                    stack.pop();
                }
                Step::Match(child, rest) => Self::follow(child, rest, false, stack, f),
                Step::All(child) => {
                    if let Some(value) = &child.value {
                        f(value);
                    }
                    if !child.children.is_empty() {
                        stack.push(Frame::All {
                            children: child.children.iter(),
                            skip_dollar: false,
                        });
                    }
                }
            }
        }
    }
}

impl<V> Default for TopicTree<V> {
    fn default() -> Self {
        TopicTree::new()
    }
}

impl<V> fmt::Debug for TopicTree<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTree")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    /// The topics in `tree` that `filter` matches, sorted (values are their own topics).
    fn matching(tree: &TopicTree<String>, filter: &str) -> Vec<String> {
        let mut found = Vec::new();
        tree.for_each_matching(filter, |v| found.push(v.clone()));
        found.sort_unstable();
        found
    }

    fn tree(topics: &[&str]) -> TopicTree<String> {
        let mut tree = TopicTree::new();
        for topic in topics {
            assert_eq!(tree.insert(topic, String::from(*topic)), None);
        }
        tree
    }

    #[test]
    fn specification_examples() {
        let t = tree(&[
            "sport",
            "sport/",
            "sport/tennis",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "/finance",
            "finance",
        ]);
        assert_eq!(
            matching(&t, "sport/tennis/player1/#"),
            [
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ]
        );
        assert_eq!(matching(&t, "sport/#").len(), 7);
        assert_eq!(
            matching(&t, "sport/tennis/+"),
            ["sport/tennis/player1", "sport/tennis/player2"]
        );
        assert_eq!(matching(&t, "sport/+"), ["sport/", "sport/tennis"]);
        assert_eq!(matching(&t, "+/+"), ["/finance", "sport/", "sport/tennis"]);
        assert_eq!(matching(&t, "/+"), ["/finance"]);
        assert_eq!(matching(&t, "+"), ["finance", "sport"]);
        assert_eq!(matching(&t, "#").len(), 9);
        assert_eq!(
            matching(&t, "sport/tennis/player1"),
            ["sport/tennis/player1"]
        );
        assert!(matching(&t, "sport/tennis/player3").is_empty());
        assert_eq!(
            matching(&t, "+/tennis/#").len(),
            5,
            "{:?}",
            matching(&t, "+/tennis/#")
        );
    }

    #[test]
    fn dollar_topics() {
        let t = tree(&["$SYS", "$SYS/x", "$SYS/broker/x", "a/$SYS", "$", "x"]);
        assert_eq!(matching(&t, "#"), ["a/$SYS", "x"]);
        assert_eq!(matching(&t, "+"), ["x"]);
        assert!(matching(&t, "+/x").is_empty());
        assert_eq!(matching(&t, "+/+"), ["a/$SYS"]);
        assert_eq!(matching(&t, "$SYS/#"), ["$SYS", "$SYS/broker/x", "$SYS/x"]);
        assert_eq!(matching(&t, "$SYS/+"), ["$SYS/x"]);
        assert_eq!(matching(&t, "$SYS/+/x"), ["$SYS/broker/x"]);
        assert_eq!(matching(&t, "$"), ["$"]);
        let mut all = Vec::new();
        t.for_each(|v| all.push(v.clone()));
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn empty_and_multi_byte_levels() {
        let t = tree(&["é/x", "é", "日本/天気", "/", "//", "a//b", "a/"]);
        assert_eq!(matching(&t, "é/x"), ["é/x"]);
        assert_eq!(matching(&t, "+/x"), ["é/x"]);
        assert_eq!(matching(&t, "é/#"), ["é", "é/x"]);
        assert_eq!(matching(&t, "+/+"), ["/", "a/", "é/x", "日本/天気"]);
        assert_eq!(matching(&t, "/#"), ["/", "//"]);
        assert_eq!(matching(&t, "a/+/b"), ["a//b"]);
        assert_eq!(matching(&t, "a/+"), ["a/"]);
        assert_eq!(t.get("é/x"), Some(&String::from("é/x")));
        assert_eq!(t.get("é/"), None);
    }

    #[test]
    fn insert_replaces_remove_prunes_retain_sweeps() {
        let mut t = TopicTree::new();
        assert_eq!(t.node_count(), 1);
        assert_eq!(t.insert("a/b/c", 1), None);
        assert_eq!(t.insert("a/b/c", 2), Some(1));
        assert_eq!(t.insert("a", 3), None);
        assert_eq!(t.insert("a/d", 4), None);
        *t.get_mut("a/d").unwrap() += 1;
        assert_eq!(t.len(), 3);
        assert_eq!(t.node_count(), 5);
        assert_eq!(t.remove("a/b"), None);
        assert_eq!(t.remove("a/b/c/d"), None);
        assert_eq!(t.remove("a/b/c"), Some(2));
        assert_eq!(t.node_count(), 3);
        assert_eq!(t.remove("a"), Some(3));
        assert_eq!(t.node_count(), 3);
        assert_eq!(t.get("a/d"), Some(&5));

        for n in 0..100 {
            t.insert(&format!("x/{n}/y"), n);
        }
        assert_eq!(t.retain(|v| v % 2 == 0), 51);
        assert_eq!(t.len(), 50);
        let mut left = Vec::new();
        t.for_each_matching("x/+/y", |v| left.push(*v));
        assert_eq!(left.len(), 50);
        assert!(left.iter().all(|v| v % 2 == 0));
        assert_eq!(t.retain(|_| false), 50);
        assert_eq!(t.node_count(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        let deep = "/".repeat(100_000);
        let mut t = TopicTree::new();
        t.insert(&deep, 1);
        t.insert("a", 2);
        let mut n = 0;
        t.for_each_matching("#", |_| n += 1);
        assert_eq!(n, 2);
        n = 0;
        t.for_each_matching(&deep, |_| n += 1);
        assert_eq!(n, 1);
        n = 0;
        t.for_each_matching(&("+/".repeat(50_000) + "#"), |_| n += 1);
        assert_eq!(n, 1);
        assert_eq!(t.retain(|v| *v == 2), 1);
        assert_eq!(t.node_count(), 2);
        t.insert(&deep, 1);
        drop(t);
    }
}
