//! A smoke of every `taskbench` scenario against a real api + worker (a few hundred requests
//! each), so the load generator keeps working and its figures stay coherent: everything sent is
//! answered or counted as unanswered, every accepted operation reaches the log, 429s are counted
//! apart and their `Retry-After` honoured, and the ceiling leaves no queue or database behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;

use clap::Parser;
use serde_json::Value;
use taskbench::cli::Cli;
use tasksync_shared::config::RateLimit;
use tasksync_tests::{TestStack, tokens};

/// Runs `taskbench <args> --json` in-process against `stack` and returns its JSON report.
async fn bench(stack: &TestStack, args: &[&str]) -> Value {
    let common = [
        "--base-url",
        &stack.base,
        "--database-url",
        &stack.settings.database_url,
        "--json",
    ];
    let argv = std::iter::once("taskbench")
        .chain(args.iter().copied())
        .chain(common);
    let cli = Cli::try_parse_from(argv).unwrap();
    let report = taskbench::run(cli).await.unwrap();
    serde_json::to_value(&report).unwrap()
}

fn n(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} in {v:#}"))
}

/// Every request sent was answered 2xx, none refused, and the latencies cover them all.
fn all_answered_ok(r: &Value, sent: u64) {
    assert_eq!(n(r, "/requests/sent"), sent, "{r:#}");
    assert_eq!(n(r, "/requests/answered"), sent, "{r:#}");
    assert_eq!(
        n(r, "/requests/ok") + n(r, "/requests/accepted_202"),
        sent,
        "{r:#}"
    );
    assert_eq!(n(r, "/latency_ms/count"), sent, "{r:#}");
    assert!(r["first_error"].is_null(), "{r:#}");
    assert!(r["requests_per_s"].as_f64().unwrap() > 0.0);
}

