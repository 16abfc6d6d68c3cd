//! The task rows of a batch: locked in one global order without writing, read, then the merged
//! states written back (new rows inserted with their final values, stored ones updated).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tasksync_shared::{
    SyncStatus, Task,
    merge::{Register, Stamp, TaskState},
    model::TASK_COLUMNS,
};
use tokio_postgres::Row;
use tracing::instrument;
use uuid::Uuid;

/// A task of the batch, as stored when this transaction read it (after taking its lock).
#[derive(Clone, Debug)]
pub struct LockedTask {
    pub user_id: String,
    pub state: TaskState,
    pub task: Task,
    /// The row exists. A task not stored yet is written by an `INSERT` carrying its final
    /// values, and only if some operation merged into it.
    pub stored: bool,
}

const STAMP_COLUMNS: &str = "user_id, title_at, title_op, description_at, description_op, \
     completed_at, completed_op, deleted_at, deleted_op";

/// The register of `field` (its value, and the stamp in `<field>_at` and `<field>_op`); `None`
/// when the field was never written.
fn register<T>(
    row: &Row,
    field: &str,
    value: T,
) -> Result<Option<Register<T>>, tokio_postgres::Error> {
    let at: Option<DateTime<Utc>> = row.try_get(format!("{field}_at").as_str())?;
    let op: Option<Uuid> = row.try_get(format!("{field}_op").as_str())?;
    Ok(at.map(|at| Register {
        value,
        stamp: Stamp {
            at,
            op_id: op.unwrap_or_default(),
        },
    }))
}

fn locked_from_row(row: &Row) -> Result<LockedTask, tokio_postgres::Error> {
    let task = Task::from_row(row)?;
    let state = TaskState {
        title: register(row, "title", task.title.clone())?,
        description: register(row, "description", task.description.clone())?,
        completed: register(row, "completed", task.completed)?,
        deleted: register(row, "deleted", task.is_deleted)?,
        created_at: Some(task.created_at),
    };
    Ok(LockedTask {
        user_id: row.try_get("user_id")?,
        state,
        task,
        stored: true,
    })
}

/// A task not stored yet, owned by the first operation that names it.
fn unstored(id: Uuid, user_id: &str) -> LockedTask {
    let now = Utc::now();
    LockedTask {
        user_id: user_id.to_string(),
        state: TaskState::default(),
        task: Task {
            id,
            title: String::new(),
            description: None,
            completed: false,
            created_at: now,
            updated_at: now,
            is_deleted: false,
            sync_status: SyncStatus::Synced,
            server_id: None,
            last_synced_at: None,
        },
        stored: false,
    }
}

/// The advisory lock key of a task: the two halves of its id folded into 64 bits. Two ids
/// with one key share a lock, which only serializes more than needed, never wrongly.
pub fn lock_key(id: Uuid) -> i64 {
    tasksync_shared::retention::task_lock_key(id)
}

/// Takes the transaction-scoped advisory locks of `ids`, in ascending key order, in one
/// statement; nothing is written. Every worker takes its keys in that one global order, so
/// overlapping batches queue instead of deadlocking (ordering by key rather than by id keeps
/// that true when two ids share a key). The locks are held until commit, which makes the
/// task rows and the log visible before a waiting worker goes on: that worker then reads
/// them in its next statement (a new snapshot under read committed).
///
/// Each lock is an entry in the server's shared lock table (about `max_locks_per_transaction`
/// × `max_connections` entries, shared by every session): the batches applying at one time
/// must hold fewer distinct tasks than that, or the statement fails with SQLSTATE 53200.
#[instrument(skip_all, fields(tasks = ids.len()))]
pub async fn lock_tasks(tx: &Transaction<'_>, ids: &[Uuid]) -> Result<(), tokio_postgres::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<i64> = ids.iter().map(|id| lock_key(*id)).collect();
    keys.sort_unstable();
    keys.dedup();
    // The function scan emits rows in ordinality order and locks as it emits each one (no
    // sort in the plan): the keys are locked in the array's order.
    let lock = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) WITH ORDINALITY AS l(k, n) \
             ORDER BY n",
        )
        .await?;
    tx.execute(&lock, &[&keys]).await?;
    Ok(())
}

