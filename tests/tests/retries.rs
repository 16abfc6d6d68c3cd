//! Failures: retries through the delay queues, parking, crash-loop guards, and a database
//! outage that must spend no attempt. Real broker and database; short delays by configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicNackOptions},
    types::FieldTable,
};
use serde_json::json;
use sync_worker::{
    consumer::CRASH_LIMIT,
    faults::FaultInjector,
    storage::failures::{Failure, FailureRecords, RecordError},
};
use tasksync_shared::{
    OpKind, Operation,
    config::QueueType,
    failure::{self, header},
    topology::{DELIVERY_LIMIT, routing_key},
};
use tasksync_tests::{
    Reply, TestStack,
    faults::{Failing, ScriptedFaults},
    op_log::OpLog,
    ops::{operation, title},
    proxy::FaultyProxy,
};
use uuid::Uuid;

/// (outcome, attempts, last_error, failure times recorded) of an operation, once decided.
async fn decision(stack: &TestStack, op_id: Uuid) -> Option<(String, i32, Option<String>, bool)> {
    let client = stack.db.get().await.unwrap();
    client
        .query_opt(
            "SELECT outcome, attempts, last_error, \
                    first_failed_at IS NOT NULL AND last_failed_at IS NOT NULL \
             FROM operations WHERE op_id = $1",
            &[&op_id],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
}

/// (state, attempts, history length) of a failure record.
async fn failure_record(stack: &TestStack, message_id: &str) -> Option<(String, i32, usize)> {
    let client = stack.db.get().await.unwrap();
    client
        .query_opt(
            "SELECT state, attempts, jsonb_array_length(history) FROM operation_failures \
             WHERE message_id = $1",
            &[&message_id],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get::<_, i32>(2) as usize))
}

/// The op id of a write answered 202 (accepted, not awaited).
fn accepted(reply: &Reply) -> Uuid {
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.operation_id()
}

async fn wait_decided(stack: &TestStack, op_id: Uuid) -> (String, i32, Option<String>, bool) {
    stack
        .eventually("the operation is decided", || async {
            decision(stack, op_id).await.is_some()
        })
        .await;
    decision(stack, op_id).await.unwrap()
}

fn short_delays(ms: [u64; 3]) -> impl FnOnce(&mut tasksync_shared::Settings) {
    move |s| s.retry_delays = ms.map(Duration::from_millis).to_vec()
}

#[tokio::test]
async fn an_operation_that_fails_twice_then_succeeds_is_applied_once_after_three_attempts() {
    let faults = Arc::new(ScriptedFaults::default());
    let stack = TestStack::start_with_faults(short_delays([50, 100, 150]), faults.clone()).await;
    let task = Uuid::new_v4();
    faults.fail(task, Failing::Times(2));

    let op_id = accepted(
        &stack
            .client()
            .create_task_async(json!({"id": task, "title": "flaky"}))
            .await,
    );
    let (outcome, attempts, last_error, failure_times) = wait_decided(&stack, op_id).await;
    assert_eq!(outcome, "success");
    assert_eq!(attempts, 3);
    assert_eq!(last_error, None);
    assert!(
        failure_times,
        "first and last failure times are kept in the log"
    );
    let seen: Vec<u32> = faults.attempts_of(op_id).iter().map(|(n, _)| *n).collect();
    assert_eq!(seen, [1, 2, 3]);

    let stored = stack.get_task(&task.to_string()).await.body;
    assert_eq!(stored["sync_status"], "synced");
    assert_eq!(stored["title"], "flaky");
    assert_eq!(
        stack.op_log_count(OpLog::task(task)).await,
        1,
        "applied once"
    );
    assert_eq!(
        failure_record(&stack, &op_id.to_string()).await,
        Some(("resolved".into(), 2, 2))
    );
    for queue in stack.topology().queues() {
        assert_eq!(stack.queue_depth(&queue).await, 0, "{queue} is empty");
    }
}

