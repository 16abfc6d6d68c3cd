//! All SQL of the api. It only reads: the worker is the only writer of tasks.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tasksync_shared::{Task, model::TASK_COLUMNS};
use uuid::Uuid;

use crate::error::ApiError;

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

/// Whether Postgres answers and the schema is there.
pub async fn database_ready(pool: &Pool) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one("SELECT to_regclass('public.operations') IS NOT NULL", &[])
        .await
        .map_err(|e| e.to_string())?;
    match row.try_get::<_, bool>(0) {
        Ok(true) => Ok(()),
        Ok(false) => Err("schema not created yet (the sync-worker migrates at start)".into()),
        Err(e) => Err(e.to_string()),
    }
}
