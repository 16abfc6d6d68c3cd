//! The task as every endpoint returns it (SPEC §2), and how it is read from Postgres.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a task stands between the client and the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SyncStatus {
    /// Accepted, not yet applied.
    Pending,
    /// Applied by the worker.
    Synced,
    /// The latest operation on it failed for good.
    Error,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Synced => "synced",
            Self::Error => "error",
        }
    }

    /// Reads the `sync_status` column (whose CHECK allows only the three values).
    pub fn from_db(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "error" => Self::Error,
            _ => Self::Synced,
        }
    }
}

/// A task, as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub is_deleted: bool,
    pub sync_status: SyncStatus,
    /// The task's id as the server keeps it; null until the worker first applied it.
    pub server_id: Option<String>,
    /// When the worker last applied an operation to it; null until then.
    pub last_synced_at: Option<DateTime<Utc>>,
}

/// The columns [`Task::from_row`] reads (by name: a query may select more, in any order).
pub const TASK_COLUMNS: &str = "id, title, description, completed, created_at, updated_at, \
     is_deleted, sync_status, server_id, last_synced_at";

impl Task {
    /// Reads a row that has the columns of [`TASK_COLUMNS`], by name.
    ///
    /// A row whose title was never written (an update merged before its create) reads with an
    /// empty title; readers filter such rows out with `title IS NOT NULL`.
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            title: row
                .try_get::<_, Option<String>>("title")?
                .unwrap_or_default(),
            description: row.try_get("description")?,
            completed: row.try_get("completed")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            is_deleted: row.try_get("is_deleted")?,
            sync_status: SyncStatus::from_db(row.try_get("sync_status")?),
            server_id: row.try_get("server_id")?,
            last_synced_at: row.try_get("last_synced_at")?,
        })
    }
}

/// Truncates a timestamp to the microsecond precision Postgres stores, so that a stamp compares
/// the same before and after a round trip through the database.
pub fn to_db_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}