#[tokio::test]
async fn an_operation_that_always_fails_is_tried_four_times_with_growing_delays_then_parked() {
    let faults = Arc::new(ScriptedFaults::default());
    let delays = [300u64, 600, 900];
    let stack = TestStack::start_with_faults(short_delays(delays), faults.clone()).await;
    let created = stack.create_task(json!({"title": "doomed"})).await;
    assert_eq!(created.status, 201);
    let task: Uuid = created.body["id"].as_str().unwrap().parse().unwrap();
    faults.fail(task, Failing::Always);

    let op_id = accepted(
        &stack
            .client()
            .update_task_async(&task.to_string(), json!({"completed": true}))
            .await,
    );
    let (outcome, attempts, last_error, failure_times) = wait_decided(&stack, op_id).await;
    assert_eq!(outcome, "error");
    assert_eq!(attempts, 4, "1 attempt + 3 retries");
    let last_error = last_error.unwrap();
    assert!(
        last_error.contains("injected failure (attempt 4)"),
        "{last_error}"
    );
    assert!(failure_times);

    attempts_came_after_their_delays(&faults.attempts_of(op_id), &delays);

    let task_json = stack.get_task(&task.to_string()).await.body;
    assert_eq!(task_json["sync_status"], "error");
    assert_eq!(
        task_json["completed"], false,
        "the failed update changed nothing"
    );
    stack
        .eventually("the operation is in the parking queue", || async {
            stack.queue_depth(&stack.topology().parking_queue()).await == 1
        })
        .await;
    assert_eq!(
        failure_record(&stack, &op_id.to_string()).await,
        Some(("parked".into(), 4, 4))
    );
    let status = stack.status().await.body;
    assert_eq!(status["dead_letter_count"], 1, "{status}");
    assert_eq!(status["error_task_count"], 1, "{status}");
    parked_copy_tells_what_happened(&stack, op_id, task).await;
}

