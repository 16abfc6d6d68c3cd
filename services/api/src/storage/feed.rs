//! The changes feed read from a cursor: the caller's task changes and decisions (acks) in one
//! range of feed positions, for `GET /api/changes` and for anything else that serves the feed
//! (the events stream reads it the same way).
//!
//! Positions: a task change is `(tasks.change_xid, tasks.id)`, a decision
//! `(operations.decided_xid, task_id)` (migration V8); a decision and the change it caused share
//! one. Only positions below the commit horizon `pg_snapshot_xmin(pg_current_snapshot())` are
//! served: every transaction below it has ended, so nothing can later commit behind a cursor
//! handed out. Orders are the `xid8` columns themselves (indexes `tasks_changes` and
//! `operations_feed`), never their text: sorting the text would put 10000 before 9999.
//!
//! A page is the range `(after, next]`: up to `limit` task rows; the acks in the same range, at
//! most `limit` of them (if more fall in the range, the page ends at the last position whose
//! acks all fit, and the task rows past it wait for the next page; the acks of one position are
//! never split, so a position holding more than `limit` comes whole). On the last page the
//! range runs to the horizon: `next` is past every position below it, so the cursor moves past
//! decisions without a task row, and past the end even when nothing changed.
//!
//! Everything is read in one repeatable-read snapshot: the horizon, the rows, and the retention
//! record ([`FeedCursor::expired`]) agree, so a sweep that commits while the page is read either
//! left the rows in it or makes the cursor expire.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use futures_util::TryStreamExt;
use tasksync_shared::{
    OpKind, OutcomeStatus, Task,
    model::TASK_COLUMNS,
    sync::{Ack, ChangesPage},
};
use tokio_postgres::{IsolationLevel, Row, Statement, types::ToSql};

use super::{INDEX_ORDER_ONLY, PAGE_TEXT_BUDGET, ROW_ALLOWANCE, connection, fetch_count};
use crate::{
    client_error::client_error,
    cursor::{FeedCursor, Position},
    error::ApiError,
};

/// One page of the feed, each item with its position (the events stream sends each one with
/// the cursor of its position: [`FeedPage::cursor_at`]).
#[derive(Debug)]
pub struct FeedPage {
    pub changes: Vec<(Position, Task)>,
    pub acks: Vec<(Position, Ack)>,
    /// Where the next page starts.
    pub next: Position,
    /// More rows are ready past `next`.
    pub has_more: bool,
    /// The retention generation the page was read under, carried by its cursors.
    pub generation: u64,
    /// The commit horizon the page was read under: every transaction below it had ended, so
    /// the page holds (or precedes) every change and decision they made.
    pub horizon: u64,
}

impl FeedPage {
    /// The cursor of `position` read under this page's generation.
    pub fn cursor_at(&self, position: Position) -> String {
        FeedCursor {
            position,
            generation: self.generation,
        }
        .encode()
    }

    /// The page as `GET /api/changes` answers it.
    pub fn into_answer(self, server_time: DateTime<Utc>) -> ChangesPage {
        ChangesPage {
            next_cursor: self.cursor_at(self.next),
            changes: self.changes.into_iter().map(|(_, task)| task).collect(),
            acks: self.acks.into_iter().map(|(_, ack)| ack).collect(),
            has_more: self.has_more,
            server_time,
        }
    }
}

/// The message of a 410: what the client does about it.
pub const EXPIRED: &str = "since: the cursor is older than the retention horizon; resync: pull \
    from an empty cursor to the end, replace your copy with what it returns, keep your unpushed \
    edits and push them";

/// `Err(CursorExpired)` when retention removed rows that `after` had not reached; for a cursor
/// taken from elsewhere (the events stream's `Last-Event-ID`). [`read_feed`] checks it itself.
pub async fn check_cursor(pool: &Pool, after: FeedCursor) -> Result<(), ApiError> {
    let client = connection(pool).await?;
    let statement = client.prepare_cached(EDGE).await?;
    let edge = Edge::from_row(&client.query_one(&statement, &[]).await?)?;
    edge.check(after)
}

/// The current end of the feed: a position past every change committed so far and before
/// every change still to commit (the horizon, before any task id). A stream that starts there
/// serves exactly what commits from now on; `GET /api/changes` continues from it alike.
pub async fn feed_end(pool: &Pool) -> Result<Position, ApiError> {
    let client = connection(pool).await?;
    let statement = client
        .prepare_cached("SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon")
        .await?;
    let row = client.query_one(&statement, &[]).await?;
    Ok(Position {
        xid: parse_xid(row.try_get("horizon")?)?,
        id: uuid::Uuid::nil(),
    })
}

