//! `GET /api/tasks`: one page of the caller's tasks, written as JSON straight from the rows.
//!
//! A page holds up to 1,000 rows. Rather than building a `Task` per row (three owned strings
//! each), a `Vec` of them, and then serializing that, each row is serialized as it streams in,
//! its text borrowed from the row, into the one buffer that becomes the body. The bytes are
//! those `serde_json` gives for the `Vec<Task>`.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures_util::TryStreamExt;
use serde::Serialize;
use tasksync_shared::{SyncStatus, model::TASK_COLUMNS};
use tokio_postgres::{Row, types::ToSql};
use uuid::Uuid;

use super::{PAGE_TEXT_BUDGET, ROW_ALLOWANCE, connection, fetch_count, prepare_in_index_order};
use crate::{cursor::ListPosition, error::ApiError};

/// One page of the list.
#[derive(Debug)]
pub struct TaskPage {
    /// The tasks as a JSON array.
    pub json: Vec<u8>,
    /// Where the page ends (its last task), `None` when it is empty.
    pub last: Option<ListPosition>,
    /// More tasks follow the page.
    pub has_more: bool,
}

/// A task row as JSON: [`Task`](tasksync_shared::Task)'s fields, names and order, borrowing
/// the text from the row.
#[derive(Serialize)]
struct TaskJson<'a> {
    id: Uuid,
    title: &'a str,
    description: Option<&'a str>,
    completed: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    is_deleted: bool,
    sync_status: SyncStatus,
    server_id: Option<&'a str>,
    last_synced_at: Option<DateTime<Utc>>,
}

impl<'a> TaskJson<'a> {
    /// Reads a row with the columns of [`TASK_COLUMNS`], as `Task::from_row` does.
    fn from_row(row: &'a Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            title: row.try_get::<_, Option<&str>>("title")?.unwrap_or_default(),
            description: row.try_get("description")?,
            completed: row.try_get("completed")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            is_deleted: row.try_get("is_deleted")?,
            sync_status: SyncStatus::from_db(row.try_get("sync_status")?),
            server_id: row.try_get("server_id")?,
            last_synced_at: row.try_get("last_synced_at")?,
        })
    }

    /// What the row counts against [`PAGE_TEXT_BUDGET`].
    fn text_bytes(&self) -> usize {
        ROW_ALLOWANCE + self.title.len() + self.description.map_or(0, str::len)
    }
}

/// One page of the caller's tasks in creation order `(created_at, id)` after `after` (from the
/// start when `None`), deleted ones only when asked: at most `limit`, fewer once
/// [`PAGE_TEXT_BUDGET`] bytes of task text are held. Served by the index
/// `tasks_by_user (user_id, created_at, id) WHERE title IS NOT NULL`, whose order the scan
/// follows ([`INDEX_ORDER_ONLY`](super::INDEX_ORDER_ONLY) sees to it), so a page reads about
/// `limit` index entries whatever the caller's total.
pub async fn list_tasks(
    pool: &Pool,
    user: &str,
    include_deleted: bool,
    after: Option<ListPosition>,
    limit: usize,
) -> Result<TaskPage, ApiError> {
    let client = connection(pool).await?;
    let keyset = if after.is_some() {
        "AND (tasks.created_at, tasks.id) > ($4, $5)"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks \
         WHERE user_id = $1 AND title IS NOT NULL AND ($2 OR NOT is_deleted) {keyset} \
         ORDER BY tasks.created_at, tasks.id \
         LIMIT $3"
    );
    let statement = prepare_in_index_order(&client, &sql).await?;
    let fetch = fetch_count(limit);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&user, &include_deleted, &fetch];
    let position = after.map(|p| (p.created_at, p.id));
    if let Some((created_at, id)) = &position {
        params.extend([created_at as &(dyn ToSql + Sync), id]);
    }
    let rows = client
        .query_raw(&statement, params.iter().map(|p| *p as &dyn ToSql))
        .await?;
    let mut rows = std::pin::pin!(rows);
    let mut page = TaskPage {
        json: Vec::with_capacity(limit.saturating_mul(ROW_ALLOWANCE).min(PAGE_TEXT_BUDGET)),
        last: None,
        has_more: false,
    };
    page.json.push(b'[');
    let (mut count, mut held) = (0, 0);
    while let Some(row) = rows.try_next().await? {
        if count >= limit || held >= PAGE_TEXT_BUDGET {
            // Dropping the stream lets the connection discard the rest.
            page.has_more = true;
            break;
        }
        let task = TaskJson::from_row(&row)?;
        if count > 0 {
            page.json.push(b',');
        }
        serde_json::to_writer(&mut page.json, &task)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("writing a task as JSON: {e}")))?;
        count += 1;
        held += task.text_bytes();
        page.last = Some(ListPosition {
            created_at: task.created_at,
            id: task.id,
        });
    }
    page.json.push(b']');
    Ok(page)
}

#[cfg(test)]
mod tests {
    use tasksync_shared::Task;

    use super::*;

    fn borrowed(task: &Task) -> TaskJson<'_> {
        TaskJson {
            id: task.id,
            title: &task.title,
            description: task.description.as_deref(),
            completed: task.completed,
            created_at: task.created_at,
            updated_at: task.updated_at,
            is_deleted: task.is_deleted,
            sync_status: task.sync_status,
            server_id: task.server_id.as_deref(),
            last_synced_at: task.last_synced_at,
        }
    }

    #[test]
    fn a_row_is_written_as_the_task_would_be() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        let full = Task {
            id: Uuid::new_v4(),
            title: "Buy \"milk\" ✓".into(),
            description: Some("line\nbreak".into()),
            completed: true,
            created_at: at,
            updated_at: at + chrono::Duration::microseconds(1),
            is_deleted: true,
            sync_status: SyncStatus::Error,
            server_id: Some("srv-1".into()),
            last_synced_at: Some(at),
        };
        let bare = Task {
            description: None,
            server_id: None,
            last_synced_at: None,
            sync_status: SyncStatus::Synced,
            ..full.clone()
        };
        for task in [full, bare] {
            assert_eq!(
                serde_json::to_string(&borrowed(&task)).unwrap(),
                serde_json::to_string(&task).unwrap()
            );
        }
    }
}
