//! The HTTP api end to end: api → RabbitMQ → sync-worker → Postgres, all real.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tasksync_shared::OutcomeStatus::Success;
use tasksync_tests::{TestStack, op_log::OpLog};
use uuid::Uuid;

#[path = "api/input.rs"]
mod input;
#[path = "api/reads.rs"]
mod reads;

fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("task id").to_string()
}

#[tokio::test]
async fn the_seed_examples_work_in_order() {
    let stack = TestStack::start().await;

    // 1. POST a new task
    let created = stack
        .create_task(json!({"title": "dance", "description": "fun"}))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = id_of(&created.body);
    assert_eq!(created.body["title"], "dance");
    assert_eq!(created.body["description"], "fun");
    assert_eq!(created.body["completed"], false);
    assert_eq!(created.body["is_deleted"], false);
    assert_eq!(created.body["sync_status"], "synced");
    assert_eq!(created.body["server_id"], id.as_str());
    assert!(created.body["last_synced_at"].is_string());
    assert_eq!(
        created.header("location"),
        Some(format!("/api/tasks/{id}").as_str())
    );

    // 2. GET all
    let list = stack.list_tasks().await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    assert_eq!(list.body[0], created.body);

    // 3. GET one
    let one = stack.get_task(&id).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, created.body);

    // 4. PUT
    let updated = stack
        .update_task(
            &id,
            json!({"title": "Dance Updated", "description": "Competition updated"}),
        )
        .await;
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.body["title"], "Dance Updated");
    assert_eq!(updated.body["description"], "Competition updated");
    assert_eq!(updated.body["created_at"], created.body["created_at"]);
    assert!(updated.body["updated_at"].as_str() > created.body["updated_at"].as_str());

    // 5. DELETE (soft)
    let deleted = stack.delete_task(&id).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(deleted.body, Value::Null);
    assert_eq!(stack.get_task(&id).await.status, 404);
    assert_eq!(stack.list_tasks().await.body, json!([]));

    // The row is still there, soft-deleted, synced, with its last sync time.
    let (status, synced_at_set, is_deleted, title) =
        stack.stored(id.parse().unwrap()).await.expect("row kept");
    assert_eq!(status, "synced");
    assert!(synced_at_set);
    assert!(is_deleted);
    assert_eq!(title.as_deref(), Some("Dance Updated"));
    let task = OpLog::task(id.parse().unwrap());
    assert_eq!(stack.op_log_count(task.clone()).await, 3);
    assert_eq!(stack.op_log_count(task.outcomes(&[Success])).await, 3);
}

#[tokio::test]
async fn a_client_chosen_id_is_kept_and_a_second_create_with_it_conflicts() {
    let stack = TestStack::start().await;
    let id = Uuid::new_v4().to_string();
    let created = stack
        .create_task(json!({"id": id, "title": "  water plants  ", "completed": true}))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["id"], id.as_str());
    assert_eq!(created.body["title"], "water plants", "titles are trimmed");
    assert_eq!(created.body["completed"], true);
    assert_eq!(created.body["description"], Value::Null);

    let again = stack.create_task(json!({"id": id, "title": "other"})).await;
    assert_eq!(again.status, 409);
    assert!(again.error_message("/api/tasks").contains(&id));
    assert_eq!(stack.get_task(&id).await.body["title"], "water plants");
}

#[tokio::test]
async fn an_update_changes_only_the_fields_it_names() {
    let stack = TestStack::start().await;
    let id = id_of(
        &stack
            .create_task(json!({"title": "t", "description": "d"}))
            .await
            .body,
    );

    let done = stack.update_task(&id, json!({"completed": true})).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.body["title"], "t");
    assert_eq!(done.body["description"], "d");
    assert_eq!(done.body["completed"], true);

    let cleared = stack.update_task(&id, json!({"description": null})).await;
    assert_eq!(cleared.status, 200);
    assert_eq!(cleared.body["description"], Value::Null);
    assert_eq!(cleared.body["completed"], true);
}

#[tokio::test]
async fn prefer_respond_async_answers_202_at_once_and_the_task_syncs_later() {
    let stack = TestStack::start().await;
    let reply = stack
        .client()
        .create_task_async(json!({"title": "later"}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.body["sync_status"], "pending");
    assert_eq!(reply.body["server_id"], Value::Null);
    assert_eq!(reply.body["title"], "later");
    let id = id_of(&reply.body);
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/tasks/{id}").as_str())
    );
    assert!(reply.header("operation-id").is_some());

    stack
        .eventually("the task is synced", || async {
            stack.get_task(&id).await.body["sync_status"] == "synced"
        })
        .await;
}

