//! The subscription trie: every (filter, key) entry of a broker, found by topic name.
//!
//! A filter is stored as a path of `/`-separated levels from the root; a topic is matched by
//! walking its levels down the trie (MQTT 5.0 section 4.7, 3.1.1 section 4.7):
//!
//! - a literal level matches the same level, byte for byte (an empty level is a level:
//!   `a//b`, `/a` and `a/` have three, two and two levels);
//! - `+` matches exactly one level, empty or not;
//! - `#` (always the last level) matches the parent level and any number of child levels,
//!   so `sport/#` matches `sport`, `sport/` and `sport/tennis/player1`;
//! - a topic that starts with `$` is not matched by a filter whose first level is `+` or `#`
//!   [MQTT-4.7.2-1], but is matched by explicit filters such as `$SYS/#` or `$SYS/+/x`.
//!
//! Everything works on whole levels found by splitting at `/` (an ASCII byte, which never
//! occurs inside a multi-byte UTF-8 character), never on byte offsets into a level, so
//! `é/x` is as ordinary as `e/x`.
//!
//! # Layout
//!
//! Each node holds its literal children, a `+` child, a `#` child and the entries of the
//! filters that end at it. The `+` and `#` children are separate fields, not map keys, so
//! matching a level costs one map lookup plus two pointer tests.
//!
//! Literal children live in a [`SmallMap`]: a small vector (kept sorted, searched by a
//! linear scan) while a node has at most [`PROMOTE_ABOVE`] children, a `BTreeMap` above that.
//! Why these two:
//!
//! - No hash map is available without `std` (hashbrown is not a dependency), and a hash map
//!   with a fixed, unseeded hash would let clients choose colliding topic levels; ordered
//!   maps have no such worst case.
//! - Most nodes have one to a few children. A linear scan of a contiguous vector compares
//!   lengths first and is the fastest lookup there (measured on a `Box<str>`-keyed map: about
//!   half the time of a `BTreeMap` or a binary search at two to four keys); the vector is
//!   also the smallest (one slot per child, where a `BTreeMap` leaf reserves eleven).
//! - From about ten children on, the `BTreeMap` searches faster than either scan or binary
//!   search over the vector, and it keeps insertion and removal logarithmic for fan-out nodes
//!   such as `devices/{id}` with a hundred thousand ids, where inserting into a sorted
//!   vector would move half of it every time.
//!
//! Level strings are stored once per node as `Box<str>` (two words, no spare capacity).
//!
//! # Depth
//!
//! A filter or topic may have tens of thousands of levels (65,535 bytes of `/`), so nothing
//! here recurses over levels: matching uses an explicit stack kept on the call stack for the
//! first levels and spilled to the heap only beyond that, insertion and removal walk in
//! loops, and dropping a node takes its subtree apart iteratively.

use alloc::boxed::Box;
use alloc::collections::btree_map;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::borrow::Borrow;
use core::fmt;
use core::mem;

/// A map with more entries than this switches from a sorted vector to a `BTreeMap`.
pub(super) const PROMOTE_ABOVE: usize = 8;
/// A `BTreeMap` that shrinks to this many entries switches back to a sorted vector (half of
/// [`PROMOTE_ABOVE`], so a map at the boundary does not switch back and forth).
const DEMOTE_AT: usize = PROMOTE_ABOVE / 2;
/// Pending branches kept on the call stack while matching before spilling to the heap.
pub(super) const INLINE_FRAMES: usize = 32;

/// An ordered map that is a sorted vector while small and a `BTreeMap` once large; see the
/// module documentation for why.
pub(super) enum SmallMap<Q, T> {
    /// At most [`PROMOTE_ABOVE`] entries, sorted by key (so promotion and iteration are in
    /// order), without spare capacity.
    Sorted(Vec<(Q, T)>),
    /// More entries.
    Tree(BTreeMap<Q, T>),
}

impl<Q, T> SmallMap<Q, T> {
    /// An empty map (does not allocate).
    pub(super) const fn new() -> Self {
        SmallMap::Sorted(Vec::new())
    }

