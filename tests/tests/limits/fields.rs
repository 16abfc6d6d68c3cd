//! Field limits: a title of at most 500 characters and a description of at most 10 000
//! (`tasksync_shared::validate`), counted in characters, not bytes; enforced by the api (400
//! naming the field, nothing published) and again by the worker (an `error` outcome naming
//! it), for operations that reach the queue some other way.

use chrono::Utc;
use serde_json::json;
use sync_worker::apply::apply_first_attempts;
use tasksync_shared::{
    OpKind, OperationFields,
    operation::ItemStatus,
    validate::{MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS},
};
use tasksync_tests::{TestStack, op_log::OpLog, ops::operation};
use uuid::Uuid;

#[tokio::test]
async fn the_api_takes_fields_up_to_their_limit_in_characters_and_refuses_one_more() {
    let stack = TestStack::start().await;
    // Two bytes each in UTF-8: a byte count would refuse these.
    let title = "é".repeat(MAX_TITLE_CHARS);
    let description = "é".repeat(MAX_DESCRIPTION_CHARS);
    let at_limit = stack
        .create_task(json!({"title": title, "description": description}))
        .await;
    assert_eq!(at_limit.status, 201, "{at_limit:?}");
    let logged = stack.op_log_count(OpLog::all()).await;

    let long_title = json!({"title": format!("{title}é")});
    let long_description = json!({"title": "t", "description": format!("{description}é")});
    for (body, field) in [(long_title, "title"), (long_description, "description")] {
        let reply = stack.create_task(body).await;
        assert_eq!(reply.status, 400, "{reply:?}");
        let message = reply.error_message("/api/tasks");
        assert!(message.contains(field), "{message}");
    }
    assert_eq!(
        stack.op_log_count(OpLog::all()).await,
        logged,
        "nothing was published"
    );
}

#[tokio::test]
async fn the_worker_refuses_fields_over_their_limit_naming_them() {
    let stack = TestStack::start().await;
    let fields = |title: usize, description: usize| OperationFields {
        title: Some("t".repeat(title)),
        description: Some(Some("d".repeat(description))),
        completed: None,
    };
    let ops = [
        fields(MAX_TITLE_CHARS, MAX_DESCRIPTION_CHARS),
        fields(MAX_TITLE_CHARS + 1, 1),
        fields(1, MAX_DESCRIPTION_CHARS + 1),
    ]
    .map(|f| operation(Uuid::new_v4(), OpKind::Create, Utc::now(), f));
    let reports = apply_first_attempts(&stack.db, &ops).await.unwrap();
    assert_eq!(reports[0].status, ItemStatus::Success, "{:?}", reports[0]);
    for (report, field) in reports[1..].iter().zip(["title", "description"]) {
        assert_eq!(report.status, ItemStatus::Error, "{report:?}");
        assert!(
            report.error.as_deref().unwrap().contains(field),
            "{report:?}"
        );
    }
    assert!(stack.stored(ops[1].task_id).await.is_none());
    assert!(stack.stored(ops[2].task_id).await.is_none());
}
