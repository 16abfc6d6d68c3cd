//! The task rows of a batch: locked (with a placeholder for a task not yet stored), then the
//! merged states written back.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tasksync_shared::{
    Task,
    merge::{Register, Stamp, TaskState},
    model::TASK_COLUMNS,
};
use tokio_postgres::Row;
use tracing::instrument;
use uuid::Uuid;

/// A task row locked for this transaction.
#[derive(Clone, Debug)]
pub struct LockedTask {
    pub user_id: String,
    pub state: TaskState,
    pub task: Task,
    /// The row was created by this transaction as a placeholder to lock on.
    pub inserted: bool,
}

const STAMP_COLUMNS: &str = "user_id, title_at, title_op, description_at, description_op, \
     completed_at, completed_op, deleted_at, deleted_op, (xmax = 0) AS inserted";

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
    let inserted: bool = row.try_get("inserted")?;
    let state = if inserted {
        TaskState::default()
    } else {
        TaskState {
            title: register(row, "title", task.title.clone())?,
            description: register(row, "description", task.description.clone())?,
            completed: register(row, "completed", task.completed)?,
            deleted: register(row, "deleted", task.is_deleted)?,
            created_at: Some(task.created_at),
        }
    };
    Ok(LockedTask {
        user_id: row.try_get("user_id")?,
        state,
        task,
        inserted,
    })
}

/// Locks the rows of `tasks` (id, owner for a new row) in ascending id order, inserting a
/// placeholder for each that does not exist yet. One global lock order means concurrent
/// workers never deadlock; the placeholder means two workers creating the same task serialize
/// on its row instead of racing on the primary key.
#[instrument(skip_all, fields(tasks = tasks.len()))]
pub async fn lock_tasks(
    tx: &Transaction<'_>,
    tasks: &[(Uuid, &str)],
) -> Result<HashMap<Uuid, LockedTask>, tokio_postgres::Error> {
    if tasks.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sorted: Vec<_> = tasks.to_vec();
    sorted.sort_by_key(|(id, _)| *id);
    sorted.dedup_by_key(|(id, _)| *id);
    let ids: Vec<Uuid> = sorted.iter().map(|(id, _)| *id).collect();
    let users: Vec<&str> = sorted.iter().map(|(_, user)| *user).collect();
    let sql = format!(
        "INSERT INTO tasks (id, user_id) \
         SELECT id, user_id FROM unnest($1::uuid[], $2::text[]) AS n(id, user_id) ORDER BY id \
         ON CONFLICT (id) DO UPDATE SET user_id = tasks.user_id \
         RETURNING {TASK_COLUMNS}, {STAMP_COLUMNS}"
    );
    let rows = tx.query(&sql, &[&ids, &users]).await?;
    rows.iter()
        .map(|row| locked_from_row(row).map(|t| (t.task.id, t)))
        .collect()
}

/// Writes merged states back, marks the tasks synced and moves them up the change feed.
/// Returns the tasks as stored.
#[instrument(skip_all, fields(tasks = tasks.len()))]
pub async fn save_tasks(
    tx: &Transaction<'_>,
    tasks: &[(Uuid, &TaskState)],
) -> Result<Vec<Task>, tokio_postgres::Error> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let mut c = SaveColumns::default();
    for (id, s) in tasks {
        c.push(*id, s);
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
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::uuid[], \
                     $5::text[], $6::timestamptz[], $7::uuid[], \
                     $8::bool[], $9::timestamptz[], $10::uuid[], \
                     $11::bool[], $12::timestamptz[], $13::uuid[], \
                     $14::timestamptz[], $15::timestamptz[]) \
           AS u(id, title, title_at, title_op, description, description_at, description_op, \
                completed, completed_at, completed_op, is_deleted, deleted_at, deleted_op, \
                created_at, updated_at) \
         WHERE t.id = u.id \
         RETURNING {columns}"
    );
    let rows = tx
        .query(
            &sql,
            &[
                &c.id,
                &c.title,
                &c.title_at,
                &c.title_op,
                &c.description,
                &c.description_at,
                &c.description_op,
                &c.completed,
                &c.completed_at,
                &c.completed_op,
                &c.deleted,
                &c.deleted_at,
                &c.deleted_op,
                &c.created_at,
                &c.updated_at,
            ],
        )
        .await?;
    rows.iter().map(Task::from_row).collect()
}

/// Column-wise parameters of [`save_tasks`].
#[derive(Default)]
struct SaveColumns {
    id: Vec<Uuid>,
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

impl SaveColumns {
    fn push(&mut self, id: Uuid, s: &TaskState) {
        let now = Utc::now();
        self.id.push(id);
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
}

/// Removes placeholder rows that no operation ended up writing.
#[instrument(skip_all, fields(tasks = ids.len()))]
pub async fn delete_placeholders(
    tx: &Transaction<'_>,
    ids: &[Uuid],
) -> Result<(), tokio_postgres::Error> {
    if !ids.is_empty() {
        tx.execute("DELETE FROM tasks WHERE id = ANY($1)", &[&ids])
            .await?;
    }
    Ok(())
}
