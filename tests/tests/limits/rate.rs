//! `RATE_LIMIT_RPS` / `RATE_LIMIT_BURST`: the per-user token bucket. Two users' buckets are
//! exercised by the api's unit tests (`throttle::tests`); here, the default user's, end to end.

use std::{num::NonZeroU32, time::Instant};

use tasksync_shared::config::RateLimit;
use tasksync_tests::{TestStack, op_log::OpLog};
use uuid::Uuid;

use super::{assert_too_many, create_async};

const PER_SECOND: u32 = 1;
const BURST: u32 = 3;

async fn limited_stack() -> TestStack {
    TestStack::start_with(|s| {
        s.edge.rate_limit = Some(RateLimit {
            per_second: NonZeroU32::new(PER_SECOND).unwrap(),
            burst: NonZeroU32::new(BURST).unwrap(),
        });
    })
    .await
}

#[tokio::test]
async fn writes_over_the_rate_limit_get_429_and_nothing_of_them_is_published() {
    let mut stack = limited_stack().await;
    // The worker is stopped so that the queue holds exactly what was published.
    stack.stop_worker().await;
    let work_queue = stack.topology().work_queue();
    let started = Instant::now();
    let (mut accepted, mut refused) = (Vec::new(), Vec::<Uuid>::new());
    for i in 0..8 {
        let (id, reply) = create_async(&stack, &format!("write {i}")).await;
        if reply.status == 429 {
            let message = assert_too_many(&reply, "/api/tasks");
            assert!(message.contains("too many requests"), "{message}");
            refused.push(id);
        } else {
            assert_eq!(reply.status, 202, "{reply:?}");
            accepted.push(id);
        }
    }
    // A token a second refills while the requests go out: allow for it, and no more.
    let refilled = started.elapsed().as_secs() as usize + 1;
    assert!(
        accepted.len() >= BURST as usize && accepted.len() <= BURST as usize + refilled,
        "{} accepted",
        accepted.len()
    );
    assert!(!refused.is_empty(), "the burst was not limited");
    assert_eq!(
        stack.queue_depth(&work_queue).await as usize,
        accepted.len()
    );

    stack.start_worker().await;
    let expected = accepted.len() as u64;
    stack
        .eventually("the accepted writes are applied", || async {
            stack.op_log_count(OpLog::all()).await == expected
        })
        .await;
    assert_eq!(stack.queue_depth(&work_queue).await, 0);
    for id in refused {
        assert!(stack.stored(id).await.is_none(), "refused {id} was applied");
    }
}

#[tokio::test]
async fn reads_take_tokens_too_but_the_probes_never_do() {
    let stack = limited_stack().await;
    let mut limited = None;
    for _ in 0..(BURST + 5) {
        let reply = stack.list_tasks().await;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let limited = limited.expect("reads were never limited");
    assert_too_many(&limited, "/api/tasks");
    for _ in 0..(BURST + 5) {
        assert_eq!(stack.get("/health").await.status, 200);
        assert_eq!(stack.get("/ready").await.status, 200);
    }
}
