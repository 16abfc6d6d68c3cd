//! The worker's step: apply a batch of operations in one transaction and decide each one.
//!
//! Pure of AMQP, so tests call it directly. The loop in [`crate::consumer`] acks, retries,
//! parks and replies around it. One batch goes through four stages:
//! 1. [`validate`]: check each operation again (pure);
//! 2. lock the batch's tasks (advisory locks, nothing written), then read them and what the
//!    log holds of its op ids (three statements, two round trips);
//! 3. [`decide`]: what becomes of each operation (pure, unit-tested);
//! 4. persist the plan (at most eight statements, the feed notice among them, sent together:
//!    one round trip) and commit, then [`report`] (pure). Besides the tasks and the log, the
//!    plan holds the fields that new decisions lost (the conflict history) and what the batch
//!    settled per device.
//!
//! With `BEGIN` and `COMMIT`, a batch costs at most five round trips whatever its size
//! (`BEGIN`, the locks, the reads, the writes, `COMMIT`); a statement with nothing to
//! do is not sent. Every statement is prepared once per connection: the first batch on a
//! connection adds one round trip to each of the three stages that talk to Postgres.

mod decide;
mod report;
mod turn;
mod validate;

use std::collections::HashMap;

use deadpool_postgres::{Pool, Transaction};
use tasksync_shared::{
    Operation, OutcomeReport, Task, db::RoundError, feed, telemetry::traceparent::TraceId,
};
use tracing::instrument;
use uuid::Uuid;

use crate::{
    faults::{FaultInjector, NoFaults},
    storage::{self, LockedTask},
};
pub use decide::device_of;
use decide::{Batch, Plan};
use report::Shown;
pub use turn::LockTurn;

/// Why a batch could not be applied. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The database cannot be reached: wait for it, spend no attempt.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A statement failed: something in the batch cannot be written as it is. Retryable: the
    /// consumer isolates the operation at fault and spends one of its attempts.
    #[error("database refused the batch: {0}")]
    Failed(String),
}

impl From<RoundError> for ApplyError {
    fn from(e: RoundError) -> Self {
        match e {
            RoundError::Unavailable(message) => Self::Unavailable(message),
            RoundError::Refused(message) => Self::Failed(message),
        }
    }
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        RoundError::from(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApplyError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RoundError::from(e).into()
    }
}

/// Message of the error outcome of an operation on another user's task. It says no more than
/// "not found", so that it never reveals that the task exists.
pub const NOT_FOUND: &str = "task not found";

/// Where a delivered operation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first try.
    pub number: u32,
    /// Replayed from the parking queue: an `error` outcome already logged for it is replaced.
    pub replay: bool,
    /// The trace of the request that published it (`traceparent`), for its log lines.
    pub trace_id: Option<TraceId>,
}

impl Attempt {
    pub const FIRST: Self = Self {
        number: 1,
        replay: false,
        trace_id: None,
    };
}

/// Applies `ops`, each on its first attempt and without injected faults (tests).
pub async fn apply_first_attempts(
    pool: &Pool,
    ops: &[Operation],
) -> Result<Vec<OutcomeReport>, ApplyError> {
    let attempts = vec![Attempt::FIRST; ops.len()];
    apply_batch(pool, ops, &attempts, &NoFaults, LockTurn::default()).await
}

