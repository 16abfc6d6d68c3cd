#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::StatusCode,
    middleware::{self, Next},
    routing::{get, post},
};
use tasksync_shared::{Settings, config::EdgeSettings};
use tower::ServiceExt;

use super::*;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Stands in for authentication: the user named by `x-user`, none without it.
async fn authenticate(mut request: Request, next: Next) -> Response {
    let user = request
        .headers()
        .get("x-user")
        .map(|v| v.to_str().unwrap().to_string());
    if let Some(user) = user {
        request.extensions_mut().insert(CurrentUser(user));
    }
    next.run(request).await
}

/// The throttle inside a stand-in authentication, over a write route and the probes.
fn app(per_second: u32, burst: u32) -> Router {
    let edge = EdgeSettings {
        rate_limit: Some(RateLimit {
            per_second: nz(per_second),
            burst: nz(burst),
        }),
        queue_high_water: None,
        ..EdgeSettings::default()
    };
    let throttle = Throttle::new(&edge, Broker::new(&Settings::default()));
    let api = Router::new()
        .route("/tasks", post(|| async { StatusCode::CREATED }))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(|| async { "ok" }))
        .layer(middleware::from_fn_with_state(throttle, guard))
        .layer(middleware::from_fn(authenticate));
    Router::new().nest("/api", api)
}

async fn send(app: &Router, method: &str, path: &str, user: Option<&str>) -> Response {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(user) = user {
        request = request.header("x-user", user);
    }
    app.clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn one_users_burst_never_limits_another() {
    // A token a second: nothing refills during these few microseconds.
    let app = app(1, 3);
    for _ in 0..3 {
        let ok = send(&app, "POST", "/api/tasks", Some("alice")).await;
        assert_eq!(ok.status(), StatusCode::CREATED);
    }
    let refused = send(&app, "POST", "/api/tasks", Some("alice")).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1, "a token a second: back within a second");
    for _ in 0..3 {
        let other = send(&app, "POST", "/api/tasks", Some("bob")).await;
        assert_eq!(
            other.status(),
            StatusCode::CREATED,
            "bob has his own bucket"
        );
    }
    // No user in the request: the default user's bucket, nobody else's.
    for _ in 0..3 {
        let default = send(&app, "POST", "/api/tasks", None).await;
        assert_eq!(default.status(), StatusCode::CREATED);
    }
    let default = send(&app, "POST", "/api/tasks", None).await;
    assert_eq!(default.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_probes_take_no_token() {
    let app = app(1, 1);
    for _ in 0..5 {
        for path in ["/api/health", "/api/ready"] {
            assert_eq!(send(&app, "GET", path, None).await.status(), StatusCode::OK);
        }
    }
    let write = send(&app, "POST", "/api/tasks", None).await;
    assert_eq!(
        write.status(),
        StatusCode::CREATED,
        "the bucket is still full"
    );
}

#[test]
fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
    let cases = [
        (Duration::ZERO, 1),
        (Duration::from_nanos(1), 1),
        (Duration::from_secs(1), 1),
        (Duration::from_millis(1_001), 2),
        (Duration::from_millis(59_999), 60),
    ];
    for (wait, seconds) in cases {
        assert_eq!(whole_seconds(wait), seconds, "{wait:?}");
    }
}

#[test]
fn buckets_that_are_full_again_are_forgotten() {
    let limit = RateLimit {
        per_second: nz(1_000),
        burst: nz(1),
    };
    let per_user = PerUser::new(limit, Duration::from_millis(5));
    for user in 0..1_000 {
        let _ = per_user.take(&format!("user-{user}"));
    }
    assert!(per_user.users() > 1, "{} users", per_user.users());
    // A bucket of one token at 1000/s is full again after 1 ms; the prune is due after 5.
    std::thread::sleep(Duration::from_millis(10));
    per_user.take(&"late".to_string()).unwrap();
    assert_eq!(per_user.users(), 1, "only the latest user is remembered");
}

#[test]
fn task_writes_are_the_publishing_requests() {
    let writes = [
        (Method::POST, "/api/tasks"),
        (
            Method::PUT,
            "/api/tasks/0b7e6f3c-5b0e-4a57-9d0e-2f9c2d4d8a11",
        ),
        (
            Method::DELETE,
            "/api/tasks/0b7e6f3c-5b0e-4a57-9d0e-2f9c2d4d8a11",
        ),
        (Method::POST, "/api/batch"),
        (Method::POST, "/api/sync"),
    ];
    for (method, path) in writes {
        assert!(is_write(&method, path), "{method} {path}");
    }
    let reads = [
        (Method::GET, "/api/tasks"),
        (
            Method::GET,
            "/api/tasks/0b7e6f3c-5b0e-4a57-9d0e-2f9c2d4d8a11",
        ),
        (Method::GET, "/api/changes"),
        (
            Method::GET,
            "/api/sync/operations/0b7e6f3c-5b0e-4a57-9d0e-2f9c2d4d8a11",
        ),
        (Method::GET, "/api/status"),
        (Method::OPTIONS, "/api/tasks"),
        // No route takes it: a 405, whatever the queue.
        (Method::PATCH, "/api/tasks"),
    ];
    for (method, path) in reads {
        assert!(!is_write(&method, path), "{method} {path}");
    }
}
