//! What the server says, stored: push answers, operation lookups and pulled pages.
//!
//! The server's copy of a task is authoritative for everything it has decided. Edits it has
//! not decided yet (queue entries `queued` or `accepted`) are re-applied on top with the shared
//! last-write-wins merge, so an older server state never hides a local edit that is still on
//! its way. The server does not send per-field stamps: a field whose value the server changed
//! is stamped with the task's `updated_at` (the latest time any write to it can have), a field
//! it left as this device has it keeps the stamp it had.

use std::collections::HashMap;

use rusqlite::{Connection, params};
use serde::Serialize;
use tasksync_shared::{
    OutcomeStatus, SyncStatus, Task,
    merge::{Register, Stamp, TaskState},
    model::to_db_precision,
    operation::ItemStatus,
    sync::{Ack, ChangesPage, OperationStatus, PushResponse},
};
use uuid::Uuid;

use super::{
    Store,
    queue::{MAX_TRIES, QueuedOp, select, undecided_of},
    rows::{self, TaskRow, micros},
};
use crate::error::Result;

/// What one push answer (or a round of lookups) decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Applied, winning every field.
    pub success: u64,
    /// Applied, losing some field to a later write; the local copy now shows the winner.
    pub conflict: u64,
    /// Rejected; will be pushed again (fewer than [`MAX_TRIES`] rejections so far).
    pub retrying: u64,
    /// Rejected for good: the entry and its task are `error`.
    pub failed: u64,
    /// Accepted by the server, not decided yet.
    pub pending: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.success += other.success;
        self.conflict += other.conflict;
        self.retrying += other.retrying;
        self.failed += other.failed;
        self.pending += other.pending;
    }
}

/// The server's task as registers: values it changed get its `updated_at` as their stamp.
fn server_state(local: Option<&TaskState>, server: &Task) -> TaskState {
    let guess = Stamp {
        at: to_db_precision(server.updated_at),
        op_id: Uuid::nil(),
    };
    fn keep<T: PartialEq + Clone>(
        local: Option<&Option<Register<T>>>,
        value: T,
        guess: Stamp,
    ) -> Option<Register<T>> {
        Some(match local.and_then(Option::as_ref) {
            Some(mine) if mine.value == value => mine.clone(),
            _ => Register {
                value,
                stamp: guess,
            },
        })
    }
    TaskState {
        title: keep(local.map(|l| &l.title), server.title.clone(), guess),
        description: keep(
            local.map(|l| &l.description),
            server.description.clone(),
            guess,
        ),
        completed: keep(local.map(|l| &l.completed), server.completed, guess),
        deleted: keep(local.map(|l| &l.deleted), server.is_deleted, guess),
        created_at: Some(server.created_at),
    }
}

/// A task's status from its queue entries: `pending` while any is undecided, `error` while a
/// failed one is not superseded, else what the server says (`synced` or `error`).
fn status_of(conn: &Connection, id: Uuid, server: SyncStatus) -> Result<SyncStatus> {
    let (undecided, failed): (i64, i64) = conn.query_row(
        "SELECT coalesce(sum(state IN ('queued', 'accepted')), 0) AS undecided,
                coalesce(sum(state = 'error'), 0) AS failed
         FROM sync_queue WHERE task_id = ?1",
        [id.to_string()],
        |r| Ok((r.get("undecided")?, r.get("failed")?)),
    )?;
    Ok(if undecided > 0 {
        SyncStatus::Pending
    } else if failed > 0 || server == SyncStatus::Error {
        SyncStatus::Error
    } else {
        SyncStatus::Synced
    })
}

/// Stores the server's copy of a task, with the undecided local edits merged on top.
fn absorb(conn: &Connection, server: &Task) -> Result<()> {
    let local = rows::find(conn, server.id)?;
    let mut state = server_state(local.as_ref().map(|r| &r.state), server);
    for op in undecided_of(conn, server.id)? {
        state.apply(&op.write());
    }
    let row = TaskRow {
        id: server.id,
        state,
        created_at: server.created_at,
        sync_status: status_of(conn, server.id, server.sync_status)?,
        server_id: server.server_id.clone(),
        last_synced_at: server.last_synced_at,
    };
    rows::write(conn, &row)
}

fn refresh_status(conn: &Connection, id: Uuid) -> Result<()> {
    let status = status_of(conn, id, SyncStatus::Synced)?;
    rows::set_status(conn, id, status)
}

/// The operation is decided and applied: forget it (and older failures it supersedes) and
/// store the task as the server has it.
fn applied(conn: &Connection, op: &QueuedOp, task: Option<&Task>) -> Result<()> {
    conn.execute(
        "DELETE FROM sync_queue WHERE op_id = ?1
            OR (task_id = ?2 AND state = 'error' AND seq < ?3)",
        params![op.op_id.to_string(), op.task_id.to_string(), op.seq],
    )?;
    match task {
        Some(task) => absorb(conn, task),
        None => refresh_status(conn, op.task_id),
    }
}

fn rejected(conn: &Connection, op: &QueuedOp, error: &str, for_good: bool) -> Result<bool> {
    let tries = op.retry_count + 1;
    let gives_up = for_good || tries >= MAX_TRIES;
    conn.execute(
        "UPDATE sync_queue SET retry_count = ?2, error = ?3, state = ?4, last_attempt_at = ?5
         WHERE op_id = ?1",
        params![
            op.op_id.to_string(),
            tries,
            error,
            if gives_up { "error" } else { "queued" },
            micros(chrono::Utc::now()),
        ],
    )?;
    refresh_status(conn, op.task_id)?;
    Ok(gives_up)
}

