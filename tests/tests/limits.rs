//! Limits and back-pressure at the api's edge (SPEC §8), end to end against real Postgres and
//! RabbitMQ: the per-user rate limit and the work-queue high water (429 with `Retry-After`,
//! nothing published), the field limits in the api and the worker, CORS and the security
//! headers of every answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::json;
use tasksync_tests::{Reply, TestStack};
use uuid::Uuid;

#[path = "limits/browser.rs"]
mod browser;
#[path = "limits/fields.rs"]
mod fields;
#[path = "limits/high_water.rs"]
mod high_water;
#[path = "limits/rate.rs"]
mod rate;

/// Asks not to wait for the worker: the answer is 202 as soon as the broker confirmed.
const ASYNC: (&str, &str) = ("prefer", "respond-async");

/// A create of a new task that does not wait for the worker; returns its id and the answer.
async fn create_async(stack: &TestStack, title: &str) -> (Uuid, Reply) {
    let id = Uuid::new_v4();
    let body = json!({"id": id, "title": title});
    let reply = stack
        .request(Method::POST, "/tasks", Some(body), &[ASYNC])
        .await;
    (id, reply)
}

/// Asserts a 429 with a whole-second `Retry-After` of at least 1 and the SPEC §3 error body
/// for `path`; returns the message.
fn assert_too_many(reply: &Reply, path: &str) -> String {
    assert_eq!(reply.status, 429, "{reply:?}");
    let seconds: u64 = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("no retry-after in {reply:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("retry-after is not whole seconds ({e}): {reply:?}"));
    assert!(seconds >= 1, "{reply:?}");
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    reply.error_message(path)
}
