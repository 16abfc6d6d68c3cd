//! Offline sync end to end: pushes through `/api/batch` and `/api/sync`, pulls through
//! `/api/changes`, outcomes through `/api/sync/operations/{op_id}`, against the real stack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration as Delta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use tasksync_shared::{OpKind, Operation, OperationFields, model::to_db_precision};
use tasksync_tests::{
    Reply, TestStack,
    op_log::OpLog,
    sync_client::{Device, create, delete, op_id, statuses, update},
};
use uuid::Uuid;

#[path = "sync/convergence.rs"]
mod convergence;
#[path = "sync/events.rs"]
mod events;
#[path = "sync/feed.rs"]
mod feed;
#[path = "sync/history.rs"]
mod history;
#[path = "sync/partitions.rs"]
mod partitions;

fn an_hour_ago() -> DateTime<Utc> {
    Utc::now() - Delta::hours(1)
}

#[tokio::test]
async fn one_offline_batch_of_create_update_create_delete_is_applied_in_full() {
    let stack = TestStack::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let t0 = an_hour_ago();
    let items = [
        create(a, "buy milk", t0),
        update(
            a,
            json!({"title": "buy oat milk", "completed": true}),
            t0 + Delta::seconds(1),
        ),
        create(b, "call mum", t0 + Delta::seconds(2)),
        delete(b, t0 + Delta::seconds(3)),
    ];
    let reply = stack.push(&items).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(statuses(&reply), ["success"; 4]);
    let body = &reply.body;
    assert_eq!(body["success"], true);
    assert_eq!(body["synced_items"], 4);
    assert_eq!(body["failed_items"], 0);
    assert_eq!(body["pending_items"], 0);
    assert_eq!(body["errors"], json!([]));
    assert!(body["server_time"].is_string());
    for (slot, sent) in body["processed_items"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&items)
    {
        assert_eq!(slot["op_id"], sent["id"]);
        assert_eq!(slot["client_id"], sent["task_id"]);
        assert_eq!(
            slot["server_id"], sent["task_id"],
            "the server id is the task id"
        );
        assert_eq!(slot["resolved_data"]["id"], sent["task_id"]);
        assert!(slot.get("error").is_none(), "{slot}");
    }

    let task = stack.get_task(&a.to_string()).await.body;
    assert_eq!(task["title"], "buy oat milk");
    assert_eq!(task["completed"], true);
    assert_eq!(task["sync_status"], "synced");
    assert_eq!(
        task["created_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        to_db_precision(t0),
        "the device's times are kept"
    );
    assert_eq!(stack.get_task(&b.to_string()).await.status, 404);
    let deleted = &stack.server_tasks().await[&b.to_string()];
    assert_eq!(deleted["is_deleted"], true);
    assert_eq!(deleted["title"], "call mum");
}

#[tokio::test]
async fn two_devices_editing_different_fields_offline_both_keep_their_edit_whichever_pushes_first()
{
    let stack = TestStack::start().await;
    let t0 = an_hour_ago();
    for phone_first in [true, false] {
        let task = Uuid::new_v4();
        assert_eq!(
            statuses(&stack.sync(&[create(task, "plan trip", t0)]).await),
            ["success"]
        );
        let phone = update(
            task,
            json!({"title": "plan trip to Rome"}),
            t0 + Delta::minutes(2),
        );
        let laptop = update(task, json!({"completed": true}), t0 + Delta::minutes(1));
        let (first, second) = if phone_first {
            (&phone, &laptop)
        } else {
            (&laptop, &phone)
        };
        assert_eq!(
            statuses(&stack.sync(std::slice::from_ref(first)).await),
            ["success"]
        );
        let reply = stack.sync(std::slice::from_ref(second)).await;
        assert_eq!(statuses(&reply), ["success"], "phone first: {phone_first}");
        let resolved = &reply.body["processed_items"][0]["resolved_data"];
        assert_eq!(resolved["title"], "plan trip to Rome");
        assert_eq!(resolved["completed"], true);
        assert_eq!(&stack.get_task(&task.to_string()).await.body, resolved);
    }
}

#[tokio::test]
async fn the_later_edit_of_one_field_wins_and_the_earlier_reports_a_conflict_with_the_winner() {
    let stack = TestStack::start().await;
    let t0 = an_hour_ago();
    for later_first in [true, false] {
        let task = Uuid::new_v4();
        stack.push(&[create(task, "draft", t0)]).await;
        let earlier = update(task, json!({"title": "earlier"}), t0 + Delta::minutes(1));
        let later = update(task, json!({"title": "later"}), t0 + Delta::minutes(2));
        if later_first {
            assert_eq!(
                statuses(&stack.push(std::slice::from_ref(&later)).await),
                ["success"]
            );
            let reply = stack.push(std::slice::from_ref(&earlier)).await;
            assert_eq!(statuses(&reply), ["conflict"]);
            let slot = &reply.body["processed_items"][0];
            assert_eq!(slot["resolved_data"]["title"], "later", "the winning task");
            assert_eq!(slot["server_id"], task.to_string());
            assert_eq!(reply.body["synced_items"], 1);
            assert_eq!(reply.body["conflict_items"], 1);
            assert_eq!(reply.body["success"], true, "a conflict is not a failure");
        } else {
            // In time order, each edit wins when it arrives.
            assert_eq!(
                statuses(&stack.push(&[earlier, later]).await),
                ["success", "success"]
            );
        }
        assert_eq!(
            stack.get_task(&task.to_string()).await.body["title"],
            "later"
        );
    }
}

#[tokio::test]
async fn a_device_whose_clock_runs_a_day_ahead_cannot_override_a_later_honest_edit() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    stack.push(&[create(task, "original", an_hour_ago())]).await;

    let skewed = update(
        task,
        json!({"title": "from the future"}),
        Utc::now() + Delta::days(1),
    );
    let reply = stack.push(std::slice::from_ref(&skewed)).await;
    assert_eq!(statuses(&reply), ["success"]);
    let server_time: DateTime<Utc> = reply.body["server_time"].as_str().unwrap().parse().unwrap();
    let recorded = stack.operation(&op_id(&skewed)).await.body;
    let stamped: DateTime<Utc> = recorded["client_timestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stamped <= server_time,
        "clamped to the receive time: {recorded}"
    );

    let honest = update(task, json!({"title": "honest"}), Utc::now());
    assert_eq!(statuses(&stack.push(&[honest]).await), ["success"]);
    let task = stack.get_task(&task.to_string()).await.body;
    assert_eq!(task["title"], "honest");
    let updated_at: DateTime<Utc> = task["updated_at"].as_str().unwrap().parse().unwrap();
    assert!(updated_at <= Utc::now(), "no stamp from the future: {task}");
}

