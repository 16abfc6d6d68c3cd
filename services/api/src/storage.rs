//! All SQL of the api. It only reads: the worker is the only writer of tasks.
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
use futures_util::TryStreamExt;
use tasksync_shared::{SyncStatus, Task, failure::RecordState, model::TASK_COLUMNS};
use tokio_postgres::{Row, Statement, error::SqlState, types::ToSql};
use uuid::Uuid;

use crate::{cursor::Position, error::ApiError};

mod list;
mod operations;

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

/// Streams the rows of `sql` (which must fetch `limit + 1` rows) and keeps at most `limit`,
/// fewer when [`PAGE_TEXT_BUDGET`] is reached. Returns them and whether more rows followed.
async fn bounded_page(
    client: &Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    limit: usize,
) -> Result<(Vec<Row>, bool), ApiError> {
    let statement = prepare_in_index_order(client, sql).await?;
    let stream = client
        .query_raw(&statement, params.iter().map(|p| *p as &dyn ToSql))
        .await?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut held = 0;
    while let Some(row) = stream.try_next().await? {
        if rows.len() >= limit || held >= PAGE_TEXT_BUDGET {
            // Dropping the stream lets the connection discard the rest.
            return Ok((rows, true));
        }
        held += text_bytes(&row);
        rows.push(row);
    }
    Ok((rows, false))
}

fn text_bytes(row: &Row) -> usize {
    let len = |name: &str| {
        row.try_get::<_, Option<&str>>(name)
            .ok()
            .flatten()
            .map_or(0, str::len)
    };
    ROW_ALLOWANCE + len("title") + len("description")
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

/// One page of the caller's changes feed after `after`, in commit-horizon order, and whether
/// more rows were known past it.
///
/// Only rows whose `change_xid` lies below `pg_snapshot_xmin(pg_current_snapshot())` are
/// served: every transaction below that horizon has ended, so no transaction still running
/// can later commit a change that sorts before what this page hands out. A transaction that
/// stays open only delays the rows after it; it never makes the feed skip them.
///
/// The order is the `xid8` column itself (`tasks.change_xid`), the one the cursor condition
/// compares and the index `tasks_changes (user_id, change_xid, id)` holds; the position goes
/// out as text under another name. Sorting by the text would put 10000 before 9999 and page
/// past changes for good.
pub async fn changes_after(
    pool: &Pool,
    user: &str,
    after: Position,
    limit: usize,
) -> Result<(Vec<(Position, Task)>, bool), ApiError> {
    let client = connection(pool).await?;
    changes_on(&client, user, after, limit).await
}

/// [`changes_after`] on a connection the caller holds.
async fn changes_on(
    client: &Object,
    user: &str,
    after: Position,
    limit: usize,
) -> Result<(Vec<(Position, Task)>, bool), ApiError> {
    let sql = format!(
        "SELECT {TASK_COLUMNS}, change_xid::text AS change_position FROM tasks \
         WHERE user_id = $1 AND title IS NOT NULL \
           AND change_xid < (SELECT pg_snapshot_xmin(pg_current_snapshot())) \
           AND (change_xid, id) > ($2::text::xid8, $3) \
         ORDER BY tasks.change_xid, tasks.id \
         LIMIT $4"
    );
    let xid = after.xid.to_string();
    let params: [&(dyn ToSql + Sync); 4] = [&user, &xid, &after.id, &fetch_count(limit)];
    let (rows, has_more) = bounded_page(client, &sql, &params, limit).await?;
    let page = rows
        .iter()
        .map(|row| {
            let task = Task::from_row(row)?;
            let xid: &str = row.try_get("change_position")?;
            let xid = parse_xid(xid)?;
            Ok((Position { xid, id: task.id }, task))
        })
        .collect::<Result<_, ApiError>>()?;
    Ok((page, has_more))
}

fn parse_xid(xid: &str) -> Result<u64, ApiError> {
    xid.parse()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("xid8 {xid:?}: {e}")))
}

/// The commit horizon: the oldest write transaction still running (every one below it has
/// ended). Read in a statement of its own, so its snapshot is taken before that of a statement
/// sent after it on the same connection.
const HORIZON: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon";

/// A page of the feed, as [`changes_after`] reads it, and a commit horizon that the page's own
/// horizon is at or past.
#[derive(Debug)]
pub struct FeedRead {
    /// Every transaction below this id had ended before the page was read: the page holds
    /// (or precedes) every change they made.
    pub horizon: u64,
    pub page: Vec<(Position, Task)>,
    pub has_more: bool,
}

/// [`changes_after`], with the horizon read just before it on the same connection (both sent
/// together: one round trip more only the first time a connection prepares the horizon).
/// A live stream woken for transaction X knows from `horizon > X` that the page could not have
/// missed X's changes.
pub async fn read_feed(
    pool: &Pool,
    user: &str,
    after: Position,
    limit: usize,
) -> Result<FeedRead, ApiError> {
    let client = connection(pool).await?;
    let horizon = client.prepare_cached(HORIZON).await?;
    // `join!` polls in the order written, and a query is queued at its first poll: the horizon
    // runs first.
    let (horizon, page) = tokio::join!(
        client.query_one(&horizon, &[]),
        changes_on(&client, user, after, limit)
    );
    let horizon: String = horizon?.try_get("horizon")?;
    let (page, has_more) = page?;
    Ok(FeedRead {
        horizon: parse_xid(&horizon)?,
        page,
        has_more,
    })
}

/// The current end of the feed: a position past every change committed so far and before
/// every change still to commit (the horizon, before any task id). A stream that starts there
/// serves exactly what commits from now on; `GET /api/changes` continues from it alike.
pub async fn feed_end(pool: &Pool) -> Result<Position, ApiError> {
    let client = connection(pool).await?;
    let statement = client.prepare_cached(HORIZON).await?;
    let horizon: String = client
        .query_one(&statement, &[])
        .await?
        .try_get("horizon")?;
    Ok(Position {
        xid: parse_xid(&horizon)?,
        id: Uuid::nil(),
    })
}
