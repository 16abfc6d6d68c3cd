//! The heart of the step: what becomes of each operation of a batch, as a pure function of the
//! operations, the rows they locked and what the operation log already holds. No database, so
//! every rule is unit-tested below.
//!
//! In delivery order, each operation is:
//! - a repeat of an op id seen earlier in the batch or in the log: the first decision stands
//!   and is reported again, unless the op id belongs to another user (`error`, "task not
//!   found", revealing nothing of their operation) or names other content (`error`,
//!   [`Rejection::OpIdReused`], the first one untouched); a replayed `error` is decided anew;
//! - invalid: `error`, [`Rejection::Invalid`];
//! - on another user's task: `error`, "task not found" ([`Rejection::NotFound`]); for an
//!   exclusive create ([`Operation::if_absent`]) [`Rejection::Exists`] with the message of a
//!   live task, so nothing of theirs shows;
//! - an exclusive create of a task that exists (has a title: it was created), deleted or not:
//!   `error`, [`Rejection::Exists`];
//! - with an `If-Match` ([`Operation::if_match`]) that the task's current entity tag, as the
//!   batch has it so far, does not satisfy (or on a task that does not exist for readers):
//!   `error`, [`Rejection::PreconditionFailed`], nothing merged. Checked here, under the
//!   task's lock, because the api's read may be stale by the time the operation applies;
//! - otherwise merged under last-write-wins: `success` or `conflict`; each field a `conflict`
//!   lost goes to the conflict history ([`Plan::conflicts`]).
//!
//! Every operation that names its device is also counted for that device
//! ([`Plan::devices`]): a new decision by its outcome (a replayed `error` decided anew moves
//! from `failed` to its new outcome), anything else (the log or the batch already decided the
//! op id) as a duplicate, so that each accepted push settles exactly once.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tasksync_shared::{
    OpKind, Operation, OutcomeStatus,
    device::check_device_id,
    etag,
    merge::{Stamp, Write},
    model::to_db_precision,
    operation::{PRECONDITION_MESSAGE, Rejection, exists_message, reused_message},
};
use uuid::Uuid;

use super::{Attempt, NOT_FOUND};
use crate::{
    faults::FaultInjector,
    storage::{Conflict, Decision, DeviceTally, LockedTask, Logged},
};

/// What the step decided about one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: OutcomeStatus,
    pub error: Option<String>,
    /// Why an `error` can never apply, when known (not stored in the log).
    pub rejection: Option<Rejection>,
    /// The outcome was already decided (in the log, or by an earlier copy in the batch): this
    /// verdict repeats it.
    pub repeat: bool,
}

impl Verdict {
    fn rejected(rejection: Rejection, error: String) -> Self {
        Self {
            status: OutcomeStatus::Error,
            error: Some(error),
            rejection: Some(rejection),
            repeat: false,
        }
    }

    fn not_found() -> Self {
        Self::rejected(Rejection::NotFound, NOT_FOUND.into())
    }
}

/// What the step has to go on.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a, 'b> {
    pub ops: &'a [Operation],
    /// The attempt of `ops[i]` (the first when missing).
    pub attempts: &'b [Attempt],
    /// Why `ops[i]` can never apply, from validation.
    pub problems: &'b [Option<String>],
    /// What the log holds of the batch's op ids.
    pub logged: &'b HashMap<Uuid, Logged>,
}

/// What to write, and what to report.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// One per operation, in order.
    pub verdicts: Vec<Verdict>,
    /// New decisions for the log.
    pub record: Vec<Decision<'a>>,
    /// Logged `error` outcomes of replayed operations, replaced by their new decision.
    pub forget: Vec<Uuid>,
    /// Decided operations that may have a failure record to resolve (a later attempt, or a
    /// replay): only these are looked up.
    pub resolve: Vec<Uuid>,
    /// Tasks whose state changed, to save.
    pub changed: HashSet<Uuid>,
    /// Tasks some operation merged into; a task not stored that nobody wrote stays unwritten.
    pub written: HashSet<Uuid>,
    /// The fields new decisions lost, for the conflict history.
    pub conflicts: Vec<Conflict<'a>>,
    /// What the batch settled per (user, device), for the devices' figures.
    pub devices: HashMap<(&'a str, &'a str), DeviceTally>,
}

