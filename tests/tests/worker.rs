//! The sync-worker: its batch step called directly, and its loop fed through the real broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration as StdDuration;

use chrono::{Duration as Delta, Utc};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use sync_worker::{
    apply::{NOT_FOUND, apply_first_attempts},
    storage::lock_key,
};
use tasksync_shared::{
    OpKind, Operation, OperationFields,
    operation::{ItemStatus, Rejection},
    topology::routing_key,
};
use tasksync_tests::{
    TestStack,
    op_log::OpLog,
    ops::{done, operation as op, title},
    sync_client::{create, delete, op_id, statuses, update},
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
    stack.worker_settled().await;

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
    assert_eq!(stack.op_log_count(OpLog::task(task)).await, 3);
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
    // Pushed again now that the task exists, the update reports its outcome with the task.
    let again = apply_first_attempts(&stack.db, std::slice::from_ref(&complete))
        .await
        .unwrap();
    assert_eq!(again[0].status, ItemStatus::Success);
    assert_eq!(again[0].task.as_ref().unwrap().title, "t");
}

#[tokio::test]
async fn a_pushed_update_of_a_task_never_created_answers_pending_without_data() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    let at = Utc::now() - Delta::minutes(1);
    let items = [
        update(task, json!({"completed": true}), at),
        delete(task, at + Delta::seconds(1)),
    ];
    let reply = stack.push(&items).await;
    assert_eq!(statuses(&reply), ["pending", "pending"], "{reply:?}");
    for slot in reply.body["processed_items"].as_array().unwrap() {
        assert_eq!(slot["resolved_data"], Value::Null, "{slot}");
        assert_eq!(slot["server_id"], Value::Null, "{slot}");
    }
    assert_eq!(reply.body["pending_items"], 2);
    assert_eq!(stack.get_task(&task.to_string()).await.status, 404);
    assert_eq!(stack.delete_task(&task.to_string()).await.status, 404);
    assert_eq!(stack.changes("", None).await.body["changes"], json!([]));
}

#[tokio::test]
async fn an_update_of_a_task_never_created_reads_pending_by_its_op_id_until_the_create() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    let at = Utc::now() - Delta::minutes(1);
    let early = update(task, json!({"completed": true}), at);
    let early_id = op_id(&early);
    assert_eq!(statuses(&stack.push(&[early]).await), ["pending"]);
    let logged = [early_id.parse::<Uuid>().unwrap()];
    stack
        .eventually("the update is in the operation log", || async {
            stack.op_log_count(OpLog::ops(&logged)).await == 1
        })
        .await;
    let looked = stack.operation(&early_id).await;
    assert_eq!(looked.status, 200, "{looked:?}");
    assert_eq!(looked.body["status"], "pending", "as the push answered");
    assert_eq!(looked.body["resolved_data"], Value::Null);

    let reply = stack
        .push(&[create(task, "t", at - Delta::seconds(1))])
        .await;
    // The create's `completed` is older than the update's: that field is a conflict it loses.
    assert_eq!(statuses(&reply), ["conflict"], "{reply:?}");
    let looked = stack.operation(&early_id).await;
    assert_eq!(looked.body["status"], "success", "{looked:?}");
    assert_eq!(looked.body["resolved_data"]["title"], "t");
    assert_eq!(looked.body["resolved_data"]["completed"], true);
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
            stack.op_log_count(OpLog::task(*t)).await,
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
}

#[tokio::test]
async fn two_concurrent_rest_creates_with_one_id_give_one_201_and_one_409() {
    let mut stack = TestStack::start_with(|s| s.write_wait = StdDuration::from_secs(30)).await;
    // With the worker stopped both requests are published before either is decided, so the
    // api cannot tell them apart: only the worker's decision can.
    stack.stop_worker().await;
    let id = Uuid::new_v4().to_string();
    let first = stack.create_task(json!({"id": id, "title": "one"}));
    let second = stack.create_task(json!({"id": id, "title": "two"}));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    #[allow(
        clippy::async_yields_async,
        reason = "yields the started worker's handle"
    )]
    let worker = async {
        stack
            .eventually("both creates are queued", || async {
                stack.queue_depth(&stack.topology().work_queue()).await == 2
            })
            .await;
        tokio::spawn(sync_worker::run(stack.settings.clone(), async {
            let _ = stopped.await;
        }))
    };
    let (first, second, worker) = tokio::join!(first, second, worker);
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
    let mut codes = [first.status, second.status];
    codes.sort_unstable();
    assert_eq!(codes, [201, 409], "{first:?} {second:?}");
    let loser = if first.status == 409 { &first } else { &second };
    let message = loser.error_message("/api/tasks");
    assert!(
        message.contains(&id) && message.contains("already exists"),
        "{message}"
    );
    let winner = if first.status == 201 { &first } else { &second };
    assert_eq!(stack.get_task(&id).await.body, winner.body);
    let outcomes: Vec<String> = stack
        .operations_of(id.parse().unwrap())
        .await
        .into_iter()
        .map(|(_, outcome)| outcome)
        .collect();
    let mut sorted = outcomes.clone();
    sorted.sort();
    assert_eq!(sorted, ["error", "success"], "one applied op: {outcomes:?}");
}

