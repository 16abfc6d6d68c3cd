//! The worker's retention sweeps: every `RETENTION_SWEEP_SECS`, from start, one
//! [`tasksync_shared::retention::sweep`] with the horizon `RETENTION_DAYS` ago (none when it is
//! 0). Every worker runs the loop; the sweep's advisory lock lets one of them work at a time,
//! and the others find nothing to do.

use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::Pool;
use tasksync_shared::{retention, shutdown::stopped};
use tokio::sync::watch;

/// Sweeps until `stop`; returns at once when `days` is 0 (history kept forever).
pub async fn sweep_periodically(
    pool: Pool,
    days: u32,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if days == 0 {
        tracing::info!("RETENTION_DAYS=0: history is kept forever");
        return;
    }
    loop {
        let before = Utc::now() - chrono::Duration::days(i64::from(days));
        let swept = tokio::select! {
            swept = retention::sweep(&pool, before) => swept,
            () = stopped(&mut stop) => return,
        };
        match swept {
            Ok(report) if report.ran => tracing::info!(
                before = %report.before,
                operations = report.operations,
                tombstones = report.tombstones,
                failure_records = report.failure_records,
                conflicts = report.conflicts,
                "retention sweep"
            ),
            Ok(_) => tracing::debug!("another worker holds the retention sweep"),
            Err(error) => {
                tracing::warn!(%error, "retention sweep failed; the next one tries again");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stopped(&mut stop) => return,
        }
    }
}