/// Applies `ops` (`ops[i]` on attempt `attempts[i]`) in one transaction and returns one report
/// per operation, in order. `faults` is consulted before each operation is merged. The locks
/// are taken in `turn` (after the batch gathered before this one has its locks), so that a
/// worker's batches in flight apply the writes to one task in delivery order.
///
/// An operation already in the log (a redelivery, or a client pushing it again) is not applied
/// again: its report repeats the recorded outcome with the current task.
#[instrument(skip_all, fields(batch = ops.len()))]
pub async fn apply_batch(
    pool: &Pool,
    ops: &[Operation],
    attempts: &[Attempt],
    faults: &dyn FaultInjector,
    mut turn: LockTurn,
) -> Result<Vec<OutcomeReport>, ApplyError> {
    let problems = validate::problems(ops);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Invalid operations lock nothing.
    let targets: Vec<(Uuid, &str)> = ops
        .iter()
        .zip(&problems)
        .filter(|(_, problem)| problem.is_none())
        .map(|(op, _)| (op.task_id, op.user_id.as_str()))
        .collect();
    let ids: Vec<Uuid> = targets.iter().map(|(id, _)| *id).collect();
    turn.wait().await;
    storage::lock_tasks(&tx, &ids).await?;
    turn.pass();
    // Both reads come after the locks (their own snapshots see what the previous holder
    // committed) and are independent: sent together, one round trip.
    let op_ids: Vec<Uuid> = ops.iter().map(|op| op.op_id).collect();
    let (locked, logged) = tokio::join!(
        storage::read_tasks(&tx, &targets),
        storage::logged_operations(&tx, &op_ids)
    );
    let (mut locked, logged) = storage::both(locked, logged)?;
    let batch = Batch {
        ops,
        attempts,
        problems: &problems,
        logged: &logged,
    };
    let plan = decide::decide(&batch, &mut locked, faults).map_err(ApplyError::Failed)?;
    let saved = persist(&tx, &plan, &locked).await?;
    tx.commit().await?;
    Ok(report::reports(ops, &plan.verdicts, &shown(locked, saved)))
}

/// Writes what `plan` decided, inside `tx`, in one round trip. Returns the saved tasks as
/// stored.
async fn persist(
    tx: &Transaction<'_>,
    plan: &Plan<'_>,
    locked: &HashMap<Uuid, LockedTask>,
) -> Result<Vec<Task>, tokio_postgres::Error> {
    // A task not stored that no operation merged into is not written at all.
    let to_save: Vec<&LockedTask> = locked
        .iter()
        .filter(|(id, row)| plan.changed.contains(id) || (!row.stored && plan.written.contains(id)))
        .map(|(_, row)| row)
        .collect();
    // The feed notice names the users whose feed this transaction moves: the owners of the
    // tasks it writes and the pushers of the operations it decides (sent only when it wrote or
    // decided anything; Postgres delivers it at commit).
    let users = (!plan.record.is_empty() || !to_save.is_empty()).then(|| {
        let owners = to_save.iter().map(|row| row.user_id.as_str());
        let pushers = plan.record.iter().map(|d| d.op.user_id.as_str());
        feed::users_json(owners.chain(pushers))
    });
    // The tasks, the log, the conflict history, the devices' counts and the notice are written
    // by independent statements: all sent together.
    let (saved, logged, conflicts, devices, notified) = tokio::join!(
        storage::save_tasks(tx, &to_save),
        storage::write_decisions(tx, &plan.forget, &plan.record, &plan.resolve),
        storage::record_conflicts(tx, &plan.conflicts),
        storage::count_decisions(tx, &plan.devices),
        notify_if(tx, users.as_deref()),
    );
    // One error names the cause: the statements after a failed one only report the aborted
    // transaction (`storage::both` keeps the other).
    let rest = storage::both(storage::both(conflicts, devices), notified);
    let ((saved, ()), _) = storage::both(storage::both(saved, logged), rest)?;
    Ok(saved)
}

async fn notify_if(
    tx: &Transaction<'_>,
    users_json: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    match users_json {
        Some(users) => storage::notify_feed(tx, users).await,
        None => Ok(()),
    }
}

/// The batch's tasks as it left them, by id.
fn shown(locked: HashMap<Uuid, LockedTask>, saved: Vec<Task>) -> HashMap<Uuid, Shown> {
    let mut shown: HashMap<Uuid, Shown> = locked
        .into_iter()
        .map(|(id, row)| {
            let shown = Shown {
                created: row.state.title.is_some(),
                owner: row.user_id,
                task: row.task,
            };
            (id, shown)
        })
        .collect();
    for task in saved {
        if let Some(entry) = shown.get_mut(&task.id) {
            entry.task = task;
        }
    }
    shown
}
