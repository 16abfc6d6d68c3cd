//! What reading a 1,000-item push costs the api before anything is published
//! (`cargo bench -p api --bench batch_items`): the body parsed with its repeated keys listed
//! (`json::parse`), each item read into an operation (`batch::read_item`), and both, as
//! `POST /api/batch` does them. A quarter of the items are updates and a tenth deletes, as a
//! device's offline queue would hold them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use api::{batch, json};
use chrono::{Duration, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use tasksync_shared::model::to_db_precision;
use uuid::Uuid;

const ITEMS: usize = 1_000;

fn item(i: usize) -> Value {
    let at = (Utc::now() - Duration::minutes(5)).to_rfc3339();
    let (operation, data) = match i % 20 {
        0 | 1 => ("delete", json!({ "updated_at": at })),
        2..=6 => ("update", json!({ "completed": true, "updated_at": at })),
        _ => (
            "create",
            json!({
                "title": format!("Buy milk and bread, item {i}"),
                "description": "Two litres, semi-skimmed; the wholemeal loaf",
                "completed": false,
                "updated_at": at,
            }),
        ),
    };
    json!({
        "id": Uuid::new_v4(), "task_id": Uuid::new_v4(), "operation": operation,
        "data": data, "created_at": at, "retry_count": 0,
    })
}

fn body() -> Vec<u8> {
    let items: Vec<Value> = (0..ITEMS).map(item).collect();
    serde_json::to_vec(&json!({ "items": items })).unwrap()
}

fn read_all(items: &[Value]) -> usize {
    let received_at = to_db_precision(Utc::now());
    items
        .iter()
        .map(|item| batch::read_item(item, "alice", received_at))
        .filter(Result::is_ok)
        .count()
}

fn bench(c: &mut Criterion) {
    let bytes = body();
    let parsed = json::parse(&bytes).unwrap();
    let items = parsed.value["items"].as_array().unwrap().clone();
    assert_eq!(read_all(&items), ITEMS, "every item is good");
    let mut group = c.benchmark_group("batch_1000_items");
    group.throughput(Throughput::Elements(ITEMS as u64));
    group.bench_function("parse_body", |b| {
        b.iter(|| json::parse(black_box(&bytes)).unwrap())
    });
    group.bench_function("read_items", |b| b.iter(|| read_all(black_box(&items))));
    group.bench_function("parse_and_read", |b| {
        b.iter(|| {
            let parsed = json::parse(black_box(&bytes)).unwrap();
            read_all(parsed.value["items"].as_array().unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
