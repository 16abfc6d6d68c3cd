//! Retention: what a sweep removes below the horizon, and the feed position it records.
//!
//! The sync-worker sweeps every `RETENTION_SWEEP_SECS` with the horizon `RETENTION_DAYS` ago;
//! `taskctl prune [--before T]` runs one sweep now. Both call [`sweep`]. A sweep removes, in
//! chunks of [`CHUNK`] rows, each chunk its own short transaction:
//! - decisions of the operation log (`operations`) decided before the horizon;
//! - tombstones (deleted tasks) not changed since the horizon, each under the task's advisory
//!   lock (the one the worker takes to apply), so an operation being applied to it is never
//!   lost;
//! - failure records in a final state (`resolved`, `replayed`, `purged`) whose last failure is
//!   older than the horizon (`retrying` and `parked` ones stay: they still need an operator).
//!
//! - conflict records (`task_conflicts`, migration V9) recorded before the horizon (not in the
//!   feed, so they raise no position).
//!
//! Each chunk that removes feed rows records, in the same transaction, in the one-row
//! `feed_retention`: the highest feed position removed, and one more removal (`generation`).
//! The api answers a pull from a cursor below that position, handed out before the latest
//! removal, with 410 (`cursor_expired`). One sweep runs at a time: a sweep holds a session
//! advisory lock on a connection of its own (closed afterwards, so the lock cannot outlive the
//! sweep even when it is cancelled); another sweep that finds it taken does nothing.

use chrono::{DateTime, Utc};
use deadpool_postgres::{ClientWrapper, Object, Pool};
use serde::Serialize;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::db::RoundError;

/// Rows one chunk removes at most.
pub const CHUNK: i64 = 1_000;

/// The advisory lock a sweep holds (two-key form: a space apart from the worker's per-task
/// keys, which use the one-key form).
const SWEEP_LOCK: (i32, i32) = (0x7461_736b, 0x7072_756e); // "task", "prun"

/// What one sweep removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// The horizon: rows older than this were removed.
    pub before: DateTime<Utc>,
    /// False when another sweep held the lock: this one removed nothing.
    pub ran: bool,
    pub operations: u64,
    pub tombstones: u64,
    pub failure_records: u64,
    pub conflicts: u64,
    /// The highest feed position removed so far (by any sweep), as `(xid, task id)`.
    pub pruned_xid: u64,
    pub pruned_task: Uuid,
    /// Removals of feed rows so far (by any sweep).
    pub generation: i64,
}

/// Removes what lies before `before` (see the module), one sweep at a time.
pub async fn sweep(pool: &Pool, before: DateTime<Utc>) -> Result<SweepReport, RoundError> {
    // A connection of its own, closed when dropped: the session lock ends with it.
    let mut client: ClientWrapper = Object::take(pool.get().await?);
    let mut report = SweepReport {
        before,
        ..SweepReport::default()
    };
    let locked: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2) AS locked",
            &[&SWEEP_LOCK.0, &SWEEP_LOCK.1],
        )
        .await?
        .try_get("locked")?;
    if !locked {
        return Ok(report);
    }
    report.ran = true;
    report.operations = chunked(&client, &prune_operations(), before).await?;
    report.tombstones = prune_tombstones(&mut client, before).await?;
    report.failure_records = chunked(&client, PRUNE_FAILURES, before).await?;
    report.conflicts = chunked(&client, PRUNE_CONFLICTS, before).await?;
    let row = client
        .query_one(
            "SELECT pruned_xid::text AS xid, pruned_task, generation FROM feed_retention",
            &[],
        )
        .await?;
    let xid: String = row.try_get("xid")?;
    report.pruned_xid = xid
        .parse()
        .map_err(|e| RoundError::Refused(format!("feed_retention.pruned_xid {xid:?}: {e}")))?;
    report.pruned_task = row.try_get("pruned_task")?;
    report.generation = row.try_get("generation")?;
    Ok(report)
}

/// Records the removal of the feed rows of `gone` (`xid`, `id`): `feed_retention` rises to the
/// highest position among them (never falls), and its generation counts one more removal.
/// Appended to a statement whose `gone` CTE deletes and returns them; `$1` is the horizon.
const RAISE: &str = "\
    top AS (SELECT xid, id FROM gone ORDER BY xid DESC, id DESC LIMIT 1), \
    raised AS ( \
      UPDATE feed_retention r SET \
        pruned_xid = CASE WHEN (top.xid, top.id) > (r.pruned_xid, r.pruned_task) \
                          THEN top.xid ELSE r.pruned_xid END, \
        pruned_task = CASE WHEN (top.xid, top.id) > (r.pruned_xid, r.pruned_task) \
                           THEN top.id ELSE r.pruned_task END, \
        generation = r.generation + 1, horizon = $1, swept_at = now() \
      FROM top RETURNING 1) \
    SELECT count(*) AS removed FROM gone";

