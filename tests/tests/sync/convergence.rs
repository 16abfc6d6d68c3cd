//! Convergence as a property: several devices' operation streams, interleaved at random, cut
//! into random batches, pushed again in part (lost answers) and by several pushers at once, end
//! in the same tasks as applying every operation in timestamp order with the pure merge, and a
//! device pulling from an empty cursor ends with those same tasks.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration as Delta, Utc};
use futures_util::future::join_all;
use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, TestRunner},
};
use serde_json::{Map, Value, json};
use tasksync_shared::{
    OpKind, Operation, OperationFields,
    merge::{TaskState, Write},
    model::to_db_precision,
};
use tasksync_tests::{
    TestStack,
    op_log::OpLog,
    sync_client::{Device, statuses},
};
use uuid::Uuid;

const TASKS: usize = 3;

/// (task, kind, seconds after the start, title, description, completed) of one operation;
/// few distinct seconds, so that equal stamps (ties broken by op id) are common.
type Spec = (usize, u8, i64, Option<u8>, Option<Option<u8>>, Option<bool>);

#[derive(Clone, Debug)]
struct Scenario {
    devices: Vec<Vec<Spec>>,
    /// Which device's next operation comes next, drawn among those with some left.
    interleave: Vec<Index>,
    /// Batch sizes, used in turn.
    batch_sizes: Vec<usize>,
    /// Items pushed again: in their own batch (`true`) or in a last batch, as after lost
    /// answers.
    again: Vec<(Index, bool)>,
    /// Concurrent pushers; batch `i` goes to pusher `i % pushers`.
    pushers: usize,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let spec = (
        0..TASKS,
        0u8..3,
        0i64..8,
        proptest::option::of(0u8..3),
        proptest::option::of(proptest::option::of(0u8..3)),
        proptest::option::of(any::<bool>()),
    );
    (
        proptest::collection::vec(proptest::collection::vec(spec, 1..7), 2..5),
        proptest::collection::vec(any::<Index>(), 32),
        proptest::collection::vec(1usize..6, 1..5),
        proptest::collection::vec((any::<Index>(), any::<bool>()), 0..5),
        1usize..4,
    )
        .prop_map(
            |(devices, interleave, batch_sizes, again, pushers)| Scenario {
                devices,
                interleave,
                batch_sizes,
                again,
                pushers,
            },
        )
}

/// The push item and the operation the api should make of it.
fn build(spec: &Spec, tasks: &[Uuid], t0: DateTime<Utc>) -> (Value, Operation) {
    let (task, kind, secs, title, description, completed) = *spec;
    let kind = [OpKind::Create, OpKind::Update, OpKind::Delete][kind as usize];
    let mut fields = OperationFields {
        title: title.map(|t| format!("title {t}")),
        description: description.map(|d| d.map(|d| format!("notes {d}"))),
        completed,
    };
    match kind {
        OpKind::Create if fields.title.is_none() => fields.title = Some("created".into()),
        OpKind::Update if fields == OperationFields::default() => fields.completed = Some(true),
        OpKind::Delete => fields = OperationFields::default(),
        _ => {}
    }
    let at = t0 + Delta::seconds(secs);
    let mut data = Map::new();
    if let Some(t) = &fields.title {
        data.insert("title".into(), json!(t));
    }
    if let Some(d) = &fields.description {
        data.insert("description".into(), json!(d));
    }
    if let Some(c) = fields.completed {
        data.insert("completed".into(), json!(c));
    }
    data.insert("updated_at".into(), json!(at));
    let op_id = Uuid::new_v4();
    let item = json!({
        "id": op_id, "task_id": tasks[task], "operation": kind.as_str(), "data": data,
        "created_at": at, "retry_count": 0,
    });
    let op = Operation {
        op_id,
        task_id: tasks[task],
        user_id: "default".into(),
        kind,
        fields,
        stamped_at: at,
        received_at: at,
        if_absent: false,
        if_match: None,
        device_id: None,
    };
    (item, op)
}

