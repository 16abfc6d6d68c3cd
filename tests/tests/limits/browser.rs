//! `CORS_ALLOWED_ORIGINS` and the security headers of every answer.

use reqwest::Method;
use serde_json::json;
use tasksync_shared::config::AllowedOrigins;
use tasksync_tests::{Reply, TestStack};
use uuid::Uuid;

const ALLOWED: &str = "https://app.example.com";
const OTHER: &str = "https://evil.example.net";

async fn cors_stack(origins: AllowedOrigins) -> TestStack {
    TestStack::start_with(|s| s.edge.cors_allowed_origins = origins).await
}

fn preflight_headers(origin: &str) -> [(&str, &str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", "PUT"),
        (
            "access-control-request-headers",
            "authorization, content-type, prefer, if-match, traceparent, x-request-id, device-id",
        ),
    ]
}

/// The comma-separated values of `name`, lowercase.
fn listed(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

fn assert_lists(reply: &Reply, name: &str, expected: &[&str]) {
    let listed = listed(reply, name);
    for value in expected {
        assert!(
            listed.iter().any(|l| l == value),
            "{value} not in {name}: {reply:?}"
        );
    }
}

fn cors_headers(reply: &Reply) -> Vec<&str> {
    reply
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn an_allowed_origin_gets_its_preflight_and_answers_it_can_read() {
    let stack = cors_stack(AllowedOrigins::List(vec![ALLOWED.into()])).await;
    let path = format!("/tasks/{}", Uuid::new_v4());
    let preflight = stack
        .request(Method::OPTIONS, &path, None, &preflight_headers(ALLOWED))
        .await;
    assert!(
        preflight.status == 200 || preflight.status == 204,
        "{preflight:?}"
    );
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(ALLOWED)
    );
    assert_lists(
        &preflight,
        "access-control-allow-methods",
        &["get", "post", "put", "patch", "delete"],
    );
    assert_lists(
        &preflight,
        "access-control-allow-headers",
        &[
            "authorization",
            "content-type",
            "prefer",
            "last-event-id",
            "if-match",
            "if-none-match",
            "traceparent",
            "x-request-id",
            "device-id",
        ],
    );
    assert!(
        preflight.header("access-control-max-age").is_some(),
        "{preflight:?}"
    );
    assert_eq!(preflight.header("access-control-allow-credentials"), None);
    assert_eq!(preflight.header("x-content-type-options"), Some("nosniff"));

    let created = stack
        .request(
            Method::POST,
            "/tasks",
            Some(json!({"title": "from a browser"})),
            &[("origin", ALLOWED)],
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.header("access-control-allow-origin"), Some(ALLOWED));
    assert_lists(
        &created,
        "access-control-expose-headers",
        &[
            "location",
            "operation-id",
            "etag",
            "retry-after",
            "preference-applied",
            "link",
            "x-next-cursor",
            "x-request-id",
            "traceparent",
        ],
    );
    assert_lists(&created, "vary", &["origin"]);
    // Error answers too, so that the app can read why.
    let missing = stack
        .request(Method::GET, &path, None, &[("origin", ALLOWED)])
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("access-control-allow-origin"), Some(ALLOWED));
}

#[tokio::test]
async fn an_origin_not_listed_is_never_allowed() {
    let stack = cors_stack(AllowedOrigins::List(vec![ALLOWED.into()])).await;
    let preflight = stack
        .request(Method::OPTIONS, "/tasks", None, &preflight_headers(OTHER))
        .await;
    assert!(cors_headers(&preflight).is_empty(), "{preflight:?}");
    assert_eq!(preflight.header("x-content-type-options"), Some("nosniff"));
    let read = stack
        .request(Method::GET, "/tasks", None, &[("origin", OTHER)])
        .await;
    assert_eq!(read.status, 200);
    assert!(cors_headers(&read).is_empty(), "{read:?}");
    assert_lists(&read, "vary", &["origin"]);
    // Nor does a request without `Origin` (not from a browser) learn what is allowed.
    let plain = stack.list_tasks().await;
    assert!(cors_headers(&plain).is_empty(), "{plain:?}");
}

#[tokio::test]
async fn without_allowed_origins_there_are_no_cors_headers() {
    let stack = TestStack::start().await;
    let read = stack
        .request(Method::GET, "/tasks", None, &[("origin", ALLOWED)])
        .await;
    assert_eq!(read.status, 200);
    assert!(cors_headers(&read).is_empty(), "{read:?}");
    let preflight = stack
        .request(Method::OPTIONS, "/tasks", None, &preflight_headers(ALLOWED))
        .await;
    assert_eq!(preflight.status, 405, "{preflight:?}");
    assert!(cors_headers(&preflight).is_empty(), "{preflight:?}");
}

#[tokio::test]
async fn a_wildcard_allows_any_origin_without_credentials() {
    let stack = cors_stack(AllowedOrigins::Any).await;
    let read = stack
        .request(Method::GET, "/tasks", None, &[("origin", OTHER)])
        .await;
    assert_eq!(
        read.header("access-control-allow-origin"),
        Some("*"),
        "{read:?}"
    );
    assert_eq!(read.header("access-control-allow-credentials"), None);
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_no_server_header() {
    let stack = TestStack::start().await;
    let id = Uuid::new_v4();
    let replies = [
        stack.list_tasks().await,
        stack
            .create_task(json!({"id": id, "title": "headers"}))
            .await,
        stack.get_task(&id.to_string()).await,
        stack.get_task(&Uuid::new_v4().to_string()).await,
        stack.get_task("not-a-uuid").await,
        stack.request(Method::PATCH, "/tasks", None, &[]).await,
        stack.get("/no-such-route").await,
        stack
            .client()
            .request_raw(
                Method::POST,
                "/tasks",
                "{",
                &[("content-type", "application/json")],
            )
            .await,
        stack.status().await,
        stack.get("/health").await,
    ];
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 201, 200, 404, 400, 405, 404, 400, 200, 200]);
    for reply in &replies {
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{reply:?}"
        );
        assert_eq!(
            reply.header("referrer-policy"),
            Some("no-referrer"),
            "{reply:?}"
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{reply:?}");
        assert_eq!(reply.header("server"), None, "{reply:?}");
    }
}