#[tokio::test]
async fn a_create_with_the_id_of_a_deleted_task_answers_409_naming_the_deleted_task() {
    let stack = TestStack::start().await;
    let id = id_of(&stack.create_task(json!({"title": "old"})).await.body);
    assert_eq!(stack.delete_task(&id).await.status, 204);
    assert_eq!(stack.get_task(&id).await.status, 404);

    let again = stack.create_task(json!({"id": id, "title": "new"})).await;
    assert_eq!(again.status, 409, "{again:?}");
    let message = again.error_message("/api/tasks");
    assert!(
        message.contains(&id) && message.contains("deleted task"),
        "{message}"
    );
    assert_eq!(stack.get_task(&id).await.status, 404, "not resurrected");
}

#[tokio::test]
async fn the_worker_decides_an_exclusive_create_of_a_taken_id_revealing_nothing_of_anothers() {
    let stack = TestStack::start().await;
    let (mine, theirs) = (Uuid::new_v4(), Uuid::new_v4());
    let t0 = Utc::now() - Delta::minutes(5);
    let mut their_create = op(theirs, OpKind::Create, t0, title("private"));
    their_create.user_id = "mallory".into();
    let mut their_delete = op(theirs, OpKind::Delete, t0, OperationFields::default());
    their_delete.user_id = "mallory".into();
    let setup = [
        op(mine, OpKind::Create, t0, title("mine")),
        op(
            mine,
            OpKind::Delete,
            t0 + Delta::seconds(1),
            OperationFields::default(),
        ),
        their_create,
    ];
    apply_first_attempts(&stack.db, &setup).await.unwrap();

    let exclusive = |task| Operation {
        if_absent: true,
        ..op(task, OpKind::Create, Utc::now(), title("again"))
    };
    let live_theirs = apply_first_attempts(&stack.db, &[exclusive(theirs)])
        .await
        .unwrap();
    apply_first_attempts(&stack.db, &[their_delete])
        .await
        .unwrap();
    let reports = apply_first_attempts(&stack.db, &[exclusive(mine), exclusive(theirs)])
        .await
        .unwrap();
    for report in reports.iter().chain(&live_theirs) {
        assert_eq!(report.status, ItemStatus::Error);
        assert_eq!(report.rejection, Some(Rejection::Exists));
        assert!(report.task.is_none());
    }
    assert!(
        reports[0]
            .error
            .as_deref()
            .unwrap()
            .contains("deleted task")
    );
    assert_eq!(
        reports[1].error, live_theirs[0].error,
        "another user's task reads the same deleted or not"
    );
    assert!(!reports[1].error.as_deref().unwrap().contains("private"));
    assert_eq!(
        stack.stored(theirs).await.unwrap().3.as_deref(),
        Some("private")
    );
    assert!(stack.stored(mine).await.unwrap().2, "still deleted");
}

#[tokio::test]
async fn an_op_id_pushed_again_with_other_content_is_an_error_and_the_first_stands() {
    let stack = TestStack::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let at = Utc::now() - Delta::minutes(1);
    let first = create(a, "first", at);
    assert_eq!(
        statuses(&stack.push(std::slice::from_ref(&first)).await),
        ["success"]
    );

    let mut other = create(b, "second", at);
    other["id"] = first["id"].clone();
    let reply = stack.push(&[other]).await;
    assert_eq!(statuses(&reply), ["error"], "{reply:?}");
    let slot = &reply.body["processed_items"][0];
    let error = slot["error"].as_str().unwrap();
    assert!(
        error.contains(first["id"].as_str().unwrap()) && error.contains("already used"),
        "{error}"
    );
    assert_eq!(slot["resolved_data"], Value::Null);
    assert_eq!(
        stack.get_task(&b.to_string()).await.status,
        404,
        "never created"
    );
    assert_eq!(stack.get_task(&a.to_string()).await.body["title"], "first");
    assert_eq!(stack.op_log_count(OpLog::task(a)).await, 1);
    assert_eq!(
        stack.op_log_count(OpLog::task(b)).await,
        0,
        "the log is untouched"
    );

    // The same item again is the same operation: its first outcome.
    let reply = stack.push(&[first]).await;
    assert_eq!(statuses(&reply), ["success"]);
    assert_eq!(
        reply.body["processed_items"][0]["resolved_data"]["title"],
        "first"
    );
}

