//! The devices' figures (`devices`, V9): the api records pushes and pulls (one upsert per
//! request) and reads a user's devices; the worker counts decisions.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tasksync_shared::device::{DeviceFigures, pending};
use tokio_postgres::Row;

use super::connection;
use crate::error::ApiError;

/// Adds `ops` accepted operations to the device's pushes.
pub async fn record_push(pool: &Pool, user: &str, device: &str, ops: i64) -> Result<(), ApiError> {
    let client = connection(pool).await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO devices AS d (user_id, device_id, last_push_at, ops_pushed) \
             VALUES ($1, $2, now(), $3) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET \
               last_seen_at = now(), last_push_at = now(), ops_pushed = d.ops_pushed + $3",
        )
        .await?;
    client.execute(&statement, &[&user, &device, &ops]).await?;
    Ok(())
}

/// Records a pull: its time and the cursor it was handed.
pub async fn record_pull(
    pool: &Pool,
    user: &str,
    device: &str,
    cursor: &str,
) -> Result<(), ApiError> {
    let client = connection(pool).await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO devices AS d (user_id, device_id, last_pull_at, last_pull_cursor) \
             VALUES ($1, $2, now(), $3) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET \
               last_seen_at = now(), last_pull_at = now(), last_pull_cursor = $3",
        )
        .await?;
    client
        .execute(&statement, &[&user, &device, &cursor])
        .await?;
    Ok(())
}

/// Most devices one user's list holds (a client that names itself anew on every request would
/// otherwise make the answer grow without bound).
pub const MAX_DEVICES: i64 = 1_000;

/// The columns [`figures_from_row`] reads.
pub const DEVICE_COLUMNS: &str = "user_id, device_id, first_seen_at, last_seen_at, \
     last_push_at, ops_pushed, last_pull_at, last_pull_cursor, ops_applied, ops_conflicted, \
     ops_failed, ops_duplicate, last_decided_at";

/// A device's row as its figures, with `pending` derived and the pull lag as of `now`.
pub fn figures_from_row(
    row: &Row,
    now: DateTime<Utc>,
) -> Result<DeviceFigures, tokio_postgres::Error> {
    let count = |name: &str| row.try_get::<_, i64>(name);
    let (pushed, applied, conflicted, failed, duplicate) = (
        count("ops_pushed")?,
        count("ops_applied")?,
        count("ops_conflicted")?,
        count("ops_failed")?,
        count("ops_duplicate")?,
    );
    let last_pull_at: Option<DateTime<Utc>> = row.try_get("last_pull_at")?;
    Ok(DeviceFigures {
        device_id: row.try_get("device_id")?,
        user_id: row.try_get("user_id")?,
        first_seen_at: row.try_get("first_seen_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        last_push_at: row.try_get("last_push_at")?,
        ops_pushed: pushed,
        ops_applied: applied,
        ops_conflicted: conflicted,
        ops_failed: failed,
        ops_duplicate: duplicate,
        pending: pending(pushed, applied, conflicted, failed, duplicate),
        last_decided_at: row.try_get("last_decided_at")?,
        last_pull_at,
        last_pull_cursor: row.try_get("last_pull_cursor")?,
        pull_lag_seconds: last_pull_at.map(|at| (now - at).num_seconds().max(0)),
    })
}

/// The user's devices, most recently seen first (at most [`MAX_DEVICES`]).
pub async fn list_devices(pool: &Pool, user: &str) -> Result<Vec<DeviceFigures>, ApiError> {
    let client = connection(pool).await?;
    let sql = format!(
        "SELECT {DEVICE_COLUMNS}, now() AS now FROM devices WHERE user_id = $1 \
         ORDER BY last_seen_at DESC, device_id LIMIT $2"
    );
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &[&user, &MAX_DEVICES]).await?;
    let mut devices = Vec::with_capacity(rows.len());
    for row in &rows {
        let now: DateTime<Utc> = row.try_get("now")?;
        devices.push(figures_from_row(row, now)?);
    }
    Ok(devices)
}
