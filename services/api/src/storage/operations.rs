//! Reading one operation's outcome: the operation log once decided (with whether its task
//! still waits for a create), else its failure record while the worker retries it.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use uuid::Uuid;

use super::connection;
use crate::error::ApiError;

/// One operation as the operation log (or, while it is retried, its failure record) knows it.
#[derive(Debug)]
pub struct OperationRecord {
    pub op_id: Uuid,
    pub task_id: Uuid,
    pub kind: String,
    /// `success`, `conflict`, `error`, or `pending` while it is being retried.
    pub status: String,
    pub attempts: i32,
    /// As recorded: for an operation that failed while being applied, the database's own words,
    /// which are for operators (`taskctl`), not for clients.
    pub last_error: Option<String>,
    pub client_ts: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
    /// Its task has a row but no title yet: the operation was merged into a hidden row and
    /// waits for a create, as the worker reported it (`pending`).
    pub awaiting_create: bool,
}

impl OperationRecord {
    /// Whether some attempt of it failed (then `last_error` is a failure, not a rejection).
    pub fn failed_an_attempt(&self) -> bool {
        self.first_failed_at.is_some()
    }

    fn from_log(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            op_id: row.try_get("op_id")?,
            task_id: row.try_get("task_id")?,
            kind: row.try_get("kind")?,
            status: row.try_get("outcome")?,
            attempts: row.try_get("attempts")?,
            last_error: row.try_get("last_error")?,
            client_ts: row.try_get("client_ts")?,
            received_at: row.try_get("received_at")?,
            decided_at: row.try_get("decided_at")?,
            first_failed_at: row.try_get("first_failed_at")?,
            last_failed_at: row.try_get("last_failed_at")?,
            awaiting_create: row.try_get("awaiting_create")?,
        })
    }

    fn from_failure(row: &Row) -> Result<Self, tokio_postgres::Error> {
        let state: &str = row.try_get("state")?;
        Ok(Self {
            op_id: row.try_get("op_id")?,
            task_id: row
                .try_get::<_, Option<Uuid>>("task_id")?
                .unwrap_or_default(),
            kind: row
                .try_get::<_, Option<String>>("kind")?
                .unwrap_or_default(),
            status: match state {
                "retrying" | "replayed" => "pending",
                _ => "error",
            }
            .into(),
            attempts: row.try_get("attempts")?,
            last_error: row.try_get("last_error")?,
            client_ts: None,
            received_at: None,
            decided_at: None,
            first_failed_at: row.try_get("first_failed_at")?,
            last_failed_at: row.try_get("last_failed_at")?,
            awaiting_create: false,
        })
    }
}

/// The caller's operation `op_id`: from the log once decided, else from its failure record
/// while the worker retries it; `None` when neither knows it (still queued, or never
/// accepted).
pub async fn find_operation(
    pool: &Pool,
    user: &str,
    op_id: Uuid,
) -> Result<Option<OperationRecord>, ApiError> {
    let client = connection(pool).await?;
    let decided = client
        .query_opt(
            "SELECT op_id, task_id, kind, outcome, attempts, last_error, client_ts, received_at, \
                    decided_at, first_failed_at, last_failed_at, \
                    EXISTS (SELECT 1 FROM tasks t WHERE t.id = o.task_id AND t.title IS NULL) \
                      AS awaiting_create \
             FROM operations o WHERE op_id = $1 AND user_id = $2",
            &[&op_id, &user],
        )
        .await?;
    if let Some(row) = decided {
        return Ok(Some(OperationRecord::from_log(&row)?));
    }
    // Not decided: a failure record that is not final means the worker is still retrying it.
    let failing = client
        .query_opt(
            "SELECT op_id, task_id, kind, state, attempts, last_error, first_failed_at, \
                    last_failed_at \
             FROM operation_failures WHERE op_id = $1 AND user_id = $2 \
             ORDER BY last_failed_at DESC LIMIT 1",
            &[&op_id, &user],
        )
        .await?;
    Ok(failing
        .as_ref()
        .map(OperationRecord::from_failure)
        .transpose()?)
}
