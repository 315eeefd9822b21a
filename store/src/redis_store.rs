//! The Redis store, for users who already run Redis: `{prefix}:sessions` (client identifier
//! → header record) and `{prefix}:retained` (topic → message) are hashes, and each session's
//! messages in flight and queued are fields of its own hash `{prefix}:entries:{client
//! identifier}` (field: [`EntryKey::to_bytes`]), so that deleting a session is one `DEL`.
//! A batch is one `MULTI`/`EXEC` transaction; it is as durable as the server's own settings
//! make it (`appendonly yes` with `appendfsync always` for Petrel's full guarantee).

use redis::{Client, Connection};

use crate::backend::{Backend, EntryKey, Op, RawState, StoreError};

/// Keys are read back in pages of this many fields, so a large store does not arrive as one
/// reply.
const SCAN_PAGE: usize = 10_000;

/// Sessions whose entries are read back in one pipeline at start-up.
const ENTRIES_PIPELINE: usize = 1_000;

/// A connection to a Redis server holding sessions and retained messages.
pub struct RedisStore {
    url: String,
    sessions_key: String,
    retained_key: String,
    /// `{prefix}:entries:`, followed by a client identifier.
    entries_key: String,
    connection: Connection,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("sessions_key", &self.sessions_key)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://127.0.0.1:6379/0`); the keys start with `prefix`.
    pub fn open(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let fail = |e: redis::RedisError| StoreError::Backend {
            location: url.to_string(),
            message: e.to_string(),
        };
        let client = Client::open(url).map_err(fail)?;
        let connection = client.get_connection().map_err(fail)?;
        Ok(RedisStore {
            url: url.to_string(),
            sessions_key: format!("{prefix}:sessions"),
            retained_key: format!("{prefix}:retained"),
            entries_key: format!("{prefix}:entries:"),
            connection,
        })
    }

    fn error(&self, e: redis::RedisError) -> StoreError {
        StoreError::Backend {
            location: self.url.clone(),
            message: e.to_string(),
        }
    }

    fn entries_of(&self, session: &str) -> String {
        format!("{}{session}", self.entries_key)
    }

    /// The entries of every session in `sessions`, a pipeline of `HGETALL`s at a time.
    fn read_entries(
        &mut self,
        sessions: &[(String, Vec<u8>)],
    ) -> Result<Vec<(String, EntryKey, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for chunk in sessions.chunks(ENTRIES_PIPELINE) {
            let mut pipe = redis::pipe();
            for (session, _) in chunk {
                pipe.hgetall(self.entries_of(session));
            }
            let replies: Vec<Vec<(Vec<u8>, Vec<u8>)>> = pipe
                .query(&mut self.connection)
                .map_err(|e| self.error(e))?;
            for ((session, _), fields) in chunk.iter().zip(replies) {
                for (field, value) in fields {
                    let entry =
                        EntryKey::from_bytes(&field).ok_or_else(|| StoreError::Backend {
                            location: self.url.clone(),
                            message: format!(
                                "an entry field of session {session:?} is malformed: {field:?}"
                            ),
                        })?;
                    out.push((session.clone(), entry, value));
                }
            }
        }
        Ok(out)
    }

    fn read_hash(&mut self, key: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
                .arg(key)
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_PAGE)
                .query(&mut self.connection)
                .map_err(|e| self.error(e))?;
            out.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // HSCAN may return a field twice when the hash changes meanwhile; nothing writes
        // during start-up, but keep the last copy of each to be safe.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|later, earlier| later.0 == earlier.0);
        Ok(out)
    }
}

impl Backend for RedisStore {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn apply(&mut self, ops: &[Op], _durable: bool) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for op in ops {
            match op {
                Op::PutSession(key, value) => pipe.hset(&self.sessions_key, key, value),
                Op::DeleteSession(key) => pipe
                    .hdel(&self.sessions_key, key)
                    .ignore()
                    .del(self.entries_of(key)),
                Op::PutEntry(session, entry, value) => {
                    pipe.hset(self.entries_of(session), &entry.to_bytes()[..], value)
                }
                Op::DeleteEntry(session, entry) => {
                    pipe.hdel(self.entries_of(session), &entry.to_bytes()[..])
                }
                Op::PutRetained(key, value) => pipe.hset(&self.retained_key, key, value),
                Op::DeleteRetained(key) => pipe.hdel(&self.retained_key, key),
            }
            .ignore();
        }
        pipe.query::<()>(&mut self.connection)
            .map_err(|e| self.error(e))
    }

    fn load(&mut self) -> Result<RawState, StoreError> {
        let sessions_key = self.sessions_key.clone();
        let retained_key = self.retained_key.clone();
        let sessions = self.read_hash(&sessions_key)?;
        // A session's entries hash is written and deleted with its header in one
        // transaction, so only the sessions found have entries to read.
        let entries = self.read_entries(&sessions)?;
        Ok(RawState {
            sessions,
            entries,
            retained: self.read_hash(&retained_key)?,
        })
    }
}