/// The tasks of `tasks` (id, the owner a new task would get), as stored; a task not stored
/// yet comes back empty with `stored` false. Call after [`lock_tasks`], in a later statement.
/// `FOR UPDATE` keeps out the failure path's `sync_status` update while the batch runs.
#[instrument(skip_all, fields(tasks = tasks.len()))]
pub async fn read_tasks(
    tx: &Transaction<'_>,
    tasks: &[(Uuid, &str)],
) -> Result<HashMap<Uuid, LockedTask>, tokio_postgres::Error> {
    if tasks.is_empty() {
        return Ok(HashMap::new());
    }
    let mut ids: Vec<Uuid> = tasks.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let sql = format!(
        "SELECT {TASK_COLUMNS}, {STAMP_COLUMNS} FROM tasks WHERE id = ANY($1) ORDER BY id \
         FOR UPDATE"
    );
    let read = tx.prepare_cached(&sql).await?;
    let rows = tx.query(&read, &[&ids]).await?;
    let mut found: HashMap<Uuid, LockedTask> = rows
        .iter()
        .map(|row| locked_from_row(row).map(|t| (t.task.id, t)))
        .collect::<Result<_, _>>()?;
    for (id, user_id) in tasks {
        found.entry(*id).or_insert_with(|| unstored(*id, user_id));
    }
    Ok(found)
}

/// The merged columns, in the order of [`SaveColumns::params`] (`$1` is the id).
const MERGED: &str = "id, title, title_at, title_op, description, description_at, \
     description_op, completed, completed_at, completed_op, is_deleted, deleted_at, deleted_op, \
     created_at, updated_at";

const MERGED_TYPES: &str = "$1::uuid[], $2::text[], $3::timestamptz[], $4::uuid[], \
     $5::text[], $6::timestamptz[], $7::uuid[], $8::bool[], $9::timestamptz[], $10::uuid[], \
     $11::bool[], $12::timestamptz[], $13::uuid[], $14::timestamptz[], $15::timestamptz[]";

/// Writes merged states: tasks not stored yet are inserted with their final values (one
/// `INSERT … SELECT unnest(…)`), stored ones updated (one `UPDATE … FROM unnest(…)`); both
/// mark the tasks synced and move them up the change feed. The two statements touch disjoint
/// rows and are sent together. Returns the tasks as stored.
#[instrument(skip_all, fields(tasks = tasks.len()))]
pub async fn save_tasks(
    tx: &Transaction<'_>,
    tasks: &[&LockedTask],
) -> Result<Vec<Task>, tokio_postgres::Error> {
    let (mut new, mut stored) = (SaveColumns::default(), SaveColumns::default());
    for t in tasks {
        let columns = if t.stored { &mut stored } else { &mut new };
        columns.push(t.task.id, &t.user_id, &t.state);
    }
    let (inserted, updated) = tokio::join!(insert_tasks(tx, &new), update_tasks(tx, &stored));
    let (inserted, updated) = super::both(inserted, updated)?;
    Ok(inserted.into_iter().chain(updated).collect())
}

async fn insert_tasks(
    tx: &Transaction<'_>,
    c: &SaveColumns<'_>,
) -> Result<Vec<Task>, tokio_postgres::Error> {
    if c.id.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "INSERT INTO tasks ({MERGED}, user_id, sync_status, server_id, last_synced_at, \
                            change_xid) \
         SELECT {MERGED}, user_id, 'synced', id::text, now(), pg_current_xact_id() \
         FROM unnest({MERGED_TYPES}, $16::text[]) AS u({MERGED}, user_id) \
         RETURNING {TASK_COLUMNS}"
    );
    let mut params = c.params();
    params.push(&c.user_id);
    let insert = tx.prepare_cached(&sql).await?;
    let rows = tx.query(&insert, &params).await?;
    rows.iter().map(Task::from_row).collect()
}