#[tokio::test]
async fn writes_without_a_worker_are_accepted_and_applied_when_it_returns() {
    let mut stack = TestStack::start_with(|s| s.write_wait = Duration::from_millis(300)).await;
    let kept = id_of(&stack.create_task(json!({"title": "before"})).await.body);
    stack.stop_worker().await;

    let created = stack.create_task(json!({"title": "while down"})).await;
    assert_eq!(created.status, 202, "{created:?}");
    assert_eq!(created.body["sync_status"], "pending");
    let id = id_of(&created.body);
    let updated = stack.update_task(&kept, json!({"completed": true})).await;
    assert_eq!(updated.status, 202, "{updated:?}");
    assert_eq!(updated.body["completed"], true);
    assert_eq!(updated.body["sync_status"], "pending");

    // Accepted is not applied: the task is not readable yet; both wait in the queue.
    assert_eq!(stack.get_task(&id).await.status, 404);
    assert_eq!(stack.queue_depth(&stack.topology().work_queue()).await, 2);
    // Depths are sampled at most once a second, and the writes' high-water checks share it.
    stack
        .eventually("the status shows both queued and no worker", || async {
            let status = stack.status().await.body;
            status["sync_queue_size"] == 2 && status["worker_count"] == 0
        })
        .await;

    stack.start_worker().await;
    stack
        .eventually("both writes are applied", || async {
            stack.get_task(&id).await.status == 200
                && stack.get_task(&kept).await.body["completed"] == true
        })
        .await;
    let task = stack.get_task(&id).await.body;
    assert_eq!(task["sync_status"], "synced");
    assert_eq!(task["title"], "while down");
    assert_eq!(
        stack.op_log_count(OpLog::task(id.parse().unwrap())).await,
        1
    );
    assert_eq!(stack.queue_depth(&stack.topology().work_queue()).await, 0);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_field_and_never_reaches_the_queue() {
    let stack = TestStack::start().await;
    let id = id_of(&stack.create_task(json!({"title": "existing"})).await.body);
    bad_fields_are_400s_naming_them(&stack, &id).await;
    bodies_not_json_are_400_or_415(&stack).await;
    bad_sizes_routes_methods_ids_and_queries_are_4xx(&stack).await;

    // Nothing of it was published: only the one good create is in the log, the queue is empty.
    assert_eq!(stack.op_log_count(OpLog::all()).await, 1);
    assert_eq!(stack.queue_depth(&stack.topology().work_queue()).await, 0);
    assert_eq!(
        stack.queue_depth(&stack.topology().parking_queue()).await,
        0
    );
    assert_eq!(stack.get_task(&id).await.body["title"], "existing");
}

/// Each JSON body with a bad field is a 400 whose message names the field.
async fn bad_fields_are_400s_naming_them(stack: &TestStack, id: &str) {
    let task_path = format!("/tasks/{id}");
    let long_title = "x".repeat(501);
    let long_description = "x".repeat(10_001);

    let json_cases: Vec<(Method, &str, Value, u16, &str)> = vec![
        (Method::POST, "/tasks", json!({}), 400, "title"),
        (
            Method::POST,
            "/tasks",
            json!({"title": "   "}),
            400,
            "title",
        ),
        (Method::POST, "/tasks", json!({"title": 5}), 400, "title"),
        (
            Method::POST,
            "/tasks",
            json!({"title": long_title}),
            400,
            "title",
        ),
        (
            Method::POST,
            "/tasks",
            json!({"title": "t", "description": long_description}),
            400,
            "description",
        ),
        (
            Method::POST,
            "/tasks",
            json!({"title": "t", "completed": "yes"}),
            400,
            "completed",
        ),
        (
            Method::POST,
            "/tasks",
            json!({"id": "not-a-uuid", "title": "t"}),
            400,
            "id",
        ),
        (
            Method::POST,
            "/tasks",
            json!(["title"]),
            400,
            "invalid request body",
        ),
        (
            Method::PUT,
            &task_path,
            json!({}),
            400,
            "title, description, completed",
        ),
        (Method::PUT, &task_path, json!({"title": ""}), 400, "title"),
        (Method::PUT, "/tasks/123", json!({"title": "x"}), 400, "id"),
    ];
    for (method, path, body, status, mention) in json_cases {
        let reply = stack
            .request(method.clone(), path, Some(body.clone()), &[])
            .await;
        assert_eq!(reply.status, status, "{method} {path} {body}: {reply:?}");
        let message = reply.error_message(&format!("/api{path}"));
        assert!(
            message.contains(mention),
            "{method} {path} {body}: {message:?} should name {mention:?}"
        );
    }
}

/// A malformed body is a 400; one without the JSON content type a 415 naming the type.
async fn bodies_not_json_are_400_or_415(stack: &TestStack) {
    let api = stack.client();
    let post = |body: &'static str, content_type: &'static [(&'static str, &'static str)]| {
        api.request_raw(Method::POST, "/tasks", body, content_type)
    };
    let malformed = post("{\"title\": ", &[("content-type", "application/json")]).await;
    assert_eq!(malformed.status, 400);
    let no_type = post("{\"title\": \"t\"}", &[]).await;
    assert_eq!(no_type.status, 415);
    let form = &[("content-type", "application/x-www-form-urlencoded")];
    let wrong_type = post("title=t", form).await;
    assert_eq!(wrong_type.status, 415);
    let error = wrong_type.body["error"].as_str().unwrap();
    assert!(error.contains("application/json"));
}

/// A body over the limit, an unknown route, a wrong method, a bad id or query: each its 4xx.
async fn bad_sizes_routes_methods_ids_and_queries_are_4xx(stack: &TestStack) {
    let huge = json!({"title": "t", "description": "x".repeat(3 * 1024 * 1024)});
    let too_large = stack.create_task(huge).await;
    assert_eq!(too_large.status, 413, "{too_large:?}");
    too_large.error_message("/api/tasks");

    let no_route = stack.get("/nothing-here").await;
    assert_eq!(no_route.status, 404);
    no_route.error_message("/api/nothing-here");
    let wrong_method = stack.request(Method::PATCH, "/tasks", None, &[]).await;
    assert_eq!(wrong_method.status, 405);
    wrong_method.error_message("/api/tasks");
    let bad_id = stack.get_task("not-a-uuid").await;
    assert_eq!(bad_id.status, 400);
    assert!(bad_id.error_message("/api/tasks/not-a-uuid").contains("id"));
    let bad_query = stack.get("/tasks?include_deleted=maybe").await;
    assert_eq!(bad_query.status, 400);
}

#[tokio::test]
async fn missing_and_deleted_tasks_are_404_for_every_verb() {
    let stack = TestStack::start().await;
    let absent = Uuid::new_v4().to_string();
    assert_eq!(stack.get_task(&absent).await.status, 404);
    assert_eq!(
        stack
            .update_task(&absent, json!({"title": "x"}))
            .await
            .status,
        404
    );
    let reply = stack.delete_task(&absent).await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.error_message(&format!("/api/tasks/{absent}")),
        "task not found"
    );

    let id = id_of(&stack.create_task(json!({"title": "gone soon"})).await.body);
    assert_eq!(stack.delete_task(&id).await.status, 204);
    assert_eq!(stack.get_task(&id).await.status, 404);
    assert_eq!(
        stack.update_task(&id, json!({"title": "x"})).await.status,
        404
    );
    assert_eq!(stack.delete_task(&id).await.status, 404, "already deleted");

    // Deleted tasks are listed only when asked for.
    assert_eq!(stack.list_tasks().await.body, json!([]));
    let all = stack.get("/tasks?include_deleted=true").await;
    assert_eq!(all.body.as_array().unwrap().len(), 1);
    assert_eq!(all.body[0]["is_deleted"], true);
}

