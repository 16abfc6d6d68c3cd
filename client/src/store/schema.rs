//! The local schema and its migrations, versioned by SQLite's `user_version`.
//!
//! Each migration runs once, in order, in one transaction with the version bump, so a store
//! opened by a newer client is brought up to date and a crash mid-migration leaves the old
//! version intact. Times are integer microseconds since the epoch (the precision the server
//! keeps, so a stamp compares the same before and after a round trip); ids are UUID text.

use rusqlite::Connection;

/// The migrations, oldest first. Never edit one that has shipped: add another.
const MIGRATIONS: &[&str] = &[
    // 1: tasks with per-field last-write-wins registers, the sync queue, the sync state.
    "CREATE TABLE tasks (
        id TEXT PRIMARY KEY NOT NULL,
        title TEXT,
        title_at INTEGER,
        title_op TEXT,
        description TEXT,
        description_at INTEGER,
        description_op TEXT,
        completed INTEGER,
        completed_at INTEGER,
        completed_op TEXT,
        is_deleted INTEGER NOT NULL DEFAULT 0,
        deleted_at INTEGER,
        deleted_op TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        sync_status TEXT NOT NULL CHECK (sync_status IN ('pending', 'synced', 'error')),
        server_id TEXT,
        last_synced_at INTEGER
    );
    CREATE INDEX tasks_by_creation ON tasks (created_at, id);
    CREATE TABLE sync_queue (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        op_id TEXT NOT NULL UNIQUE,
        task_id TEXT NOT NULL,
        operation TEXT NOT NULL CHECK (operation IN ('create', 'update', 'delete')),
        data TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'accepted', 'error')),
        retry_count INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        last_attempt_at INTEGER
    );
    CREATE INDEX sync_queue_by_task ON sync_queue (task_id, seq);
    CREATE INDEX sync_queue_by_state ON sync_queue (state, seq);
    CREATE TABLE sync_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        device_id TEXT NOT NULL,
        pull_cursor TEXT NOT NULL DEFAULT '',
        last_sync_at INTEGER
    );",
    // 2: a resync (the server answered 410 to the pull cursor): whether one is under way, and
    // the tasks it has received so far, so that a resync cut short resumes and still ends by
    // dropping the local tasks the server no longer has.
    "ALTER TABLE sync_state ADD COLUMN resyncing INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE resync_seen (id TEXT PRIMARY KEY NOT NULL);",
];

/// The schema version this client writes.
pub const VERSION: usize = MIGRATIONS.len();

/// Brings the schema to [`VERSION`]. A store written by a newer client is refused rather than
/// guessed at.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the local database has schema version {current}, newer than this client's {VERSION}"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(VERSION)
}