/// One page of `user`'s feed after `after` (see the module).
pub async fn read_feed(
    pool: &Pool,
    user: &str,
    after: FeedCursor,
    limit: usize,
) -> Result<FeedPage, ApiError> {
    let mut client = connection(pool).await?;
    let (_, tasks_sql, acks_sql, edge_sql) = tokio::try_join!(
        client.batch_execute(INDEX_ORDER_ONLY),
        client.prepare_cached(&TASKS),
        client.prepare_cached(ACKS),
        client.prepare_cached(EDGE),
    )?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let at = after.position;
    let xid = at.xid.to_string();
    let fetch = fetch_count(limit);
    let params: [&(dyn ToSql + Sync); 4] = [&user, &xid, &at.id, &fetch];
    let (tasks, acks, edge) = tokio::join!(
        task_rows(&tx, &tasks_sql, &params, limit),
        tx.query(&acks_sql, &params),
        tx.query_one(&edge_sql, &[]),
    );
    let edge = Edge::from_row(&edge?)?;
    edge.check(after)?;
    let (tasks, more_tasks) = tasks?;
    let acks = acks?
        .iter()
        .map(ack_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let mut page = assemble(at, tasks, more_tasks, acks, limit, edge.horizon);
    if let Some(whole) = page.split_position.take() {
        // One position holds more acks than the page may: it comes whole, alone.
        let exact = tx.prepare_cached(ACKS_AT).await?;
        let xid = whole.xid.to_string();
        let rows = tx.query(&exact, &[&user, &xid, &whole.id]).await?;
        page.acks = rows.iter().map(ack_from_row).collect::<Result<_, _>>()?;
    }
    tx.commit().await?;
    Ok(FeedPage {
        changes: page.changes,
        acks: page.acks,
        next: page.next,
        has_more: page.has_more,
        generation: edge.generation,
        horizon: edge.horizon,
    })
}

/// The task rows of the page: `$1` user, `($2, $3)` the position after which, `$4` rows.
static TASKS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TASK_COLUMNS}, change_xid::text AS change_position FROM tasks \
         WHERE user_id = $1 AND title IS NOT NULL \
           AND change_xid < (SELECT pg_snapshot_xmin(pg_current_snapshot())) \
           AND (change_xid, id) > ($2::text::xid8, $3) \
         ORDER BY tasks.change_xid, tasks.id \
         LIMIT $4"
    )
});

/// The caller's decisions after a position, in feed order: `$1` user, `($2, $3)` the position
/// after which, `$4` rows.
const ACKS: &str = "\
    SELECT op_id, task_id, kind, outcome, attempts, last_error, \
           first_failed_at IS NOT NULL AS failed_an_attempt, decided_at, \
           decided_xid::text AS position \
    FROM operations \
    WHERE user_id = $1 \
      AND decided_xid < (SELECT pg_snapshot_xmin(pg_current_snapshot())) \
      AND (decided_xid, task_id) > ($2::text::xid8, $3) \
    ORDER BY operations.decided_xid, operations.task_id, operations.op_id \
    LIMIT $4";

/// Every decision of the caller at one position.
const ACKS_AT: &str = "\
    SELECT op_id, task_id, kind, outcome, attempts, last_error, \
           first_failed_at IS NOT NULL AS failed_an_attempt, decided_at, \
           decided_xid::text AS position \
    FROM operations \
    WHERE user_id = $1 AND decided_xid = $2::text::xid8 AND task_id = $3 \
    ORDER BY operations.op_id";

/// The horizon and the retention record, in the page's snapshot.
const EDGE: &str = "\
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon, \
           coalesce(r.pruned_xid, '0')::text AS pruned_xid, \
           coalesce(r.pruned_task, '00000000-0000-0000-0000-000000000000') AS pruned_task, \
           coalesce(r.generation, 0) AS generation \
    FROM (SELECT 1) AS one LEFT JOIN feed_retention r ON true";

/// Where the feed ends and what retention removed.
#[derive(Debug)]
struct Edge {
    horizon: u64,
    pruned: Position,
    generation: u64,
}

