//! All SQL of the api. It reads, and writes only what it records of devices (their pushes and
//! pulls, [`devices`]): the worker is the only writer of tasks and of the operation log.
//!
//! Statements are prepared once per pooled connection (`prepare_cached`): a read is then one
//! round trip (bind and execute) instead of two, and Postgres parses it once.
//!
//! Every paged read orders by real, indexed columns (never by a computed output column, which
//! Postgres would pick first for a bare name in `ORDER BY`), fetches one row past the page to
//! learn whether more follow, and stops collecting rows once [`PAGE_TEXT_BUDGET`] bytes of task
//! text are held, so one response holds a bounded amount of memory whatever the rows hold.

use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool, PoolError};
use tasksync_shared::{SyncStatus, Task, failure::RecordState, model::TASK_COLUMNS};
use tokio_postgres::{Statement, error::SqlState};
use uuid::Uuid;

use crate::error::ApiError;

pub mod conflicts;
pub mod devices;
mod feed;
mod list;
mod operations;

pub use feed::{EXPIRED, FeedPage, check_cursor, feed_end, read_feed};
pub use list::{TaskPage, list_tasks};
pub use operations::{OperationRecord, find_operation};

/// Task text (titles and descriptions, plus a fixed allowance per row for the other fields)
/// one page may hold before it is cut short; the client then follows its cursor.
pub const PAGE_TEXT_BUDGET: usize = 4 * 1024 * 1024;
/// What a row's fields other than its title and description take, roughly, as JSON.
const ROW_ALLOWANCE: usize = 320;

/// Sent before each paged read. Every read of the api is served in index order (STYLE 15),
/// but the planner picks by its estimates: on a table that grew before autovacuum analyzed it,
/// or for a user far above the average, it expects a few hundred rows and instead reads every
/// row of the user through a bitmap scan and sorts them, a cost that grows with the user's
/// total and not with the page (a 1,000-row page of a user with 118k tasks: 267 ms instead of
/// 0.6 ms). The api's sessions never need a sort or a bitmap scan, so both are switched off;
/// the settings stay on the pooled connection, which only the api's reads use.
const INDEX_ORDER_ONLY: &str = "SET enable_sort = off; SET enable_bitmapscan = off";

/// Prepares `sql` (once per connection) with [`INDEX_ORDER_ONLY`] in force, in one round trip.
async fn prepare_in_index_order(client: &Object, sql: &str) -> Result<Statement, ApiError> {
    let (_, statement) = tokio::try_join!(
        client.batch_execute(INDEX_ORDER_ONLY),
        client.prepare_cached(sql)
    )?;
    Ok(statement)
}

/// A pooled connection. A database that does not exist (SQLSTATE 3D000: not created yet, or
/// dropped) is "unavailable" like a server that does not answer: the sync-worker creates it.
async fn connection(pool: &Pool) -> Result<Object, ApiError> {
    pool.get().await.map_err(|e| match &e {
        PoolError::Backend(pg) if pg.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            ApiError::Unavailable(
                "database unavailable: postgres has no such database yet (the sync-worker \
                 creates it at start)"
                    .into(),
            )
        }
        _ => e.into(),
    })
}

fn fetch_count(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)
}

/// One of the caller's tasks, deleted or not; `None` when it does not exist for the caller.
pub async fn find_task(pool: &Pool, user: &str, id: Uuid) -> Result<Option<Task>, ApiError> {
    let client = connection(pool).await?;
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2 AND title IS NOT NULL"
    );
    let statement = client.prepare_cached(&sql).await?;
    let row = client.query_opt(&statement, &[&id, &user]).await?;
    Ok(row.as_ref().map(Task::from_row).transpose()?)
}

/// The operation log's view for `/api/status`.
#[derive(Debug)]
pub struct SyncSummary {
    pub last_sync: Option<DateTime<Utc>>,
    pub errored_tasks: i64,
    /// The caller's operations parked for good.
    pub parked_operations: i64,
    /// Deliveries the workers hold unacknowledged, over every worker whose heartbeat is fresh
    /// (`worker_heartbeats`, migration V7).
    pub in_flight: i64,
    /// When the oldest of them was received by its worker; `None` when none is in flight.
    pub oldest_in_flight_at: Option<DateTime<Utc>>,
}

/// Index-backed (migrations V3 and V5): the latest sync is one step down `tasks_by_last_sync`,
/// and the counts visit only the caller's tasks in error (`tasks_in_error`) and parked
/// operations (`operation_failures_parked_by_user`), so the cost does not grow with the
/// caller's other rows.
pub async fn sync_summary(pool: &Pool, user: &str) -> Result<SyncSummary, ApiError> {
    let client = connection(pool).await?;
    // The states are literals in the text, not parameters: a generic plan could not use the
    // partial indexes for a parameter.
    let sql = format!(
        "SELECT (SELECT max(last_synced_at) FROM tasks WHERE user_id = $1) AS last_sync, \
                (SELECT count(*) FROM tasks WHERE user_id = $1 AND sync_status = '{errored}') \
                  AS errored, \
                (SELECT count(*) FROM operation_failures \
                  WHERE user_id = $1 AND state = '{parked}') AS parked, \
                (SELECT coalesce(sum(deliveries_in_flight), 0)::bigint FROM worker_heartbeats \
                  WHERE beat_at > now() - interval '10 seconds') AS in_flight, \
                (SELECT min(oldest_in_flight_at) FROM worker_heartbeats \
                  WHERE beat_at > now() - interval '10 seconds') AS oldest_in_flight_at",
        errored = SyncStatus::Error.as_str(),
        parked = RecordState::Parked.as_str(),
    );
    let statement = client.prepare_cached(&sql).await?;
    let row = client.query_one(&statement, &[&user]).await?;
    Ok(SyncSummary {
        last_sync: row.try_get("last_sync")?,
        errored_tasks: row.try_get("errored")?,
        parked_operations: row.try_get("parked")?,
        in_flight: row.try_get("in_flight")?,
        oldest_in_flight_at: row.try_get("oldest_in_flight_at")?,
    })
}