#[tokio::test]
async fn an_item_from_a_clock_ahead_pushed_again_is_not_taken_for_a_reused_op_id() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    // Stamped a day ahead: the api clamps it to its receive time, another one each push.
    let item = create(task, "ahead", Utc::now() + Delta::days(1));
    assert_eq!(
        statuses(&stack.push(std::slice::from_ref(&item)).await),
        ["success"]
    );
    let reply = stack.push(&[item]).await;
    assert_eq!(statuses(&reply), ["success"], "{reply:?}");
    assert_eq!(
        reply.body["processed_items"][0]["resolved_data"]["title"],
        "ahead"
    );
    assert_eq!(stack.op_log_count(OpLog::task(task)).await, 1);
}

#[tokio::test]
async fn a_nul_in_a_raw_message_is_decided_error_once_and_nothing_is_parked() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    let poison = op(task, OpKind::Create, Utc::now(), title("nul\u{0}title"));
    let body = poison.encode().unwrap();
    assert!(String::from_utf8_lossy(&body).contains("\\u0000"));
    stack
        .publish_raw_with(&routing_key(OpKind::Create), &[body], FieldTable::default())
        .await;
    stack
        .eventually("the operation is decided", || async {
            stack.op_log_count(OpLog::task(task)).await > 0
        })
        .await;
    // A marker behind it: once applied, the poison was settled before it, not looping.
    stack.worker_settled().await;

    assert_eq!(
        stack.operations_of(task).await,
        vec![(poison.op_id, "error".to_string())],
        "decided once"
    );
    let recorded = stack.operation(&poison.op_id.to_string()).await.body;
    assert!(
        recorded["last_error"]
            .as_str()
            .unwrap()
            .starts_with("title: "),
        "{recorded}"
    );
    assert!(stack.stored(task).await.is_none(), "no task row");
    assert_eq!(stack.failure_records().await, 0, "no attempt failed");
    assert_eq!(
        stack.queue_depth(&stack.topology().parking_queue()).await,
        0
    );
    assert_eq!(stack.queue_depth(&stack.topology().work_queue()).await, 0);
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("task id").to_string()
}

#[tokio::test]
async fn many_workers_on_overlapping_tasks_never_deadlock_and_each_op_applies_once() {
    let stack = TestStack::start().await;
    let tasks: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    let t0 = Utc::now() - Delta::minutes(30);
    // Eight writers over overlapping windows of 16 tasks, each in its own rotated order,
    // creates and updates mixed; writer w stamps t0 + w seconds.
    let mut handles = Vec::new();
    for w in 0..8usize {
        let mut window: Vec<Uuid> = tasks[w * 3..w * 3 + 16].to_vec();
        window.rotate_left(w * 5 % 16);
        if w % 2 == 1 {
            window.reverse();
        }
        let at = t0 + Delta::seconds(i64::try_from(w).unwrap());
        let ops: Vec<Operation> = window
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let kind = if i % 3 == 0 {
                    OpKind::Update
                } else {
                    OpKind::Create
                };
                op(*t, kind, at, title(&format!("writer {w}")))
            })
            .collect();
        let pool = stack.db.clone();
        handles.push(tokio::spawn(async move {
            apply_first_attempts(&pool, &ops).await.map(|r| (w, ops, r))
        }));
    }
    let mut last_writer: std::collections::HashMap<Uuid, usize> = Default::default();
    for handle in handles {
        let (w, ops, reports) = handle
            .await
            .unwrap()
            .expect("no batch fails (no deadlock, no unique violation)");
        assert!(
            reports.iter().all(|r| r.status != ItemStatus::Error),
            "{reports:?}"
        );
        for o in &ops {
            let entry = last_writer.entry(o.task_id).or_insert(w);
            *entry = (*entry).max(w);
        }
    }
    for (task, w) in &last_writer {
        let expected = format!("writer {w}");
        assert_eq!(
            stack.stored(*task).await.unwrap().3.as_deref(),
            Some(expected.as_str())
        );
        let writers = (0..8)
            .filter(|v| (v * 3..v * 3 + 16).any(|i| tasks[i] == *task))
            .count();
        assert_eq!(
            stack.op_log_count(OpLog::task(*task)).await,
            u64::try_from(writers).unwrap(),
            "each op logged once"
        );
    }
}

