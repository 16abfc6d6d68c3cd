//! The offline client (`tasksync-client` and its `tasks` binary) end to end against the real
//! stack: devices that work offline and converge, a server that goes away and comes back, a
//! connection cut mid-push, an operation rejected for good, a large queue, and the command
//! line's `--json` output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tasksync_client::{
    Edit, NewTask, Remote, RetryPolicy, Store, SyncOptions, SyncReport, Token, store::QueueState,
    sync::Progress,
};
use tasksync_shared::{SyncStatus, Task};
use tasksync_tests::TestStack;
use uuid::Uuid;

#[path = "client/cli.rs"]
mod cli;
#[path = "client/convergence.rs"]
mod convergence;
#[path = "client/faults.rs"]
mod faults;

/// A device: its own local database and a client of one api.
struct ClientDevice {
    store: Store,
    remote: Remote,
    options: SyncOptions,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ClientDevice {
    /// A device of the stack's api (development mode: no token).
    fn of(stack: &TestStack) -> Self {
        Self::at(&stack.base, None)
    }

    /// A device of the api at `base`, sending `token` when given. Retries are quick and few,
    /// so a test of an unreachable server does not wait long.
    fn at(base: &str, token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let mut remote = Remote::new(base, token.map(Token::new), Duration::from_secs(30)).unwrap();
        remote.retry = RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        };
        Self {
            store: Store::open(&path).unwrap(),
            remote,
            options: SyncOptions::default(),
            path,
            _dir: dir,
        }
    }

    fn add(&mut self, title: &str) -> Task {
        self.store
            .add(NewTask {
                title: title.into(),
                ..NewTask::default()
            })
            .unwrap()
    }

    fn edit(&mut self, id: Uuid, edit: Edit) -> Task {
        self.store.edit(id, edit).unwrap()
    }

    async fn sync(&mut self) -> tasksync_client::Result<SyncReport> {
        tasksync_client::sync_once(
            &mut self.store,
            &self.remote,
            self.options,
            &|_: Progress| {},
        )
        .await
    }

    /// Every task this device holds, deleted ones included.
    fn tasks(&self) -> Vec<Task> {
        self.store.tasks(true).unwrap()
    }

    /// Op ids waiting in the queue to be pushed.
    fn queued_op_ids(&self) -> Vec<Uuid> {
        self.store
            .queue(QueueState::Queued)
            .unwrap()
            .iter()
            .map(|op| op.op_id)
            .collect()
    }
}

/// What two replicas must agree on: (id, title, description, completed, is_deleted).
type Shown = (Uuid, String, Option<String>, bool, bool);

fn shown(tasks: &[Task]) -> Vec<Shown> {
    let mut shown: Vec<Shown> = tasks
        .iter()
        .map(|t| {
            (
                t.id,
                t.title.clone(),
                t.description.clone(),
                t.completed,
                t.is_deleted,
            )
        })
        .collect();
    shown.sort();
    shown
}

/// The caller's tasks as the server holds them, deleted ones included.
async fn server_shown(stack: &TestStack) -> Vec<Shown> {
    let tasks: Vec<Task> = stack
        .server_tasks()
        .await
        .into_values()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    shown(&tasks)
}

/// Every task of a device is synced and its queue is empty.
fn fully_synced(device: &ClientDevice) {
    let counts = device.store.queue_counts().unwrap();
    assert_eq!(counts, Default::default(), "queue left: {counts:?}");
    for task in device.tasks() {
        assert_eq!(task.sync_status, SyncStatus::Synced, "{task:?}");
        assert!(task.last_synced_at.is_some(), "{task:?}");
    }
}

#[tokio::test]
async fn a_large_queue_syncs_in_bounded_time_with_every_operation_applied_once() {
    // The smoke of the 10,000-operation benchmark (client/examples/queue_bench.rs).
    const TASKS: usize = 1_000;
    let stack = TestStack::start().await;
    let mut device = ClientDevice::of(&stack);
    device.options.batch_size = 1000;
    let mut ids = Vec::new();
    for i in 0..TASKS {
        ids.push(device.add(&format!("task {i}")).id);
    }
    for id in &ids {
        device.edit(
            *id,
            Edit {
                completed: Some(true),
                ..Edit::default()
            },
        );
    }
    let ops = device.queued_op_ids();
    assert_eq!(ops.len(), 2 * TASKS);
    let started = std::time::Instant::now();
    let report = device.sync().await.unwrap();
    let elapsed = started.elapsed();
    // Accepted-but-undecided ones are settled by the next round.
    for _ in 0..20 {
        if device.store.queue_counts().unwrap() == Default::default() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        device.sync().await.unwrap();
    }
    eprintln!("{} operations synced in {elapsed:?}: {report:?}", ops.len());
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    assert_eq!(report.batches, 2);
    fully_synced(&device);
    assert_eq!(
        stack
            .op_log_count(tasksync_tests::op_log::OpLog::ops(&ops))
            .await,
        ops.len() as u64
    );
    stack.feed_caught_up().await;
    assert_eq!(server_shown(&stack).await, shown(&device.tasks()));
}