/// Decides every operation of `batch`, merging the applied ones into `locked`. An `Err` is the
/// fault injector failing an operation (tests): the whole batch fails, as a statement would.
pub fn decide<'a>(
    batch: &Batch<'a, '_>,
    locked: &mut HashMap<Uuid, LockedTask>,
    faults: &dyn FaultInjector,
) -> Result<Plan<'a>, String> {
    let mut plan = Plan::default();
    let mut first_at: HashMap<Uuid, usize> = HashMap::new();
    for (i, op) in batch.ops.iter().enumerate() {
        let attempt = batch.attempts.get(i).copied().unwrap_or(Attempt::FIRST);
        let earlier = first_at.get(&op.op_id).copied();
        let logged = batch.logged.get(&op.op_id);
        let mut stands = true;
        let mut decided_anew = false;
        let verdict = match (earlier, logged) {
            (Some(j), _) => repeat_in_batch(op, &batch.ops[j], &plan.verdicts[j]),
            (None, Some(logged)) if logged.user_id != op.user_id => {
                stands = false;
                Verdict::not_found()
            }
            (None, Some(logged)) if !Fingerprint::of(op).matches(&Fingerprint::logged(logged)) => {
                stands = false;
                Verdict::rejected(Rejection::OpIdReused, reused_message(op.op_id))
            }
            (None, Some(logged)) if !(attempt.replay && logged.status == OutcomeStatus::Error) => {
                plan.may_resolve(op, attempt);
                Verdict {
                    status: logged.status,
                    error: logged.error.clone(),
                    rejection: None,
                    repeat: true,
                }
            }
            (None, logged) => {
                if logged.is_some() {
                    plan.forget.push(op.op_id);
                }
                let problem = batch.problems.get(i).and_then(Option::as_deref);
                let verdict = decide_new(op, problem, locked, faults, attempt, &mut plan)?;
                plan.may_resolve(op, attempt);
                decided_anew = true;
                verdict
            }
        };
        // Later occurrences of the op id compare with the first one that stands for it.
        if stands {
            first_at.entry(op.op_id).or_insert(i);
        }
        tracing::info!(
            op_id = %op.op_id, task_id = %op.task_id, user = %op.user_id,
            trace_id = attempt.trace_id.map(tracing::field::display),
            outcome = verdict.status.as_str(), error = verdict.error.as_deref(), "decided"
        );
        plan.count_device(op, decided_anew.then_some(verdict.status), logged);
        plan.verdicts.push(verdict);
    }
    Ok(plan)
}

/// The device an operation names, if the name is one the api would accept (a message from
/// elsewhere may carry anything: it is then recorded without a device).
pub fn device_of(op: &Operation) -> Option<&str> {
    op.device_id
        .as_deref()
        .filter(|d| check_device_id(d).is_ok())
}

impl<'a> Plan<'a> {
    /// Counts `op` for its device: `decided` is its new decision, `None` when an earlier one
    /// stands (a duplicate). A replayed `error` (`logged`) decided anew leaves `failed`.
    fn count_device(
        &mut self,
        op: &'a Operation,
        decided: Option<OutcomeStatus>,
        logged: Option<&Logged>,
    ) {
        let Some(device) = device_of(op) else { return };
        let tally = self
            .devices
            .entry((op.user_id.as_str(), device))
            .or_default();
        match decided {
            None => tally.duplicate += 1,
            Some(status) => {
                tally.count(status, 1);
                if logged.is_some_and(|l| l.status == OutcomeStatus::Error) {
                    tally.count(OutcomeStatus::Error, -1);
                }
            }
        }
    }

    fn may_resolve(&mut self, op: &Operation, attempt: Attempt) {
        if attempt.number > 1 || attempt.replay {
            self.resolve.push(op.op_id);
        }
    }
}

