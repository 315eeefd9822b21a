//! The embedded store on fjall (an LSM tree with a write-ahead journal): a directory in the
//! data directory, no server to run. Chosen with `[store] kind = "fjall"`; the comparison
//! with redb is in `docs/PERSISTENCE.md`.
//!
//! A batch of changes is one fjall write batch (atomic: after a crash it is there entirely
//! or not at all); a `durable` batch is followed by a journal fsync before `apply` returns.

use std::path::{Path, PathBuf};

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use std::collections::BTreeMap;

use crate::backend::{entry_key, entry_prefix, split_entry_key, Backend, Op, RawState, StoreError};

/// The directory of the store inside the data directory.
pub const DIR_NAME: &str = "petrel.fjall";

/// A fjall keyspace holding sessions and retained messages.
pub struct FjallStore {
    keyspace: Keyspace,
    sessions: PartitionHandle,
    retained: PartitionHandle,
    /// Session entries, keyed by [`entry_key`]: a session's entries share a prefix.
    entries: PartitionHandle,
    path: PathBuf,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens (or creates) the store in `data_dir`. fjall replays its journal after a crash
    /// (an unfinished last batch is dropped whole); a store it cannot read is an error,
    /// never replaced.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DIR_NAME);
        let fail = |message: String| StoreError::Backend {
            location: path.display().to_string(),
            message,
        };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| fail(format!("cannot create the data directory: {e}")))?;
        let keyspace = Config::new(&path)
            .open()
            .map_err(|e| fail(format!("cannot open: {e}")))?;
        let open = |name: &str| {
            keyspace
                .open_partition(name, PartitionCreateOptions::default())
                .map_err(|e| fail(format!("cannot open the {name} partition: {e}")))
        };
        let sessions = open("sessions")?;
        let retained = open("retained")?;
        let entries = open("entries")?;
        Ok(FjallStore {
            keyspace,
            sessions,
            retained,
            entries,
            path,
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            location: self.path.display().to_string(),
            message: e.to_string(),
        }
    }
}

impl Backend for FjallStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn apply(&mut self, ops: &[Op], durable: bool) -> Result<(), StoreError> {
        // A write batch does not read its own writes, and removing a session's entries
        // means reading which it has: the ops are first folded into the last value per key
        // (`None`: removed), in order, so a key written after its session was deleted in
        // the same batch survives.
        let mut last: BTreeMap<(u8, Vec<u8>), Option<&[u8]>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::PutSession(key, value) => {
                    last.insert((0, key.as_bytes().to_vec()), Some(value));
                }
                Op::DeleteSession(key) => {
                    last.insert((0, key.as_bytes().to_vec()), None);
                    let prefix = entry_prefix(key);
                    let own = last
                        .range_mut((2, prefix.clone())..)
                        .take_while(|((_, key), _)| key.starts_with(&prefix));
                    for (_, value) in own {
                        *value = None;
                    }
                    for stored in self.entries.prefix(&prefix) {
                        let (stored, _) = stored.map_err(|e| self.error(e))?;
                        last.insert((2, stored.to_vec()), None);
                    }
                }
                Op::PutEntry(session, entry, value) => {
                    last.insert((2, entry_key(session, *entry)), Some(value));
                }
                Op::DeleteEntry(session, entry) => {
                    last.insert((2, entry_key(session, *entry)), None);
                }
                Op::PutRetained(key, value) => {
                    last.insert((1, key.as_bytes().to_vec()), Some(value));
                }
                Op::DeleteRetained(key) => {
                    last.insert((1, key.as_bytes().to_vec()), None);
                }
            }
        }
        let mut batch = self.keyspace.batch();
        for ((partition, key), value) in last {
            let partition = match partition {
                0 => &self.sessions,
                1 => &self.retained,
                _ => &self.entries,
            };
            match value {
                Some(value) => batch.insert(partition, key, value),
                None => batch.remove(partition, key),
            }
        }
        batch.commit().map_err(|e| self.error(e))?;
        if durable {
            self.keyspace
                .persist(PersistMode::SyncAll)
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn load(&mut self) -> Result<RawState, StoreError> {
        let mut state = RawState::default();
        for (partition, out) in [
            (&self.sessions, &mut state.sessions),
            (&self.retained, &mut state.retained),
        ] {
            for entry in partition.iter() {
                let (key, value) = entry.map_err(|e| self.error(e))?;
                let key = String::from_utf8(key.to_vec())
                    .map_err(|_| self.error("a key is not UTF-8"))?;
                out.push((key, value.to_vec()));
            }
        }
        for entry in self.entries.iter() {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let (session, entry) = split_entry_key(&key)
                .ok_or_else(|| self.error(format!("an entry key is malformed: {key:?}")))?;
            state.entries.push((session, entry, value.to_vec()));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_a_reopen_and_deletes_stay_deleted() {
        let dir = std::env::temp_dir().join(format!("petrel-fjall-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut store = FjallStore::open(&dir).unwrap();
            store
                .apply(
                    &[
                        Op::PutSession("a".into(), vec![1]),
                        Op::PutSession("b".into(), vec![2]),
                        Op::PutRetained("t/1".into(), vec![3]),
                    ],
                    true,
                )
                .unwrap();
            store.apply(&[Op::DeleteSession("a".into())], true).unwrap();
        }
        let mut store = FjallStore::open(&dir).unwrap();
        let state = store.load().unwrap();
        assert_eq!(state.sessions, vec![("b".to_string(), vec![2])]);
        assert_eq!(state.retained, vec![("t/1".to_string(), vec![3])]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
