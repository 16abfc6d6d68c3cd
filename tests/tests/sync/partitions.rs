//! Partitioned work (`WORK_PARTITIONS`): operations spread over K work queues by task id, every
//! write applied exactly once, retries returning to their own partition, a worker consuming a
//! subset, the move from one queue to K losing and doubling nothing, and a broker address list
//! whose first node is dead. (Convergence with K = 3 is the property test in `convergence.rs`.)

use std::sync::Arc;

use chrono::Utc;
use tasksync_shared::{OpKind, topology::Topology};
use tasksync_tests::{
    TestStack,
    faults::{Failing, ScriptedFaults},
    load::{self, Mode},
    ops::{operation, title},
    processes::free_port,
};
use uuid::Uuid;

/// A task id whose operations go to `partition` of `topology`.
fn task_in(topology: &Topology, partition: u16) -> Uuid {
    std::iter::repeat_with(Uuid::new_v4)
        .find(|t| topology.partition_of(*t) == partition)
        .unwrap()
}

#[tokio::test]
async fn a_partitioned_stack_applies_every_write_exactly_once_over_all_its_partitions() {
    // The first broker address is dead: both services pass over it to the second.
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let mut stack = TestStack::start_with(|s| {
        s.work_partitions = 3;
        s.amqp_url = format!("{dead},{}", s.amqp_url.expose()).into();
        s.write_wait = std::time::Duration::from_millis(50);
    })
    .await;
    let topology = stack.topology();
    for queue in topology.work_queues() {
        assert_eq!(stack.queue_consumers(&queue).await, 1, "{queue}");
    }

    // With no worker, each create waits in the queue of its task's partition.
    stack.stop_worker().await;
    let queued = load::drive(&[stack.base.clone()], 3, 10, Mode::CreateOnly).await;
    let mut depths = Vec::new();
    for queue in topology.work_queues() {
        depths.push(stack.queue_depth(&queue).await);
    }
    assert_eq!(depths.iter().sum::<u32>(), 30, "{depths:?}");
    assert!(depths.iter().all(|d| *d > 0), "{depths:?}");
    stack.start_worker().await;
    queued.verify(&stack.db, "three partitions, queued").await;
    // Each queue held exactly the creates of the tasks that hash to it.
    let client = stack.db.get().await.unwrap();
    let tasks: Vec<Uuid> = client
        .query("SELECT DISTINCT task_id FROM operations", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut by_partition = vec![0u32; 3];
    for task in &tasks {
        by_partition[usize::from(topology.partition_of(*task))] += 1;
    }
    assert_eq!(by_partition, depths);

    // Writes flowing through all three at once.
    let ledger = load::drive(&[stack.base.clone()], 6, 15, Mode::CreateAndUpdate).await;
    let figures = ledger.verify(&stack.db, "three partitions").await;
    assert_eq!(figures.sent, 90);

    // The depths are a shared sample up to a second old: wait for one taken after the restart.
    stack
        .eventually("the status shows the worker on every partition", || async {
            stack.status().await.body["worker_count"] == 1
        })
        .await;
    let status = stack.status().await;
    let partitions = status.body["work_partitions"].as_array().unwrap();
    let names: Vec<&str> = partitions
        .iter()
        .map(|p| p["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, topology.work_queues());
    assert!(partitions.iter().all(|p| p["consumers"] == 1), "{status:?}");
    assert_eq!(status.body["worker_count"], 1);
}

#[tokio::test]
async fn a_failing_operation_is_retried_in_its_own_partition_then_applied() {
    let faults = Arc::new(ScriptedFaults::default());
    // A worker of partition 2 only: a retry that came back to another partition would never
    // be applied.
    let stack = TestStack::start_with_faults(
        |s| {
            s.work_partitions = 3;
            s.worker_partitions = Some(vec![2]);
        },
        faults.clone(),
    )
    .await;
    let topology = stack.topology();
    assert_eq!(stack.queue_consumers(&topology.work_queue_of(0)).await, 0);
    let task = task_in(&topology, 2);
    faults.fail(task, Failing::Times(2));

    let created = stack
        .client()
        .create_task_async(serde_json::json!({"id": task, "title": "retried"}))
        .await;
    assert_eq!(created.status, 202, "{created:?}");
    let op_id = created.operation_id();
    stack
        .eventually("the create is applied after two retries", || async {
            stack.stored(task).await.is_some()
        })
        .await;
    let attempts: Vec<u32> = faults.attempts_of(op_id).iter().map(|(n, _)| *n).collect();
    assert_eq!(attempts, [1, 2, 3]);
    // Partition 2's own delay queues were declared, and the other partitions' saw nothing.
    for n in 1..=3 {
        let queue = topology.retry_queue_of(n, 2).unwrap();
        assert!(stack.queue_exists(&queue).await, "{queue}");
    }
    assert_eq!(stack.operations_of(task).await.len(), 1);
}

#[tokio::test]
async fn going_from_one_queue_to_three_routes_each_message_to_one_queue_and_keeps_old_keys() {
    // A stack on one queue: its work queue is bound to every key.
    let mut stack = TestStack::start().await;
    stack.stop_api().await;
    stack.stop_worker().await;

    // The same stack with three partitions, and a worker for partitions 0 and 1 only.
    stack.settings.work_partitions = 3;
    stack.settings.worker_partitions = Some(vec![0, 1]);
    stack.start_worker().await;
    let topology = stack.topology();
    assert_eq!(stack.queue_consumers(&topology.work_queue_of(2)).await, 0);
    stack.stop_worker().await;

    // A K = 3 publisher's key reaches its partition only; a K = 1 publisher's two-word key,
    // and a retry coming back from an old delay queue, reach partition 0.
    let now = Utc::now();
    let on_two = operation(task_in(&topology, 2), OpKind::Create, now, title("two"));
    let old = operation(Uuid::new_v4(), OpKind::Create, now, title("old"));
    let retried = operation(Uuid::new_v4(), OpKind::Create, now, title("retried"));
    stack
        .publish_raw(
            &topology.publish_key(OpKind::Create, on_two.task_id),
            &[on_two.encode().unwrap()],
        )
        .await;
    stack
        .publish_raw("op.create", &[old.encode().unwrap()])
        .await;
    stack
        .publish_raw(
            tasksync_shared::topology::RETRY_ROUTING_KEY,
            &[retried.encode().unwrap()],
        )
        .await;
    let depths = [
        stack.queue_depth(&topology.work_queue_of(0)).await,
        stack.queue_depth(&topology.work_queue_of(1)).await,
        stack.queue_depth(&topology.work_queue_of(2)).await,
    ];
    assert_eq!(depths, [2, 0, 1]);

    // A worker of every partition applies all three, each once.
    stack.settings.worker_partitions = None;
    stack.start_worker().await;
    for op in [&on_two, &old, &retried] {
        stack
            .eventually("applied", || async {
                stack.stored(op.task_id).await.is_some()
            })
            .await;
        assert_eq!(stack.operations_of(op.task_id).await.len(), 1);
    }
}
