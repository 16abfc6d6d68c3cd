//! The REST conventions client authors expect, on the real stack: entity tags with
//! `If-None-Match` (304) and `If-Match` (412, checked by the worker when it applies), `PATCH`,
//! `Preference-Applied`, and the machine-readable `code` of every error body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;

use reqwest::Method;
use serde_json::{Value, json};
use tasksync_shared::{OutcomeStatus::Error, config::RateLimit};
use tasksync_tests::{TestStack, api_client::Reply, op_log::OpLog, tokens::secret_settings};
use uuid::Uuid;

fn etag(reply: &Reply) -> String {
    reply
        .header("etag")
        .unwrap_or_else(|| panic!("no ETag in {reply:?}"))
        .to_string()
}

/// Asserts the error body with its `code` and returns the message.
fn error_with_code(reply: &Reply, status: u16, code: &str, path: &str) -> String {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.body["code"], code, "{reply:?}");
    reply.error_message(path)
}

async fn create(stack: &TestStack, title: &str) -> (String, Reply) {
    let created = stack.create_task(json!({ "title": title })).await;
    assert_eq!(created.status, 201, "{created:?}");
    (created.task().id.to_string(), created)
}

async fn put_if_match(stack: &TestStack, id: &str, body: Value, tag: &str) -> Reply {
    let path = format!("/tasks/{id}");
    stack
        .request(Method::PUT, &path, Some(body), &[("if-match", tag)])
        .await
}

#[tokio::test]
async fn a_task_has_an_etag_that_moves_with_each_update_and_a_current_copy_gets_304() {
    let stack = TestStack::start().await;
    let (id, created) = create(&stack, "tagged").await;
    let first = etag(&created);
    assert!(first.starts_with('"') && first.ends_with('"'), "{first}");

    let read = stack.get_task(&id).await;
    assert_eq!(read.status, 200);
    assert_eq!(etag(&read), first, "the write's answer and the read agree");

    let path = format!("/tasks/{id}");
    for condition in [first.clone(), "*".into(), format!("\"nope\", W/{first}")] {
        let unchanged = stack
            .request(Method::GET, &path, None, &[("if-none-match", &condition)])
            .await;
        assert_eq!(unchanged.status, 304, "{condition}: {unchanged:?}");
        assert_eq!(etag(&unchanged), first);
        assert_eq!(unchanged.body, Value::Null, "no body");
    }
    let other = stack
        .request(Method::GET, &path, None, &[("if-none-match", "\"nope\"")])
        .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.task().title, "tagged");

    let updated = stack.update_task(&id, json!({"completed": true})).await;
    assert_eq!(updated.status, 200, "{updated:?}");
    let second = etag(&updated);
    assert_ne!(second, first);
    assert_eq!(etag(&stack.get_task(&id).await), second);
    let stale = stack
        .request(Method::GET, &path, None, &[("if-none-match", &first)])
        .await;
    assert_eq!(stale.status, 200, "the copy is out of date: {stale:?}");
    assert!(stale.task().completed);
}

