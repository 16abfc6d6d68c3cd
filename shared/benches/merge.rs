//! What the merge costs the worker (`cargo bench -p tasksync-shared --bench merge`): one
//! write applied to a task's state under last-write-wins (`TaskState::apply`), for a create
//! into an empty state, a newer update that wins, an older update that loses every field (a
//! conflict), and a batch of 1,000 writes spread over 100 tasks, as the worker merges them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use chrono::{Duration, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tasksync_shared::{
    OpKind, Operation, OperationFields,
    merge::{TaskState, Write},
};
use uuid::Uuid;

fn operation(task: Uuid, kind: OpKind, minutes: i64) -> Operation {
    let at = Utc::now() - Duration::minutes(60 - minutes);
    let fields = match kind {
        OpKind::Create => OperationFields {
            title: Some("Buy milk".into()),
            description: Some(Some("Two litres, semi-skimmed".into())),
            completed: Some(false),
        },
        OpKind::Update => OperationFields {
            title: Some("Buy oat milk".into()),
            completed: Some(true),
            ..Default::default()
        },
        OpKind::Delete => OperationFields::default(),
    };
    Operation {
        op_id: Uuid::new_v4(),
        task_id: task,
        user_id: "alice".into(),
        kind,
        fields,
        stamped_at: at,
        received_at: at,
        if_absent: false,
        if_match: None,
        device_id: None,
    }
}

fn bench(c: &mut Criterion) {
    let task = Uuid::new_v4();
    let create = Write::from_operation(&operation(task, OpKind::Create, 10));
    let newer = Write::from_operation(&operation(task, OpKind::Update, 20));
    let older = Write::from_operation(&operation(task, OpKind::Update, 0));
    let mut created = TaskState::default();
    created.apply(&create);
    let mut group = c.benchmark_group("merge");
    group.bench_function("create_into_empty", |b| {
        b.iter_batched_ref(
            TaskState::default,
            |s| s.apply(black_box(&create)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("newer_update_wins", |b| {
        b.iter_batched_ref(
            || created.clone(),
            |s| s.apply(black_box(&newer)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("older_update_conflicts", |b| {
        b.iter_batched_ref(
            || created.clone(),
            |s| s.apply(black_box(&older)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    batch(c);
}

/// 1,000 operations over 100 tasks (a create, then updates and a delete), with the
/// conversion from operation to write that the worker does for each.
fn batch(c: &mut Criterion) {
    let tasks: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
    let ops: Vec<Operation> = (0..1_000)
        .map(|i| {
            let kind = match i / 100 {
                0 => OpKind::Create,
                9 => OpKind::Delete,
                _ => OpKind::Update,
            };
            operation(tasks[i % 100], kind, i64::try_from(i / 100).unwrap())
        })
        .collect();
    let mut group = c.benchmark_group("merge_batch");
    group.throughput(Throughput::Elements(ops.len() as u64));
    group.bench_function("1000_ops_100_tasks", |b| {
        b.iter(|| {
            let mut states = vec![TaskState::default(); tasks.len()];
            for (i, op) in ops.iter().enumerate() {
                states[i % 100].apply(&Write::from_operation(black_box(op)));
            }
            states
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