impl Store {
    /// Stores the answer to a push of `batch`, in one transaction. Items the answer does not
    /// mention stay as they were.
    pub fn record_push(&mut self, batch: &[QueuedOp], answer: &PushResponse) -> Result<Tally> {
        let by_id: HashMap<String, &QueuedOp> =
            batch.iter().map(|op| (op.op_id.to_string(), op)).collect();
        let tx = self.conn.transaction()?;
        let mut tally = Tally::default();
        for item in &answer.processed_items {
            let Some(op) = item.op_id.as_ref().and_then(|id| by_id.get(id)) else {
                continue;
            };
            match item.status {
                ItemStatus::Success | ItemStatus::Conflict => {
                    applied(&tx, op, item.resolved_data.as_ref())?;
                    if item.status == ItemStatus::Success {
                        tally.success += 1;
                    } else {
                        tally.conflict += 1;
                    }
                }
                ItemStatus::Error => {
                    let error = item.error.as_deref().unwrap_or("rejected");
                    if rejected(&tx, op, error, false)? {
                        tally.failed += 1;
                    } else {
                        tally.retrying += 1;
                    }
                }
                ItemStatus::Pending => {
                    tx.execute(
                        "UPDATE sync_queue SET state = 'accepted', last_attempt_at = ?2
                         WHERE op_id = ?1",
                        params![op.op_id.to_string(), micros(chrono::Utc::now())],
                    )?;
                    tally.pending += 1;
                }
            }
        }
        tx.commit()?;
        Ok(tally)
    }

    /// Stores what `GET /api/sync/operations/{op_id}` said about an accepted entry.
    pub fn record_lookup(&mut self, op: &QueuedOp, status: &OperationStatus) -> Result<Tally> {
        let tx = self.conn.transaction()?;
        let mut tally = Tally::default();
        match status.status.as_str() {
            s if s == ItemStatus::Success.as_str() || s == ItemStatus::Conflict.as_str() => {
                applied(&tx, op, status.resolved_data.as_ref())?;
                if s == ItemStatus::Success.as_str() {
                    tally.success += 1;
                } else {
                    tally.conflict += 1;
                }
            }
            s if s == ItemStatus::Error.as_str() => {
                // The server already spent its own retries on it: it is decided for good.
                let error = status.last_error.as_deref().unwrap_or("rejected");
                rejected(&tx, op, error, true)?;
                tally.failed += 1;
            }
            _ => tally.pending += 1,
        }
        tx.commit()?;
        Ok(tally)
    }

    /// Stores one page of the changes feed and then its cursor, in one transaction: a crash
    /// repeats the page rather than losing it. The page's acknowledgements settle the entries
    /// of this device's queue they name (no lookup needed for those); during a resync the
    /// page's tasks are noted, and its last page drops the local tasks the server no longer
    /// has (except those with entries in the queue).
    pub fn absorb_page(&mut self, page: &ChangesPage) -> Result<Absorbed> {
        let tx = self.conn.transaction()?;
        let mut absorbed = Absorbed::default();
        for ack in &page.acks {
            settle(&tx, ack, &mut absorbed.settled)?;
        }
        let resyncing: bool =
            tx.query_row("SELECT resyncing FROM sync_state WHERE id = 1", [], |r| {
                r.get("resyncing")
            })?;
        for task in &page.changes {
            absorb(&tx, task)?;
            if resyncing {
                tx.execute(
                    "INSERT OR IGNORE INTO resync_seen (id) VALUES (?1)",
                    [task.id.to_string()],
                )?;
            }
        }
        if resyncing && !page.has_more {
            absorbed.dropped = tx.execute(
                "DELETE FROM tasks WHERE id NOT IN (SELECT id FROM resync_seen)
                    AND id NOT IN (SELECT task_id FROM sync_queue)",
                [],
            )?;
            tx.execute("DELETE FROM resync_seen", [])?;
            tx.execute("UPDATE sync_state SET resyncing = 0 WHERE id = 1", [])?;
        }
        tx.execute(
            "UPDATE sync_state SET pull_cursor = ?1 WHERE id = 1",
            [&page.next_cursor],
        )?;
        tx.commit()?;
        absorbed.tasks = page.changes.len();
        Ok(absorbed)
    }

    /// Starts a resync after the server refused the pull cursor (410): the pull starts again
    /// from an empty cursor, and its last page replaces the local copy ([`Self::absorb_page`]).
    pub fn begin_resync(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM resync_seen", [])?;
        tx.execute(
            "UPDATE sync_state SET pull_cursor = '', resyncing = 1 WHERE id = 1",
            [],
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// What one page did to the local store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Absorbed {
    /// Tasks received.
    pub tasks: usize,
    /// Queue entries the page's acknowledgements decided.
    pub settled: Tally,
    /// Local tasks a finished resync dropped (the server no longer has them).
    pub dropped: usize,
}

/// Settles the undecided queue entry `ack` names, if this device has one: applied (dropped
/// from the queue) or failed for good, as a lookup would.
fn settle(conn: &Connection, ack: &Ack, tally: &mut Tally) -> Result<()> {
    let entries = select(
        conn,
        "SELECT * FROM sync_queue WHERE op_id = ?1 AND state IN ('queued', 'accepted')",
        [ack.op_id.to_string()],
    )?;
    let Some(op) = entries.first() else {
        return Ok(());
    };
    match ack.outcome {
        OutcomeStatus::Success | OutcomeStatus::Conflict => {
            applied(conn, op, None)?;
            if ack.outcome == OutcomeStatus::Success {
                tally.success += 1;
            } else {
                tally.conflict += 1;
            }
        }
        OutcomeStatus::Error => {
            rejected(conn, op, ack.error.as_deref().unwrap_or("rejected"), true)?;
            tally.failed += 1;
        }
    }
    Ok(())
}