#[tokio::test]
async fn a_stale_if_match_is_412_logged_as_an_error_and_writes_nothing() {
    let stack = TestStack::start().await;
    let (id, created) = create(&stack, "first").await;
    let read = etag(&created);
    let meanwhile = stack.update_task(&id, json!({"title": "second"})).await;
    let current = etag(&meanwhile);

    let refused = put_if_match(&stack, &id, json!({"title": "third"}), &read).await;
    let message = error_with_code(
        &refused,
        412,
        "precondition_failed",
        &format!("/api/tasks/{id}"),
    );
    assert!(message.contains("If-Match"), "{message}");
    assert_eq!(etag(&refused), current, "the 412 says the current tag");
    let task = stack.get_task(&id).await;
    assert_eq!(task.task().title, "second", "nothing written");
    assert_eq!(etag(&task), current);

    // Decided by the worker, and logged like any error.
    let op_id = refused.operation_id();
    assert_eq!(
        OpLog::ops(&[op_id])
            .outcomes(&[Error])
            .count(&stack.db)
            .await,
        1
    );
    let outcome = stack.client().operation(&op_id.to_string()).await;
    assert_eq!(outcome.status, 200, "{outcome:?}");
    assert_eq!(outcome.body["status"], "error", "{outcome:?}");
    assert!(
        outcome.body["last_error"]
            .as_str()
            .unwrap()
            .contains("precondition"),
        "{outcome:?}"
    );

    // The current tag, or one of a list, or `*`: applied.
    let list = format!("\"old\", {current}");
    let applied = put_if_match(&stack, &id, json!({"title": "third"}), &list).await;
    assert_eq!(applied.status, 200, "{applied:?}");
    assert_eq!(applied.task().title, "third");
    let star = put_if_match(&stack, &id, json!({"completed": true}), "*").await;
    assert_eq!(star.status, 200, "{star:?}");

    // Deletes too.
    let path = format!("/tasks/{id}");
    let stale_delete = stack
        .request(Method::DELETE, &path, None, &[("if-match", &current)])
        .await;
    error_with_code(
        &stale_delete,
        412,
        "precondition_failed",
        &format!("/api{path}"),
    );
    assert_eq!(stack.get_task(&id).await.status, 200, "not deleted");
    let tag = etag(&stack.get_task(&id).await);
    let deleted = stack
        .request(Method::DELETE, &path, None, &[("if-match", &tag)])
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let gone = put_if_match(&stack, &id, json!({"title": "back"}), "*").await;
    error_with_code(&gone, 404, "not_found", &format!("/api/tasks/{id}"));
}

