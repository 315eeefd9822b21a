//! Topic matching: the broker's subscription trie with 100,000 mixed subscriptions, and the
//! retained-message tree with 100,000 topics.
//!
//! The subscription set (keys are session numbers, values a QoS byte):
//!
//! | filters                              | count  | keys                          |
//! |--------------------------------------|--------|-------------------------------|
//! | `devices/{n}/telemetry`              | 60,000 | one per device                |
//! | `devices/{n}/cmd/#`                  | 20,000 | one per device                |
//! | `devices/+/status`                   |  1,000 | 1,000 monitors, one filter    |
//! | `region/{r}/#`                       | 10,000 | 1,000 regions x 10 keys       |
//! | `region/{r}/+/temperature`           |  5,000 | one per region                |
//! | `sensors/{a}/{b}/+/value`            |  3,000 | one each                      |
//! | `$SYS/broker/{metric}`               |    990 | one each                      |
//! | `$SYS/#`                             |      5 | 5 admin sessions              |
//! | `#`                                  |      5 | 5 loggers                     |
//!
//! `for_each_match` is measured for topics that hit a few entries, many, and none, with a
//! callback that only counts (what each topic hits is asserted before measuring). `naive`
//! is the same count done by testing every filter in turn, for scale.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use petrel_state::broker::retained_tree::TopicTree;
use petrel_state::broker::trie::SubscriptionTrie;

/// (filter, key, value) of the 100,000 subscriptions in the table above.
fn subscriptions() -> Vec<(String, u32, u8)> {
    let mut subs = Vec::with_capacity(100_000);
    let mut key = 0u32;
    let mut next_key = || {
        key += 1;
        key
    };
    for n in 0..60_000 {
        subs.push((format!("devices/{n}/telemetry"), n, 0));
    }
    for n in 0..20_000 {
        subs.push((format!("devices/{n}/cmd/#"), n, 1));
    }
    for _ in 0..1_000 {
        subs.push(("devices/+/status".into(), 100_000 + next_key(), 1));
    }
    for r in 0..1_000 {
        for _ in 0..10 {
            subs.push((format!("region/{r}/#"), 200_000 + next_key(), 0));
        }
    }
    for r in 0..5_000 {
        subs.push((format!("region/{r}/+/temperature"), 300_000 + r, 0));
    }
    for i in 0..3_000 {
        let (a, b) = (i / 100, i % 100);
        subs.push((format!("sensors/{a}/{b}/+/value"), 400_000 + i, 2));
    }
    for m in 0..990 {
        subs.push((format!("$SYS/broker/metric-{m}"), 500_000 + m, 0));
    }
    for k in 0..5 {
        subs.push(("$SYS/#".into(), 600_000 + k, 0));
        subs.push(("#".into(), 700_000 + k, 0));
    }
    assert_eq!(subs.len(), 100_000);
    subs
}

/// The topics measured, with how many entries each must hit.
const TOPICS: &[(&str, &str, usize)] = &[
    // Exact filter + the 5 `#` loggers.
    ("hit_few/exact", "devices/12345/telemetry", 6),
    // region/42/# (10 keys) + region/42/+/temperature + 5 x `#`.
    ("hit_few/wildcards", "region/42/building-7/temperature", 16),
    // sensors/7/31/+/value + 5 x `#`, five levels deep.
    ("hit_few/deep", "sensors/7/31/probe-3/value", 6),
    // devices/+/status: one filter with 1,000 keys, + 5 x `#`.
    ("hit_many", "devices/12345/status", 1_005),
    // Only the 5 `#` loggers: every literal lookup misses.
    ("hit_only_hash", "unknown/topic/path", 5),
    // `$SYS/#` (5) + the exact metric.
    ("sys", "$SYS/broker/metric-17", 6),
    // A `$` topic nobody asked for: `#` must not match it.
    ("hit_none", "$app/none/here", 0),
];

fn build(subs: &[(String, u32, u8)]) -> SubscriptionTrie<u32, u8> {
    let mut trie = SubscriptionTrie::new();
    for (filter, key, value) in subs {
        trie.insert(filter, *key, *value);
    }
    trie
}

