//! All SQL of the api. It only reads: the worker is the only writer of tasks.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tasksync_shared::{Task, model::TASK_COLUMNS};
use uuid::Uuid;

use crate::{cursor::Position, error::ApiError};

/// The caller's tasks in creation order; deleted ones only when asked.
pub async fn list_tasks(
    pool: &Pool,
    user: &str,
    include_deleted: bool,
) -> Result<Vec<Task>, ApiError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks \
         WHERE user_id = $1 AND title IS NOT NULL AND ($2 OR NOT is_deleted) \
         ORDER BY created_at, id"
    );
    let rows = client.query(&sql, &[&user, &include_deleted]).await?;
    Ok(rows.iter().map(Task::from_row).collect::<Result<_, _>>()?)
}

/// One of the caller's tasks, deleted or not; `None` when it does not exist for the caller.
pub async fn find_task(pool: &Pool, user: &str, id: Uuid) -> Result<Option<Task>, ApiError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2 AND title IS NOT NULL"
    );
    let row = client.query_opt(&sql, &[&id, &user]).await?;
    Ok(row.as_ref().map(Task::from_row).transpose()?)
}

/// The operation log's view for `/api/status`.
#[derive(Debug)]
pub struct SyncSummary {
    pub last_sync: Option<DateTime<Utc>>,
    pub errored_tasks: i64,
}

pub async fn sync_summary(pool: &Pool, user: &str) -> Result<SyncSummary, ApiError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT (SELECT max(last_synced_at) FROM tasks WHERE user_id = $1), \
                    (SELECT count(*) FROM tasks WHERE user_id = $1 AND sync_status = 'error')",
            &[&user],
        )
        .await?;
    Ok(SyncSummary {
        last_sync: row.try_get(0)?,
        errored_tasks: row.try_get(1)?,
    })
}

/// One page of the caller's changes feed after `after`, in commit-horizon order, and whether
/// more rows were known past it.
///
/// Only rows whose `change_xid` lies below `pg_snapshot_xmin(pg_current_snapshot())` are
/// served: every transaction below that horizon has ended, so no transaction still running
/// can later commit a change that sorts before what this page hands out. A transaction that
/// stays open only delays the rows after it; it never makes the feed skip them.
pub async fn changes_after(
    pool: &Pool,
    user: &str,
    after: Position,
    limit: usize,
) -> Result<(Vec<(Position, Task)>, bool), ApiError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {TASK_COLUMNS}, change_xid::text FROM tasks \
         WHERE user_id = $1 AND title IS NOT NULL \
           AND change_xid < (SELECT pg_snapshot_xmin(pg_current_snapshot())) \
           AND (change_xid, id) > ($2::text::xid8, $3) \
         ORDER BY change_xid, id \
         LIMIT $4"
    );
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let rows = client
        .query(&sql, &[&user, &after.xid.to_string(), &after.id, &fetch])
        .await?;
    let has_more = rows.len() > limit;
    let column = TASK_COLUMNS.split(',').count();
    let page = rows
        .iter()
        .take(limit)
        .map(|row| {
            let task = Task::from_row(row)?;
            let xid: &str = row.try_get(column)?;
            let xid = xid
                .parse()
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("change_xid {xid:?}: {e}")))?;
            Ok((Position { xid, id: task.id }, task))
        })
        .collect::<Result<_, ApiError>>()?;
    Ok((page, has_more))
}

/// One operation as the operation log (or, while it is retried, its failure record) knows it.
#[derive(Debug)]
pub struct OperationRecord {
    pub op_id: Uuid,
    pub task_id: Uuid,
    pub kind: String,
    /// `success`, `conflict`, `error`, or `pending` while it is being retried.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub client_ts: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
}

/// The caller's operation `op_id`: from the log once decided, else from its failure record
/// while the worker retries it; `None` when neither knows it (still queued, or never
/// accepted).
pub async fn find_operation(
    pool: &Pool,
    user: &str,
    op_id: Uuid,
) -> Result<Option<OperationRecord>, ApiError> {
    let client = pool.get().await?;
    let decided = client
        .query_opt(
            "SELECT op_id, task_id, kind, outcome, attempts, last_error, client_ts, received_at, \
                    decided_at, first_failed_at, last_failed_at \
             FROM operations WHERE op_id = $1 AND user_id = $2",
            &[&op_id, &user],
        )
        .await?;
    if let Some(row) = decided {
        return Ok(Some(OperationRecord {
            op_id: row.try_get(0)?,
            task_id: row.try_get(1)?,
            kind: row.try_get(2)?,
            status: row.try_get(3)?,
            attempts: row.try_get(4)?,
            last_error: row.try_get(5)?,
            client_ts: row.try_get(6)?,
            received_at: row.try_get(7)?,
            decided_at: row.try_get(8)?,
            first_failed_at: row.try_get(9)?,
            last_failed_at: row.try_get(10)?,
        }));
    }
    // Not decided: a failure record that is not final means the worker is still retrying it.
    let failing = client
        .query_opt(
            "SELECT op_id, task_id, kind, state, attempts, last_error, first_failed_at, \
                    last_failed_at \
             FROM operation_failures WHERE op_id = $1 AND user_id = $2 \
             ORDER BY last_failed_at DESC LIMIT 1",
            &[&op_id, &user],
        )
        .await?;
    let Some(row) = failing else {
        return Ok(None);
    };
    let state: &str = row.try_get(3)?;
    Ok(Some(OperationRecord {
        op_id: row.try_get(0)?,
        task_id: row.try_get::<_, Option<Uuid>>(1)?.unwrap_or_default(),
        kind: row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
        status: match state {
            "retrying" | "replayed" => "pending",
            _ => "error",
        }
        .into(),
        attempts: row.try_get(4)?,
        last_error: row.try_get(5)?,
        client_ts: None,
        received_at: None,
        decided_at: None,
        first_failed_at: row.try_get(6)?,
        last_failed_at: row.try_get(7)?,
    }))
}
