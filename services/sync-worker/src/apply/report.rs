//! The last stage of the step: one report per operation, for the api that published it. Pure.

use std::collections::HashMap;

use tasksync_shared::{Operation, OutcomeReport, OutcomeStatus, Task, operation::ItemStatus};
use uuid::Uuid;

use super::decide::Verdict;

/// A task as the batch left it, for the reports of its operations.
#[derive(Clone, Debug)]
pub struct Shown {
    pub owner: String,
    pub task: Task,
    /// A create gave it a title: readers see it. Until then it only holds merged updates.
    pub created: bool,
}

/// One report per operation, in order. A report shows a task only to its owner, never with
/// an `error`, and never before it was created: an update merged into a task that has no
/// title yet is reported `pending` (it shows, merged, once its create arrives).
pub fn reports(
    ops: &[Operation],
    verdicts: &[Verdict],
    tasks: &HashMap<Uuid, Shown>,
) -> Vec<OutcomeReport> {
    ops.iter()
        .zip(verdicts)
        .map(|(op, verdict)| report(op, verdict, tasks.get(&op.task_id)))
        .collect()
}

fn report(op: &Operation, verdict: &Verdict, shown: Option<&Shown>) -> OutcomeReport {
    let (status, task) = match (verdict.status, shown) {
        (OutcomeStatus::Error, _) => (ItemStatus::Error, None),
        (status, Some(s)) if s.owner == op.user_id && s.created => {
            (status.into(), Some(s.task.clone()))
        }
        _ => (ItemStatus::Pending, None),
    };
    OutcomeReport {
        op_id: op.op_id,
        task_id: op.task_id,
        status,
        error: verdict.error.clone(),
        rejection: verdict.rejection,
        task,
        repeat: verdict.repeat,
    }
}
