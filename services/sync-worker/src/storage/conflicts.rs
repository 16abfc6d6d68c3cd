//! The conflict history (`task_conflicts`, V9): the fields arriving writes lost, recorded in the
//! apply transaction (one statement per batch, none when nothing was lost), and pruned below a
//! retention horizon.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use tasksync_shared::merge::{Lost, Stamp};
use tracing::instrument;
use uuid::Uuid;

/// A field one write lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict<'a> {
    pub task_id: Uuid,
    /// The task's owner (the losing write's user: writes merge only into their user's tasks).
    pub user_id: &'a str,
    /// The field, the value and stamp that stay, and the value that lost.
    pub lost: Lost,
    /// The losing write's stamp.
    pub lost_stamp: Stamp,
}

/// Text in the values went through validation (no NUL), so jsonb takes them as they are.
const RECORD: &str = "INSERT INTO task_conflicts \
       (task_id, user_id, field, kept_value, kept_at, kept_op, lost_value, lost_at, lost_op) \
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], \
                          $6::uuid[], $7::jsonb[], $8::timestamptz[], $9::uuid[])";

/// Records `conflicts` in one statement; nothing is sent when there are none.
#[instrument(skip_all, fields(conflicts = conflicts.len()))]
pub async fn record_conflicts(
    tx: &Transaction<'_>,
    conflicts: &[Conflict<'_>],
) -> Result<(), tokio_postgres::Error> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let task_id: Vec<Uuid> = conflicts.iter().map(|c| c.task_id).collect();
    let user_id: Vec<&str> = conflicts.iter().map(|c| c.user_id).collect();
    let field: Vec<&str> = conflicts.iter().map(|c| c.lost.field.as_str()).collect();
    let kept_value: Vec<&serde_json::Value> =
        conflicts.iter().map(|c| &c.lost.kept.value).collect();
    let kept_at: Vec<DateTime<Utc>> = conflicts.iter().map(|c| c.lost.kept.stamp.at).collect();
    let kept_op: Vec<Uuid> = conflicts.iter().map(|c| c.lost.kept.stamp.op_id).collect();
    let lost_value: Vec<&serde_json::Value> = conflicts.iter().map(|c| &c.lost.lost).collect();
    let lost_at: Vec<DateTime<Utc>> = conflicts.iter().map(|c| c.lost_stamp.at).collect();
    let lost_op: Vec<Uuid> = conflicts.iter().map(|c| c.lost_stamp.op_id).collect();
    let statement = tx.prepare_cached(RECORD).await?;
    tx.execute(
        &statement,
        &[
            &task_id,
            &user_id,
            &field,
            &kept_value,
            &kept_at,
            &kept_op,
            &lost_value,
            &lost_at,
            &lost_op,
        ],
    )
    .await?;
    Ok(())
}
