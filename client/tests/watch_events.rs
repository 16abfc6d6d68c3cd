//! `sync --watch` with a server that has `GET /api/events`. The api does not serve that route
//! yet (another issue adds it), so a small stand-in serves the two routes a round of an empty
//! device reads: an empty changes page, and an event stream that sends an event every 50 ms.
//! With a one-minute polling interval, three rounds finish within seconds only if events wake
//! the loop. (The polling fallback runs against the real api in tests/tests/client/cli.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use axum::{Json, Router, body::Body, http::header, response::Response, routing::get};
use chrono::Utc;
use serde_json::json;
use tasksync_client::{
    Remote, Store, SyncOptions,
    watch::{Wake, WatchOptions, watch},
};

async fn events() -> Response {
    let ticks = futures_util::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let event = format!("id: {n}\ndata: {{\"id\":\"x\"}}\n\n");
        Some((Ok::<_, std::io::Error>(event), n + 1))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(ticks))
        .unwrap()
}

async fn changes() -> Json<serde_json::Value> {
    Json(json!({"changes": [], "next_cursor": "", "has_more": false, "server_time": Utc::now()}))
}

#[tokio::test]
async fn events_wake_the_watch_loop_long_before_its_polling_interval() {
    let app = Router::new()
        .route("/api/events", get(events))
        .route("/api/changes", get(changes));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut store = Store::open_in_memory().unwrap();
    let remote = Remote::new(
        &format!("http://127.0.0.1:{port}"),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let mut wakes = Vec::new();
    let started = Instant::now();
    let rounds = watch(
        &mut store,
        &remote,
        SyncOptions::default(),
        WatchOptions {
            interval: Duration::from_secs(60),
            rounds: Some(3),
        },
        std::future::pending(),
        &|_| {},
        &mut |result, wake| {
            assert!(result.is_ok(), "{result:?}");
            wakes.push(wake);
        },
    )
    .await;
    assert_eq!(rounds, 3);
    assert_eq!(wakes, [Wake::Events; 3]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_watch_loop_stops_when_told() {
    let app = Router::new().route("/api/changes", get(changes));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut store = Store::open_in_memory().unwrap();
    let remote = Remote::new(
        &format!("http://127.0.0.1:{port}"),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let mut wakes = Vec::new();
    let rounds = watch(
        &mut store,
        &remote,
        SyncOptions::default(),
        WatchOptions {
            interval: Duration::from_secs(60),
            rounds: None,
        },
        tokio::time::sleep(Duration::from_millis(300)),
        &|_| {},
        &mut |_, wake| wakes.push(wake),
    )
    .await;
    assert_eq!(rounds, 1, "stopped while waiting");
    assert_eq!(wakes, [Wake::Polling], "no /api/events here: it polls");
}
