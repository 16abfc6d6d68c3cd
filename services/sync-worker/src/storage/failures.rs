//! SQL of failure records (`operation_failures`): a failed attempt waiting for its retry, and an
//! operation (or unreadable message) parked for good.
//!
//! Unlike the rest of [`crate::storage`], these run outside the apply transaction, each round
//! bounded by `DB_TIMEOUT_MS`. They cannot fail on a message's content: Postgres `text` and
//! `jsonb` refuse U+0000, so every text that comes from a message or an error is stored with
//! U+0000 replaced by U+FFFD (the exact message stays in `body`, which is `bytea`).

use std::{future::Future, time::Duration};

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde_json::json;
use tasksync_shared::{
    Operation, OutcomeStatus, db::RoundError, failure::RecordState, model::SyncStatus,
    operation::storable_text,
};

/// One failed attempt, or a message parked at once.
#[derive(Debug)]
pub struct Failure<'a> {
    /// The record's key: the op id, or the id of an unreadable message.
    pub message_id: &'a str,
    /// The AMQP `message_id` its publisher gave it, if any.
    pub publisher_message_id: Option<&'a str>,
    pub op: Option<&'a Operation>,
    pub routing_key: &'a str,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub error: &'a str,
    pub body: &'a [u8],
}

/// Why a record could not be written: the database could not be reached (hold and try again),
/// or it refused the record (going ahead is the only way forward).
pub type RecordError = RoundError;

/// The failure records of one database, each write one bounded round.
#[derive(Clone, Copy, Debug)]
pub struct FailureRecords<'a> {
    pool: &'a Pool,
    timeout: Duration,
}

impl<'a> FailureRecords<'a> {
    /// Records in `pool`; a round that takes longer than `timeout` counts as unavailable.
    pub fn new(pool: &'a Pool, timeout: Duration) -> Self {
        Self { pool, timeout }
    }

    /// Records a failed attempt of an operation that will be retried.
    #[tracing::instrument(skip_all, fields(message_id = failure.message_id, attempt = failure.attempt))]
    pub async fn retrying(&self, failure: &Failure<'_>) -> Result<(), RecordError> {
        self.bounded(async {
            let client = self.pool.get().await?;
            upsert(&client, failure, RecordState::Retrying).await
        })
        .await
    }

    /// Parks for good, in one transaction: the failure record becomes `parked`; an operation gets
    /// the outcome `error` with its attempts and last error, and its task (if it exists and is
    /// the same user's) gets `sync_status = 'error'`.
    #[tracing::instrument(skip_all, fields(message_id = failure.message_id, attempt = failure.attempt))]
    pub async fn parked(&self, failure: &Failure<'_>) -> Result<(), RecordError> {
        self.bounded(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            upsert(&tx, failure, RecordState::Parked).await?;
            if let Some(op) = failure.op {
                log_error_outcome(&tx, failure, op).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn bounded(
        &self,
        round: impl Future<Output = Result<(), RecordError>>,
    ) -> Result<(), RecordError> {
        tokio::time::timeout(self.timeout, round)
            .await
            .unwrap_or_else(|_| {
                Err(RecordError::Unavailable(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            })
    }
}

/// A repeat of the same recording (the same state at the same attempt, as when a delivery comes
/// back after its copy could not be published) changes nothing, so history has no duplicates.
const UPSERT: &str = "\
    INSERT INTO operation_failures AS f \
      (message_id, op_id, task_id, user_id, kind, routing_key, attempts, first_failed_at, \
       last_failed_at, last_error, history, state, body, publisher_message_id) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, jsonb_build_array($10::jsonb), $11, $12, \
      $13) \
    ON CONFLICT (message_id) DO UPDATE SET \
      attempts = EXCLUDED.attempts, last_failed_at = EXCLUDED.last_failed_at, \
      last_error = EXCLUDED.last_error, history = f.history || EXCLUDED.history, \
      state = EXCLUDED.state, \
      publisher_message_id = COALESCE(f.publisher_message_id, EXCLUDED.publisher_message_id) \
    WHERE NOT (f.state = EXCLUDED.state AND f.attempts = EXCLUDED.attempts)";

async fn upsert(
    client: &impl GenericClient,
    failure: &Failure<'_>,
    state: RecordState,
) -> Result<(), RecordError> {
    let op = failure.op;
    let attempts = i32::try_from(failure.attempt).unwrap_or(i32::MAX);
    let error = storable_text(failure.error);
    let event = json!({ "attempt": failure.attempt, "at": failure.at, "error": error });
    client
        .execute(
            UPSERT,
            &[
                &storable_text(failure.message_id),
                &op.map(|o| o.op_id),
                &op.map(|o| o.task_id),
                &op.map(|o| storable_text(&o.user_id)),
                &op.map(|o| o.kind.as_str()),
                &storable_text(failure.routing_key),
                &attempts,
                &failure.at,
                &error,
                &event,
                &state.as_str(),
                &failure.body,
                &failure.publisher_message_id.map(storable_text),
            ],
        )
        .await?;
    Ok(())
}

/// Logs the parked operation's outcome `error` (replacing an earlier `error`, never a success)
/// and marks its task.
async fn log_error_outcome(
    tx: &deadpool_postgres::Transaction<'_>,
    failure: &Failure<'_>,
    op: &Operation,
) -> Result<(), RecordError> {
    let fields = op.fields.storable_json();
    let attempts = i32::try_from(failure.attempt).unwrap_or(i32::MAX);
    let user_id = storable_text(&op.user_id);
    let error = OutcomeStatus::Error.as_str();
    tx.execute(
        "INSERT INTO operations (op_id, task_id, user_id, kind, fields, client_ts, \
           received_at, outcome, attempts, last_error, first_failed_at, last_failed_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $11, $8, $9, f.first_failed_at, f.last_failed_at \
         FROM operation_failures f WHERE f.message_id = $10 \
         ON CONFLICT (op_id) DO UPDATE SET \
           attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, \
           last_failed_at = EXCLUDED.last_failed_at, decided_at = now() \
         WHERE operations.outcome = $11",
        &[
            &op.op_id,
            &op.task_id,
            &user_id,
            &op.kind.as_str(),
            &fields,
            &op.stamped_at,
            &op.received_at,
            &attempts,
            &storable_text(failure.error),
            &storable_text(failure.message_id),
            &error,
        ],
    )
    .await?;
    tx.execute(
        "UPDATE tasks SET sync_status = $3, change_xid = pg_current_xact_id() \
         WHERE id = $1 AND user_id = $2",
        &[&op.task_id, &user_id, &SyncStatus::Error.as_str()],
    )
    .await?;
    Ok(())
}