    /// The number of entries.
    pub(super) fn len(&self) -> usize {
        match self {
            SmallMap::Sorted(v) => v.len(),
            SmallMap::Tree(t) => t.len(),
        }
    }

    /// Whether there are no entries.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every entry, in key order.
    #[inline]
    pub(super) fn for_each<'a>(&'a self, mut f: impl FnMut(&'a Q, &'a T)) {
        match self {
            SmallMap::Sorted(v) => v.iter().for_each(|(q, t)| f(q, t)),
            SmallMap::Tree(t) => t.iter().for_each(|(q, t)| f(q, t)),
        }
    }

    /// The entries, in key order.
    pub(super) fn iter(&self) -> Iter<'_, Q, T> {
        match self {
            SmallMap::Sorted(v) => Iter::Sorted(v.iter()),
            SmallMap::Tree(t) => Iter::Tree(t.iter()),
        }
    }

    /// Moves every value into `out` and leaves the map empty.
    pub(super) fn drain_values_into(&mut self, out: &mut Vec<T>) {
        match mem::replace(self, SmallMap::new()) {
            SmallMap::Sorted(v) => out.extend(v.into_iter().map(|(_, t)| t)),
            SmallMap::Tree(t) => out.extend(t.into_values()),
        }
    }
}

impl<Q: Ord, T> SmallMap<Q, T> {
    /// The value of `q`.
    #[inline]
    pub(super) fn get<B>(&self, q: &B) -> Option<&T>
    where
        Q: Borrow<B>,
        B: Ord + ?Sized,
    {
        match self {
            SmallMap::Sorted(v) => v.iter().find(|(k, _)| k.borrow() == q).map(|(_, t)| t),
            SmallMap::Tree(t) => t.get(q),
        }
    }

    /// The value of `q`, mutably.
    pub(super) fn get_mut<B>(&mut self, q: &B) -> Option<&mut T>
    where
        Q: Borrow<B>,
        B: Ord + ?Sized,
    {
        match self {
            SmallMap::Sorted(v) => v.iter_mut().find(|(k, _)| k.borrow() == q).map(|(_, t)| t),
            SmallMap::Tree(t) => t.get_mut(q),
        }
    }

    /// The value of `q`, inserting the entry `make()` first if there is none; `make` must
    /// return the key `q` (owned) and a value.
    pub(super) fn get_or_insert_with<B>(&mut self, q: &B, make: impl FnOnce() -> (Q, T)) -> &mut T
    where
        Q: Borrow<B>,
        B: Ord + ?Sized,
    {
        if let SmallMap::Sorted(v) = self {
            if v.len() >= PROMOTE_ABOVE && v.binary_search_by(|(k, _)| k.borrow().cmp(q)).is_err() {
                self.promote();
            }
        }
        match self {
            SmallMap::Sorted(v) => {
                let i = match v.binary_search_by(|(k, _)| k.borrow().cmp(q)) {
                    Ok(i) => i,
                    Err(i) => {
                        insert_exact(v, i, make());
                        i
                    }
                };
                &mut v[i].1
            }
            SmallMap::Tree(t) => {
                if !t.contains_key(q) {
                    let (k, value) = make();
                    return t.entry(k).or_insert(value);
                }
                t.get_mut(q).expect("the key is present")
            }
        }
    }

    /// Inserts or replaces the value of `q`; returns the replaced value.
    pub(super) fn insert(&mut self, q: Q, value: T) -> Option<T> {
        if let SmallMap::Sorted(v) = self {
            match v.binary_search_by(|(k, _)| k.cmp(&q)) {
                Ok(i) => return Some(mem::replace(&mut v[i].1, value)),
                Err(i) if v.len() < PROMOTE_ABOVE => {
                    insert_exact(v, i, (q, value));
                    return None;
                }
                Err(_) => self.promote(),
            }
        }
        match self {
            SmallMap::Tree(t) => t.insert(q, value),
            SmallMap::Sorted(_) => unreachable!("a full sorted map was just promoted"),
        }
    }

