//! The embedded store: one redb file in the data directory, no server to run.
//!
//! The default: in the broker, under persistent-session QoS 1 load, it delivers about twice
//! fjall's rate (`docs/PERSISTENCE.md`, `benches/compare/persistence.sh`). A batch of
//! changes is one write transaction; `durable` commits are `Immediate` (fsync before
//! returning), the others `Eventual` (written, synced by a later commit or the kernel).

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::backend::{entry_key, entry_prefix, split_entry_key, Backend, Op, RawState, StoreError};

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
/// Session entries, keyed by [`entry_key`]: a session's entries are one key range.
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");

/// The file name of the store inside the data directory.
pub const FILE_NAME: &str = "petrel.redb";

/// A redb file holding sessions and retained messages.
pub struct EmbeddedStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`, creating the directory if needed. A file
    /// left by a crash is repaired by redb; one it cannot read is an error, never replaced.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let fail = |message: String| StoreError::Backend {
            location: path.display().to_string(),
            message,
        };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| fail(format!("cannot create the data directory: {e}")))?;
        // redb 2 asserts on some damaged files (one cut short, for instance) instead of
        // returning an error; a damaged store must be reported, not crash the start.
        let opened = std::panic::catch_unwind(|| Database::create(&path));
        let db = match opened {
            Ok(result) => result.map_err(|e| fail(format!("cannot open: {e}")))?,
            Err(panic) => {
                return Err(fail(format!(
                    "the file is damaged (redb: {}); it is left as it is",
                    panic_message(&panic)
                )))
            }
        };
        let store = EmbeddedStore { db, path };
        // Create the tables, so that reading an empty store (or one written before entries
        // existed) finds them.
        store.apply_inner(&[], true)?;
        Ok(store)
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            location: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn apply_inner(&self, ops: &[Op], durable: bool) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.error(e))?;
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::Eventual
        });
        {
            let mut sessions = tx.open_table(SESSIONS).map_err(|e| self.error(e))?;
            let mut retained = tx.open_table(RETAINED).map_err(|e| self.error(e))?;
            let mut entries = tx.open_table(ENTRIES).map_err(|e| self.error(e))?;
            for op in ops {
                let result = match op {
                    Op::PutSession(key, value) => {
                        sessions.insert(key.as_str(), value.as_slice()).map(drop)
                    }
                    Op::DeleteSession(key) => {
                        let from = entry_prefix(key);
                        // Entry keys continue the prefix with a kind byte below 0xFF.
                        let mut to = from.clone();
                        to.push(0xFF);
                        sessions.remove(key.as_str()).map(drop).and_then(|()| {
                            entries.retain_in(from.as_slice()..to.as_slice(), |_, _| false)
                        })
                    }
                    Op::PutEntry(session, entry, value) => entries
                        .insert(entry_key(session, *entry).as_slice(), value.as_slice())
                        .map(drop),
                    Op::DeleteEntry(session, entry) => entries
                        .remove(entry_key(session, *entry).as_slice())
                        .map(drop),
                    Op::PutRetained(key, value) => {
                        retained.insert(key.as_str(), value.as_slice()).map(drop)
                    }
                    Op::DeleteRetained(key) => retained.remove(key.as_str()).map(drop),
                };
                result.map_err(|e| self.error(e))?;
            }
        }
        tx.commit().map_err(|e| self.error(e))
    }
}

impl Backend for EmbeddedStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn apply(&mut self, ops: &[Op], durable: bool) -> Result<(), StoreError> {
        self.apply_inner(ops, durable)
    }

    fn load(&mut self) -> Result<RawState, StoreError> {
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read_all()));
        read.unwrap_or_else(|panic| {
            Err(self.error(format!(
                "the file is damaged (redb: {})",
                panic_message(&panic)
            )))
        })
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| String::from("panicked"))
}

impl EmbeddedStore {
    fn read_all(&self) -> Result<RawState, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.error(e))?;
        let mut state = RawState::default();
        for (definition, out) in [
            (SESSIONS, &mut state.sessions),
            (RETAINED, &mut state.retained),
        ] {
            let table = tx.open_table(definition).map_err(|e| self.error(e))?;
            for entry in table.iter().map_err(|e| self.error(e))? {
                let (key, value) = entry.map_err(|e| self.error(e))?;
                out.push((key.value().to_string(), value.value().to_vec()));
            }
        }
        let table = tx.open_table(ENTRIES).map_err(|e| self.error(e))?;
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let (session, entry) = split_entry_key(key.value()).ok_or_else(|| {
                self.error(format!("an entry key is malformed: {:?}", key.value()))
            })?;
            state.entries.push((session, entry, value.value().to_vec()));
        }
        Ok(state)
    }
}
