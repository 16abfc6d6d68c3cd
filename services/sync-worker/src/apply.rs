//! The worker's step: apply a batch of operations in one transaction and decide each one.
//!
//! Pure of AMQP, so tests call it directly. The loop in [`crate::consumer`] acks, rejects and
//! replies around it.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Pool;
use tasksync_shared::{
    Operation, OutcomeReport, OutcomeStatus, Task,
    db::{is_transient, pool_error_is_transient},
    merge::Write,
    operation::Rejection,
    validate,
};
use uuid::Uuid;

use crate::{
    faults::{FaultInjector, NoFaults},
    storage::{self, Decision},
};

/// Why a batch could not be applied. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The database cannot be reached: wait for it, spend no attempt.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A statement failed: something in the batch cannot be written as it is.
    #[error("database rejected the batch: {0}")]
    Rejected(String),
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        let message = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |db| db.message().to_string());
        if is_transient(&e) {
            Self::Unavailable(message)
        } else {
            Self::Rejected(message)
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApplyError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        if pool_error_is_transient(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Rejected(e.to_string())
        }
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
}

impl Attempt {
    pub const FIRST: Self = Self {
        number: 1,
        replay: false,
    };
}

/// Applies `ops` (each on its first attempt) in one transaction and returns one report per
/// operation, in order.
///
/// An operation already in the log (a redelivery, or a client pushing it again) is not applied
/// again: its report repeats the recorded outcome with the current task.
pub async fn apply_batch(pool: &Pool, ops: &[Operation]) -> Result<Vec<OutcomeReport>, ApplyError> {
    apply_attempts(pool, ops, &vec![Attempt::FIRST; ops.len()], &NoFaults).await
}

/// [`apply_batch`] for operations on attempt `attempts[i]`, with `faults` consulted before each
/// is merged.
pub async fn apply_attempts(
    pool: &Pool,
    ops: &[Operation],
    attempts: &[Attempt],
    faults: &dyn FaultInjector,
) -> Result<Vec<OutcomeReport>, ApplyError> {
    let attempt_of: HashMap<Uuid, Attempt> = ops
        .iter()
        .zip(attempts.iter().chain(std::iter::repeat(&Attempt::FIRST)))
        .map(|(op, a)| (op.op_id, *a))
        .collect();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;

    let mut invalid: HashMap<Uuid, String> = HashMap::new();
    for op in ops {
        if let Err(e) = validate::normalize(op.kind, op.fields.clone()) {
            invalid.insert(op.op_id, e.to_string());
        }
    }
    let targets: Vec<(Uuid, &str)> = ops
        .iter()
        .filter(|op| !invalid.contains_key(&op.op_id))
        .map(|op| (op.task_id, op.user_id.as_str()))
        .collect();
    let mut locked = storage::lock_tasks(&tx, &targets).await?;
    let op_ids: Vec<Uuid> = ops.iter().map(|op| op.op_id).collect();
    let mut decided = storage::decided_operations(&tx, &op_ids).await?;
    // A replay gets another chance: its logged error is forgotten and replaced by the new
    // decision.
    let replayed: Vec<Uuid> = decided
        .iter()
        .filter(|(id, d)| {
            d.status == OutcomeStatus::Error && attempt_of.get(id).is_some_and(|a| a.replay)
        })
        .map(|(id, _)| *id)
        .collect();
    storage::forget_decisions(&tx, &replayed).await?;
    for id in &replayed {
        decided.remove(id);
    }

    // Decide each operation once, in delivery order.
    let mut decisions: Vec<Decision<'_>> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut changed: HashSet<Uuid> = HashSet::new();
    let mut written: HashSet<Uuid> = HashSet::new();
    for op in ops {
        if decided.contains_key(&op.op_id) || !seen.insert(op.op_id) {
            continue;
        }
        let (status, error, rejection) = if let Some(reason) = invalid.get(&op.op_id) {
            (
                OutcomeStatus::Error,
                Some(reason.clone()),
                Some(Rejection::Invalid),
            )
        } else {
            match locked.get_mut(&op.task_id) {
                Some(row) if row.user_id == op.user_id => {
                    let attempt = attempt_of.get(&op.op_id).map_or(1, |a| a.number);
                    faults
                        .before_apply(op, attempt)
                        .map_err(ApplyError::Rejected)?;
                    let merged = row.state.apply(&Write::from_operation(op));
                    written.insert(op.task_id);
                    if merged.changed {
                        changed.insert(op.task_id);
                    }
                    if merged.won_all {
                        (OutcomeStatus::Success, None, None)
                    } else {
                        (OutcomeStatus::Conflict, None, None)
                    }
                }
                _ => (
                    OutcomeStatus::Error,
                    Some(NOT_FOUND.to_string()),
                    Some(Rejection::NotFound),
                ),
            }
        };
        let attempts = attempt_of.get(&op.op_id).map_or(1, |a| a.number);
        decisions.push(Decision {
            op,
            status,
            error,
            rejection,
            attempts,
        });
    }

    let to_save: Vec<(Uuid, &tasksync_shared::merge::TaskState)> = locked
        .iter()
        .filter(|(id, _)| changed.contains(id))
        .map(|(id, row)| (*id, &row.state))
        .collect();
    let saved = storage::save_tasks(&tx, &to_save).await?;
    let placeholders: Vec<Uuid> = locked
        .iter()
        .filter(|(id, row)| row.inserted && !written.contains(id))
        .map(|(id, _)| *id)
        .collect();
    storage::delete_placeholders(&tx, &placeholders).await?;
    storage::record_operations(&tx, &decisions).await?;
    let decided_now: Vec<Uuid> = decisions.iter().map(|d| d.op.op_id).collect();
    storage::resolve_failures(&tx, &decided_now).await?;
    tx.commit().await?;

    // Tasks by id, with their owner: a report shows a task only to its owner.
    let mut tasks: HashMap<Uuid, (String, Task)> = locked
        .into_iter()
        .filter(|(id, row)| !row.inserted || written.contains(id))
        .map(|(id, row)| (id, (row.user_id, row.task)))
        .collect();
    for task in saved {
        if let Some(entry) = tasks.get_mut(&task.id) {
            entry.1 = task;
        }
    }

    // An op id someone else already used reveals nothing of their operation.
    let pusher: HashMap<Uuid, &str> = ops
        .iter()
        .map(|op| (op.op_id, op.user_id.as_str()))
        .collect();
    type Decided = (OutcomeStatus, Option<String>, Option<Rejection>);
    let mut outcome: HashMap<Uuid, Decided> = decided
        .into_iter()
        .map(|(id, d)| {
            if pusher.get(&id) == Some(&d.user_id.as_str()) {
                (id, (d.status, d.error, None))
            } else {
                let not_found = (
                    OutcomeStatus::Error,
                    Some(NOT_FOUND.to_string()),
                    Some(Rejection::NotFound),
                );
                (id, not_found)
            }
        })
        .collect();
    outcome.extend(
        decisions
            .into_iter()
            .map(|d| (d.op.op_id, (d.status, d.error, d.rejection))),
    );

    Ok(ops
        .iter()
        .map(|op| {
            let (status, error, rejection) = outcome.get(&op.op_id).cloned().unwrap_or((
                OutcomeStatus::Error,
                Some("undecided".into()),
                None,
            ));
            let task = tasks
                .get(&op.task_id)
                .filter(|(owner, _)| status != OutcomeStatus::Error && *owner == op.user_id)
                .map(|(_, task)| task.clone());
            OutcomeReport {
                op_id: op.op_id,
                task_id: op.task_id,
                status,
                error,
                rejection,
                task,
            }
        })
        .collect())
}