/// Attempts 1 to 4, each retry after its configured delay (give or take the broker's timing).
fn attempts_came_after_their_delays(seen: &[(u32, Instant)], delays: &[u64]) {
    assert_eq!(
        seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for (i, delay) in delays.iter().enumerate() {
        let gap = seen[i + 1].1 - seen[i].1;
        let delay = Duration::from_millis(*delay);
        assert!(
            gap + Duration::from_millis(50) >= delay && gap < delay + Duration::from_millis(1500),
            "retry {} came after {gap:?}, configured {delay:?}",
            i + 1
        );
    }
}

/// The parked copy of `op_id` carries what happened in headers of our own.
async fn parked_copy_tells_what_happened(stack: &TestStack, op_id: Uuid, task: Uuid) {
    let parked = get_one(stack, &stack.topology().parking_queue())
        .await
        .expect("parked copy");
    let p = &parked.properties;
    assert_eq!(failure::header_u32(p, header::ATTEMPTS), Some(4));
    assert_eq!(
        failure::header_str(p, header::OP_ID),
        Some(op_id.to_string())
    );
    assert_eq!(
        failure::header_str(p, header::TASK_ID),
        Some(task.to_string())
    );
    assert_eq!(
        failure::header_str(p, header::USER_ID).as_deref(),
        Some("default")
    );
    assert_eq!(
        failure::header_str(p, header::ORIGINAL_ROUTING_KEY).as_deref(),
        Some("op.update")
    );
    assert!(
        failure::header_time(p, header::FIRST_FAILED_AT)
            < failure::header_time(p, header::LAST_FAILED_AT)
    );
    assert!(
        failure::header_str(p, header::PARKED_REASON)
            .unwrap()
            .contains("failed 4 attempts")
    );
}

/// Hands a delivery back to its queue, as a consumer that gives up on it does.
async fn requeue(acker: &lapin::Acker) {
    let options = BasicNackOptions {
        requeue: true,
        multiple: false,
    };
    acker.nack(options).await.unwrap();
}

/// Takes one message off a queue and returns it to the queue (a peek).
async fn get_one(stack: &TestStack, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    let connection = tasksync_shared::amqp::connect(&stack.settings.amqp_url, "test-peek")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let message = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap();
    if let Some(m) = &message {
        requeue(&m.delivery.acker).await;
    }
    connection.close(200, "done".into()).await.unwrap();
    message
}

#[tokio::test]
async fn a_poison_message_is_parked_with_its_reason_and_a_failure_record() {
    let stack = TestStack::start().await;
    stack
        .publish_raw("op.create", &[b"\x00garbage".to_vec()])
        .await;
    stack
        .eventually("the message is parked", || async {
            stack.queue_depth(&stack.topology().parking_queue()).await == 1
        })
        .await;
    let parked = get_one(&stack, &stack.topology().parking_queue())
        .await
        .unwrap();
    let reason = failure::header_str(&parked.properties, header::PARKED_REASON).unwrap();
    assert!(reason.contains("malformed message body"), "{reason}");
    assert_eq!(parked.delivery.data, b"\x00garbage");
    let message_id = failure::header_str(&parked.properties, header::MESSAGE_ID).unwrap();
    let (state, _, _) = failure_record(&stack, &message_id)
        .await
        .expect("failure record");
    assert_eq!(state, "parked");
}

#[tokio::test]
async fn a_parked_copy_does_not_expire_with_its_original() {
    let stack = TestStack::start().await;
    // Undecodable, so parked at its first delivery, and due to expire 300 ms after publishing.
    let properties = BasicProperties::default().with_expiration("300".into());
    let work_queue = stack.topology().work_queue();
    stack
        .publish("", &work_queue, &[b"\x00expiring".to_vec()], properties)
        .await;

    stack
        .eventually("the worker parked and recorded it", || async {
            stack.failure_records().await == 1
        })
        .await;
    let parking = stack.topology().parking_queue();
    stack
        .eventually("the parked copy is in the parking queue", || async {
            stack.queue_depth(&parking).await == 1
        })
        .await;
    // Past the original's expiration, the copy is still there.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(1) {
        assert_eq!(
            stack.queue_depth(&parking).await,
            1,
            "the parked copy expired after {:?}",
            watched.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parked = get_one(&stack, &parking).await.unwrap();
    assert_eq!(parked.delivery.data, b"\x00expiring");
    assert_eq!(parked.properties.expiration(), &None);
}

fn op_message(task: Uuid) -> Operation {
    operation(task, OpKind::Create, chrono::Utc::now(), title("loop"))
}

/// Publishes `op` as the api would, with the given headers.
async fn publish_with_headers(stack: &TestStack, op: &Operation, headers: FieldTable) {
    stack
        .publish_raw_with(&routing_key(op.kind), &[op.encode().unwrap()], headers)
        .await;
}

/// Receives the work queue's next message and hands it back unacknowledged, `times` times, as a
/// worker that crashes on it would. Returns how many deliveries it saw.
async fn crash_on(stack: &TestStack, times: usize) -> usize {
    let connection = tasksync_shared::amqp::connect(&stack.settings.amqp_url, "test-crasher")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut seen = 0;
    for _ in 0..times {
        let message = channel
            .basic_get(
                stack.topology().work_queue().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap();
        let Some(message) = message else { break };
        seen += 1;
        requeue(&message.delivery.acker).await;
    }
    connection.close(200, "done".into()).await.unwrap();
    seen
}

#[tokio::test]
async fn a_quorum_work_queue_parks_a_message_delivered_past_its_limit() {
    let mut stack = TestStack::start().await;
    stack.stop_worker().await;
    let task = Uuid::new_v4();
    publish_with_headers(&stack, &op_message(task), FieldTable::default()).await;
    let limit = usize::try_from(DELIVERY_LIMIT).unwrap();
    let seen = crash_on(&stack, limit + 5).await;
    assert_eq!(
        seen,
        limit + 1,
        "delivered once plus {limit} redeliveries, then dead-lettered"
    );
    stack
        .eventually("the broker parked it", || async {
            stack.queue_depth(&stack.topology().parking_queue()).await == 1
        })
        .await;
    assert_eq!(stack.queue_depth(&stack.topology().work_queue()).await, 0);
}

#[tokio::test]
async fn a_classic_work_queue_still_guards_against_crash_loops() {
    let mut stack = TestStack::start_with(|s| s.queue_type = QueueType::Classic).await;
    stack.stop_worker().await;
    // One message already redelivered CRASH_LIMIT times, one fresh; both come back redelivered.
    let looping = op_message(Uuid::new_v4());
    let mut headers = FieldTable::default();
    failure::set_u32(&mut headers, header::REDELIVERIES, CRASH_LIMIT);
    publish_with_headers(&stack, &looping, headers).await;
    let fresh = op_message(Uuid::new_v4());
    publish_with_headers(&stack, &fresh, FieldTable::default()).await;
    assert_eq!(crash_on(&stack, 2).await, 2);

    stack.start_worker().await;
    stack
        .eventually("the fresh one applies", || async {
            stack.stored(fresh.task_id).await.is_some()
        })
        .await;
    stack
        .eventually("the looping one is parked", || async {
            failure_record(&stack, &looping.op_id.to_string())
                .await
                .is_some()
        })
        .await;
    let client = stack.db.get().await.unwrap();
    let error: String = client
        .query_one(
            "SELECT last_error FROM operation_failures WHERE op_id = $1",
            &[&looping.op_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("redelivered 6 times"), "{error}");
    assert!(stack.stored(looping.task_id).await.is_none());
    assert_eq!(decision(&stack, looping.op_id).await.unwrap().0, "error");
    assert_eq!(
        stack.queue_depth(&stack.topology().parking_queue()).await,
        1
    );
}

/// Restarts the worker of `stack` so that it reaches Postgres through a fault-injecting proxy
/// (the api and the test keep their direct path).
async fn worker_behind_a_proxy(stack: &mut TestStack) -> Arc<FaultyProxy> {
    let config: tokio_postgres::Config = stack.settings.database_url.parse().unwrap();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let proxy = Arc::new(FaultyProxy::start(([127, 0, 0, 1], port).into()).await);
    let db_name = config.get_dbname().unwrap().to_string();
    stack.worker_database_url = Some(format!(
        "postgres://postgres@127.0.0.1:{}/{db_name}",
        proxy.port
    ));
    stack.stop_worker().await;
    stack.start_worker().await;
    proxy
}

#[tokio::test]
async fn while_postgres_is_unreachable_operations_wait_and_spend_no_attempt() {
    let mut stack = TestStack::start_with(|s| s.write_wait = Duration::from_millis(200)).await;
    let proxy = worker_behind_a_proxy(&mut stack).await;
    let before = stack
        .create_task(json!({"title": "before the outage"}))
        .await;
    let before: Uuid = before.body["id"].as_str().unwrap().parse().unwrap();
    stack
        .eventually("the first write applies", || async {
            stack.stored(before).await.is_some()
        })
        .await;

    proxy.cut();
    let mut ops = Vec::new();
    for i in 0..5 {
        let reply = stack
            .client()
            .create_task_async(json!({"title": format!("during {i}")}))
            .await;
        ops.push(accepted(&reply));
    }
    stack
        .eventually("the worker has tried to reconnect", || async {
            proxy.refused() >= 3
        })
        .await;
    assert_eq!(stack.failure_records().await, 0, "no attempt was spent");
    for op in &ops {
        assert!(decision(&stack, *op).await.is_none());
    }

    proxy.restore();
    for op in &ops {
        let (outcome, attempts, _, _) = wait_decided(&stack, *op).await;
        assert_eq!((outcome.as_str(), attempts), ("success", 1));
    }
    assert_eq!(stack.failure_records().await, 0);
    assert_eq!(stack.list_tasks().await.body.as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn a_rest_write_parked_within_the_wait_answers_500_naming_the_failure() {
    let faults = Arc::new(ScriptedFaults::default());
    let stack = TestStack::start_with_faults(short_delays([10, 10, 10]), faults.clone()).await;
    let created = stack.create_task(json!({"title": "t"})).await;
    let task = created.body["id"].as_str().unwrap().to_string();
    faults.fail(task.parse().unwrap(), Failing::Always);

    let reply = stack.update_task(&task, json!({"title": "never"})).await;
    assert_eq!(reply.status, 500, "{reply:?}");
    let message = reply.error_message(&format!("/api/tasks/{task}"));
    assert!(
        message.contains("parked for operators") && message.contains("failed 4 attempts"),
        "{message}"
    );
    assert_eq!(stack.get_task(&task).await.body["sync_status"], "error");
}

/// Fails every attempt of one task's operations with `error`; on attempt `cut_at` it also cuts
/// the worker's path to Postgres, as a database that goes away between a failed attempt and its
/// recording.
#[derive(Debug)]
struct Doomed {
    task: Uuid,
    error: &'static str,
    cut_at: Option<u32>,
    proxy: OnceLock<Arc<FaultyProxy>>,
    cuts: AtomicU32,
}

impl Doomed {
    fn new(task: Uuid, error: &'static str, cut_at: Option<u32>) -> Self {
        Self {
            task,
            error,
            cut_at,
            proxy: OnceLock::new(),
            cuts: AtomicU32::new(0),
        }
    }
}

impl FaultInjector for Doomed {
    fn before_apply(&self, op: &Operation, attempt: u32) -> Result<(), String> {
        if op.task_id != self.task {
            return Ok(());
        }
        if Some(attempt) == self.cut_at && self.cuts.fetch_add(1, Ordering::SeqCst) == 0 {
            self.proxy.get().expect("proxy installed").cut();
        }
        Err(format!("{} (attempt {attempt})", self.error))
    }
}

#[tokio::test]
async fn a_poison_message_parked_while_postgres_is_unreachable_is_parked_exactly_once() {
    let mut stack = TestStack::start().await;
    let proxy = worker_behind_a_proxy(&mut stack).await;
    proxy.cut();
    stack
        .publish_raw("op.create", &[b"\x00garbage".to_vec()])
        .await;
    stack
        .eventually("the worker has tried to record it", || async {
            proxy.refused() >= 3
        })
        .await;
    let parking = stack.topology().parking_queue();
    assert_eq!(
        stack.queue_depth(&parking).await,
        0,
        "nothing is parked before it is recorded"
    );

    proxy.restore();
    stack
        .eventually("it is parked and recorded", || async {
            stack.failure_records().await == 1 && stack.queue_depth(&parking).await >= 1
        })
        .await;
    stack.worker_settled().await;
    assert_eq!(
        stack.queue_depth(&parking).await,
        1,
        "exactly one parked copy"
    );
    assert_eq!(stack.failure_records().await, 1);
    let parked = get_one(&stack, &parking).await.unwrap();
    let message_id = failure::header_str(&parked.properties, header::MESSAGE_ID).unwrap();
    let (state, attempts, _) = failure_record(&stack, &message_id).await.unwrap();
    assert_eq!((state.as_str(), attempts), ("parked", 1));
}

#[tokio::test]
async fn an_operation_whose_parking_meets_an_unreachable_postgres_is_parked_exactly_once() {
    let task = Uuid::new_v4();
    let faults = Arc::new(Doomed::new(task, "injected failure", Some(4)));
    let mut stack = TestStack::start_with_faults(short_delays([10, 10, 10]), faults.clone()).await;
    let proxy = worker_behind_a_proxy(&mut stack).await;
    faults.proxy.set(proxy.clone()).unwrap();

    let op = op_message(task);
    publish_with_headers(&stack, &op, FieldTable::default()).await;
    stack
        .eventually("the last attempt cut the database", || async {
            faults.cuts.load(Ordering::SeqCst) > 0 && proxy.refused() >= 3
        })
        .await;
    let parking = stack.topology().parking_queue();
    assert_eq!(
        stack.queue_depth(&parking).await,
        0,
        "not parked unrecorded"
    );
    assert!(decision(&stack, op.op_id).await.is_none());

    proxy.restore();
    let (outcome, attempts, last_error, _) = wait_decided(&stack, op.op_id).await;
    assert_eq!((outcome.as_str(), attempts), ("error", 4));
    assert!(last_error.unwrap().contains("injected failure (attempt 4)"));
    stack.worker_settled().await;
    assert_eq!(
        stack.queue_depth(&parking).await,
        1,
        "exactly one parked copy"
    );
    assert_eq!(
        failure_record(&stack, &op.op_id.to_string())
            .await
            .unwrap()
            .0,
        "parked"
    );
}

#[tokio::test]
async fn an_operation_holding_a_nul_byte_is_decided_once_without_a_redelivery_loop() {
    let stack = TestStack::start_with(short_delays([10, 10, 10])).await;
    let op = operation(
        Uuid::new_v4(),
        OpKind::Create,
        chrono::Utc::now(),
        title("nul\u{0}title"),
    );
    publish_with_headers(&stack, &op, FieldTable::default()).await;

    let (outcome, _, _, _) = wait_decided(&stack, op.op_id).await;
    assert_eq!(outcome, "error");
    stack.worker_settled().await;
    assert_eq!(stack.op_log_count(OpLog::task(op.task_id)).await, 1);
    assert!(stack.stored(op.task_id).await.is_none());
    // Parked once with its record (a retryable failure), or decided at once (invalid): never
    // copies without records.
    let parked = stack.queue_depth(&stack.topology().parking_queue()).await;
    assert!(parked <= 1, "{parked} parked copies");
    assert_eq!(i64::from(parked), stack.failure_records().await);
    assert_eq!(stack.queue_depth(&stack.topology().work_queue()).await, 0);
}

#[tokio::test]
async fn a_failure_whose_error_text_holds_a_nul_byte_is_recorded_and_parked_once() {
    let task = Uuid::new_v4();
    let faults = Arc::new(Doomed::new(task, "bad\u{0}byte", None));
    let stack = TestStack::start_with_faults(short_delays([10, 10, 10]), faults).await;
    let op = op_message(task);
    publish_with_headers(&stack, &op, FieldTable::default()).await;

    let (outcome, attempts, last_error, _) = wait_decided(&stack, op.op_id).await;
    assert_eq!((outcome.as_str(), attempts), ("error", 4));
    assert!(
        last_error.unwrap().contains("bad\u{FFFD}byte"),
        "stored with U+0000 replaced"
    );
    stack.worker_settled().await;
    assert_eq!(
        stack.queue_depth(&stack.topology().parking_queue()).await,
        1
    );
    assert_eq!(
        failure_record(&stack, &op.op_id.to_string()).await,
        Some(("parked".into(), 4, 4))
    );
}

#[tokio::test]
async fn recording_a_failure_gives_up_after_the_database_timeout() {
    let stack = TestStack::start().await;
    let config: tokio_postgres::Config = stack.settings.database_url.parse().unwrap();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let proxy = FaultyProxy::start(([127, 0, 0, 1], port).into()).await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        proxy.port,
        config.get_dbname().unwrap()
    );
    let pool = tasksync_shared::db::pool(&url, 1).unwrap();
    let timeout = Duration::from_millis(300);
    let records = FailureRecords::new(&pool, timeout);
    let failure = Failure {
        message_id: "stalled-1",
        publisher_message_id: None,
        op: None,
        routing_key: "op.create",
        attempt: 1,
        at: chrono::Utc::now(),
        error: "unreadable",
        body: b"\x00",
    };
    records.retrying(&failure).await.unwrap();

    // The pooled connection is open; the path to Postgres goes silent.
    proxy.stall();
    for parking in [false, true] {
        let started = Instant::now();
        let recorded = if parking {
            records.parked(&failure).await
        } else {
            records.retrying(&failure).await
        };
        assert!(
            matches!(recorded, Err(RecordError::Unavailable(_))),
            "{recorded:?}"
        );
        assert!(
            started.elapsed() < timeout + Duration::from_secs(1),
            "gave up after {:?}",
            started.elapsed()
        );
    }
    proxy.restore();
    stack
        .eventually("the parking is recorded once the path is back", || async {
            records.parked(&failure).await.is_ok()
        })
        .await;
    assert_eq!(
        failure_record(&stack, "stalled-1").await.unwrap().0,
        "parked"
    );
}
