//! `QUEUE_HIGH_WATER`: task writes get 429 while the work queue is deeper; reads go on; writes
//! are accepted again once the worker drained it; an unknown depth refuses nothing.

use std::num::NonZeroU32;

use chrono::Utc;
use reqwest::Method;
use serde_json::json;
use tasksync_tests::{TestStack, op_log::OpLog, sync_client};
use uuid::Uuid;

use super::{assert_too_many, create_async};

const HIGH_WATER: u32 = 5;

fn high_water(settings: &mut tasksync_shared::Settings) {
    settings.edge.queue_high_water = NonZeroU32::new(HIGH_WATER);
}

/// Fills the work queue past the high water with the worker stopped, until the api's sampler
/// (which `/api/status` shares) sees it.
async fn fill_past_high_water(stack: &TestStack) -> u64 {
    let mut published = 0;
    while published <= HIGH_WATER {
        let (_, reply) = create_async(stack, "filler").await;
        assert_eq!(reply.status, 202, "{reply:?}");
        published += 1;
    }
    stack
        .eventually("the api sees the queue over its high water", || async {
            stack.status().await.body["sync_queue_size"].as_u64() == Some(published.into())
        })
        .await;
    published.into()
}

#[tokio::test]
async fn writes_wait_while_the_work_queue_is_over_its_high_water_and_reads_go_on() {
    let mut stack = TestStack::start_with(high_water).await;
    let existing = stack.create_task(json!({"title": "existing"})).await;
    assert_eq!(existing.status, 201, "{existing:?}");
    let task = format!("/tasks/{}", existing.body["id"].as_str().unwrap());
    stack.stop_worker().await;
    let filled = fill_past_high_water(&stack).await;

    let item = sync_client::create(Uuid::new_v4(), "pushed", Utc::now());
    let writes = [
        (
            Method::POST,
            "/tasks".to_string(),
            json!({"title": "refused"}),
        ),
        (Method::PUT, task.clone(), json!({"title": "refused"})),
        (Method::DELETE, task.clone(), json!({})),
        (Method::POST, "/batch".into(), json!([item.clone()])),
        (Method::POST, "/sync".into(), json!([item])),
    ];
    for (method, path, body) in writes {
        let reply = stack.request(method.clone(), &path, Some(body), &[]).await;
        let message = assert_too_many(&reply, &format!("/api{path}"));
        assert!(
            message.contains("waiting to be applied"),
            "{method} {path}: {message}"
        );
    }
    for path in ["/tasks", task.as_str(), "/changes?since=", "/status"] {
        let reply = stack.get(path).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
    }
    let work_queue = stack.topology().work_queue();
    assert_eq!(u64::from(stack.queue_depth(&work_queue).await), filled);

    stack.start_worker().await;
    stack
        .eventually(
            "a write is accepted once the worker drained the queue",
            || async {
                let reply = stack.create_task(json!({"title": "after"})).await;
                assert!(matches!(reply.status, 201 | 429), "{reply:?}");
                reply.status == 201
            },
        )
        .await;
    // The first create, the fillers and the last create; none of the refused writes.
    assert_eq!(stack.op_log_count(OpLog::all()).await, 1 + filled + 1);
    assert_eq!(stack.queue_depth(&work_queue).await, 0);
}

#[tokio::test]
async fn an_unknown_depth_refuses_nothing_for_high_water() {
    let stack = TestStack::start().await;
    let mut settings = stack.settings.clone();
    high_water(&mut settings);
    // Nothing listens on port 1: the depth is unknown, and the publish itself fails.
    settings.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let extra = stack.spawn_api(settings).await;
    let reply = extra.api.create_task(json!({"title": "no broker"})).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    extra.stop().await;
}