#[tokio::test]
async fn health_ready_and_status_describe_the_stack() {
    let stack = TestStack::start().await;
    let health = stack.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    assert!(health.body["timestamp"].is_string());

    let ready = stack.get("/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["checks"]["postgres"]["status"], "up");
    assert_eq!(ready.body["checks"]["rabbitmq"]["status"], "up");

    let before = stack.status().await;
    assert_eq!(before.status, 200);
    assert_eq!(before.body["last_sync_timestamp"], Value::Null);
    stack.create_task(json!({"title": "t"})).await;
    let after = stack.status().await.body;
    assert_eq!(after["is_online"], true);
    assert_eq!(after["pending_sync_count"], 0);
    assert_eq!(after["sync_queue_size"], 0);
    assert_eq!(after["dead_letter_count"], 0);
    assert_eq!(after["worker_count"], 1);
    assert!(after["last_sync_timestamp"].is_string(), "{after}");
    assert!(after["server_time"].is_string());
}

#[tokio::test]
async fn without_a_broker_writes_answer_503_and_ready_names_it() {
    let stack = TestStack::start().await;
    let mut settings = stack.settings.clone();
    // Nothing listens on port 1.
    settings.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let extra = stack.spawn_api(settings).await;

    let ready = extra.api.ready().await;
    assert_eq!(ready.status, 503);
    let body = &ready.body;
    assert_eq!(body["checks"]["rabbitmq"]["status"], "down");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert!(body["error"].as_str().unwrap().contains("rabbitmq"));

    let write = extra
        .api
        .create_task(json!({"title": "not accepted"}))
        .await;
    assert_eq!(write.status, 503);
    assert_eq!(write.header("retry-after"), Some("1"));
    let body = &write.body;
    assert!(
        body["error"].as_str().unwrap().contains("not accepted"),
        "{body}"
    );

    // Reads still work: they only need Postgres.
    assert_eq!(extra.api.list_tasks().await.status, 200);

    extra.stop().await;
}
