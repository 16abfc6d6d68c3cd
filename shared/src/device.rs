//! Devices (docs/sync-beyond.md, "Devices"): how a client names itself, and the figures the
//! server keeps per (user, device).
//!
//! A client names itself with the [`DEVICE_ID_HEADER`] on any request, or `device_id` in a
//! push body. The operations it pushes carry the name through the message to the operation
//! log. The api counts what a device pushed and when it pulled; the worker counts what it
//! decided of the device's operations. [`pending`] is derived from those counts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The request header that names the device (HTTP header names are case-insensitive).
pub const DEVICE_ID_HEADER: &str = "device-id";

/// Longest device id.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// Checks a device id: 1 to 64 characters of `A-Z a-z 0-9 . _ : -`. The error says what is
/// wrong, without the field name (the caller names the header or the body field).
pub fn check_device_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > MAX_DEVICE_ID_LEN || !id.chars().all(allowed) {
        return Err(format!(
            "must be 1 to {MAX_DEVICE_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'"
        ));
    }
    Ok(())
}

/// The operations a device pushed that are not settled yet: pushed − applied − conflicted −
/// failed − duplicates, never below 0.
///
/// Every operation the api accepted from the device counts once in `pushed` (an op id repeated
/// within one push is one operation) and settles once in the worker: as a first decision
/// (`applied`, `conflicted` or `failed`, a parked operation included), or as a `duplicate` when
/// the log already held its op id (the same operation pushed again). So the difference is
/// exact while every accepted message is delivered once. It only reads low for a while: the
/// worker may count an operation before the api has counted its push (they commit
/// independently; hence the clamp), and a message the broker delivers again after a worker
/// stopped between commit and ack settles a second time, as a duplicate.
pub fn pending(pushed: i64, applied: i64, conflicted: i64, failed: i64, duplicates: i64) -> i64 {
    pushed
        .saturating_sub(applied)
        .saturating_sub(conflicted)
        .saturating_sub(failed)
        .saturating_sub(duplicates)
        .max(0)
}

/// The columns [`figures_from_row`] reads.
pub const DEVICE_COLUMNS: &str = "user_id, device_id, first_seen_at, last_seen_at, \
     last_push_at, ops_pushed, last_pull_at, last_pull_cursor, ops_applied, ops_conflicted, \
     ops_failed, ops_duplicate, last_decided_at";

/// A device's row as its figures, with `pending` derived and the pull lag as of `now`.
pub fn figures_from_row(
    row: &tokio_postgres::Row,
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

/// One device of a user, with its figures (`GET /api/devices`, `taskctl devices`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceFigures {
    pub device_id: String,
    /// The user it belongs to (operators' view; the same as the caller's for the api).
    pub user_id: String,
    pub first_seen_at: DateTime<Utc>,
    /// Its latest push or pull.
    pub last_seen_at: DateTime<Utc>,
    pub last_push_at: Option<DateTime<Utc>>,
    /// Operations the api accepted from it.
    pub ops_pushed: i64,
    /// Of those, decided `success` by the worker.
    pub ops_applied: i64,
    /// Decided `conflict`: they lost some field to a later write (see the task's conflicts).
    pub ops_conflicted: i64,
    /// Decided `error`: invalid, not the user's task, or failed every attempt and parked.
    pub ops_failed: i64,
    /// Pushed again after the first decision (the first outcome stands).
    pub ops_duplicate: i64,
    /// Accepted and not decided yet: pushed − applied − conflicted − failed − duplicate, never
    /// below 0.
    pub pending: i64,
    pub last_decided_at: Option<DateTime<Utc>>,
    pub last_pull_at: Option<DateTime<Utc>>,
    /// The `next_cursor` its latest pull was given.
    pub last_pull_cursor: Option<String>,
    /// Seconds since its latest pull; null when it never pulled.
    pub pull_lag_seconds: Option<i64>,
}

/// `GET /api/devices`: the caller's devices, most recently seen first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceList {
    pub devices: Vec<DeviceFigures>,
    pub server_time: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_short_and_plain() {
        for good in ["a", "phone-1", "laptop_2.home:main", &"x".repeat(64)] {
            assert!(check_device_id(good).is_ok(), "{good}");
        }
        for bad in ["", " ", "a b", "é", "a/b", "a\0", &"x".repeat(65)] {
            assert!(check_device_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pending_is_what_is_neither_decided_nor_repeated_and_never_negative() {
        assert_eq!(pending(10, 4, 1, 1, 2), 2);
        assert_eq!(pending(3, 3, 0, 0, 0), 0);
        assert_eq!(
            pending(0, 1, 0, 0, 0),
            0,
            "the worker counted before the api"
        );
        assert_eq!(pending(i64::MAX, -1, 0, 0, 0), i64::MAX);
    }
}
