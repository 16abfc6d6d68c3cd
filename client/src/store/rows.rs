//! A task row: the task's per-field last-write-wins registers (value, time, op id) and its sync
//! bookkeeping, read and written by column name.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, named_params, types::Type};
use tasksync_shared::{
    SyncStatus, Task,
    merge::{Register, Stamp, TaskState},
};
use uuid::Uuid;

use crate::error::{Error, Result};

/// One stored task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TaskRow {
    pub id: Uuid,
    /// The task as this device shows it: the server's copy with undecided local edits merged in.
    pub state: TaskState,
    pub created_at: DateTime<Utc>,
    pub sync_status: SyncStatus,
    pub server_id: Option<String>,
    pub last_synced_at: Option<DateTime<Utc>>,
}

impl TaskRow {
    /// The task as the API spells one.
    pub fn task(&self) -> Task {
        let s = &self.state;
        Task {
            id: self.id,
            title: s
                .title
                .as_ref()
                .map(|r| r.value.clone())
                .unwrap_or_default(),
            description: s.description.as_ref().and_then(|r| r.value.clone()),
            completed: s.completed.as_ref().is_some_and(|r| r.value),
            created_at: self.created_at,
            updated_at: s.updated_at().unwrap_or(self.created_at),
            is_deleted: s.is_deleted(),
            sync_status: self.sync_status,
            server_id: self.server_id.clone(),
            last_synced_at: self.last_synced_at,
        }
    }
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn conversion(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, Type::Text, message.into())
}

pub(crate) fn time(us: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| conversion(format!("bad time {us}")))
}

pub(crate) fn uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| Error::Corrupt(format!("bad id {text:?}")))
}

fn sql_uuid(text: &str) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| conversion(format!("bad id {text:?}")))
}

pub(crate) fn parse_status(text: &str) -> rusqlite::Result<SyncStatus> {
    [SyncStatus::Pending, SyncStatus::Synced, SyncStatus::Error]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| conversion(format!("bad sync status {text:?}")))
}

/// The stamp in `<field>_at` and `<field>_op`; `None` when the field was never written.
fn stamp(row: &Row, field: &str) -> rusqlite::Result<Option<Stamp>> {
    let at: Option<i64> = row.get(format!("{field}_at").as_str())?;
    let op: Option<String> = row.get(format!("{field}_op").as_str())?;
    match (at, op) {
        (Some(at), Some(op)) => Ok(Some(Stamp {
            at: time(at)?,
            op_id: sql_uuid(&op)?,
        })),
        _ => Ok(None),
    }
}

fn register<T>(
    row: &Row,
    field: &str,
    value: impl FnOnce() -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<Register<T>>> {
    stamp(row, field)?
        .map(|stamp| {
            Ok(Register {
                value: value()?,
                stamp,
            })
        })
        .transpose()
}

pub(crate) fn read_row(row: &Row) -> rusqlite::Result<TaskRow> {
    let title = register(row, "title", || {
        Ok(row.get::<_, Option<String>>("title")?.unwrap_or_default())
    })?;
    let description = register(row, "description", || row.get("description"))?;
    let completed = register(row, "completed", || {
        Ok(row.get::<_, Option<bool>>("completed")?.unwrap_or(false))
    })?;
    let deleted = register(row, "deleted", || row.get("is_deleted"))?;
    let created_at = time(row.get("created_at")?)?;
    let id: String = row.get("id")?;
    let status: String = row.get("sync_status")?;
    Ok(TaskRow {
        id: sql_uuid(&id)?,
        state: TaskState {
            title,
            description,
            completed,
            deleted,
            created_at: Some(created_at),
        },
        created_at,
        sync_status: parse_status(&status)?,
        server_id: row.get("server_id")?,
        last_synced_at: row
            .get::<_, Option<i64>>("last_synced_at")?
            .map(time)
            .transpose()?,
    })
}

pub(crate) fn find(conn: &Connection, id: Uuid) -> Result<Option<TaskRow>> {
    Ok(conn
        .query_row(
            "SELECT * FROM tasks WHERE id = ?1",
            [id.to_string()],
            read_row,
        )
        .optional()?)
}

pub(crate) fn write(conn: &Connection, row: &TaskRow) -> Result<()> {
    let s = &row.state;
    let at = |st: Option<&Stamp>| st.map(|st| micros(st.at));
    let op = |st: Option<&Stamp>| st.map(|st| st.op_id.to_string());
    let title = s.title.as_ref();
    let description = s.description.as_ref();
    let completed = s.completed.as_ref();
    let deleted = s.deleted.as_ref();
    let task = row.task();
    conn.execute(
        "INSERT INTO tasks (id, title, title_at, title_op, description, description_at,
             description_op, completed, completed_at, completed_op, is_deleted, deleted_at,
             deleted_op, created_at, updated_at, sync_status, server_id, last_synced_at)
         VALUES (:id, :title, :title_at, :title_op, :description, :description_at,
             :description_op, :completed, :completed_at, :completed_op, :is_deleted, :deleted_at,
             :deleted_op, :created_at, :updated_at, :sync_status, :server_id, :last_synced_at)
         ON CONFLICT (id) DO UPDATE SET
             title = excluded.title, title_at = excluded.title_at, title_op = excluded.title_op,
             description = excluded.description, description_at = excluded.description_at,
             description_op = excluded.description_op, completed = excluded.completed,
             completed_at = excluded.completed_at, completed_op = excluded.completed_op,
             is_deleted = excluded.is_deleted, deleted_at = excluded.deleted_at,
             deleted_op = excluded.deleted_op, created_at = excluded.created_at,
             updated_at = excluded.updated_at, sync_status = excluded.sync_status,
             server_id = excluded.server_id, last_synced_at = excluded.last_synced_at",
        named_params! {
            ":id": row.id.to_string(),
            ":title": title.map(|r| r.value.clone()),
            ":title_at": at(title.map(|r| &r.stamp)),
            ":title_op": op(title.map(|r| &r.stamp)),
            ":description": description.and_then(|r| r.value.clone()),
            ":description_at": at(description.map(|r| &r.stamp)),
            ":description_op": op(description.map(|r| &r.stamp)),
            ":completed": completed.map(|r| r.value),
            ":completed_at": at(completed.map(|r| &r.stamp)),
            ":completed_op": op(completed.map(|r| &r.stamp)),
            ":is_deleted": task.is_deleted,
            ":deleted_at": at(deleted.map(|r| &r.stamp)),
            ":deleted_op": op(deleted.map(|r| &r.stamp)),
            ":created_at": micros(row.created_at),
            ":updated_at": micros(task.updated_at),
            ":sync_status": row.sync_status.as_str(),
            ":server_id": row.server_id,
            ":last_synced_at": row.last_synced_at.map(micros),
        },
    )?;
    Ok(())
}

/// Sets a task's sync status.
pub(crate) fn set_status(conn: &Connection, id: Uuid, status: SyncStatus) -> Result<()> {
    conn.execute(
        "UPDATE tasks SET sync_status = ?2 WHERE id = ?1",
        [id.to_string(), status.as_str().to_string()],
    )?;
    Ok(())
}
