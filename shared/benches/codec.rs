//! What the message codec costs (`cargo bench -p tasksync-shared --bench codec`): an operation
//! encoded as the api publishes it (`Operation::encode`) and decoded as the worker reads it
//! (`Operation::decode`, version check included), for a create with every field and for a
//! delete, the smallest message.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tasksync_shared::{OpKind, Operation, OperationFields};
use uuid::Uuid;

fn operation(kind: OpKind, fields: OperationFields) -> Operation {
    let now = Utc::now();
    Operation {
        op_id: Uuid::new_v4(),
        task_id: Uuid::new_v4(),
        user_id: "alice@example.com".into(),
        kind,
        fields,
        stamped_at: now,
        received_at: now,
        if_absent: false,
        if_match: None,
        device_id: None,
    }
}

fn bench(c: &mut Criterion) {
    let create = operation(
        OpKind::Create,
        OperationFields {
            title: Some("Buy milk and bread".into()),
            description: Some(Some("Two litres, semi-skimmed; the wholemeal loaf".into())),
            completed: Some(false),
        },
    );
    let delete = operation(OpKind::Delete, OperationFields::default());
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    for (name, op) in [("create", &create), ("delete", &delete)] {
        let body = op.encode().unwrap();
        assert_eq!(
            &Operation::decode(&body).unwrap(),
            op,
            "the codec round-trips"
        );
        group.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| black_box(op).encode().unwrap())
        });
        group.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| Operation::decode(black_box(&body)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
