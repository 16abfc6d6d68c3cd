//! A task's conflict history (`task_conflicts`, V9), newest first, with the devices of both
//! writes from the operation log.

use deadpool_postgres::Pool;
use tasksync_shared::sync::{CONFLICT_SELECT, ConflictRecord};
use uuid::Uuid;

use super::{connection, fetch_count, prepare_in_index_order};
use crate::{cursor::ConflictPosition, error::ApiError};

/// Up to `limit` conflict records of `task` (the caller's: `user` is checked on every row)
/// older than `before` (the newest first when `None`), each with its record id; and whether
/// more follow. Served by `task_conflicts_by_task (task_id, id)` scanned backwards.
pub async fn task_conflicts(
    pool: &Pool,
    user: &str,
    task: Uuid,
    before: Option<ConflictPosition>,
    limit: usize,
) -> Result<(Vec<(i64, ConflictRecord)>, bool), ApiError> {
    let client = connection(pool).await?;
    let sql = format!(
        "{CONFLICT_SELECT} WHERE c.task_id = $1 AND c.user_id = $2 AND c.id < $3 \
         ORDER BY c.id DESC LIMIT $4"
    );
    let before = before.map_or(i64::MAX, |p| p.record);
    let statement = prepare_in_index_order(&client, &sql).await?;
    let mut rows = client
        .query(&statement, &[&task, &user, &before, &fetch_count(limit)])
        .await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let records = rows
        .iter()
        .map(|row| Ok((row.try_get("id")?, ConflictRecord::from_row(row)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    Ok((records, more))
}