/// The naive matcher, for scale (as in the property tests).
fn naive_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn matching(c: &mut Criterion) {
    let subs = subscriptions();
    let trie = build(&subs);
    assert_eq!(trie.len(), 100_000);
    let mut group = c.benchmark_group("match_100k");
    group.throughput(Throughput::Elements(1));
    for (name, topic, expected) in TOPICS {
        let mut count = 0usize;
        trie.for_each_match(topic, |_, _| count += 1);
        assert_eq!(count, *expected, "{topic}");
        let naive = subs
            .iter()
            .filter(|(f, _, _)| naive_matches(f, topic))
            .count();
        assert_eq!(naive, *expected, "{topic}");

        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut count = 0usize;
                trie.for_each_match(black_box(topic), |key, qos| {
                    black_box((key, qos));
                    count += 1;
                });
                count
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("match_100k_naive_scan");
    group.sample_size(20);
    let (_, topic, _) = TOPICS[0];
    group.bench_function("hit_few/exact", |b| {
        b.iter(|| {
            subs.iter()
                .filter(|(f, _, _)| naive_matches(f, black_box(topic)))
                .count()
        })
    });
    group.finish();
}

fn insert_remove(c: &mut Criterion) {
    let subs = subscriptions();
    let mut trie = build(&subs);
    let nodes = trie.node_count();
    let mut group = c.benchmark_group("update_100k");

    // A new filter under an existing fan-out node: creates and prunes two nodes.
    let fresh: Vec<String> = (0..1024)
        .map(|n| format!("devices/{}/firmware/progress", n * 37))
        .collect();
    let mut i = 0;
    group.bench_function("insert_remove_new_filter", |b| {
        b.iter(|| {
            let filter = &fresh[i % fresh.len()];
            i += 1;
            trie.insert(black_box(filter), 900_000, 1);
            trie.remove(black_box(filter), &900_000)
        })
    });
    // Another key on an existing filter: no node is created or freed.
    group.bench_function("insert_remove_existing_filter", |b| {
        b.iter(|| {
            let filter = &subs[i % 60_000].0;
            i += 1;
            trie.insert(black_box(filter), 900_000, 1);
            trie.remove(black_box(filter), &900_000)
        })
    });
    // A 1,001st key on `devices/+/status` (its entries are a B-tree).
    group.bench_function("insert_remove_1001st_key", |b| {
        b.iter(|| {
            trie.insert(black_box("devices/+/status"), 900_000, 1);
            trie.remove(black_box("devices/+/status"), &900_000)
        })
    });
    group.finish();
    assert_eq!(trie.len(), 100_000);
    assert_eq!(trie.node_count(), nodes);

    let mut group = c.benchmark_group("build_100k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(subs.len() as u64));
    group.bench_function("insert_all", |b| {
        b.iter_with_large_drop(|| build(black_box(&subs)))
    });
    group.bench_function("drop_all", |b| {
        b.iter_batched(|| build(&subs), drop, BatchSize::PerIteration)
    });
    group.finish();
}

fn retained(c: &mut Criterion) {
    let mut tree = TopicTree::new();
    let mut topics = Vec::with_capacity(100_000);
    for n in 0..50_000 {
        topics.push(format!("devices/{n}/status"));
    }
    for n in 0..40_000 {
        topics.push(format!("region/{}/building-{}/temperature", n / 40, n % 40));
    }
    for m in 0..10_000 {
        topics.push(format!("$SYS/broker/metric-{m}"));
    }
    for (n, topic) in topics.iter().enumerate() {
        tree.insert(topic, n as u32);
    }
    assert_eq!(tree.len(), 100_000);

    let mut group = c.benchmark_group("retained_100k");
    for (name, filter, expected) in [
        ("exact", "devices/4242/status", 1),
        ("plus_one_region", "region/42/+/temperature", 40),
        ("hash_one_region", "region/42/#", 40),
        ("plus_all_devices", "devices/+/status", 50_000),
        ("hash_everything", "#", 90_000),
        ("none", "devices/4242/firmware", 0),
    ] {
        let mut count = 0usize;
        tree.for_each_matching(filter, |_| count += 1);
        assert_eq!(count, expected, "{filter}");
        group.throughput(Throughput::Elements(expected.max(1) as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut count = 0usize;
                tree.for_each_matching(black_box(filter), |v| {
                    black_box(v);
                    count += 1;
                });
                count
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matching, insert_remove, retained);
criterion_main!(benches);
