//! Applied operations: the operation log is polled until every accepted op id is in it (or the
//! drain time is up), and each one's `decided_at` is set against its request's send time.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::tally::histogram;

/// Op ids asked for in one query.
const CHUNK: usize = 5_000;

#[derive(Debug)]
pub struct Applied {
    /// Accepted operations found in the log.
    pub found: u64,
    /// Of those, decided other than `success`.
    pub not_success: u64,
    /// From the first send to the last `decided_at`.
    pub span: Duration,
    /// Send → `decided_at`, µs.
    pub latency: hdrhistogram::Histogram<u64>,
}

/// Polls until all of `accepted` are decided or `drain` has passed since the load stopped.
pub async fn wait(
    database_url: &str,
    accepted: &[(Uuid, DateTime<Utc>)],
    drain: Duration,
) -> anyhow::Result<Applied> {
    let pool = tasksync_shared::db::pool(database_url, 2).context("operation log pool")?;
    let client = pool.get().await.context("connect to the operation log")?;
    let deadline = Instant::now() + drain;
    let mut pending: HashMap<Uuid, DateTime<Utc>> = accepted.iter().copied().collect();
    let mut applied = Applied {
        found: 0,
        not_success: 0,
        span: Duration::ZERO,
        latency: histogram(),
    };
    let first_send = accepted.iter().map(|(_, t)| *t).min();
    let mut last_decided = first_send;
    loop {
        let ids: Vec<Uuid> = pending.keys().copied().collect();
        for chunk in ids.chunks(CHUNK) {
            let rows = client
                .query(
                    "SELECT op_id, decided_at, outcome FROM operations WHERE op_id = ANY($1)",
                    &[&chunk],
                )
                .await
                .context("read the operation log")?;
            for row in rows {
                let (op, decided, outcome): (Uuid, DateTime<Utc>, String) =
                    (row.get(0), row.get(1), row.get(2));
                let Some(sent) = pending.remove(&op) else {
                    continue;
                };
                applied.found += 1;
                applied.not_success += u64::from(outcome != "success");
                let micros = (decided - sent).num_microseconds().unwrap_or(0).max(1);
                let _ = applied.latency.record(micros as u64);
                last_decided = last_decided.max(Some(decided));
            }
        }
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let (Some(first), Some(last)) = (first_send, last_decided) {
        applied.span = (last - first).to_std().unwrap_or_default();
    }
    Ok(applied)
}