#[tokio::test]
async fn a_push_retried_after_its_response_was_lost_has_no_duplicate_effects_and_the_same_answers()
{
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    let t0 = an_hour_ago();
    let items = [
        create(task, "once", t0),
        update(task, json!({"completed": true}), t0 + Delta::minutes(2)),
        update(task, json!({"completed": false}), t0 + Delta::minutes(1)),
    ];
    let first = stack.push(&items).await;
    assert_eq!(statuses(&first), ["success", "success", "conflict"]);
    let before = stack.get_task(&task.to_string()).await.body;

    // The client never saw that answer and pushes the same batch again, twice at once.
    let (again, racing) = tokio::join!(stack.push(&items), stack.push(&items));
    for reply in [&again, &racing] {
        assert_eq!(
            statuses(reply),
            statuses(&first),
            "the first outcomes: {reply:?}"
        );
        for (slot, original) in reply.body["processed_items"]
            .as_array()
            .unwrap()
            .iter()
            .zip(first.body["processed_items"].as_array().unwrap())
        {
            assert_eq!(slot["op_id"], original["op_id"]);
            assert_eq!(slot["server_id"], original["server_id"]);
            assert_eq!(slot["resolved_data"], before, "the task as it stands");
        }
    }
    assert_eq!(
        stack.get_task(&task.to_string()).await.body,
        before,
        "nothing rewritten"
    );
    assert_eq!(
        stack.op_log_count(OpLog::task(task)).await,
        3,
        "one log row per operation"
    );
}

#[tokio::test]
async fn a_delete_beats_an_earlier_edit_and_a_later_edit_brings_the_task_back() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    let t0 = an_hour_ago();
    stack.push(&[create(task, "water plants", t0)]).await;
    assert_eq!(
        statuses(&stack.push(&[delete(task, t0 + Delta::minutes(10))]).await),
        ["success"]
    );

    let earlier = update(
        task,
        json!({"title": "water all plants"}),
        t0 + Delta::minutes(5),
    );
    let reply = stack.push(&[earlier]).await;
    assert_eq!(statuses(&reply), ["conflict"], "it loses the deleted flag");
    assert_eq!(
        reply.body["processed_items"][0]["resolved_data"]["is_deleted"],
        true
    );
    assert_eq!(
        stack.get_task(&task.to_string()).await.status,
        404,
        "still deleted"
    );

    let later = update(task, json!({"completed": true}), t0 + Delta::minutes(20));
    assert_eq!(statuses(&stack.push(&[later]).await), ["success"]);
    let back = stack.get_task(&task.to_string()).await;
    assert_eq!(back.status, 200, "the later edit brings it back: {back:?}");
    assert_eq!(back.body["is_deleted"], false);
    assert_eq!(back.body["completed"], true);
    assert_eq!(
        back.body["title"], "water all plants",
        "the earlier edit's title merged"
    );
}