#[tokio::test]
async fn a_created_task_is_written_once_one_row_version_and_one_index_entry() {
    let stack = TestStack::start().await;
    let t0 = Utc::now() - Delta::minutes(5);
    let ops: Vec<Operation> = (0..20)
        .map(|i| {
            op(
                Uuid::new_v4(),
                OpKind::Create,
                t0,
                title(&format!("task {i}")),
            )
        })
        .collect();
    apply_first_attempts(&stack.db, &ops).await.unwrap();
    let client = stack.db.get().await.unwrap();
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        .await
        .unwrap();
    // Every line pointer on the table's pages, live or dead: a task inserted and then updated
    // leaves two.
    let versions: i64 = client
        .query_one(
            "SELECT count(*) FROM generate_series(0, (pg_relation_size('tasks') / \
               current_setting('block_size')::int - 1)::int) AS b, \
             heap_page_items(get_raw_page('tasks', b)) WHERE lp_flags <> 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 20, "one row version per created task");
    // Twenty keys fit in the primary key's single leaf page (block 1).
    let entries: i64 = client
        .query_one("SELECT count(*) FROM bt_page_items('tasks_pkey', 1)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(entries, 20, "one primary key entry per created task");
}

/// An id other than `id` with the same advisory lock key (the key folds the id's halves with
/// xor, so flipping one bit in both halves keeps it).
fn same_key(id: Uuid, bit: u64) -> Uuid {
    let (high, low) = id.as_u64_pair();
    let twin = Uuid::from_u64_pair(high ^ bit, low ^ bit);
    assert_eq!(lock_key(twin), lock_key(id), "the key folds the halves");
    twin
}

#[tokio::test]
async fn tasks_sharing_a_lock_key_in_opposite_id_order_never_deadlock() {
    let stack = TestStack::start().await;
    let t0 = Utc::now() - Delta::minutes(5);
    for _ in 0..5 {
        let (mut a1, mut a2) = (Uuid::new_v4(), Uuid::new_v4());
        if a2 < a1 {
            std::mem::swap(&mut a1, &mut a2);
        }
        // Flipping the highest bit where the two high halves differ reverses their order:
        // b1 (a2's key) sorts before b2 (a1's key), so locking by id order would cross.
        let diff = a1.as_u64_pair().0 ^ a2.as_u64_pair().0;
        let bit = 1u64 << (63 - diff.leading_zeros());
        let (b1, b2) = (same_key(a2, bit), same_key(a1, bit));
        assert!(b1 < b2);
        let batch = |ids: [Uuid; 2]| -> Vec<Operation> {
            ids.iter()
                .map(|t| op(*t, OpKind::Create, t0, title("shared key")))
                .collect()
        };
        let (ours, theirs) = (batch([a1, a2]), batch([b1, b2]));
        let (first, second) = tokio::join!(
            apply_first_attempts(&stack.db, &ours),
            apply_first_attempts(&stack.db, &theirs)
        );
        for reports in [first.expect("no deadlock"), second.expect("no deadlock")] {
            assert!(
                reports.iter().all(|r| r.status == ItemStatus::Success),
                "{reports:?}"
            );
        }
        for t in [a1, a2, b1, b2] {
            assert_eq!(
                stack.stored(t).await.unwrap().3.as_deref(),
                Some("shared key")
            );
        }
    }
}

#[tokio::test]
async fn batches_in_flight_apply_one_tasks_writes_in_delivery_order_and_leave_nothing_unacked() {
    // One delivery per batch, four batches at once: every write to the task is in another
    // batch, racing the ones before it.
    let mut stack = TestStack::start_with(|s| {
        s.batch_size = 1;
        s.batches_in_flight = 4;
    })
    .await;
    let task = Uuid::new_v4();
    let t0 = Utc::now() - Delta::hours(1);
    let mut items = vec![create(task, "v0", t0)];
    items.extend((1..40).map(|i| {
        update(
            task,
            json!({"title": format!("v{i}")}),
            t0 + Delta::minutes(i),
        )
    }));
    let reply = stack.push(&items).await;
    // Applied out of order, an update would be `pending` (before the create) or a `conflict`
    // (behind a later update).
    assert_eq!(statuses(&reply), vec!["success"; 40]);
    assert_eq!(stack.get_task(&task.to_string()).await.body["title"], "v39");

    // Stopping the worker hands back whatever it did not ack: nothing may come back.
    let queue = stack.topology().work_queue();
    stack.stop_worker().await;
    assert_eq!(
        stack.queue_depth(&queue).await,
        0,
        "every delivery was acked"
    );
}