    /// Removes the entry of `q` and returns its value.
    pub(super) fn remove<B>(&mut self, q: &B) -> Option<T>
    where
        Q: Borrow<B>,
        B: Ord + ?Sized,
    {
        match self {
            SmallMap::Sorted(v) => {
                let i = v.binary_search_by(|(k, _)| k.borrow().cmp(q)).ok()?;
                let (_, value) = v.remove(i);
                // Give memory back after a large shrink (growth is exact, see insert_exact).
                if v.capacity() > 4 && v.len() * 4 <= v.capacity() {
                    v.shrink_to_fit();
                }
                Some(value)
            }
            SmallMap::Tree(t) => {
                let value = t.remove(q)?;
                if t.len() <= DEMOTE_AT {
                    let entries: Vec<(Q, T)> = mem::take(t).into_iter().collect();
                    *self = SmallMap::Sorted(entries);
                }
                Some(value)
            }
        }
    }

    /// Switches a sorted vector to a `BTreeMap`.
    fn promote(&mut self) {
        if let SmallMap::Sorted(v) = self {
            let tree: BTreeMap<Q, T> = mem::take(v).into_iter().collect();
            *self = SmallMap::Tree(tree);
        }
    }
}

/// Inserts at `i`, growing the capacity by one slot at a time: a node usually has one or two
/// children or entries, and `Vec`'s default growth would reserve four slots for the first.
/// A vector holds at most [`PROMOTE_ABOVE`] entries, so the copies stay small.
fn insert_exact<E>(v: &mut Vec<E>, i: usize, e: E) {
    if v.len() == v.capacity() {
        v.reserve_exact(1);
    }
    v.insert(i, e);
}

/// An iterator over a [`SmallMap`]'s entries, in key order.
pub(super) enum Iter<'a, Q, T> {
    /// Over a sorted vector.
    Sorted(core::slice::Iter<'a, (Q, T)>),
    /// Over a `BTreeMap`.
    Tree(btree_map::Iter<'a, Q, T>),
}

impl<'a, Q, T> Iterator for Iter<'a, Q, T> {
    type Item = (&'a Q, &'a T);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sorted(it) => it.next().map(|(q, t)| (q, t)),
            Iter::Tree(it) => it.next(),
        }
    }
}

/// A LIFO stack whose first `N` elements live inline (on the call stack when the stack is a
/// local), and the rest in a heap vector that is only allocated when needed.
pub(super) struct Stack<T, const N: usize> {
    inline: heapless::Vec<T, N>,
    spill: Vec<T>,
}

impl<T, const N: usize> Stack<T, N> {
    /// An empty stack.
    #[inline]
    pub(super) const fn new() -> Self {
        Stack {
            inline: heapless::Vec::new(),
            spill: Vec::new(),
        }
    }

    /// Pushes `item`.
    #[inline]
    pub(super) fn push(&mut self, item: T) {
        if self.spill.is_empty() {
            if let Err(item) = self.inline.push(item) {
                self.spill.push(item);
            }
        } else {
            self.spill.push(item);
        }
    }

    /// Pops the last pushed item.
    #[inline]
    pub(super) fn pop(&mut self) -> Option<T> {
        match self.spill.pop() {
            Some(item) => Some(item),
            None => self.inline.pop(),
        }
    }

    /// The last pushed item.
    #[inline]
    pub(super) fn last_mut(&mut self) -> Option<&mut T> {
        if self.spill.is_empty() {
            self.inline.last_mut()
        } else {
            self.spill.last_mut()
        }
    }
}

/// Splits the first level off `levels`: the level, and the levels after the `/` that ends
/// it (`None` if it was the last).
#[inline]
pub(super) fn split_level(levels: &str) -> (&str, Option<&str>) {
    match levels.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (levels, None),
    }
}

/// One step of a filter's path from the root.
#[derive(Debug, Clone, Copy)]
enum Edge<'a> {
    /// A literal level.
    Level(&'a str),
    /// `+`.
    Plus,
    /// `#` as the last level. (A `#` elsewhere makes the filter invalid; such a level is
    /// stored as a literal rather than rejected, so nothing here can panic on bad input.)
    Hash,
}

