//! The sync-worker: its batch step called directly, and its loop fed through the real broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration as Delta, Utc};
use serde_json::json;
use sync_worker::apply::{NOT_FOUND, apply_first_attempts};
use tasksync_shared::{
    OpKind, Operation, OperationFields,
    operation::{ItemStatus, Rejection},
    topology::routing_key,
};
use tasksync_tests::{
    TestStack,
    ops::{done, operation as op, title},
};
use uuid::Uuid;

#[tokio::test]
async fn an_operation_delivered_twice_is_applied_once() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    let create = op(task, OpKind::Create, Utc::now(), title("once"));
    let body = create.encode().unwrap();
    stack
        .publish_raw(&routing_key(OpKind::Create), &[body.clone(), body.clone()])
        .await;
    stack
        .eventually("the create is applied", || async {
            stack.stored(task).await.is_some()
        })
        .await;
    let first = stack.get_task(&task.to_string()).await.body;

    // A third delivery, long after the first two were acked.
    stack
        .publish_raw(&routing_key(OpKind::Create), &[body])
        .await;
    stack
        .eventually("the queue is drained", || async {
            stack.queue_depth(&stack.topology().work_queue()).await == 0
        })
        .await;
    // Settle: an op that reached the worker is decided in one transaction with its ack.
    let marker = Uuid::new_v4();
    stack
        .publish_raw(
            &routing_key(OpKind::Create),
            &[op(marker, OpKind::Create, Utc::now(), title("marker"))
                .encode()
                .unwrap()],
        )
        .await;
    stack
        .eventually("the marker is applied", || async {
            stack.stored(marker).await.is_some()
        })
        .await;

    assert_eq!(
        stack.operations_of(task).await,
        vec![(create.op_id, "success".to_string())]
    );
    let after = stack.get_task(&task.to_string()).await.body;
    assert_eq!(
        after, first,
        "a redelivery changes nothing, not even last_synced_at"
    );
}

#[tokio::test]
async fn a_batch_reports_duplicates_with_the_first_outcome() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    let t0 = Utc::now() - Delta::minutes(10);
    let create = op(task, OpKind::Create, t0, title("a"));
    let late = op(task, OpKind::Update, t0 + Delta::minutes(2), title("late"));
    let early = op(task, OpKind::Update, t0 + Delta::minutes(1), title("early"));
    let batch = vec![create.clone(), late.clone(), early.clone(), late.clone()];

    let reports = apply_first_attempts(&stack.db, &batch).await.unwrap();
    let statuses: Vec<_> = reports.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            ItemStatus::Success,
            ItemStatus::Success,
            ItemStatus::Conflict,
            ItemStatus::Success
        ]
    );
    let resolved = reports[2]
        .task
        .as_ref()
        .expect("a conflict carries the winning task");
    assert_eq!(resolved.title, "late");

    // Pushing the whole batch again reports the same outcomes and writes nothing.
    let again = apply_first_attempts(&stack.db, &batch).await.unwrap();
    assert_eq!(again.iter().map(|r| r.status).collect::<Vec<_>>(), statuses);
    assert_eq!(again[0].task, reports[3].task);
    assert_eq!(stack.operations_of(task).await.len(), 3);
}

#[tokio::test]
async fn an_update_that_arrives_before_its_create_converges_to_the_same_task() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    let t0 = Utc::now() - Delta::minutes(5);
    let create = op(
        task,
        OpKind::Create,
        t0,
        OperationFields {
            title: Some("t".into()),
            description: Some(Some("d".into())),
            completed: None,
        },
    );
    let complete = op(task, OpKind::Update, t0 + Delta::seconds(30), done());

    let first = apply_first_attempts(&stack.db, std::slice::from_ref(&complete))
        .await
        .unwrap();
    // Not readable until its create arrives: it has no title yet. The answer says so: pending,
    // with no task (never `success` with an empty title).
    assert_eq!(first[0].status, ItemStatus::Pending);
    assert_eq!(first[0].task, None);
    assert_eq!(stack.get_task(&task.to_string()).await.status, 404);
    assert_eq!(stack.delete_task(&task.to_string()).await.status, 404);
    assert_eq!(stack.list_tasks().await.body, json!([]));

    apply_first_attempts(&stack.db, std::slice::from_ref(&create))
        .await
        .unwrap();
    let task_json = stack.get_task(&task.to_string()).await.body;
    assert_eq!(task_json["title"], "t");
    assert_eq!(task_json["description"], "d");
    assert_eq!(
        task_json["completed"], true,
        "the later update survives its earlier create"
    );
    assert_eq!(
        task_json["updated_at"].as_str().unwrap(),
        complete
            .stamped_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
}

