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
        if_match: None,
        device_id: None,
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

impl crate::TestStack {
    /// Publishes a marker create and waits until it is applied: everything delivered before it
    /// has been settled (the worker settles a batch in full before it takes the next).
    pub async fn worker_settled(&self) {
        let marker = operation(Uuid::new_v4(), OpKind::Create, Utc::now(), title("marker"));
        let routing_key = tasksync_shared::topology::routing_key(OpKind::Create);
        self.publish_raw(&routing_key, &[marker.encode().expect("encode the marker")])
            .await;
        self.eventually("the marker is applied", || async {
            self.stored(marker.task_id).await.is_some()
        })
        .await;
    }
}