impl Edge {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        let generation: i64 = row.try_get("generation")?;
        Ok(Self {
            horizon: parse_xid(row.try_get("horizon")?)?,
            pruned: Position {
                xid: parse_xid(row.try_get("pruned_xid")?)?,
                id: row.try_get("pruned_task")?,
            },
            generation: u64::try_from(generation).unwrap_or_default(),
        })
    }

    fn check(&self, after: FeedCursor) -> Result<(), ApiError> {
        if after.expired(self.pruned, self.generation) {
            return Err(ApiError::CursorExpired(EXPIRED.into()));
        }
        Ok(())
    }
}

fn parse_xid(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("transaction id {text:?}: {e}")))
}

/// Streams the task rows (the statement fetches `limit + 1`) and keeps at most `limit`, fewer
/// once [`PAGE_TEXT_BUDGET`] bytes of task text are held. Returns them and whether more
/// followed.
async fn task_rows(
    tx: &Transaction<'_>,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
    limit: usize,
) -> Result<(Vec<(Position, Task)>, bool), ApiError> {
    let stream = tx
        .query_raw(statement, params.iter().map(|p| *p as &dyn ToSql))
        .await?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut held = 0;
    while let Some(row) = stream.try_next().await? {
        if rows.len() >= limit || held >= PAGE_TEXT_BUDGET {
            // Dropping the stream lets the connection discard the rest.
            return Ok((rows, true));
        }
        let task = Task::from_row(&row)?;
        held += ROW_ALLOWANCE + task.title.len() + task.description.as_deref().map_or(0, str::len);
        let xid = parse_xid(row.try_get("change_position")?)?;
        rows.push((Position { xid, id: task.id }, task));
    }
    Ok((rows, false))
}

fn ack_from_row(row: &Row) -> Result<(Position, Ack), ApiError> {
    let kind: &str = row.try_get("kind")?;
    let outcome = OutcomeStatus::from_db(row.try_get("outcome")?);
    let raw: Option<&str> = row.try_get("last_error")?;
    let error = match outcome {
        OutcomeStatus::Error => client_error(
            raw,
            row.try_get("failed_an_attempt")?,
            row.try_get("attempts")?,
            false,
        ),
        OutcomeStatus::Success | OutcomeStatus::Conflict => None,
    };
    let ack = Ack {
        op_id: row.try_get("op_id")?,
        task_id: row.try_get("task_id")?,
        operation: OpKind::parse(kind)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("operation kind {kind:?}")))?,
        outcome,
        error,
        decided_at: row.try_get("decided_at")?,
    };
    let position = Position {
        xid: parse_xid(row.try_get("position")?)?,
        id: ack.task_id,
    };
    Ok((position, ack))
}

/// A page put together from what was read, before any second look.
#[derive(Debug, PartialEq)]
struct Assembled {
    changes: Vec<(Position, Task)>,
    acks: Vec<(Position, Ack)>,
    next: Position,
    has_more: bool,
    /// The page is this one position, whose acks must be read whole.
    split_position: Option<Position>,
}

/// The page's range and what falls in it (see the module). `tasks` are the first task rows
/// after `after` (`more_tasks`: others follow), `acks` the first `limit + 1` decisions after
/// it, both below `horizon`.
fn assemble(
    after: Position,
    tasks: Vec<(Position, Task)>,
    more_tasks: bool,
    mut acks: Vec<(Position, Ack)>,
    limit: usize,
    horizon: u64,
) -> Assembled {
    // The range the task rows allow: to the last one when more follow, else to the horizon.
    let mut end = match tasks.last() {
        Some((last, _)) if more_tasks => *last,
        _ => Position::end_below(horizon).max(after),
    };
    let mut has_more = more_tasks;
    let mut split_position = None;
    if acks.len() > limit && acks[limit].0 <= end {
        // More acks in the range than fit: end at the last position whose acks all fit.
        let first_left_out = acks[limit].0;
        match acks[..limit]
            .iter()
            .rev()
            .find(|(p, _)| *p < first_left_out)
        {
            Some((fits, _)) => end = *fits,
            None => {
                end = first_left_out;
                split_position = Some(first_left_out);
            }
        }
        has_more = true;
    }
    acks.retain(|(p, _)| *p <= end);
    let changes: Vec<_> = tasks.into_iter().filter(|(p, _)| *p <= end).collect();
    Assembled {
        changes,
        acks,
        next: end,
        has_more,
        split_position,
    }
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
