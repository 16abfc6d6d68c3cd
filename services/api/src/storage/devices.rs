//! The devices' figures (`devices`, V9): the api records pushes and pulls (one upsert per
//! request) and reads a user's devices; the worker counts decisions.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tasksync_shared::device::{DEVICE_COLUMNS, DeviceFigures, figures_from_row};

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
