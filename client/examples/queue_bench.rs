//! How long a device takes to sync a large queue: queues `--tasks` creates and as many
//! updates (10,000 operations by default) in a fresh local database, then runs sync rounds
//! against the server at `--url` until the queue is empty, and prints the figures as JSON.
//!
//! ```sh
//! cargo run --release -p tasksync-client --example queue_bench -- --url http://127.0.0.1:3000
//! ```
//!
//! Bounded: at most `--max-rounds` rounds. The end-to-end tests run a smaller version of it
//! (`tests/tests/client.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tasksync_client::{Edit, NewTask, Remote, Store, SyncOptions, Token, sync::Progress};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    #[arg(long, env = "TASKS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Tasks to create; each is also updated once, so the queue holds twice as many operations.
    #[arg(long, default_value_t = 5_000)]
    tasks: usize,
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    #[arg(long, default_value_t = 50)]
    max_rounds: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = Store::open(&dir.path().join("tasks.db")).expect("the local database");

    let started = Instant::now();
    let mut ids = Vec::with_capacity(args.tasks);
    for i in 0..args.tasks {
        let task = store
            .add(NewTask {
                title: format!("benchmark task {i}"),
                description: Some("queued offline".into()),
                ..NewTask::default()
            })
            .expect("add");
        ids.push(task.id);
    }
    for id in &ids {
        store
            .edit(
                *id,
                Edit {
                    completed: Some(true),
                    ..Edit::default()
                },
            )
            .expect("edit");
    }
    let queued = store.queue_counts().expect("counts").queued;
    let queue_time = started.elapsed();

    let remote = Remote::new(
        &args.url,
        args.token.map(Token::new),
        Duration::from_secs(120),
    )
    .expect("a client");
    let options = SyncOptions {
        batch_size: args.batch_size,
        ..SyncOptions::default()
    };
    let sync_started = Instant::now();
    let mut rounds = Vec::new();
    for _ in 0..args.max_rounds {
        let report = tasksync_client::sync_once(&mut store, &remote, options, &|_: Progress| {})
            .await
            .expect("a sync round");
        let done = report.queued == 0 && report.accepted == 0;
        rounds.push(report);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sync_time = sync_started.elapsed();
    let left = store.queue_counts().expect("counts");
    let first = rounds.first().map(|r| r.elapsed_ms).unwrap_or(0);
    println!(
        "{}",
        json!({
            "operations": queued,
            "queue_ms": queue_time.as_millis() as u64,
            "first_round_ms": first,
            "sync_ms": sync_time.as_millis() as u64,
            "operations_per_second": (queued as f64 / sync_time.as_secs_f64()).round(),
            "rounds": rounds.len(),
            "left": left,
            "reports": rounds,
        })
    );
}