/// Every accepted operation is in the log, decided `success`.
fn all_applied(r: &Value, accepted: u64) {
    assert_eq!(n(r, "/ops/accepted"), accepted, "{r:#}");
    assert_eq!(n(r, "/ops/applied"), accepted, "{r:#}");
    assert_eq!(n(r, "/ops/applied_not_success"), 0, "{r:#}");
    assert_eq!(n(r, "/ops/accept_to_applied_ms/count"), accepted, "{r:#}");
    assert!(r["ops"]["applied_per_s"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn rest_write_every_request_one_applied_operation() {
    let stack = TestStack::start().await;
    let r = bench(
        &stack,
        &["rest-write", "--connections", "4", "--requests", "200"],
    )
    .await;
    all_answered_ok(&r, 200);
    all_applied(&r, 200);
}

#[tokio::test]
async fn batch_every_item_applied() {
    let stack = TestStack::start().await;
    let r = bench(
        &stack,
        &[
            "batch",
            "--connections",
            "2",
            "--requests",
            "6",
            "--items",
            "100",
        ],
    )
    .await;
    all_answered_ok(&r, 6);
    all_applied(&r, 600);
}

#[tokio::test]
async fn read_one_and_read_list_answer_every_request() {
    let stack = TestStack::start().await;
    let r = bench(
        &stack,
        &["read-one", "--connections", "4", "--requests", "300"],
    )
    .await;
    all_answered_ok(&r, 300);
    assert!(r["ops"].is_null());
    let r = bench(
        &stack,
        &["read-list", "--connections", "2", "--requests", "20"],
    )
    .await;
    all_answered_ok(&r, 20);
    // The 200 tasks read-one seeded, topped up to exactly one full page.
    assert_eq!(n(&r, "/list_rows"), 1_000, "{r:#}");
    assert_eq!(r["list_has_more"], false, "{r:#}");
}

#[tokio::test]
async fn mixed_applies_its_writes() {
    let stack = TestStack::start().await;
    let r = bench(
        &stack,
        &["mixed", "--connections", "4", "--requests", "300"],
    )
    .await;
    all_answered_ok(&r, 300);
    // Two creates and at most two updates in every ten requests.
    let accepted = n(&r, "/ops/accepted");
    assert!((60..=120).contains(&accepted), "{r:#}");
    all_applied(&r, accepted);
}

#[tokio::test]
async fn events_every_stream_receives_every_change_it_is_owed() {
    let stack = TestStack::start().await;
    // Development mode: the five streams are the one user, so each create is owed to all five.
    let r = bench(
        &stack,
        &[
            "events",
            "--subscribers",
            "5",
            "--rate",
            "40",
            "--requests",
            "30",
            "--drain-timeout",
            "20",
        ],
    )
    .await;
    assert_eq!(n(&r, "/requests/sent"), 30, "{r:#}");
    assert_eq!(n(&r, "/requests/accepted_202"), 30, "{r:#}");
    assert!(r["first_error"].is_null(), "{r:#}");
    let e = &r["events"];
    assert_eq!(n(e, "/streams_ready"), 5, "{r:#}");
    assert_eq!(n(e, "/users"), 1, "{r:#}");
    assert_eq!(n(e, "/events_expected"), 150, "{r:#}");
    assert_eq!(n(e, "/events_received"), 150, "{r:#}");
    assert_eq!(n(e, "/events_repeated"), 0, "{r:#}");
    assert_eq!(n(e, "/apply_to_event_ms/count"), 150, "{r:#}");
}

#[tokio::test]
async fn ceiling_applies_what_it_confirmed_and_leaves_nothing_behind() {
    let stack = TestStack::start().await;
    let r = bench(
        &stack,
        &[
            "ceiling",
            "--connections",
            "2",
            "--requests",
            "3000",
            "--items",
            "200",
        ],
    )
    .await;
    assert_eq!(n(&r, "/requests/sent"), 3_000, "{r:#}");
    assert_eq!(n(&r, "/ceiling/confirmed"), 3_000, "{r:#}");
    assert_eq!(n(&r, "/ceiling/applied"), 3_000, "{r:#}");
    assert!(
        n(&r, "/ceiling/batches") >= 15,
        "batches of at most 200: {r:#}"
    );
    assert!(r["ceiling"]["applied_per_s"].as_f64().unwrap() > 0.0);
    let database = r["ceiling"]["database"].as_str().unwrap();
    let client = stack.db.get().await.unwrap();
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&database],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "scratch database {database} left behind");
    let connection = tasksync_shared::amqp::connect(&stack.settings.amqp_url, "test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = r["ceiling"]["queue"].as_str().unwrap();
    assert!(
        tasksync_shared::amqp::inspect_queue(&channel, queue)
            .await
            .is_err(),
        "{queue} left behind"
    );
}

#[tokio::test]
async fn requests_without_an_answer_still_count_as_sent() {
    // A port nobody listens on: every request fails to connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let argv = [
        "taskbench",
        "read-list",
        "--base-url",
        &base,
        "--requests",
        "25",
        "--connections",
        "2",
        "--json",
    ];
    let cli = Cli::try_parse_from(argv).unwrap();
    // read-list seeds first, through the api: the run fails with the seeding's transport error.
    assert!(taskbench::run(cli).await.is_err());
    let argv = [
        "taskbench",
        "rest-write",
        "--base-url",
        &base,
        "--requests",
        "25",
        "--connections",
        "2",
        "--json",
    ];
    let r = serde_json::to_value(
        taskbench::run(Cli::try_parse_from(argv).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(n(&r, "/requests/sent"), 25, "{r:#}");
    assert_eq!(n(&r, "/requests/answered"), 0, "{r:#}");
    assert_eq!(n(&r, "/requests/transport_errors"), 25, "{r:#}");
    assert_eq!(n(&r, "/ops/accepted"), 0, "{r:#}");
    assert!(r["first_error"].is_string());
}

#[tokio::test]
async fn another_host_is_refused_unless_allowed() {
    let argv = [
        "taskbench",
        "read-one",
        "--base-url",
        "http://192.0.2.1:3000",
        "--requests",
        "1",
    ];
    let error = taskbench::run(Cli::try_parse_from(argv).unwrap())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--allow-remote"), "{error}");
}

#[tokio::test]
async fn with_auth_and_a_rate_limit_429s_are_counted_apart_and_retry_after_is_honoured() {
    let stack = TestStack::start_with(|s| {
        s.jwt = tokens::secret_settings();
        s.edge.rate_limit = Some(RateLimit {
            per_second: NonZeroU32::new(20).unwrap(),
            burst: NonZeroU32::new(20).unwrap(),
        });
    })
    .await;
    let token = tokens::hs256(&tokens::claims_for("bench-user"));
    let args = [
        "rest-write",
        "--connections",
        "2",
        "--duration",
        "1.5",
        "--token",
        &token,
    ];
    let r = bench(&stack, &args).await;
    let throttled = n(&r, "/requests/throttled_429");
    assert!(throttled > 0, "{r:#}");
    // Each 429 makes its connection wait Retry-After (≥ 1 s): at most a few per connection.
    assert!(throttled <= 8, "Retry-After not honoured: {r:#}");
    assert_eq!(
        n(&r, "/requests/sent"),
        n(&r, "/requests/answered"),
        "{r:#}"
    );
    assert_eq!(
        n(&r, "/requests/client_errors_4xx"),
        0,
        "token refused? {r:#}"
    );
    let accepted = n(&r, "/ops/accepted");
    assert!(accepted >= 20, "{r:#}");
    all_applied(&r, accepted);
}