#[tokio::test]
async fn a_second_device_starting_from_an_empty_cursor_converges_to_exactly_the_first_devices_state()
 {
    let stack = TestStack::start().await;
    let t0 = an_hour_ago();
    let mut first = Device::new();
    let ids: Vec<Uuid> = (0..7).map(|_| Uuid::new_v4()).collect();
    let creates: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| create(*id, &format!("task {i}"), t0 + Delta::seconds(i as i64)))
        .collect();
    stack.push(&creates).await;
    stack.feed_caught_up().await;
    assert_eq!(first.pull(&stack, Some(3)).await, 7);
    stack
        .push(&[
            update(ids[0], json!({"completed": true}), t0 + Delta::minutes(1)),
            update(
                ids[1],
                json!({"description": "with notes"}),
                t0 + Delta::minutes(1),
            ),
            delete(ids[2], t0 + Delta::minutes(2)),
        ])
        .await;
    stack.feed_caught_up().await;
    assert_eq!(
        first.pull(&stack, Some(3)).await,
        3,
        "only what changed since its cursor"
    );
    stack
        .push(&[
            update(
                ids[2],
                json!({"title": "task 2 again"}),
                t0 + Delta::minutes(3),
            ),
            delete(ids[3], t0 + Delta::minutes(3)),
        ])
        .await;
    stack.feed_caught_up().await;
    first.pull(&stack, None).await;

    let mut second = Device::new();
    second.pull(&stack, Some(2)).await;
    assert_eq!(second.tasks, first.tasks);
    assert_eq!(
        second.tasks,
        stack.server_tasks().await,
        "tombstones included"
    );
    assert_eq!(second.tasks[&ids[3].to_string()]["is_deleted"], true);
    assert_eq!(second.tasks[&ids[2].to_string()]["is_deleted"], false);
    assert_eq!(first.pull(&stack, None).await, 0, "nothing new");
}

#[tokio::test]
async fn a_batch_of_a_thousand_items_is_applied() {
    let stack = TestStack::start().await;
    let t0 = an_hour_ago();
    let items: Vec<Value> = (0..1000)
        .map(|i| {
            create(
                Uuid::new_v4(),
                &format!("item {i}"),
                t0 + Delta::milliseconds(i),
            )
        })
        .collect();
    let reply = stack.push(&items).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body["error"]);
    assert_eq!(
        reply.body["processed_items"].as_array().unwrap().len(),
        1000
    );
    assert_eq!(reply.body["failed_items"], 0);
    let synced = reply.body["synced_items"].as_u64().unwrap();
    let pending = reply.body["pending_items"].as_u64().unwrap();
    assert_eq!(synced + pending, 1000);
    let undecided: Vec<String> = items
        .iter()
        .zip(statuses(&reply))
        .filter(|(_, s)| s == "pending")
        .map(|(i, _)| op_id(i))
        .collect();
    assert!(
        stack
            .settle(&undecided)
            .await
            .iter()
            .all(|s| s == "success")
    );
    assert_eq!(
        stack.list_tasks().await.body.as_array().unwrap().len(),
        1000
    );
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_with_413_naming_the_limit() {
    let stack = TestStack::start().await;
    let items: Vec<Value> = (0..1001)
        .map(|i| create(Uuid::new_v4(), &format!("item {i}"), an_hour_ago()))
        .collect();
    let reply = stack.push(&items).await;
    assert_eq!(reply.status, 413);
    let message = reply.error_message("/api/batch");
    assert!(
        message.contains("1000") && message.contains("1001"),
        "{message}"
    );
    assert_eq!(stack.queue_depth(&stack.topology().work_queue()).await, 0);
    assert_eq!(
        stack.list_tasks().await.body,
        json!([]),
        "nothing was published"
    );
}