/// The edges of `filter`, root first.
fn edges(filter: &str) -> impl Iterator<Item = Edge<'_>> + Clone {
    let mut levels = filter.split('/').peekable();
    core::iter::from_fn(move || {
        let level = levels.next()?;
        Some(match level {
            "+" => Edge::Plus,
            "#" if levels.peek().is_none() => Edge::Hash,
            _ => Edge::Level(level),
        })
    })
}

/// A trie node: the filters that continue below it, and the entries of those that end here.
struct Node<K, V> {
    /// Literal next levels.
    children: SmallMap<Box<str>, Node<K, V>>,
    /// The `+` next level.
    plus: Option<Box<Node<K, V>>>,
    /// The `#` next level (a node without children: only entries).
    hash: Option<Box<Node<K, V>>>,
    /// One value per key for the filter that ends at this node.
    entries: SmallMap<K, V>,
}

impl<K, V> Node<K, V> {
    const fn new() -> Self {
        Node {
            children: SmallMap::new(),
            plus: None,
            hash: None,
            entries: SmallMap::new(),
        }
    }

    fn child(&self, edge: Edge<'_>) -> Option<&Self> {
        match edge {
            Edge::Level(level) => self.children.get(level),
            Edge::Plus => self.plus.as_deref(),
            Edge::Hash => self.hash.as_deref(),
        }
    }

    fn child_mut(&mut self, edge: Edge<'_>) -> Option<&mut Self> {
        match edge {
            Edge::Level(level) => self.children.get_mut(level),
            Edge::Plus => self.plus.as_deref_mut(),
            Edge::Hash => self.hash.as_deref_mut(),
        }
    }

    fn child_or_insert(&mut self, edge: Edge<'_>) -> &mut Self {
        match edge {
            Edge::Level(level) => self
                .children
                .get_or_insert_with(level, || (Box::from(level), Node::new())),
            Edge::Plus => self.plus.get_or_insert_with(|| Box::new(Node::new())),
            Edge::Hash => self.hash.get_or_insert_with(|| Box::new(Node::new())),
        }
    }

    fn remove_child(&mut self, edge: Edge<'_>) -> Option<Self> {
        match edge {
            Edge::Level(level) => self.children.remove(level),
            Edge::Plus => self.plus.take().map(|node| *node),
            Edge::Hash => self.hash.take().map(|node| *node),
        }
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }

    /// Moves the children (not the entries) into `out`.
    fn detach_children_into(&mut self, out: &mut Vec<Self>) {
        self.children.drain_values_into(out);
        out.extend(self.plus.take().map(|node| *node));
        out.extend(self.hash.take().map(|node| *node));
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Takes the subtree apart with a heap worklist instead of recursing once per level.
    fn drop(&mut self) {
        if self.child_count() == 0 {
            return;
        }
        let mut pending = Vec::new();
        self.detach_children_into(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.detach_children_into(&mut pending);
            // `node` drops here without children.
        }
    }
}

/// The subscriptions of a broker: one value `V` (the subscription's options) per (topic
/// filter, key `K`) entry, where the key is typically a session (or, for a shared
/// subscription, the member), found by topic name.
///
/// Filters are plain filters: the caller strips the `$share/{group}/` prefix (see
/// `petrel_codec::topic::SharedFilter`) and validates them with
/// `petrel_codec::topic::validate_topic_filter`. An invalid filter is still stored without
/// panicking, but what it matches is unspecified.
///
/// ```
/// use petrel_state::broker::trie::SubscriptionTrie;
///
/// let mut subs = SubscriptionTrie::new();
/// subs.insert("sport/tennis/+", "alice", 1u8);
/// subs.insert("sport/#", "bob", 0);
/// subs.insert("#", "carol", 0);
///
/// let mut who = Vec::new();
/// subs.for_each_match("sport/tennis/player1", |key, _qos| who.push(*key));
/// who.sort();
/// assert_eq!(who, ["alice", "bob", "carol"]);
///
/// // `#` and `+` as the first level do not match `$` topics; explicit filters do.
/// assert!(subs.matches("$SYS/uptime").is_empty());
/// ```
pub struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> SubscriptionTrie<K, V> {
    /// An empty trie (does not allocate).
    pub const fn new() -> Self {
        SubscriptionTrie {
            root: Node::new(),
            len: 0,
        }
    }

    /// The number of (filter, key) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        *self = SubscriptionTrie::new();
    }

