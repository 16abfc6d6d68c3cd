//! What a hostile or careless client can send: text with control characters, invisible titles,
//! timestamps outside RFC 3339, reused op ids, repeated keys, non-object bodies, nulls, long
//! URIs; and, in [`connections`], connections that are slow, huge or too many.

use chrono::{Duration as Delta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use tasksync_tests::{
    Reply, TestStack,
    op_log::OpLog,
    sync_client::{create, op_id, statuses, update},
};
use uuid::Uuid;

#[path = "input_connections.rs"]
mod connections;

/// Rows in the operation log: what reached the worker.
async fn logged(stack: &TestStack) -> u64 {
    stack.op_log_count(OpLog::all()).await
}

/// The id of a task created with the title `kept`, which the bad requests must leave alone.
async fn kept_task(stack: &TestStack) -> String {
    let created = stack.create_task(json!({"title": "kept"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    created.task().id.to_string()
}

/// Nothing waits in the work or parking queue.
async fn queues_empty(stack: &TestStack) -> bool {
    stack.queue_depth(&stack.topology().work_queue()).await == 0
        && stack.queue_depth(&stack.topology().parking_queue()).await == 0
}

/// Sends `body` as it is (repeated keys cannot be written with `json!`).
async fn send_raw(stack: &TestStack, method: Method, path: &str, body: &str) -> Reply {
    let json = [("content-type", "application/json")];
    stack
        .client()
        .request_raw(method, path, body.to_string(), &json)
        .await
}

/// Sends `body` as JSON and returns the message of the 400 it must get.
async fn message_of_400(stack: &TestStack, method: Method, path: &str, body: &Value) -> String {
    let reply = stack
        .request(method.clone(), path, Some(body.clone()), &[])
        .await;
    assert_eq!(reply.status, 400, "{method} {path} {body}: {reply:?}");
    reply.error_message(&format!("/api{path}"))
}

fn slot_error(reply: &Reply, i: usize) -> String {
    reply.body["processed_items"][i]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in slot {i}: {reply:?}"))
        .to_string()
}

#[tokio::test]
async fn control_characters_and_invisible_titles_are_400s_naming_the_field_and_never_published() {
    let stack = TestStack::start().await;
    let id = kept_task(&stack).await;
    let path = format!("/tasks/{id}");
    let cases = [
        (
            Method::POST,
            "/tasks",
            json!({"title": "nul\u{0}title"}),
            "title: must not contain control characters",
        ),
        (
            Method::POST,
            "/tasks",
            json!({"title": "t", "description": "esc\u{1b}[31m"}),
            "description: must not contain control characters",
        ),
        (
            Method::PUT,
            path.as_str(),
            json!({"description": "bell\u{7}"}),
            "description: must not contain control characters",
        ),
        (
            Method::POST,
            "/tasks",
            json!({"title": "\u{200B}\u{200C}\u{200D}"}),
            "title: must not be blank",
        ),
        (
            Method::PUT,
            path.as_str(),
            json!({"title": " \u{2060}\u{FEFF}\u{3000}"}),
            "title: must not be blank",
        ),
    ];
    for (method, path, body, expected) in cases {
        let message = message_of_400(&stack, method, path, &body).await;
        assert!(message.starts_with(expected), "{body}: {message}");
    }

    // In a push, the same rules make the item an error in its slot; its neighbour applies.
    let t0 = Utc::now() - Delta::hours(1);
    let good = Uuid::new_v4();
    let items = [
        create(Uuid::new_v4(), "nul\u{0}title", t0),
        update(Uuid::new_v4(), json!({"description": "a\u{0}b"}), t0),
        create(Uuid::new_v4(), "\u{FEFF}\u{200B}", t0),
        create(good, "tab\tand line\nbreaks are fine", t0),
    ];
    let reply = stack.push(&items).await;
    assert_eq!(
        statuses(&reply),
        ["error", "error", "error", "success"],
        "{reply:?}"
    );
    assert!(slot_error(&reply, 0).starts_with("title: must not contain control characters"));
    assert!(slot_error(&reply, 1).starts_with("description: "));
    assert!(slot_error(&reply, 2).starts_with("title: must not be blank"));

    assert_eq!(
        logged(&stack).await,
        2,
        "only the two good creates reached the worker"
    );
    assert!(queues_empty(&stack).await);
    assert_eq!(stack.get_task(&id).await.body["title"], "kept");
}

#[tokio::test]
async fn timestamps_outside_the_epoch_to_year_9999_are_refused_naming_the_field() {
    let stack = TestStack::start().await;
    let t0 = Utc::now() - Delta::hours(1);
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut before_year_1 = create(a, "a", t0);
    before_year_1["data"]["updated_at"] = json!("0000-01-01T00:00:00+23:59");
    // created_at is checked even when data.updated_at is present.
    let mut early_created = create(b, "b", t0);
    early_created["created_at"] = json!("1969-12-31T23:59:59Z");
    let mut past_9999 = create(c, "c", t0);
    past_9999["created_at"] = json!("9999-12-31T23:59:59-00:01");
    past_9999["data"]
        .as_object_mut()
        .unwrap()
        .remove("updated_at");
    let reply = stack.push(&[before_year_1, early_created, past_9999]).await;
    assert_eq!(statuses(&reply), ["error"; 3], "{reply:?}");
    assert!(slot_error(&reply, 0).starts_with("updated_at: must not be before 1970"));
    assert!(slot_error(&reply, 1).starts_with("created_at: must not be before 1970"));
    assert!(slot_error(&reply, 2).starts_with("created_at: must not be after 9999"));

    let body = json!({"items": [create(Uuid::new_v4(), "t", t0)], "client_timestamp": "0000-01-01T00:00:00Z"});
    let reply = stack.request(Method::POST, "/sync", Some(body), &[]).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply
            .error_message("/api/sync")
            .starts_with("client_timestamp: ")
    );

    assert_eq!(logged(&stack).await, 0);
    assert!(queues_empty(&stack).await);
}

#[tokio::test]
async fn an_op_id_reused_within_a_push_with_other_content_is_an_error_and_a_true_repeat_is_one_operation()
 {
    let stack = TestStack::start().await;
    let t0 = Utc::now() - Delta::hours(1);
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let original = create(first, "first", t0);
    let mut reused = create(second, "second", t0);
    reused["id"] = original["id"].clone();
    let repeat = original.clone();
    let reply = stack.push(&[original.clone(), reused, repeat]).await;
    assert_eq!(
        statuses(&reply),
        ["success", "error", "success"],
        "{reply:?}"
    );
    let error = slot_error(&reply, 1);
    assert!(
        error.starts_with("id: ") && error.contains("used by another item of this push"),
        "{error}"
    );
    assert!(error.contains(&op_id(&original)), "{error}");
    let slots = reply.body["processed_items"].as_array().unwrap();
    assert_eq!(slots[1]["client_id"], second.to_string());
    assert_eq!(slots[1]["resolved_data"], Value::Null);
    assert_eq!(slots[0], slots[2], "the repeat is answered as the original");
    assert_eq!(slots[0]["resolved_data"]["title"], "first");

    assert_eq!(stack.get_task(&second.to_string()).await.status, 404);
    assert_eq!(
        stack.op_log_count(OpLog::task(first)).await,
        1,
        "published once"
    );
    assert_eq!(logged(&stack).await, 1);
}

#[tokio::test]
async fn a_repeated_key_is_a_400_on_rest_and_an_error_item_in_a_push() {
    let stack = TestStack::start().await;
    let reply = send_raw(
        &stack,
        Method::POST,
        "/tasks",
        r#"{"title": "a", "title": "b"}"#,
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply
            .error_message("/api/tasks")
            .starts_with("title: appears more than once")
    );
    let id = kept_task(&stack).await;
    let reply = send_raw(
        &stack,
        Method::PUT,
        &format!("/tasks/{id}"),
        r#"{"completed": true, "completed": false}"#,
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");

    let t0 = (Utc::now() - Delta::hours(1)).to_rfc3339();
    let (bad, good) = (Uuid::new_v4(), Uuid::new_v4());
    let item = |task: Uuid, data: &str| {
        format!(
            r#"{{"id": "{}", "task_id": "{task}", "operation": "create", "data": {data}, "created_at": "{t0}"}}"#,
            Uuid::new_v4()
        )
    };
    let body = format!(
        r#"{{"items": [{}, {}]}}"#,
        item(bad, r#"{"title": "a", "title": "b"}"#),
        item(good, r#"{"title": "fine"}"#)
    );
    let reply = send_raw(&stack, Method::POST, "/batch", &body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(statuses(&reply), ["error", "success"]);
    assert!(slot_error(&reply, 0).starts_with("data.title: appears more than once"));
    assert_eq!(
        reply.body["processed_items"][0]["client_id"],
        bad.to_string()
    );

    let twice = format!(
        r#"{{"items": [], "items": [{}]}}"#,
        item(Uuid::new_v4(), r#"{"title": "x"}"#)
    );
    let reply = send_raw(&stack, Method::POST, "/sync", &twice).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply
            .error_message("/api/sync")
            .starts_with("items: appears more than once")
    );

    assert_eq!(stack.get_task(&bad.to_string()).await.status, 404);
    assert_eq!(stack.get_task(&id).await.body["completed"], false);
    assert_eq!(logged(&stack).await, 2, "the REST create and the good item");
}

#[tokio::test]
async fn bodies_must_be_objects_and_type_errors_name_the_field_in_client_words() {
    let stack = TestStack::start().await;
    let id = kept_task(&stack).await;
    let path = format!("/tasks/{id}");
    let cases = [
        (
            Method::PUT,
            path.as_str(),
            json!(["x", null, true]),
            "invalid request body: must be a JSON object, got an array",
        ),
        (
            Method::POST,
            "/tasks",
            json!("title"),
            "invalid request body: must be a JSON object, got a string",
        ),
        (
            Method::POST,
            "/tasks",
            json!({"title": 5}),
            "title: must be a string, got a number",
        ),
        (
            Method::POST,
            "/tasks",
            json!({"title": "t", "completed": "yes"}),
            "completed: must be true or false, got a string",
        ),
        (
            Method::POST,
            "/tasks",
            json!({"id": "nope", "title": "t"}),
            "id: must be a UUID",
        ),
        (
            Method::PUT,
            path.as_str(),
            json!({"description": {"a": 1}}),
            "description: must be a string, got an object",
        ),
    ];
    for (method, path, body, expected) in cases {
        let message = message_of_400(&stack, method, path, &body).await;
        assert!(message.starts_with(expected), "{body}: {message}");
        for internal in ["struct", "CreateTask", "UpdateTask", "Option", "elements"] {
            assert!(!message.contains(internal), "{message}");
        }
    }
    assert_eq!(stack.get_task(&id).await.body["title"], "kept");
    assert_eq!(logged(&stack).await, 1);
}

#[tokio::test]
async fn null_title_and_completed_mean_absent_in_a_push_as_on_rest() {
    let stack = TestStack::start().await;
    let t0 = Utc::now() - Delta::hours(1);
    let task = Uuid::new_v4();
    let first = create(task, "title stays", t0);
    let nulls = update(
        task,
        json!({"title": null, "completed": null, "description": "set"}),
        t0 + Delta::minutes(1),
    );
    let reply = stack.push(&[first, nulls]).await;
    assert_eq!(statuses(&reply), ["success", "success"], "{reply:?}");
    let resolved = &reply.body["processed_items"][1]["resolved_data"];
    assert_eq!(resolved["title"], "title stays");
    assert_eq!(resolved["completed"], false);
    assert_eq!(resolved["description"], "set");

    let rest = stack
        .update_task(
            &task.to_string(),
            json!({"title": null, "completed": null, "description": null}),
        )
        .await;
    assert_eq!(rest.status, 200, "{rest:?}");
    assert_eq!(rest.body["title"], "title stays");
    assert_eq!(
        rest.body["description"],
        Value::Null,
        "null clears the description"
    );
}

#[tokio::test]
async fn a_uri_over_8_kib_is_a_414_with_the_error_body() {
    let stack = TestStack::start().await;
    let reply = stack
        .get(&format!(
            "/tasks?include_deleted=false&pad={}",
            "a".repeat(9 * 1024)
        ))
        .await;
    assert_eq!(reply.status, 414, "{reply:?}");
    assert!(reply.error_message("/api/tasks").contains("8192"));
}