/// An op id met again within the batch: the first occurrence's verdict, if it is the same
/// operation.
fn repeat_in_batch(op: &Operation, first: &Operation, verdict: &Verdict) -> Verdict {
    if first.user_id != op.user_id {
        Verdict::not_found()
    } else if Fingerprint::of(op).matches(&Fingerprint::of(first)) {
        Verdict {
            repeat: true,
            ..verdict.clone()
        }
    } else {
        Verdict::rejected(Rejection::OpIdReused, reused_message(op.op_id))
    }
}

/// Decides an operation the log does not hold, and records it.
fn decide_new<'a>(
    op: &'a Operation,
    problem: Option<&str>,
    locked: &mut HashMap<Uuid, LockedTask>,
    faults: &dyn FaultInjector,
    attempt: Attempt,
    plan: &mut Plan<'a>,
) -> Result<Verdict, String> {
    let exclusive = op.if_absent && op.kind == OpKind::Create;
    let verdict = match (problem, locked.get_mut(&op.task_id)) {
        (Some(problem), _) => Verdict::rejected(Rejection::Invalid, problem.to_string()),
        (None, Some(row)) if row.user_id != op.user_id => {
            if exclusive {
                Verdict::rejected(Rejection::Exists, exists_message(op.task_id, false))
            } else {
                Verdict::not_found()
            }
        }
        // A task exists once a create gave it a title; a row holding only updates or deletes
        // that arrived first does not.
        (None, Some(row)) if exclusive && row.state.title.is_some() => Verdict::rejected(
            Rejection::Exists,
            exists_message(op.task_id, row.state.is_deleted()),
        ),
        (None, Some(row))
            if op.if_match.as_deref().is_some_and(|header| {
                !etag::if_match_holds(header, etag::of_state(op.task_id, &row.state).as_deref())
            }) =>
        {
            Verdict::rejected(Rejection::PreconditionFailed, PRECONDITION_MESSAGE.into())
        }
        (None, Some(row)) => {
            faults.before_apply(op, attempt.number)?;
            let merged = row.state.apply(&Write::from_operation(op));
            let lost_stamp = Stamp {
                at: op.stamped_at,
                op_id: op.op_id,
            };
            plan.conflicts
                .extend(merged.lost.into_iter().map(|lost| Conflict {
                    task_id: op.task_id,
                    user_id: &op.user_id,
                    lost,
                    lost_stamp,
                }));
            plan.written.insert(op.task_id);
            if merged.changed {
                plan.changed.insert(op.task_id);
            }
            Verdict {
                status: if merged.won_all {
                    OutcomeStatus::Success
                } else {
                    OutcomeStatus::Conflict
                },
                error: None,
                rejection: None,
                repeat: false,
            }
        }
        // Every valid operation's task is read (stored or not); not reached.
        (None, None) => Verdict::not_found(),
    };
    plan.record.push(Decision {
        op,
        status: verdict.status,
        error: verdict.error.clone(),
        attempts: attempt.number,
    });
    Ok(verdict)
}

/// What makes two operations under one op id the same operation.
#[derive(Debug)]
struct Fingerprint {
    task_id: Uuid,
    kind: Option<OpKind>,
    fields: serde_json::Value,
    stamped_at: DateTime<Utc>,
    /// The api clamped the stamp to its receive time: pushed again, the same item gets
    /// another stamp, so the stamp is not compared.
    clamped: bool,
}

impl Fingerprint {
    fn of(op: &Operation) -> Self {
        let stamped_at = to_db_precision(op.stamped_at);
        Self {
            task_id: op.task_id,
            kind: Some(op.kind),
            fields: op.fields.storable_json(),
            stamped_at,
            clamped: stamped_at >= to_db_precision(op.received_at),
        }
    }

    fn logged(logged: &Logged) -> Self {
        Self {
            task_id: logged.task_id,
            kind: logged.kind,
            fields: logged.fields.clone(),
            stamped_at: logged.stamped_at,
            clamped: logged.stamped_at >= logged.received_at,
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.task_id == other.task_id
            && self.kind == other.kind
            && self.fields == other.fields
            && (self.clamped || other.clamped || self.stamped_at == other.stamped_at)
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
