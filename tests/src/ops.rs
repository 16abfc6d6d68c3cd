//! Builders of operations for tests that feed the worker directly.

use chrono::{DateTime, Utc};
use tasksync_shared::{OpKind, Operation, OperationFields, model::to_db_precision};
use uuid::Uuid;

/// An operation of the default user on `task`, stamped `at` (truncated as the api does).
pub fn operation(
    task: Uuid,
    kind: OpKind,
    at: DateTime<Utc>,
    fields: OperationFields,
) -> Operation {
    let at = to_db_precision(at);
    Operation {
        op_id: Uuid::new_v4(),
        task_id: task,
        user_id: tasksync_shared::config::DEFAULT_USER.into(),
        kind,
        fields,
        stamped_at: at,
        received_at: at,
        if_absent: false,
    }
}

/// Fields that set the title.
pub fn title(t: &str) -> OperationFields {
    OperationFields {
        title: Some(t.into()),
        ..Default::default()
    }
}

/// Fields that mark the task completed.
pub fn done() -> OperationFields {
    OperationFields {
        completed: Some(true),
        ..Default::default()
    }
}
