//! The devices' decided counts (`devices`, V9): what one batch settled per (user, device), added
//! in one statement inside the apply transaction.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use tasksync_shared::{OutcomeStatus, operation::storable_text};
use tracing::instrument;

/// What a batch settled of one device's operations. Signed: a replayed `error` decided anew
/// leaves `failed` (-1) for its new outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceTally {
    pub applied: i64,
    pub conflicted: i64,
    pub failed: i64,
    /// Operations whose op id was already decided (pushed again, or delivered again).
    pub duplicate: i64,
}

impl DeviceTally {
    /// Adds `n` decisions of `status`.
    pub fn count(&mut self, status: OutcomeStatus, n: i64) {
        match status {
            OutcomeStatus::Success => self.applied += n,
            OutcomeStatus::Conflict => self.conflicted += n,
            OutcomeStatus::Error => self.failed += n,
        }
    }
}

/// Adds the counts, creating the device's row when the worker decides before the api has
/// recorded the push (they commit independently). `last_decided_at` moves only with a new
/// decision.
const COUNT: &str = "INSERT INTO devices AS d \
       (user_id, device_id, first_seen_at, last_seen_at, ops_applied, ops_conflicted, \
        ops_failed, ops_duplicate, last_decided_at) \
     SELECT u.user_id, u.device_id, now(), now(), u.applied, u.conflicted, u.failed, \
            u.duplicate, CASE WHEN u.applied + u.conflicted + u.failed > 0 THEN now() END \
     FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[]) \
          AS u(user_id, device_id, applied, conflicted, failed, duplicate) \
     ORDER BY u.user_id, u.device_id \
     ON CONFLICT (user_id, device_id) DO UPDATE SET \
       ops_applied = d.ops_applied + EXCLUDED.ops_applied, \
       ops_conflicted = d.ops_conflicted + EXCLUDED.ops_conflicted, \
       ops_failed = d.ops_failed + EXCLUDED.ops_failed, \
       ops_duplicate = d.ops_duplicate + EXCLUDED.ops_duplicate, \
       last_decided_at = COALESCE(EXCLUDED.last_decided_at, d.last_decided_at)";

/// Adds a batch's tallies to the devices' rows, one statement (none when no operation of the
/// batch named a device). Rows are written in (user, device) order, so that two workers'
/// batches touching the same devices queue instead of deadlocking.
#[instrument(skip_all, fields(devices = tallies.len()))]
pub async fn count_decisions(
    tx: &Transaction<'_>,
    tallies: &HashMap<(&str, &str), DeviceTally>,
) -> Result<(), tokio_postgres::Error> {
    if tallies.is_empty() {
        return Ok(());
    }
    let mut users = Vec::with_capacity(tallies.len());
    let mut devices = Vec::with_capacity(tallies.len());
    let (mut applied, mut conflicted, mut failed, mut duplicate) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((user, device), t) in tallies {
        users.push(storable_text(user));
        devices.push(*device);
        applied.push(t.applied);
        conflicted.push(t.conflicted);
        failed.push(t.failed);
        duplicate.push(t.duplicate);
    }
    let statement = tx.prepare_cached(COUNT).await?;
    tx.execute(
        &statement,
        &[&users, &devices, &applied, &conflicted, &failed, &duplicate],
    )
    .await?;
    Ok(())
}