/// One chunk of decisions older than `$1` (at most `$2`), and the position they had.
fn prune_operations() -> String {
    format!(
        "WITH gone AS ( \
           DELETE FROM operations WHERE op_id IN ( \
             SELECT op_id FROM operations WHERE decided_at < $1 ORDER BY decided_at LIMIT $2) \
           RETURNING decided_xid AS xid, task_id AS id), \
         {RAISE}"
    )
}

/// One chunk of final failure records older than `$1` (at most `$2`); not in the feed.
const PRUNE_FAILURES: &str = "\
    WITH gone AS ( \
      DELETE FROM operation_failures WHERE message_id IN ( \
        SELECT message_id FROM operation_failures \
        WHERE state IN ('resolved', 'replayed', 'purged') AND last_failed_at < $1 \
        ORDER BY last_failed_at LIMIT $2) \
      RETURNING 1) \
    SELECT count(*) AS removed FROM gone";

/// One chunk of conflict records recorded before `$1` (at most `$2`); not in the feed.
const PRUNE_CONFLICTS: &str = "\
    WITH gone AS ( \
      DELETE FROM task_conflicts WHERE id IN ( \
        SELECT id FROM task_conflicts WHERE recorded_at < $1 ORDER BY recorded_at LIMIT $2) \
      RETURNING 1) \
    SELECT count(*) AS removed FROM gone";

/// Runs `sql` (a chunk: `$1` the horizon, `$2` the chunk size, answering `removed`) until a
/// chunk removes less than a full chunk. Each chunk is its own transaction (one statement).
async fn chunked(client: &Client, sql: &str, before: DateTime<Utc>) -> Result<u64, RoundError> {
    let statement = client.prepare(sql).await?;
    let mut total = 0;
    loop {
        let removed: i64 = client
            .query_one(&statement, &[&before, &CHUNK])
            .await?
            .try_get("removed")?;
        total += u64::try_from(removed).unwrap_or_default();
        if removed < CHUNK {
            return Ok(total);
        }
    }
}

/// Tombstones not changed since `before`, a chunk at a time: each chunk takes the advisory
/// locks of its tasks (in the worker's global order, so neither ever waits for the other in a
/// cycle), checks again under them, deletes and raises the recorded position in one
/// transaction.
async fn prune_tombstones(
    client: &mut ClientWrapper,
    before: DateTime<Utc>,
) -> Result<u64, RoundError> {
    let find = client
        .prepare(
            "SELECT id FROM tasks WHERE is_deleted AND last_synced_at < $1 \
             ORDER BY last_synced_at LIMIT $2",
        )
        .await?;
    let delete = client
        .prepare(&format!(
            "WITH gone AS ( \
               DELETE FROM tasks WHERE id = ANY($2) AND is_deleted AND last_synced_at < $1 \
               RETURNING change_xid AS xid, id), \
             {RAISE}"
        ))
        .await?;
    let lock = client
        .prepare(
            "SELECT pg_advisory_xact_lock(k) \
             FROM unnest($1::int8[]) WITH ORDINALITY AS l(k, n) ORDER BY n",
        )
        .await?;
    let mut total = 0;
    loop {
        let ids: Vec<Uuid> = client
            .query(&find, &[&before, &CHUNK])
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(total);
        }
        let mut keys: Vec<i64> = ids.iter().map(|id| task_lock_key(*id)).collect();
        keys.sort_unstable();
        keys.dedup();
        let tx = client.transaction().await?;
        tx.execute(&lock, &[&keys]).await?;
        let removed: i64 = tx
            .query_one(&delete, &[&before, &ids])
            .await?
            .try_get("removed")?;
        tx.commit().await?;
        total += u64::try_from(removed).unwrap_or_default();
        if ids.len() < CHUNK as usize {
            return Ok(total);
        }
    }
}

/// The advisory lock key of a task, as the sync-worker takes it to apply: the two halves of its
/// id folded into 64 bits. Two ids with one key share a lock, which only serializes more than
/// needed, never wrongly.
pub fn task_lock_key(id: Uuid) -> i64 {
    let (high, low) = id.as_u64_pair();
    i64::from_ne_bytes((high ^ low).to_ne_bytes())
}
