//! The client when things go wrong: the server away, the connection cut mid-push, an operation
//! the server rejects for good.

use std::time::Duration;

use serde_json::json;
use tasksync_client::{Edit, NewTask, error::Error, remote::RemoteError, store::QueueState};
use tasksync_shared::{SyncStatus, operation::OutcomeStatus};
use tasksync_tests::{TestStack, op_log::OpLog, processes::free_port, proxy::FaultyProxy, tokens};
use uuid::Uuid;

use super::{ClientDevice, fully_synced, server_shown, shown};

#[tokio::test]
async fn with_the_server_down_work_goes_on_and_one_sync_applies_it_exactly_once() {
    let port = free_port();
    let mut stack = TestStack::start_with(|s| s.port = port).await;
    let mut device = ClientDevice::of(&stack);
    let kept = device.add("before the outage");
    device.sync().await.unwrap();

    stack.stop_api().await;
    let new = device.add("written offline");
    device.edit(
        kept.id,
        Edit {
            completed: Some(true),
            ..Edit::default()
        },
    );
    let gone = device.add("short-lived");
    device.store.delete(gone.id).unwrap();
    assert_eq!(
        device.store.tasks(false).unwrap().len(),
        2,
        "local work goes on"
    );
    let err = device.sync().await.unwrap_err();
    assert!(
        matches!(err, Error::Remote(RemoteError::Unreachable { .. })),
        "{err}"
    );
    let ops = device.queued_op_ids();
    assert_eq!(ops.len(), 4, "nothing left the queue");
    assert_eq!(
        device.store.task(new.id).unwrap().unwrap().sync_status,
        SyncStatus::Pending
    );

    stack.start_api().await;
    let report = device.sync().await.unwrap();
    assert_eq!(report.batches, 1, "one push: {report:?}");
    assert_eq!(report.outcomes.success, 4, "{report:?}");
    fully_synced(&device);
    assert_eq!(
        stack
            .op_log_count(OpLog::ops(&ops).outcomes(&[OutcomeStatus::Success]))
            .await,
        4
    );
    assert_eq!(
        stack.op_log_count(OpLog::all()).await,
        5,
        "each applied once"
    );
    stack.feed_caught_up().await;
    assert_eq!(server_shown(&stack).await, shown(&device.tasks()));
}

#[tokio::test]
async fn a_connection_cut_mid_push_loses_and_duplicates_nothing() {
    const TASKS: usize = 600;
    let stack = TestStack::start().await;
    let api: std::net::SocketAddr = stack
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api")
        .parse()
        .unwrap();
    let proxy = FaultyProxy::start(api).await;
    let mut device = ClientDevice::at(&format!("http://127.0.0.1:{}/api", proxy.port), None);
    device.options.batch_size = 50;
    for i in 0..TASKS {
        device.add(&format!("task {i}"));
    }
    let ops = device.queued_op_ids();
    // A second look at the device's database, to see which answers it has stored.
    let watcher = tasksync_client::Store::open(&device.path).unwrap();

    // Cut after some answers were stored, while the server has applied operations whose answer
    // the device has not stored: stall the connection, let anything already delivered be stored, and check that some
    // applied operation is still queued here (its answer is lost); else go on to a later push.
    let cutter = async {
        for _ in 0..2_000 {
            let queued: Vec<Uuid> = watcher
                .queue(QueueState::Queued)
                .unwrap()
                .iter()
                .map(|op| op.op_id)
                .collect();
            let applied = stack.op_log_count(OpLog::ops(&ops)).await;
            let recorded = (ops.len() - queued.len()) as u64;
            if recorded > 0 && applied > recorded {
                proxy.stall();
                tokio::time::sleep(Duration::from_millis(100)).await;
                let still: Vec<Uuid> = watcher
                    .queue(QueueState::Queued)
                    .unwrap()
                    .iter()
                    .map(|op| op.op_id)
                    .collect();
                let lost = stack.op_log_count(OpLog::ops(&still)).await;
                if lost > 0 {
                    proxy.cut();
                    return lost;
                }
                proxy.restore();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("never caught a push in flight");
    };
    let (first, lost) = tokio::join!(device.sync(), cutter);
    let err = first.unwrap_err();
    assert!(
        matches!(err, Error::Remote(RemoteError::Unreachable { .. })),
        "{err}"
    );
    let left = device.queued_op_ids();
    assert!(
        !left.is_empty() && left.len() < ops.len(),
        "cut mid-push: {} of {} left",
        left.len(),
        ops.len()
    );
    assert!(lost > 0);

    proxy.restore();
    let report = device.sync().await.unwrap();
    for _ in 0..20 {
        if device.store.queue_counts().unwrap() == Default::default() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        device.sync().await.unwrap();
    }
    fully_synced(&device);
    assert_eq!(
        report.pushed,
        left.len() as u64,
        "only what was left is pushed again"
    );
    assert_eq!(
        stack.op_log_count(OpLog::ops(&ops)).await,
        ops.len() as u64,
        "every operation applied"
    );
    assert_eq!(
        stack.op_log_count(OpLog::all()).await,
        ops.len() as u64,
        "and none twice"
    );
    stack.feed_caught_up().await;
    let server = server_shown(&stack).await;
    assert_eq!(server.len(), TASKS);
    assert_eq!(server, shown(&device.tasks()));
}

#[tokio::test]
async fn an_operation_rejected_for_good_ends_in_error_after_three_tries_and_the_rest_sync() {
    let stack = TestStack::start_with_auth(tokens::secret_settings()).await;
    // Alice owns a task; Bob's device (offline) creates one under the same id.
    let taken = Uuid::new_v4();
    let alice = stack.client_as("alice");
    let reply = alice
        .create_task(json!({ "id": taken, "title": "alice's" }))
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let bob_token = tokens::hs256(&tokens::claims_for("bob"));
    let mut bob = ClientDevice::at(&stack.base, Some(&bob_token));
    bob.store
        .add(NewTask {
            id: Some(taken),
            title: "bob's".into(),
            ..NewTask::default()
        })
        .unwrap();
    let fine = bob.add("fine");
    let also = bob.add("also fine");

    let report = bob.sync().await.unwrap();
    assert_eq!(report.outcomes.success, 2, "{report:?}");
    assert_eq!(report.outcomes.retrying, 2, "two more tries: {report:?}");
    assert_eq!(report.outcomes.failed, 1, "{report:?}");
    assert_eq!(
        report.pushed, 5,
        "3 tries of one, 1 of each other: {report:?}"
    );
    let failed = bob.store.queue(QueueState::Error).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].task_id, taken);
    assert_eq!(failed[0].retry_count, 3);
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("not found"),
        "{failed:?}"
    );
    let task = bob.store.task(taken).unwrap().unwrap();
    assert_eq!(task.sync_status, SyncStatus::Error);
    for id in [fine.id, also.id] {
        let task = bob.store.task(id).unwrap().unwrap();
        assert_eq!(task.sync_status, SyncStatus::Synced, "{task:?}");
    }
    // Never pushed again.
    let again = bob.sync().await.unwrap();
    assert_eq!(again.pushed, 0, "{again:?}");
    // The server: Bob has his two tasks; Alice's is untouched.
    let bobs = stack.client_as("bob").list_tasks().await.tasks();
    assert_eq!(bobs.len(), 2);
    let alices = alice.get_task(&taken.to_string()).await.task();
    assert_eq!(alices.title, "alice's");
}
