//! The local store: one SQLite file holding the tasks as this device sees them, the queue of
//! operations not yet decided by the server, and the sync state (device id, pull cursor).
//!
//! - [`schema`]: the tables and their migrations.
//! - `rows`: reading and writing a task row (its per-field registers) by column name.
//! - `tasks`: local CRUD; each change updates the task and enqueues its operation in one
//!   transaction.
//! - `queue`: the sync queue.
//! - `replica`: what the server said (push answers, operation lookups, pulled pages), merged in
//!   with the shared last-write-wins rule, queued edits re-applied on top.

pub mod schema;

mod queue;
mod replica;
mod rows;
mod tasks;

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use uuid::Uuid;

pub use queue::{MAX_TRIES, QueueCounts, QueueState, QueuedOp};
pub use replica::{Absorbed, Tally};
pub use tasks::{Edit, NewTask};

use crate::error::{Error, Result};

/// The local database of one device.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

/// This device's sync bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyncState {
    pub device_id: Uuid,
    /// The changes feed's cursor, saved with the page it ends (opaque to the client).
    pub pull_cursor: String,
    /// When the last sync round finished.
    pub last_sync_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Opens (creating it and its directory when missing) the store at `path`, migrated.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Corrupt(format!(
                    "cannot create the directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let conn = Connection::open(path)?;
        // WAL: a reader (`tasks list`) never waits for a sync round; a killed process leaves
        // every committed transaction in place. The busy timeout lets two processes (a watch
        // loop and an edit) take turns instead of failing.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::prepare(conn)
    }

    /// A store that lives in memory only (for tests).
    pub fn open_in_memory() -> Result<Self> {
        Self::prepare(Connection::open_in_memory()?)
    }

    fn prepare(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        schema::migrate(&mut conn)?;
        conn.execute(
            "INSERT OR IGNORE INTO sync_state (id, device_id) VALUES (1, ?1)",
            params![Uuid::new_v4().to_string()],
        )?;
        Ok(Self { conn })
    }

    pub fn sync_state(&self) -> Result<SyncState> {
        let (device, cursor, last): (String, String, Option<i64>) = self.conn.query_row(
            "SELECT device_id, pull_cursor, last_sync_at FROM sync_state WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get("device_id")?,
                    r.get("pull_cursor")?,
                    r.get("last_sync_at")?,
                ))
            },
        )?;
        Ok(SyncState {
            device_id: rows::uuid(&device)?,
            pull_cursor: cursor,
            last_sync_at: last.map(rows::time).transpose()?,
        })
    }

    /// Records that a sync round finished at `at`.
    pub fn mark_synced(&self, at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "UPDATE sync_state SET last_sync_at = ?1 WHERE id = 1",
            params![rows::micros(at)],
        )?;
        Ok(())
    }

    /// The id of the one task whose id is `text` or starts with it.
    pub fn resolve_id(&self, text: &str) -> Result<Uuid> {
        let text = text.trim().to_ascii_lowercase();
        if let Ok(id) = Uuid::parse_str(&text) {
            return Ok(id);
        }
        if text.is_empty() || !text.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(Error::NotFound(text));
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM tasks WHERE id LIKE ?1 || '%' ORDER BY id LIMIT 2")?;
        let ids: Vec<String> = stmt
            .query_map([&text], |r| r.get("id"))?
            .collect::<rusqlite::Result<_>>()?;
        match ids.as_slice() {
            [one] => rows::uuid(one),
            [] => Err(Error::NotFound(text)),
            _ => Err(Error::Ambiguous(text)),
        }
    }

    /// Whether a task with this id is stored (deleted or not).
    pub fn contains(&self, id: Uuid) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM tasks WHERE id = ?1",
                [id.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests;