    /// The number of trie nodes, the root included: 1 for an empty trie. Walks the whole trie;
    /// meant for tests and diagnostics (removal prunes nodes no filter needs any more).
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = alloc::vec![&self.root];
        while let Some(node) = pending.pop() {
            count += 1;
            node.children.for_each(|_, child| pending.push(child));
            pending.extend(node.plus.as_deref());
            pending.extend(node.hash.as_deref());
        }
        count
    }

    /// Calls `f` once for every (filter, key) entry whose filter matches `topic`, in no
    /// particular order. A key subscribed with several matching filters is visited once per
    /// filter; merging overlapping subscriptions is the caller's business.
    ///
    /// Does not allocate unless a match runs through more than 32 pending `+` branches at
    /// once (which needs a topic of more than 32 levels).
    #[inline]
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a K, &'a V)) {
        let root = &self.root;
        let (first, rest) = split_level(topic);
        let mut pending: Stack<(&'a Node<K, V>, Option<&str>), INLINE_FRAMES> = Stack::new();
        // [MQTT-4.7.2-1]: `#` and `+` as the first level do not match `$` topics.
        if !topic.starts_with('$') {
            if let Some(hash) = &root.hash {
                hash.entries.for_each(&mut f);
            }
            if let Some(plus) = &root.plus {
                pending.push((plus, rest));
            }
        }
        // Follow the literal path in the loop, keeping `+` branches for later.
        let mut next = root.children.get(first).map(|child| (child, rest));
        loop {
            let (node, rest) = match next.take() {
                Some(step) => step,
                None => match pending.pop() {
                    Some(step) => step,
                    None => return,
                },
            };
            // `#` matches the parent level and any number of child levels.
            if let Some(hash) = &node.hash {
                hash.entries.for_each(&mut f);
            }
            match rest {
                None => node.entries.for_each(&mut f),
                Some(levels) => {
                    let (level, rest) = split_level(levels);
                    if let Some(plus) = &node.plus {
                        pending.push((plus, rest));
                    }
                    next = node.children.get(level).map(|child| (child, rest));
                }
            }
        }
    }

    /// The entries whose filter matches `topic`, in no particular order (see
    /// [`for_each_match`](Self::for_each_match)).
    pub fn matches(&self, topic: &str) -> Vec<(&K, &V)> {
        let mut found = Vec::new();
        self.for_each_match(topic, |key, value| found.push((key, value)));
        found
    }

    /// Whether at least one filter matches `topic`.
    pub fn has_match(&self, topic: &str) -> bool {
        // A dedicated walk could stop at the first match; a publish without any subscriber
        // is the case this is for, and it has to walk everything anyway.
        let mut any = false;
        self.for_each_match(topic, |_, _| any = true);
        any
    }
}