#[tokio::test]
async fn bad_items_are_errors_in_their_slots_and_the_rest_of_the_batch_applies() {
    let stack = TestStack::start().await;
    let (items, expected) = good_and_bad_items(an_hour_ago());
    let reply = stack.sync(&items).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    each_slot_is_as_expected(&reply, &items, &expected);
    let body = &reply.body;
    assert_eq!(body["success"], false);
    assert_eq!(body["failed_items"], 8);
    assert_eq!(body["synced_items"], 2);
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 8);
    assert_eq!(errors[0]["operation"], "rename");
    assert_eq!(errors[0]["task_id"], items[0]["task_id"]);
    assert!(
        errors
            .iter()
            .all(|e| e["timestamp"].is_string() && e["error"].is_string())
    );
    assert!(
        errors.iter().all(|e| e["code"] == "invalid_request"),
        "{errors:?}"
    );

    // Only the good items reached the queue and the log.
    assert_eq!(stack.op_log_count(OpLog::all()).await, 2);
    assert_eq!(stack.list_tasks().await.body[0]["completed"], true);

    bodies_that_are_not_a_batch_are_400s(&stack).await;
}

/// The status of a push answer's slot, and the field its error names (if an error).
type SlotOutcome = (&'static str, Option<&'static str>);

/// A push of two good items among eight bad ones, and the (status, field named) of each slot.
fn good_and_bad_items(t0: DateTime<Utc>) -> (Vec<Value>, [SlotOutcome; 10]) {
    let good_task = Uuid::new_v4();
    let good = create(good_task, "fine", t0);
    let mut bad_kind = create(Uuid::new_v4(), "x", t0);
    bad_kind["operation"] = json!("rename");
    let mut bad_task_id = create(Uuid::new_v4(), "x", t0);
    bad_task_id["task_id"] = json!("not-a-uuid");
    let mut bad_op_id = create(Uuid::new_v4(), "x", t0);
    bad_op_id["id"] = json!(42);
    let mut no_time = delete(Uuid::new_v4(), t0);
    no_time.as_object_mut().unwrap().remove("created_at");
    no_time["data"] = json!({});
    let also_good = update(
        good_task,
        json!({"completed": true}),
        t0 + Delta::seconds(1),
    );
    let mut bad_time = update(Uuid::new_v4(), json!({"title": "t"}), t0);
    bad_time["data"]["updated_at"] = json!("last tuesday");
    let items = vec![
        bad_kind,
        good,
        create(Uuid::new_v4(), "   ", t0),
        bad_task_id,
        bad_op_id,
        update(Uuid::new_v4(), json!({"completed": "yes"}), t0),
        bad_time,
        no_time,
        json!("not an item"),
        also_good,
    ];
    let expected = [
        ("error", Some("operation")),
        ("success", None),
        ("error", Some("title")),
        ("error", Some("task_id")),
        ("error", Some("id")),
        ("error", Some("completed")),
        ("error", Some("updated_at")),
        ("error", Some("created_at")),
        ("error", Some("item")),
        ("success", None),
    ];
    (items, expected)
}

/// Each slot has its expected status and, for an error, names its field and holds no data.
fn each_slot_is_as_expected(reply: &Reply, items: &[Value], expected: &[SlotOutcome]) {
    let slots = reply.body["processed_items"].as_array().unwrap();
    for ((slot, (status, field)), sent) in slots.iter().zip(expected).zip(items) {
        assert_eq!(slot["status"], *status, "{slot}");
        if let Some(field) = field {
            let error = slot["error"].as_str().unwrap();
            assert!(
                error.starts_with(&format!("{field}: ")),
                "{error} should name {field}"
            );
            assert_eq!(slot["resolved_data"], Value::Null);
            // Refused by the api before publishing: a rule broken.
            assert_eq!(slot["code"], "invalid_request", "{slot}");
        }
        if *status != "error" {
            assert!(slot.get("code").is_none(), "{slot}");
        }
        assert_eq!(
            slot["client_id"],
            sent.get("task_id").cloned().unwrap_or(Value::Null)
        );
    }
}

/// A body that is not a batch at all is a 400 naming `items`; a malformed one a 400 too.
async fn bodies_that_are_not_a_batch_are_400s(stack: &TestStack) {
    for body in [json!({}), json!({"items": 5}), json!([1, 2])] {
        let reply = stack.request(Method::POST, "/batch", Some(body), &[]).await;
        assert_eq!(reply.status, 400);
        assert!(reply.error_message("/api/batch").starts_with("items: "));
    }
    let json = [("content-type", "application/json")];
    let malformed = stack
        .client()
        .request_raw(Method::POST, "/sync", "{\"items\": [", &json)
        .await;
    assert_eq!(malformed.status, 400);
}