async fn update_tasks(
    tx: &Transaction<'_>,
    c: &SaveColumns<'_>,
) -> Result<Vec<Task>, tokio_postgres::Error> {
    if c.id.is_empty() {
        return Ok(Vec::new());
    }
    let columns = TASK_COLUMNS
        .split(", ")
        .map(|col| format!("t.{col}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE tasks t SET \
           title = u.title, title_at = u.title_at, title_op = u.title_op, \
           description = u.description, description_at = u.description_at, \
           description_op = u.description_op, \
           completed = u.completed, completed_at = u.completed_at, completed_op = u.completed_op, \
           is_deleted = u.is_deleted, deleted_at = u.deleted_at, deleted_op = u.deleted_op, \
           created_at = u.created_at, updated_at = u.updated_at, \
           sync_status = 'synced', server_id = COALESCE(t.server_id, t.id::text), \
           last_synced_at = now(), change_xid = pg_current_xact_id() \
         FROM unnest({MERGED_TYPES}) AS u({MERGED}) \
         WHERE t.id = u.id \
         RETURNING {columns}"
    );
    let update = tx.prepare_cached(&sql).await?;
    let rows = tx.query(&update, &c.params()).await?;
    rows.iter().map(Task::from_row).collect()
}

/// Column-wise parameters of [`save_tasks`].
#[derive(Default)]
struct SaveColumns<'a> {
    id: Vec<Uuid>,
    /// The owner, written only by the insert.
    user_id: Vec<&'a str>,
    title: Vec<Option<String>>,
    title_at: Vec<Option<DateTime<Utc>>>,
    title_op: Vec<Option<Uuid>>,
    description: Vec<Option<String>>,
    description_at: Vec<Option<DateTime<Utc>>>,
    description_op: Vec<Option<Uuid>>,
    completed: Vec<bool>,
    completed_at: Vec<Option<DateTime<Utc>>>,
    completed_op: Vec<Option<Uuid>>,
    deleted: Vec<bool>,
    deleted_at: Vec<Option<DateTime<Utc>>>,
    deleted_op: Vec<Option<Uuid>>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
}

impl<'a> SaveColumns<'a> {
    fn push(&mut self, id: Uuid, user_id: &'a str, s: &TaskState) {
        let now = Utc::now();
        self.id.push(id);
        self.user_id.push(user_id);
        self.title.push(s.title.as_ref().map(|r| r.value.clone()));
        self.title_at.push(s.title.as_ref().map(|r| r.stamp.at));
        self.title_op.push(s.title.as_ref().map(|r| r.stamp.op_id));
        self.description
            .push(s.description.as_ref().and_then(|r| r.value.clone()));
        self.description_at
            .push(s.description.as_ref().map(|r| r.stamp.at));
        self.description_op
            .push(s.description.as_ref().map(|r| r.stamp.op_id));
        self.completed
            .push(s.completed.as_ref().is_some_and(|r| r.value));
        self.completed_at
            .push(s.completed.as_ref().map(|r| r.stamp.at));
        self.completed_op
            .push(s.completed.as_ref().map(|r| r.stamp.op_id));
        self.deleted.push(s.is_deleted());
        self.deleted_at.push(s.deleted.as_ref().map(|r| r.stamp.at));
        self.deleted_op
            .push(s.deleted.as_ref().map(|r| r.stamp.op_id));
        self.created_at.push(s.created_at.unwrap_or(now));
        self.updated_at.push(s.updated_at().unwrap_or(now));
    }

    /// The merged columns as `$1`…`$15`, in the order of [`MERGED`].
    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.id,
            &self.title,
            &self.title_at,
            &self.title_op,
            &self.description,
            &self.description_at,
            &self.description_op,
            &self.completed,
            &self.completed_at,
            &self.completed_op,
            &self.deleted,
            &self.deleted_at,
            &self.deleted_op,
            &self.created_at,
            &self.updated_at,
        ]
    }
}