/// (title, description, completed, is_deleted, created_at, updated_at) of a visible task.
type Seen = (
    String,
    Option<String>,
    bool,
    bool,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn expected(ops: &[Operation]) -> Option<Seen> {
    let mut ordered = ops.to_vec();
    ordered.sort_by_key(|op| (op.stamped_at, op.op_id));
    let mut state = TaskState::default();
    for op in &ordered {
        state.apply(&Write::from_operation(op));
    }
    Some((
        state.title.as_ref()?.value.clone(),
        state.description.as_ref().and_then(|r| r.value.clone()),
        state.completed.as_ref().is_some_and(|r| r.value),
        state.is_deleted(),
        state.created_at?,
        state.updated_at()?,
    ))
}

fn seen(task: &Value) -> Seen {
    let time = |name: &str| task[name].as_str().unwrap().parse().unwrap();
    (
        task["title"].as_str().unwrap().to_string(),
        task["description"].as_str().map(str::to_string),
        task["completed"].as_bool().unwrap(),
        task["is_deleted"].as_bool().unwrap(),
        time("created_at"),
        time("updated_at"),
    )
}

async fn check(stack: &TestStack, s: Scenario) {
    let t0 = to_db_precision(Utc::now() - Delta::hours(1));
    let tasks: Vec<Uuid> = (0..TASKS).map(|_| Uuid::new_v4()).collect();
    let (ops, batches, last) = plan(&s, &tasks, t0);
    push_and_settle(stack, s.pushers, &batches, &last).await;
    converged(stack, &tasks, &ops).await;
}

/// The scenario's operations, and the batches that carry them (some items twice), plus a last
/// batch of items pushed again.
fn plan(
    s: &Scenario,
    tasks: &[Uuid],
    t0: DateTime<Utc>,
) -> (Vec<Operation>, Vec<Vec<Value>>, Vec<Value>) {
    let mut streams: Vec<Vec<(Value, Operation)>> = s
        .devices
        .iter()
        .map(|d| d.iter().rev().map(|spec| build(spec, tasks, t0)).collect())
        .collect();
    let ops: Vec<Operation> = streams.iter().flatten().map(|(_, op)| op.clone()).collect();

    // Interleave the streams, each device's operations staying in its own order.
    let mut sequence = Vec::new();
    for i in 0.. {
        let left: Vec<usize> = (0..streams.len())
            .filter(|&d| !streams[d].is_empty())
            .collect();
        if left.is_empty() {
            break;
        }
        let device = left[s.interleave[i % s.interleave.len()].index(left.len())];
        sequence.extend(streams[device].pop().map(|(item, _)| item));
    }
    let mut batches: Vec<Vec<Value>> = Vec::new();
    let mut rest = sequence.as_slice();
    for size in s.batch_sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at((*size).min(rest.len()));
        batches.push(batch.to_vec());
        rest = tail;
    }
    let mut last = Vec::new();
    for (pick, in_own_batch) in &s.again {
        let item = pick.get(&sequence).clone();
        if *in_own_batch {
            let at = batches.iter().position(|b| b.contains(&item)).unwrap();
            batches[at].push(item);
        } else {
            last.push(item);
        }
    }
    (ops, batches, last)
}

/// Pushes the batches through `pushers` concurrent pushers, then `last`; no item is an error,
/// and every pending one is waited for.
async fn push_and_settle(
    stack: &TestStack,
    pushers: usize,
    batches: &[Vec<Value>],
    last: &[Value],
) {
    let pushing = (0..pushers).map(|p| {
        let mine: Vec<&Vec<Value>> = batches.iter().skip(p).step_by(pushers).collect();
        async move {
            let mut replies = Vec::new();
            for batch in mine {
                replies.push((batch.clone(), stack.push(batch).await));
            }
            replies
        }
    });
    let mut replies: Vec<_> = join_all(pushing).await.into_iter().flatten().collect();
    if !last.is_empty() {
        replies.push((last.to_vec(), stack.push(last).await));
    }
    let mut pending = Vec::new();
    for (batch, reply) in &replies {
        assert_eq!(reply.status, 200, "{reply:?}");
        let statuses = statuses(reply);
        assert_eq!(statuses.len(), batch.len());
        for (item, status) in batch.iter().zip(&statuses) {
            assert_ne!(status, "error", "{item}: {reply:?}");
            if status == "pending" {
                pending.push(item["id"].as_str().unwrap().to_string());
            }
        }
    }
    // Wait on the log, not on the lookup: an update of a task that no pushed create names is
    // logged but reads `pending` for good.
    let undecided: Vec<Uuid> = pending
        .iter()
        .map(|id| id.parse().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let logged = undecided.len() as u64;
    stack
        .eventually("every pending operation is logged", || async {
            stack.op_log_count(OpLog::ops(&undecided)).await == logged
        })
        .await;
}

/// The server, and a device pulling from an empty cursor, hold for each task what the pure
/// merge of its operations in timestamp order gives; each operation is logged once.
async fn converged(stack: &TestStack, tasks: &[Uuid], ops: &[Operation]) {
    let server = stack.server_tasks().await;
    stack.feed_caught_up().await;
    let mut device = Device::new();
    device.pull(stack, Some(50)).await;
    for task in tasks {
        let mine: Vec<Operation> = ops.iter().filter(|o| o.task_id == *task).cloned().collect();
        let want = expected(&mine);
        let key = task.to_string();
        assert_eq!(
            server.get(&key).map(seen),
            want,
            "task {task} from {mine:#?}"
        );
        assert_eq!(device.tasks.get(&key), server.get(&key), "the pulled copy");
    }
    let mut logged: HashMap<Uuid, usize> = HashMap::new();
    for task in tasks {
        for (op_id, _) in stack.operations_of(*task).await {
            *logged.entry(op_id).or_default() += 1;
        }
    }
    let once: BTreeMap<Uuid, usize> = ops.iter().map(|o| (o.op_id, 1)).collect();
    assert_eq!(logged.into_iter().collect::<BTreeMap<_, _>>(), once);
}

/// Runs the property on a stack configured by `configure`.
fn property(configure: impl FnOnce(&mut tasksync_shared::Settings)) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stack = runtime.block_on(TestStack::start_with(configure));
    let mut runner = TestRunner::new(Config {
        cases: 12,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&scenario(), |s| {
        runtime.block_on(check(&stack, s));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn random_interleavings_pushed_in_random_batches_with_duplicates_end_as_timestamp_order() {
    property(|_| {});
}

/// The same property with the work spread over three queues: a task's operations share a
/// partition, the tasks of one scenario do not, and the result is the one-queue result.
#[test]
fn with_three_work_partitions_the_same_interleavings_end_as_timestamp_order() {
    property(|s| s.work_partitions = 3);
}