#[tokio::test]
async fn an_operation_on_another_users_task_is_rejected_without_revealing_it() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    apply_first_attempts(
        &stack.db,
        &[op(task, OpKind::Create, Utc::now(), title("mine"))],
    )
    .await
    .unwrap();

    let mut intruder = op(
        task,
        OpKind::Update,
        Utc::now() + Delta::seconds(1),
        title("theirs"),
    );
    intruder.user_id = "mallory".into();
    let mut delete = op(
        task,
        OpKind::Delete,
        Utc::now() + Delta::seconds(2),
        OperationFields::default(),
    );
    delete.user_id = "mallory".into();
    let reports = apply_first_attempts(&stack.db, &[intruder, delete])
        .await
        .unwrap();
    for report in &reports {
        assert_eq!(report.status, ItemStatus::Error);
        assert_eq!(report.error.as_deref(), Some(NOT_FOUND));
        assert!(report.task.is_none(), "nothing of the task is revealed");
    }
    let stored = stack.stored(task).await.unwrap();
    assert_eq!(stored.3.as_deref(), Some("mine"));
    assert!(!stored.2);

    // Replaying someone else's op id reveals neither its outcome nor the task.
    let mine = op(task, OpKind::Update, Utc::now() + Delta::seconds(3), done());
    apply_first_attempts(&stack.db, std::slice::from_ref(&mine))
        .await
        .unwrap();
    let mut stolen = mine.clone();
    stolen.user_id = "mallory".into();
    let report = &apply_first_attempts(&stack.db, &[stolen]).await.unwrap()[0];
    assert_eq!(report.status, ItemStatus::Error);
    assert_eq!(report.error.as_deref(), Some(NOT_FOUND));
    assert!(report.task.is_none());
}

#[tokio::test]
async fn an_invalid_operation_is_decided_as_an_error_and_the_rest_of_the_batch_applies() {
    let stack = TestStack::start().await;
    let good = op(Uuid::new_v4(), OpKind::Create, Utc::now(), title("fine"));
    let blank = op(Uuid::new_v4(), OpKind::Create, Utc::now(), title("   "));
    let reports = apply_first_attempts(&stack.db, &[blank.clone(), good.clone()])
        .await
        .unwrap();
    assert_eq!(reports[0].status, ItemStatus::Error);
    assert!(reports[0].error.as_deref().unwrap().contains("title"));
    assert_eq!(reports[1].status, ItemStatus::Success);
    assert!(
        stack.stored(blank.task_id).await.is_none(),
        "no placeholder row is left behind"
    );
    assert!(stack.stored(good.task_id).await.is_some());
}

#[tokio::test]
async fn concurrent_batches_over_the_same_tasks_never_deadlock_and_converge() {
    let stack = TestStack::start().await;
    let tasks: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    let t0 = Utc::now() - Delta::minutes(30);
    // Four writers, each touching every task, in different orders; writer w's title is
    // stamped t0 + w seconds, so writer 3 wins every title.
    let mut batches = Vec::new();
    for w in 0..4i64 {
        let mut ops: Vec<Operation> = tasks
            .iter()
            .map(|t| {
                op(
                    *t,
                    OpKind::Create,
                    t0 + Delta::seconds(w),
                    title(&format!("writer {w}")),
                )
            })
            .collect();
        if w % 2 == 1 {
            ops.reverse();
        }
        batches.push(ops);
    }
    let mut handles = Vec::new();
    for round in 0..3 {
        for batch in &batches {
            let pool = stack.db.clone();
            let batch = batch.clone();
            handles.push(tokio::spawn(async move {
                let _ = round;
                apply_first_attempts(&pool, &batch).await
            }));
        }
    }
    for handle in handles {
        handle
            .await
            .unwrap()
            .expect("no batch fails (a deadlock would abort one)");
    }
    for t in &tasks {
        assert_eq!(
            stack.stored(*t).await.unwrap().3.as_deref(),
            Some("writer 3")
        );
        assert_eq!(
            stack.operations_of(*t).await.len(),
            4,
            "each op logged once"
        );
    }
}

#[tokio::test]
async fn an_undecodable_message_is_parked_and_the_worker_keeps_consuming() {
    let stack = TestStack::start().await;
    stack
        .publish_raw(
            "op.create",
            &[b"{not json".to_vec(), br#"{"v":99}"#.to_vec()],
        )
        .await;
    let task = Uuid::new_v4();
    let next = op(task, OpKind::Create, Utc::now(), title("after the poison"));
    stack
        .publish_raw("op.create", &[next.encode().unwrap()])
        .await;

    stack
        .eventually("the next operation applies", || async {
            stack.stored(task).await.is_some()
        })
        .await;
    stack
        .eventually("both bad messages are parked", || async {
            stack.queue_depth(&stack.topology().parking_queue()).await == 2
        })
        .await;
    let status = stack.status().await.body;
    assert_eq!(status["dead_letter_count"], 2, "{status}");
    let _ = json!({});
}
