//! The worker's heartbeat row (`worker_heartbeats`): its deliveries in flight and since when
//! the oldest, written every [`INTERVAL`] by a task of its own, removed at a clean stop. The api
//! reads the fresh rows for `/api/status`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tasksync_shared::shutdown::stopped;
use tokio::sync::watch;
use uuid::Uuid;

use crate::metrics::WorkerMetrics;

/// How often the row is written.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Rows of workers gone without a clean stop are removed after this long.
const FORGET_AFTER_SECONDS: f64 = 3600.0;

/// Writes this worker's row every [`INTERVAL`] until `stop`, then removes it. Each round is
/// bounded by `timeout`; a failed round is logged at debug and tried again at the next beat.
pub async fn beat(
    pool: Pool,
    metrics: WorkerMetrics,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let worker = Uuid::new_v4();
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stopped(&mut stop) => break,
        }
        let (deliveries, oldest) = metrics.in_flight();
        let since = oldest
            .and_then(|age| chrono::Duration::from_std(age).ok())
            .map(|age| Utc::now() - age);
        let written = tokio::time::timeout(timeout, write(&pool, worker, deliveries, since)).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::debug!("could not write the worker heartbeat; trying again");
        }
    }
    let removing = async {
        let client = pool.get().await.ok()?;
        client
            .execute(
                "DELETE FROM worker_heartbeats WHERE worker_id = $1",
                &[&worker],
            )
            .await
            .ok()
    };
    let _ = tokio::time::timeout(timeout, removing).await;
}

async fn write(
    pool: &Pool,
    worker: Uuid,
    deliveries: usize,
    oldest_since: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let deliveries = i32::try_from(deliveries).unwrap_or(i32::MAX);
    let upsert = client
        .prepare_cached(
            "INSERT INTO worker_heartbeats (worker_id, deliveries_in_flight, oldest_in_flight_at, beat_at) \
             VALUES ($1, $2, $3, now()) \
             ON CONFLICT (worker_id) DO UPDATE SET deliveries_in_flight = EXCLUDED.deliveries_in_flight, \
             oldest_in_flight_at = EXCLUDED.oldest_in_flight_at, beat_at = EXCLUDED.beat_at",
        )
        .await?;
    client
        .execute(&upsert, &[&worker, &deliveries, &oldest_since])
        .await?;
    client
        .execute(
            "DELETE FROM worker_heartbeats WHERE beat_at < now() - make_interval(secs => $1)",
            &[&FORGET_AFTER_SECONDS],
        )
        .await?;
    Ok(())
}