#[tokio::test]
async fn an_operations_outcome_can_be_read_by_its_op_id_once_decided() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    let t0 = an_hour_ago();
    let items = [
        create(task, "later", t0),
        update(task, json!({"title": "newest"}), t0 + Delta::minutes(2)),
        update(task, json!({"title": "older"}), t0 + Delta::minutes(1)),
    ];
    let reply = stack
        .push_to("/batch", &items, &[("Prefer", "respond-async")])
        .await;
    assert_eq!(statuses(&reply), ["pending"; 3], "accepted, not awaited");
    assert_eq!(reply.body["pending_items"], 3);
    assert_eq!(
        reply.body["processed_items"][0]["resolved_data"],
        Value::Null
    );

    let ids: Vec<String> = items.iter().map(op_id).collect();
    assert_eq!(stack.settle(&ids).await, ["success", "success", "conflict"]);
    let conflict = stack.operation(&ids[2]).await.body;
    assert_eq!(conflict["op_id"], ids[2].as_str());
    assert_eq!(conflict["task_id"], task.to_string());
    assert_eq!(conflict["operation"], "update");
    assert_eq!(conflict["attempts"], 1);
    assert_eq!(conflict["last_error"], Value::Null);
    assert!(conflict["decided_at"].is_string());
    assert_eq!(conflict["resolved_data"]["title"], "newest");

    let unknown = Uuid::new_v4();
    let reply = stack.operation(&unknown.to_string()).await;
    assert_eq!(reply.status, 404);
    let message = reply.error_message(&format!("/api/sync/operations/{unknown}"));
    assert!(message.contains("not decided yet"), "{message}");
    let bad = stack.operation("nope").await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.error_message("/api/sync/operations/nope")
            .starts_with("op_id: ")
    );
}

#[tokio::test]
async fn a_push_the_broker_does_not_accept_is_a_503_for_the_whole_batch() {
    let stack = TestStack::start().await;
    let mut settings = stack.settings.clone();
    // Nothing listens on port 1.
    settings.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let extra = stack.spawn_api(settings).await;

    let items = [create(Uuid::new_v4(), "not accepted", an_hour_ago())];
    let reply = extra.api.push(&items).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    let body = &reply.body;
    assert!(
        body["error"].as_str().unwrap().contains("push it again"),
        "{body}"
    );

    extra.stop().await;
    assert_eq!(stack.list_tasks().await.body, json!([]));
}

#[tokio::test]
async fn another_users_task_id_is_an_error_that_reveals_nothing_and_stays_out_of_the_feed() {
    let stack = TestStack::start().await;
    // Users do not exist in the api yet: put another user's task in place through the worker.
    let at = to_db_precision(an_hour_ago());
    let theirs = Operation {
        op_id: Uuid::new_v4(),
        task_id: Uuid::new_v4(),
        user_id: "mallory".into(),
        kind: OpKind::Create,
        fields: OperationFields {
            title: Some("private".into()),
            ..Default::default()
        },
        stamped_at: at,
        received_at: at,
        if_absent: false,
        if_match: None,
        device_id: None,
    };
    sync_worker::apply::apply_first_attempts(&stack.db, std::slice::from_ref(&theirs))
        .await
        .unwrap();

    let mine = update(
        theirs.task_id,
        json!({"title": "mine now"}),
        Utc::now() - Delta::minutes(1),
    );
    let reply = stack.push(std::slice::from_ref(&mine)).await;
    assert_eq!(statuses(&reply), ["error"]);
    let slot = &reply.body["processed_items"][0];
    assert_eq!(slot["error"], "task not found");
    assert_eq!(slot["code"], "not_found", "{slot}");
    assert_eq!(reply.body["errors"][0]["code"], "not_found");
    assert_eq!(slot["resolved_data"], Value::Null);
    assert_eq!(slot["server_id"], Value::Null);

    let recorded = stack.operation(&op_id(&mine)).await.body;
    assert_eq!(recorded["status"], "error");
    assert_eq!(recorded["last_error"], "task not found");
    assert_eq!(recorded["resolved_data"], Value::Null);
    assert_eq!(stack.operation(&theirs.op_id.to_string()).await.status, 404);
    stack.feed_caught_up().await;
    assert_eq!(Device::new().pull(&stack, None).await, 0, "not in my feed");
    assert_eq!(
        stack.stored(theirs.task_id).await.unwrap().3.as_deref(),
        Some("private")
    );
}
