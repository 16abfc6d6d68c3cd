//! Local CRUD. Each change validates with the server's own rules, updates the task, marks it
//! `pending` and enqueues its operation, in one transaction: a change is either stored with its
//! queue entry or not at all.

use chrono::{DateTime, Duration, Utc};
use tasksync_shared::{
    OpKind, OperationFields, SyncStatus, Task, merge::TaskState, model::to_db_precision, validate,
};
use uuid::Uuid;

use super::{
    Store,
    queue::enqueue,
    rows::{self, TaskRow},
};
use crate::error::{Error, Result};

/// A task to create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewTask {
    /// The task id; a fresh UUID when `None` (the client chooses task ids).
    pub id: Option<Uuid>,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
}

/// A partial update: `None` leaves a field alone; `description: Some(None)` clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edit {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub completed: Option<bool>,
}

/// The time of a new edit of a task last written at `last`: now, at the server's precision,
/// but always after `last`, so that a device's own edits keep their order even within one
/// microsecond or when its clock stepped back.
fn next_stamp(last: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let now = to_db_precision(Utc::now());
    match last {
        Some(last) if now <= last => last + Duration::microseconds(1),
        _ => now,
    }
}

impl Store {
    pub fn add(&mut self, new: NewTask) -> Result<Task> {
        let fields = validate::normalize(
            OpKind::Create,
            OperationFields {
                title: Some(new.title),
                description: new.description.map(Some),
                completed: Some(new.completed),
            },
        )?;
        let id = new.id.unwrap_or_else(Uuid::new_v4);
        let tx = self.conn.transaction()?;
        if rows::find(&tx, id)?.is_some() {
            return Err(Error::Exists(id));
        }
        let at = next_stamp(None);
        let op = enqueue(&tx, id, OpKind::Create, fields, at)?;
        let mut state = TaskState::default();
        state.apply(&op.write());
        let row = TaskRow {
            id,
            state,
            created_at: at,
            sync_status: SyncStatus::Pending,
            server_id: None,
            last_synced_at: None,
        };
        rows::write(&tx, &row)?;
        tx.commit()?;
        Ok(row.task())
    }

    pub fn edit(&mut self, id: Uuid, edit: Edit) -> Result<Task> {
        let fields = validate::normalize(
            OpKind::Update,
            OperationFields {
                title: edit.title,
                description: edit.description,
                completed: edit.completed,
            },
        )?;
        self.change(id, OpKind::Update, fields)
    }

    /// Soft-deletes a task (a tombstone that syncs like any edit).
    pub fn delete(&mut self, id: Uuid) -> Result<Task> {
        self.change(id, OpKind::Delete, OperationFields::default())
    }

    fn change(&mut self, id: Uuid, kind: OpKind, fields: OperationFields) -> Result<Task> {
        let tx = self.conn.transaction()?;
        let Some(mut row) = rows::find(&tx, id)?.filter(|r| !r.state.is_deleted()) else {
            return Err(Error::NotFound(id.to_string()));
        };
        let at = next_stamp(row.state.updated_at());
        let op = enqueue(&tx, id, kind, fields, at)?;
        row.state.apply(&op.write());
        row.sync_status = SyncStatus::Pending;
        rows::write(&tx, &row)?;
        tx.commit()?;
        Ok(row.task())
    }

    /// One task, deleted or not.
    pub fn task(&self, id: Uuid) -> Result<Option<Task>> {
        Ok(rows::find(&self.conn, id)?.map(|r| r.task()))
    }

    /// The tasks in creation order; deleted ones only when asked.
    pub fn tasks(&self, include_deleted: bool) -> Result<Vec<Task>> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM tasks WHERE ?1 OR is_deleted = 0 ORDER BY created_at, id")?;
        let rows = stmt.query_map([include_deleted], rows::read_row)?;
        Ok(rows
            .map(|r| r.map(|r| r.task()))
            .collect::<rusqlite::Result<_>>()?)
    }
}