impl<K: Ord, V> SubscriptionTrie<K, V> {
    /// Stores `value` for (`filter`, `key`); returns the value it replaces, if the entry
    /// existed.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for edge in edges(filter) {
            node = node.child_or_insert(edge);
        }
        let old = node.entries.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value stored for (`filter`, `key`).
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        self.node(filter)?.entries.get(key)
    }

    /// The value stored for (`filter`, `key`), mutably.
    pub fn get_mut(&mut self, filter: &str, key: &K) -> Option<&mut V> {
        let mut node = &mut self.root;
        for edge in edges(filter) {
            node = node.child_mut(edge)?;
        }
        node.entries.get_mut(key)
    }

    /// Whether any key is subscribed with exactly `filter`.
    pub fn contains_filter(&self, filter: &str) -> bool {
        self.node(filter)
            .is_some_and(|node| !node.entries.is_empty())
    }

    /// Calls `f` for every key subscribed with exactly `filter`, in key order.
    pub fn for_each_key<'a>(&'a self, filter: &str, f: impl FnMut(&'a K, &'a V)) {
        if let Some(node) = self.node(filter) {
            node.entries.for_each(f);
        }
    }

    /// Removes the entry (`filter`, `key`) and returns its value. Nodes that no other filter
    /// needs are freed.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        // First pass, read-only: check that the entry exists, and find where to cut. `cut` is
        // the depth of the deepest node on the path that keeps something besides the path
        // (the root always stays); everything below it is freed if the entry's node ends up
        // empty.
        let mut node = &self.root;
        let mut cut = 0;
        for (depth, edge) in edges(filter).enumerate() {
            if !node.entries.is_empty() || node.child_count() > 1 {
                cut = depth;
            }
            node = node.child(edge)?;
        }
        node.entries.get(key)?;
        let prune = node.entries.len() == 1 && node.child_count() == 0;

        let value = if prune {
            let mut node = &mut self.root;
            let mut path = edges(filter);
            for edge in path.by_ref().take(cut) {
                node = node.child_mut(edge)?;
            }
            let mut detached = node.remove_child(path.next()?)?;
            let mut target = &mut detached;
            for edge in path {
                target = target.child_mut(edge)?;
            }
            target.entries.remove(key)
            // `detached`, now without entries, drops here.
        } else {
            let mut node = &mut self.root;
            for edge in edges(filter) {
                node = node.child_mut(edge)?;
            }
            node.entries.remove(key)
        };
        if value.is_some() {
            self.len -= 1;
        }
        value
    }

    /// The node where `filter` ends.
    fn node(&self, filter: &str) -> Option<&Node<K, V>> {
        let mut node = &self.root;
        for edge in edges(filter) {
            node = node.child(edge)?;
        }
        Some(node)
    }
}

