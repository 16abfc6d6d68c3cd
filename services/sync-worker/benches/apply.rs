//! The apply step against a real Postgres: round trips per batch, and the apply rate.
//!
//! `cargo bench -p sync-worker --bench apply [-- <creates>]` (default 100,000). It creates its
//! own database (`tasksync_sqlbench_<pid>`, on the server of `DATABASE_URL` or 127.0.0.1:5432),
//! then:
//! 1. counts the round trips of a batch of 256 creates (statements not yet prepared on the
//!    connection, then prepared) and of 256 updates, through a counting TCP relay: a round trip
//!    is a burst the client sends after the server has answered;
//! 2. applies `<creates>` creates in batches of 256 with `apply_first_attempts`, then one update
//!    of each, straight to the server, and prints ops/s of each.
//!
//! The database is dropped at the end, also when a step fails. Bounded: one pass of each.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::Context;
use chrono::Utc;
use deadpool_postgres::Pool;
use sync_worker::apply::apply_first_attempts;
use tasksync_shared::{
    OpKind, Operation, OperationFields, db, model::to_db_precision, operation::ItemStatus,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use uuid::Uuid;

const BATCH: usize = 256;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let creates: usize = match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        Some(n) => n.parse().context("the number of creates")?,
        None => 100_000,
    };
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut config: tokio_postgres::Config = server.parse()?;
    let name = format!("tasksync_sqlbench_{}", std::process::id());
    config.dbname(&name);
    let host = "127.0.0.1";
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let url = format!("postgres://postgres@{host}:{port}/{name}");
    db::migrate(&url).await?;
    let result = run(&url, host, port, creates).await;
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let (client, connection) = maintenance.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    result
}

async fn run(url: &str, host: &str, port: u16, creates: usize) -> anyhow::Result<()> {
    // 1. Round trips, through the relay, on one connection.
    let relay = Relay::start(host, port).await?;
    let relayed = url.replace(&format!(":{port}/"), &format!(":{}/", relay.port));
    let pool = db::pool(&relayed, 1)?;
    let first = new_tasks(BATCH);
    let second = new_tasks(BATCH);
    drop(pool.get().await?); // the connection's own start-up is not the batch's
    for (label, ops) in [
        (
            "256 creates, statements not prepared on the connection",
            first,
        ),
        ("256 creates", second.clone()),
        ("256 updates", updates_of(&second)),
    ] {
        let before = relay.round_trips();
        apply(&pool, &ops).await?;
        println!("round trips, {label}: {}", relay.round_trips() - before);
    }
    drop(pool);

    // 2. The apply rate, straight to the server.
    let pool = db::pool(url, 1)?;
    let tasks = new_tasks(creates);
    let updates = updates_of(&tasks);
    for (label, ops) in [("creates", tasks), ("updates", updates)] {
        let started = Instant::now();
        for batch in ops.chunks(BATCH) {
            apply(&pool, batch).await?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{} {label} in batches of {BATCH}: {secs:.2} s, {:.0} ops/s",
            ops.len(),
            ops.len() as f64 / secs
        );
    }
    Ok(())
}

async fn apply(pool: &Pool, ops: &[Operation]) -> anyhow::Result<()> {
    let reports = apply_first_attempts(pool, ops).await?;
    anyhow::ensure!(
        reports.iter().all(|r| r.status == ItemStatus::Success),
        "an operation was not applied"
    );
    Ok(())
}

fn operation(task_id: Uuid, kind: OpKind, title: String) -> Operation {
    let at = to_db_precision(Utc::now());
    Operation {
        op_id: Uuid::new_v4(),
        task_id,
        user_id: tasksync_shared::config::DEFAULT_USER.into(),
        kind,
        fields: OperationFields {
            title: Some(title),
            ..Default::default()
        },
        stamped_at: at,
        received_at: at,
        if_absent: false,
        if_match: None,
        device_id: None,
    }
}

fn new_tasks(n: usize) -> Vec<Operation> {
    (0..n)
        .map(|i| operation(Uuid::new_v4(), OpKind::Create, format!("task {i}")))
        .collect()
}

fn updates_of(creates: &[Operation]) -> Vec<Operation> {
    creates
        .iter()
        .map(|c| operation(c.task_id, OpKind::Update, "renamed".into()))
        .collect()
}

/// A TCP relay to the server that counts round trips: bursts from the client that follow an
/// answer of the server (or open the connection).
struct Relay {
    port: u16,
    round_trips: Arc<AtomicU64>,
}

impl Relay {
    async fn start(host: &str, port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let relay = Self {
            port: listener.local_addr()?.port(),
            round_trips: Arc::default(),
        };
        let counter = relay.round_trips.clone();
        let upstream = format!("{host}:{port}");
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (counter, upstream) = (counter.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        pipe(client, server, counter).await;
                    }
                });
            }
        });
        Ok(relay)
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }
}

async fn pipe(client: TcpStream, server: TcpStream, counter: Arc<AtomicU64>) {
    let answered = Arc::new(AtomicBool::new(true));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up_answered = answered.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = client_read.read(&mut buf).await {
            if up_answered.swap(false, Ordering::SeqCst) {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = server_read.read(&mut buf).await {
            answered.store(true, Ordering::SeqCst);
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(up, down);
}
