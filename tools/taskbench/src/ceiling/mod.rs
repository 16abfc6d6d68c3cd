//! `ceiling`: the raw limit of this machine's broker and database with the services' crates —
//! publish with confirms to a private queue → consume → one upsert per batch into a scratch
//! database → ack with `multiple`. The queue and the database are removed afterwards, also on
//! Ctrl-C, so the figure can sit beside the api's in the same run.

mod broker;
mod scratch;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use anyhow::Context;
use serde::Serialize;

use crate::{
    cli::{Common, Scenario},
    drive::{self, Budget},
    report::{Report, Requests},
};
use broker::Counters;

#[derive(Debug, Clone, Serialize)]
pub struct CeilingFigures {
    pub queue: String,
    pub database: String,
    pub batch: usize,
    pub confirmed: u64,
    pub nacked: u64,
    pub applied: u64,
    pub batches: u64,
    pub confirmed_per_s: f64,
    pub applied_per_s: f64,
}

impl CeilingFigures {
    pub fn rows(&self) -> Vec<(String, String)> {
        vec![
            (
                "ceiling queue / database".into(),
                format!("{} / {}", self.queue, self.database),
            ),
            (
                "confirmed / nacked / applied".into(),
                format!("{} / {} / {}", self.confirmed, self.nacked, self.applied),
            ),
            (
                "batches (size ≤ batch)".into(),
                format!("{} (≤ {})", self.batches, self.batch),
            ),
            (
                "confirmed msgs/s".into(),
                format!("{:.0}", self.confirmed_per_s),
            ),
            (
                "applied ops/s (ceiling)".into(),
                format!("{:.0}", self.applied_per_s),
            ),
        ]
    }
}

pub async fn run(common: &Common) -> anyhow::Result<Report> {
    let database_url = common
        .database_url
        .as_deref()
        .context("ceiling needs --database-url (or DATABASE_URL)")?;
    let quorum = match common.queue_type.as_str() {
        "quorum" => true,
        "classic" => false,
        other => anyhow::bail!("--queue-type: expected quorum or classic, got {other}"),
    };
    let tag = format!(
        "taskbench_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let queue = format!("{tag}.ceiling");
    let connection = Arc::new(tasksync_shared::amqp::connect(&common.amqp_url, "taskbench").await?);
    broker::declare(&connection, &queue, quorum).await?;
    let scratch = scratch::Scratch::create(database_url, &tag).await;
    let result = match &scratch {
        Ok((_, pool)) => tokio::select! {
            r = measure(common, connection.clone(), &queue, pool.clone()) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        },
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    let cleaned = cleanup(&connection, &queue, scratch).await;
    let mut report = result?;
    cleaned?;
    if let Some(c) = &mut report.ceiling {
        c.database = tag;
    }
    Ok(report)
}

async fn cleanup(
    connection: &lapin::Connection,
    queue: &str,
    scratch: anyhow::Result<(scratch::Scratch, deadpool_postgres::Pool)>,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .queue_delete(queue.into(), Default::default())
        .await
        .context("delete the ceiling queue")?;
    let _ = connection.close(200, "done".into()).await;
    if let Ok((scratch, pool)) = scratch {
        scratch.drop_database(pool).await?;
    }
    Ok(())
}

async fn measure(
    common: &Common,
    connection: Arc<lapin::Connection>,
    queue: &str,
    pool: deadpool_postgres::Pool,
) -> anyhow::Result<Report> {
    let counters = Arc::new(Counters::default());
    let batch = common.items.max(1);
    let consumer_channel = connection.create_channel().await?;
    let consumer = tokio::spawn(broker::consume(
        consumer_channel,
        queue.to_string(),
        batch,
        pool,
        counters.clone(),
        common.drain_time(),
    ));
    let budget = Arc::new(Budget::new(common.run_time(), common.requests));
    let bar = drive::bar(common.json, "Ceiling");
    let started = Instant::now();
    let publishers: Vec<_> = (0..common.connections.max(1))
        .map(|_| {
            tokio::spawn(broker::publish(
                connection.clone(),
                queue.to_string(),
                budget.clone(),
                counters.clone(),
            ))
        })
        .collect();
    let ticker = tokio::spawn(drive::tick(budget.clone(), bar.clone(), started));
    for p in publishers {
        p.await.context("a publisher failed")??;
    }
    let published_in = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    counters.publishing_done.store(true, Ordering::Relaxed);
    let last_commit = consumer.await.context("the consumer failed")??;
    let applied_in = last_commit
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(1e-3);
    let confirmed = counters.confirmed.load(Ordering::Relaxed);
    let nacked = counters.nacked.load(Ordering::Relaxed);
    let applied = counters.applied.load(Ordering::Relaxed);
    let figures = CeilingFigures {
        queue: queue.to_string(),
        database: String::new(),
        batch,
        confirmed,
        nacked,
        applied,
        batches: counters.batches.load(Ordering::Relaxed),
        confirmed_per_s: confirmed as f64 / published_in.as_secs_f64().max(1e-3),
        applied_per_s: applied as f64 / applied_in,
    };
    Ok(Report {
        scenario: Scenario::Ceiling,
        connections: common.connections,
        seconds: published_in.as_secs_f64(),
        requests: Requests {
            sent: counters.published.load(Ordering::Relaxed),
            answered: confirmed + nacked,
            ok: confirmed,
            accepted_202: 0,
            throttled_429: 0,
            client_errors_4xx: 0,
            server_errors_5xx: nacked,
            transport_errors: 0,
        },
        requests_per_s: figures.confirmed_per_s,
        latency_ms: None,
        ops: None,
        list_rows: None,
        list_has_more: None,
        events: None,
        api_rss: None,
        worker_rss: None,
        ceiling: Some(figures),
        first_error: None,
    })
}