impl<K, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        SubscriptionTrie::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;

    /// The keys whose filter matches `topic`, sorted.
    fn keys(trie: &SubscriptionTrie<&'static str, ()>, topic: &str) -> Vec<&'static str> {
        let mut keys: Vec<_> = trie.matches(topic).into_iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys
    }

    /// Whether `filter` alone matches `topic`.
    fn one(filter: &str, topic: &str) -> bool {
        let mut trie = SubscriptionTrie::new();
        trie.insert(filter, "k", ());
        let found = !trie.matches(topic).is_empty();
        assert_eq!(found, trie.has_match(topic));
        found
    }

    #[test]
    fn specification_multi_level_wildcard() {
        // 4.7.1.2
        let f = "sport/tennis/player1/#";
        assert!(one(f, "sport/tennis/player1"));
        assert!(one(f, "sport/tennis/player1/ranking"));
        assert!(one(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!one(f, "sport/tennis/player2"));
        assert!(!one(f, "sport/tennis"));
        assert!(one("sport/#", "sport"));
        assert!(one("sport/#", "sport/"));
        assert!(one("#", "sport/tennis"));
        assert!(one("#", "/"));
        assert!(one("#", "é"));
    }

    #[test]
    fn specification_single_level_wildcard() {
        // 4.7.1.3
        assert!(one("sport/tennis/+", "sport/tennis/player1"));
        assert!(one("sport/tennis/+", "sport/tennis/player2"));
        assert!(!one("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!one("sport/+", "sport"));
        assert!(one("sport/+", "sport/"));
        assert!(one("+/+", "/finance"));
        assert!(one("/+", "/finance"));
        assert!(!one("+", "/finance"));
        assert!(one("+", "finance"));
        assert!(one("+/tennis/#", "sport/tennis/player1"));
        assert!(one("sport/+/player1", "sport/tennis/player1"));
    }

    #[test]
    fn empty_levels_are_levels() {
        assert!(one("a//b", "a//b"));
        assert!(!one("a//b", "a/b"));
        assert!(one("a/+/b", "a//b"));
        assert!(one("/a", "/a"));
        assert!(!one("/a", "a"));
        assert!(one("a/", "a/"));
        assert!(!one("a/", "a"));
        assert!(one("+/+", "/"));
        assert!(!one("+", "/"));
        assert!(one("/", "/"));
        assert!(one("+/#", "/"));
        assert!(one("//#", "//"));
        assert!(one("//#", "/"));
        assert!(!one("//#", "a//"));
    }

    #[test]
    fn dollar_topics() {
        // [MQTT-4.7.2-1]
        assert!(!one("#", "$SYS/x"));
        assert!(!one("+/x", "$SYS/x"));
        assert!(!one("+", "$SYS"));
        assert!(!one("+/#", "$SYS/x"));
        assert!(one("$SYS/#", "$SYS/x"));
        assert!(one("$SYS/#", "$SYS"));
        assert!(one("$SYS/+", "$SYS/x"));
        assert!(one("$SYS/+/x", "$SYS/broker/x"));
        assert!(one("$SYS/x", "$SYS/x"));
        assert!(one("$", "$"));
        assert!(!one("#", "$"));
        // Only the first level counts.
        assert!(one("#", "a/$SYS"));
        assert!(one("a/+", "a/$SYS"));
        assert!(one("+/$x", "a/$x"));
        assert!(!one("+/$x", "$a/$x"));
    }

    #[test]
    fn multi_byte_levels() {
        // rumqttd 0.20 panicked on `é/x` (it sliced the topic at byte offsets).
        assert!(one("é/x", "é/x"));
        assert!(one("+/x", "é/x"));
        assert!(one("é/#", "é/x"));
        assert!(one("é/#", "é"));
        assert!(!one("e/x", "é/x"));
        assert!(one("日本/+/東京", "日本/天気/東京"));
        assert!(!one("日本/+", "日本"));
        assert!(one("#", "€/𝄞"));
        assert!(!one("é", "éé"));
        assert!(!one("éé", "é"));
    }

    #[test]
    fn several_filters_and_keys() {
        let mut trie = SubscriptionTrie::new();
        assert_eq!(trie.insert("a/b", "k1", ()), None);
        assert_eq!(trie.insert("a/+", "k1", ()), None);
        assert_eq!(trie.insert("a/#", "k2", ()), None);
        assert_eq!(trie.insert("#", "k3", ()), None);
        assert_eq!(trie.insert("a/b", "k2", ()), None);
        assert_eq!(trie.insert("$SYS/#", "k4", ()), None);
        assert_eq!(trie.len(), 6);
        assert_eq!(keys(&trie, "a/b"), ["k1", "k1", "k2", "k2", "k3"]);
        assert_eq!(keys(&trie, "a"), ["k2", "k3"]);
        assert_eq!(keys(&trie, "a/c"), ["k1", "k2", "k3"]);
        assert_eq!(keys(&trie, "a/b/c"), ["k2", "k3"]);
        assert_eq!(keys(&trie, "b"), ["k3"]);
        assert_eq!(keys(&trie, "$SYS/load"), ["k4"]);
        assert!(trie.contains_filter("a/+"));
        assert!(!trie.contains_filter("a"));
        let mut seen = Vec::new();
        trie.for_each_key("a/b", |k, _| seen.push(*k));
        assert_eq!(seen, ["k1", "k2"]);
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        let mut trie = SubscriptionTrie::new();
        assert_eq!(trie.node_count(), 1);
        assert_eq!(trie.insert("a/b/c", 1, 'x'), None);
        assert_eq!(trie.insert("a/b/c", 1, 'y'), Some('x'));
        assert_eq!(trie.get("a/b/c", &1), Some(&'y'));
        assert_eq!(trie.get("a/b/c", &2), None);
        assert_eq!(trie.get("a/b", &1), None);
        *trie.get_mut("a/b/c", &1).unwrap() = 'z';
        assert_eq!(trie.len(), 1);
        assert_eq!(trie.node_count(), 4);
        trie.insert("a/+/#", 2, 'p');
        assert_eq!(trie.node_count(), 6);
        trie.insert("a", 3, 'q');
        assert_eq!(trie.node_count(), 6);

        assert_eq!(trie.remove("a/b/c", &2), None);
        assert_eq!(trie.remove("a/b", &1), None);
        assert_eq!(trie.remove("x/y", &1), None);
        assert_eq!(trie.node_count(), 6);
        assert_eq!(trie.remove("a/b/c", &1), Some('z'));
        assert_eq!(trie.node_count(), 4);
        assert_eq!(trie.remove("a/b/c", &1), None);
        assert_eq!(trie.remove("a", &3), Some('q'));
        assert_eq!(trie.node_count(), 4);
        assert_eq!(trie.remove("a/+/#", &2), Some('p'));
        assert_eq!(trie.node_count(), 1);
        assert!(trie.is_empty());
    }

    #[test]
    fn remove_keeps_other_keys_and_descendants() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b", 1, ());
        trie.insert("a/b", 2, ());
        trie.insert("a/b/c", 1, ());
        assert_eq!(trie.remove("a/b", &1), Some(()));
        assert_eq!(trie.node_count(), 4);
        assert_eq!(trie.matches("a/b").len(), 1);
        assert_eq!(trie.remove("a/b", &2), Some(()));
        assert_eq!(trie.node_count(), 4);
        assert_eq!(trie.matches("a/b/c").len(), 1);
        assert_eq!(trie.remove("a/b/c", &1), Some(()));
        assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn wide_nodes_switch_representation_both_ways() {
        // 200 children under `d` and 200 keys on `d/+/t`: both maps become B-trees, and
        // turn back into sorted vectors as they empty.
        const N: usize = 200;
        let mut trie = SubscriptionTrie::new();
        let filters: Vec<String> = (0..N).map(|n| alloc::format!("d/{n}/t")).collect();
        for (n, filter) in filters.iter().enumerate() {
            assert_eq!(trie.insert(filter, n, n), None);
            assert_eq!(trie.insert("d/+/t", n, n + 1000), None);
        }
        assert_eq!(trie.len(), 2 * N);
        for (n, filter) in filters.iter().enumerate() {
            let found = trie.matches(filter);
            assert_eq!(found.len(), N + 1);
            assert_eq!(
                found.iter().filter(|(k, v)| **k == n && **v == n).count(),
                1
            );
            assert_eq!(trie.get(filter, &n), Some(&n));
            assert_eq!(trie.get("d/+/t", &n), Some(&(n + 1000)));
        }
        for (n, filter) in filters.iter().enumerate() {
            assert_eq!(trie.remove(filter, &n), Some(n));
            assert_eq!(trie.remove("d/+/t", &n), Some(n + 1000));
            assert_eq!(trie.matches(filter).len(), N - n - 1);
            if let Some(next) = filters.get(n + 1) {
                assert_eq!(trie.matches(next).len(), N - n);
                assert_eq!(trie.get(next, &(n + 1)), Some(&(n + 1)));
            }
        }
        assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn deep_filters_do_not_overflow_the_stack() {
        // 100,001 levels: far more than a 65,535-byte filter can have, and far more than a
        // recursion of one frame per level would survive on a test thread's stack.
        let deep: String = "/".repeat(100_000);
        let mut trie = SubscriptionTrie::new();
        trie.insert(&deep, 1, ());
        let plus_deep: String = "+/".repeat(50_000) + "#";
        trie.insert(&plus_deep, 2, ());
        assert_eq!(trie.matches(&deep).len(), 2);
        assert_eq!(trie.matches("/").len(), 0);
        assert_eq!(trie.remove(&deep, &1), Some(()));
        assert_eq!(trie.matches(&deep).len(), 1);
        drop(trie);

        let mut trie = SubscriptionTrie::new();
        trie.insert(&deep, 1, ());
        // Dropping a deep trie must not recurse either.
        drop(trie);
    }

    #[test]
    fn stack_spills_and_returns() {
        let mut stack: Stack<u32, 2> = Stack::new();
        for n in 0..5 {
            stack.push(n);
        }
        *stack.last_mut().unwrap() += 10;
        let popped: Vec<u32> = core::iter::from_fn(|| stack.pop()).collect();
        assert_eq!(popped, vec![14, 3, 2, 1, 0]);
        assert!(stack.last_mut().is_none());
    }

    #[test]
    fn node_size() {
        // Not a contract, a tripwire: a node is a map, two pointers and a map.
        assert!(mem::size_of::<Node<u64, u64>>() <= 80);
    }
}
