//! redb against fjall for Petrel's workload: group commits of session records with one
//! fsync each, then reopening a large store and reading everything back.
//!
//! ```sh
//! cargo run --release -p petrel-store --features fjall --example compare -- [DIR]
//! ```
//!
//! Prints, per engine: durable commits per second (64 session records of ~300 bytes per
//! commit, the size of a busy group), the time to reopen and read a store of 200,000
//! records (the crash-recovery path), and the bytes on disk.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const COMMITS: usize = 500;
const PER_COMMIT: usize = 64;
const RECORDS: usize = 200_000;
const VALUE: usize = 300;

trait Engine {
    fn name(&self) -> &'static str;
    fn commit(&mut self, batch: &[(String, Vec<u8>)]);
    fn count(&mut self) -> usize;
}

struct Redb(redb::Database);
const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("sessions");

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb 2.6"
    }
    fn commit(&mut self, batch: &[(String, Vec<u8>)]) {
        let tx = self.0.begin_write().unwrap();
        {
            let mut table = tx.open_table(TABLE).unwrap();
            for (k, v) in batch {
                table.insert(k.as_str(), v.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn count(&mut self) -> usize {
        use redb::ReadableTable;
        let tx = self.0.begin_read().unwrap();
        let table = tx.open_table(TABLE).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| e.unwrap().1.value().len())
            .filter(|&n| n > 0)
            .count()
    }
}

struct Fjall(fjall::Keyspace, fjall::PartitionHandle);

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall 2.11"
    }
    fn commit(&mut self, batch: &[(String, Vec<u8>)]) {
        let mut b = self.0.batch();
        for (k, v) in batch {
            b.insert(&self.1, k.as_bytes(), v.as_slice());
        }
        b.commit().unwrap();
        self.0.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn count(&mut self) -> usize {
        self.1
            .iter()
            .map(|e| e.unwrap().1.len())
            .filter(|&n| n > 0)
            .count()
    }
}

fn open_redb(dir: &Path) -> Box<dyn Engine> {
    Box::new(Redb(redb::Database::create(dir.join("db.redb")).unwrap()))
}

fn open_fjall(dir: &Path) -> Box<dyn Engine> {
    let keyspace = fjall::Config::new(dir.join("fjall")).open().unwrap();
    let partition = keyspace
        .open_partition("sessions", fjall::PartitionCreateOptions::default())
        .unwrap();
    Box::new(Fjall(keyspace, partition))
}

fn batch(start: usize, n: usize) -> Vec<(String, Vec<u8>)> {
    (start..start + n)
        .map(|i| (format!("client-{i:08}"), noise(i as u64)))
        .collect()
}

/// Incompressible bytes (xorshift), like encrypted or already-compressed payloads; a
/// session record compresses somewhat better than this.
fn noise(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..VALUE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_size(&p)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let base: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("petrel-store-compare"));
    type Open = fn(&Path) -> Box<dyn Engine>;
    let engines: [(&str, Open); 2] = [("redb", open_redb), ("fjall", open_fjall)];
    println!("| engine | durable commits/s ({PER_COMMIT} records each) | reopen + read {RECORDS} records | bytes on disk |");
    println!("| --- | --- | --- | --- |");
    for (name, open) in engines {
        let dir = base.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut engine = open(&dir);
        // Fill, in large commits, then measure durable group commits on top.
        for start in (0..RECORDS).step_by(10_000) {
            engine.commit(&batch(start, 10_000));
        }
        let started = Instant::now();
        for c in 0..COMMITS {
            engine.commit(&batch((c * PER_COMMIT) % RECORDS, PER_COMMIT));
        }
        let per_sec = COMMITS as f64 / started.elapsed().as_secs_f64();
        let label = engine.name();
        drop(engine);
        let started = Instant::now();
        let mut engine = open(&dir);
        let n = engine.count();
        let reopen = started.elapsed();
        assert_eq!(n, RECORDS);
        drop(engine);
        println!(
            "| {label} | {per_sec:.0} | {} ms | {} MB |",
            reopen.as_millis(),
            dir_size(&dir) / 1_000_000
        );
        let _ = std::fs::remove_dir_all(&dir);
        std::thread::sleep(Duration::from_millis(100));
    }
}