#[tokio::test]
async fn an_if_match_on_another_users_task_is_not_found() {
    let stack = TestStack::start_with_auth(secret_settings()).await;
    let (alice, bob) = (stack.client_as("alice"), stack.client_as("bob"));
    let created = alice.create_task(json!({"title": "alice's"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    let (id, tag) = (created.task().id, etag(&created));
    let path = format!("/tasks/{id}");
    for (method, body) in [
        (Method::PUT, Some(json!({"title": "bob's"}))),
        (Method::PATCH, Some(json!({"title": "bob's"}))),
        (Method::DELETE, None),
    ] {
        for condition in [tag.as_str(), "*"] {
            let reply = bob
                .request(
                    method.clone(),
                    &path,
                    body.clone(),
                    &[("if-match", condition)],
                )
                .await;
            error_with_code(&reply, 404, "not_found", &format!("/api{path}"));
            assert!(reply.header("etag").is_none(), "{reply:?}");
        }
    }
    let read = bob
        .request(Method::GET, &path, None, &[("if-none-match", &tag)])
        .await;
    error_with_code(&read, 404, "not_found", &format!("/api{path}"));
    let mine = alice.get_task(&id.to_string()).await;
    assert_eq!(mine.task().title, "alice's");
    assert_eq!(etag(&mine), tag);
}

#[tokio::test]
async fn patch_is_the_partial_update_and_respond_async_is_acknowledged() {
    let stack = TestStack::start().await;
    let created = stack
        .create_task(json!({"title": "keep", "description": "me"}))
        .await;
    let id = created.task().id.to_string();
    let path = format!("/tasks/{id}");
    let patched = stack
        .request(Method::PATCH, &path, Some(json!({"completed": true})), &[])
        .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    let task = patched.task();
    assert_eq!(
        (
            task.title.as_str(),
            task.description.as_deref(),
            task.completed
        ),
        ("keep", Some("me"), true)
    );
    assert_ne!(etag(&patched), etag(&created));
    let blank = stack
        .request(Method::PATCH, &path, Some(json!({"title": " "})), &[])
        .await;
    error_with_code(&blank, 400, "invalid_request", &format!("/api{path}"));

    assert!(patched.header("preference-applied").is_none());
    let prefer = [("prefer", "respond-async")];
    let accepted = stack
        .request(
            Method::PATCH,
            &path,
            Some(json!({"title": "later"})),
            &prefer,
        )
        .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    assert_eq!(accepted.header("preference-applied"), Some("respond-async"));
    assert!(
        accepted.header("etag").is_none(),
        "not a stored version yet"
    );
    let created_async = stack
        .request(
            Method::POST,
            "/tasks",
            Some(json!({"title": "async"})),
            &prefer,
        )
        .await;
    assert_eq!(created_async.status, 202, "{created_async:?}");
    assert_eq!(
        created_async.header("preference-applied"),
        Some("respond-async")
    );
}

#[tokio::test]
async fn every_error_the_api_answers_has_a_code() {
    let stack = TestStack::start_with(|s| {
        s.jwt = secret_settings();
        s.body_limit = 4096;
    })
    .await;
    let user = stack.client_as("carol");
    let created = user.create_task(json!({"title": "taken"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.task().id;
    let task = format!("/tasks/{id}");
    let missing = format!("/tasks/{}", Uuid::new_v4());
    let long_query = format!("/tasks?after={}", "a".repeat(9000));

    let cases: Vec<(u16, &str, Reply)> = vec![
        (401, "unauthorized", stack.client().get("/tasks").await),
        (
            400,
            "invalid_request",
            user.request_raw(
                Method::POST,
                "/tasks",
                "{",
                &[("content-type", "application/json")],
            )
            .await,
        ),
        (400, "invalid_request", user.get("/tasks?limit=0").await),
        (404, "not_found", user.get(&missing).await),
        (404, "not_found", user.get("/no-such-route").await),
        (
            405,
            "method_not_allowed",
            user.request(Method::POST, &task, Some(json!({})), &[])
                .await,
        ),
        (
            409,
            "exists",
            user.create_task(json!({"id": id, "title": "again"})).await,
        ),
        (
            412,
            "precondition_failed",
            user.request(
                Method::PUT,
                &task,
                Some(json!({"title": "x"})),
                &[("if-match", "\"old\"")],
            )
            .await,
        ),
        (
            413,
            "payload_too_large",
            user.create_task(json!({"title": "x".repeat(5000)})).await,
        ),
        (414, "uri_too_long", user.get(&long_query).await),
        (
            415,
            "unsupported_media_type",
            user.request_raw(
                Method::POST,
                "/tasks",
                "{}",
                &[("content-type", "text/plain")],
            )
            .await,
        ),
    ];
    for (status, code, reply) in &cases {
        assert_eq!(reply.status, *status, "{reply:?}");
        assert_eq!(reply.body["code"], *code, "{status}: {reply:?}");
        assert!(reply.body["error"].is_string(), "{reply:?}");
        assert!(reply.body["timestamp"].is_string(), "{reply:?}");
        assert!(reply.body["path"].is_string(), "{reply:?}");
    }
}

#[tokio::test]
async fn without_a_broker_a_write_and_readiness_say_unavailable() {
    let stack = TestStack::start().await;
    let mut settings = stack.settings.clone();
    // Nothing listens on port 1.
    settings.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let extra = stack.spawn_api(settings).await;
    let write = extra
        .api
        .create_task(json!({"title": "not accepted"}))
        .await;
    error_with_code(&write, 503, "unavailable", "/api/tasks");
    let ready = extra.api.ready().await;
    error_with_code(&ready, 503, "unavailable", "/api/ready");
    extra.stop().await;
}

#[tokio::test]
async fn a_request_over_the_rate_limit_has_the_code_rate_limited() {
    let stack = TestStack::start_with(|s| {
        s.edge.rate_limit = Some(RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(1).unwrap(),
        });
    })
    .await;
    // Bounded: the bucket holds one token and refills one a second.
    let mut refused = None;
    for _ in 0..5 {
        let reply = stack.list_tasks().await;
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("a 429 within five requests");
    error_with_code(&refused, 429, "rate_limited", "/api/tasks");
}
