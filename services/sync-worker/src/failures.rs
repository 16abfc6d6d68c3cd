//! SQL of failure records (`operation_failures`) and of parking an operation for good.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::json;
use tasksync_shared::Operation;

use crate::apply::ApplyError;

/// One failed attempt, or a message parked at once.
#[derive(Debug)]
pub struct Failure<'a> {
    pub message_id: String,
    pub op: Option<&'a Operation>,
    pub routing_key: String,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub error: String,
    pub body: &'a [u8],
}

const UPSERT: &str = "\
    INSERT INTO operation_failures AS f \
      (message_id, op_id, task_id, user_id, kind, routing_key, attempts, first_failed_at, \
       last_failed_at, last_error, history, state, body) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, jsonb_build_array($10::jsonb), $11, $12) \
    ON CONFLICT (message_id) DO UPDATE SET \
      attempts = EXCLUDED.attempts, last_failed_at = EXCLUDED.last_failed_at, \
      last_error = EXCLUDED.last_error, history = f.history || EXCLUDED.history, \
      state = EXCLUDED.state";

async fn upsert(
    client: &impl deadpool_postgres::GenericClient,
    failure: &Failure<'_>,
    state: &str,
) -> Result<(), tokio_postgres::Error> {
    let op = failure.op;
    let attempts = i32::try_from(failure.attempt).unwrap_or(i32::MAX);
    let event = json!({ "attempt": failure.attempt, "at": failure.at, "error": failure.error });
    client
        .execute(
            UPSERT,
            &[
                &failure.message_id,
                &op.map(|o| o.op_id),
                &op.map(|o| o.task_id),
                &op.map(|o| o.user_id.as_str()),
                &op.map(|o| o.kind.as_str()),
                &failure.routing_key,
                &attempts,
                &failure.at,
                &failure.error,
                &event,
                &state,
                &failure.body,
            ],
        )
        .await?;
    Ok(())
}

/// Records a failed attempt of an operation that will be retried.
pub async fn record_retry(pool: &Pool, failure: &Failure<'_>) -> Result<(), ApplyError> {
    let client = pool.get().await?;
    upsert(&client, failure, "retrying").await?;
    Ok(())
}

/// Parks for good, in one transaction: the failure record becomes `parked`; an operation gets
/// the outcome `error` with its attempts and last error, and its task (if it exists and is the
/// same user's) gets `sync_status = 'error'`.
pub async fn record_parked(pool: &Pool, failure: &Failure<'_>) -> Result<(), ApplyError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    upsert(&tx, failure, "parked").await?;
    if let Some(op) = failure.op {
        let fields = serde_json::to_value(&op.fields).unwrap_or_default();
        let attempts = i32::try_from(failure.attempt).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO operations (op_id, task_id, user_id, kind, fields, client_ts, \
               received_at, outcome, attempts, last_error, first_failed_at, last_failed_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, 'error', $8, $9, f.first_failed_at, f.last_failed_at \
             FROM operation_failures f WHERE f.message_id = $10 \
             ON CONFLICT (op_id) DO UPDATE SET \
               attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, \
               last_failed_at = EXCLUDED.last_failed_at, decided_at = now() \
             WHERE operations.outcome = 'error'",
            &[
                &op.op_id,
                &op.task_id,
                &op.user_id,
                &op.kind.as_str(),
                &fields,
                &op.stamped_at,
                &op.received_at,
                &attempts,
                &failure.error,
                &failure.message_id,
            ],
        )
        .await?;
        tx.execute(
            "UPDATE tasks SET sync_status = 'error', change_xid = pg_current_xact_id() \
             WHERE id = $1 AND user_id = $2",
            &[&op.task_id, &op.user_id],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
