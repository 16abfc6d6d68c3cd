//! SQL of failure records (`operation_failures`): a failed attempt waiting for its retry, and an
//! operation (or unreadable message) parked for good.
//!
//! Unlike the rest of [`crate::storage`], these run outside the apply transaction, each round
//! bounded by `DB_TIMEOUT_MS`. They cannot fail on a message's content: Postgres `text` and
//! `jsonb` refuse U+0000, so every text that comes from a message or an error is stored with
//! U+0000 replaced by U+FFFD (the exact message stays in `body`, which is `bytea`).

use std::{borrow::Cow, future::Future, time::Duration};

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde_json::json;
use tasksync_shared::{
    Operation, OutcomeStatus, db::RoundError, failure::RecordState, feed, model::SyncStatus,
    operation::storable_text,
};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

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

    /// Parks for good: the failure record becomes `parked`; an operation also gets, in the same
    /// transaction, the outcome `error` with its attempts and last error, and its task (if it
    /// exists and is the same user's) `sync_status = 'error'`. An unreadable message is one
    /// statement, atomic without a transaction.
    #[tracing::instrument(skip_all, fields(message_id = failure.message_id, attempt = failure.attempt))]
    pub async fn parked(&self, failure: &Failure<'_>) -> Result<(), RecordError> {
        self.bounded(async {
            let mut client = self.pool.get().await?;
            let Some(op) = failure.op else {
                return upsert(&client, failure, RecordState::Parked).await;
            };
            let tx = client.transaction().await?;
            park_operation(&tx, failure, op).await?;
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

/// The parameters of [`UPSERT`], with text made storable.
struct UpsertValues<'a> {
    message_id: Cow<'a, str>,
    op_id: Option<Uuid>,
    task_id: Option<Uuid>,
    user_id: Option<Cow<'a, str>>,
    kind: Option<&'static str>,
    routing_key: Cow<'a, str>,
    attempts: i32,
    at: DateTime<Utc>,
    error: Cow<'a, str>,
    event: serde_json::Value,
    state: &'static str,
    body: &'a [u8],
    publisher_message_id: Option<Cow<'a, str>>,
}

impl<'a> UpsertValues<'a> {
    fn new(failure: &Failure<'a>, state: RecordState) -> Self {
        let op = failure.op;
        let error = storable_text(failure.error);
        let event = json!({ "attempt": failure.attempt, "at": failure.at, "error": error });
        Self {
            message_id: storable_text(failure.message_id),
            op_id: op.map(|o| o.op_id),
            task_id: op.map(|o| o.task_id),
            user_id: op.map(|o| storable_text(&o.user_id)),
            kind: op.map(|o| o.kind.as_str()),
            routing_key: storable_text(failure.routing_key),
            attempts: i32::try_from(failure.attempt).unwrap_or(i32::MAX),
            at: failure.at,
            error,
            event,
            state: state.as_str(),
            body: failure.body,
            publisher_message_id: failure.publisher_message_id.map(storable_text),
        }
    }

    /// `$1`…`$13` of [`UPSERT`].
    fn params(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            &self.message_id,
            &self.op_id,
            &self.task_id,
            &self.user_id,
            &self.kind,
            &self.routing_key,
            &self.attempts,
            &self.at,
            &self.error,
            &self.event,
            &self.state,
            &self.body,
            &self.publisher_message_id,
        ]
    }
}

async fn upsert(
    client: &impl GenericClient,
    failure: &Failure<'_>,
    state: RecordState,
) -> Result<(), RecordError> {
    let values = UpsertValues::new(failure, state);
    let statement = client.prepare_cached(UPSERT).await?;
    client.execute(&statement, &values.params()).await?;
    Ok(())
}

/// Logs the parked operation's outcome `error` (replacing an earlier `error`, never a success)
/// with its first and last failure times from its failure record and its device (`$12`). The
/// row takes this transaction's id as its feed position (`decided_xid`, the column's default on
/// insert, set again when it replaces an earlier `error`), so the client sees the decision in its
/// next pull even when the operation was parked before, replayed, and parked again. When that is
/// the operation's first decision (the row is new), its device counts one more failed operation
/// (the apply step counts the others, in its own transaction).
const LOG_ERROR: &str = "\
    WITH logged AS ( \
      INSERT INTO operations (op_id, task_id, user_id, kind, fields, client_ts, received_at, \
        outcome, attempts, last_error, first_failed_at, last_failed_at, device_id) \
      SELECT $1, $2, $3, $4, $5, $6, $7, $11, $8, $9, f.first_failed_at, f.last_failed_at, $12 \
      FROM operation_failures f WHERE f.message_id = $10 \
      ON CONFLICT (op_id) DO UPDATE SET \
        attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, \
        last_failed_at = EXCLUDED.last_failed_at, decided_at = now(), \
        decided_xid = pg_current_xact_id() \
      WHERE operations.outcome = $11 \
      RETURNING (xmax = 0) AS inserted) \
    INSERT INTO devices AS d (user_id, device_id, ops_failed, last_decided_at) \
    SELECT $3, $12, 1, now() FROM logged WHERE inserted AND $12::text IS NOT NULL \
    ON CONFLICT (user_id, device_id) DO UPDATE SET \
      ops_failed = d.ops_failed + 1, last_decided_at = now()";

/// Marks the parked operation's task, if it is the same user's.
const MARK_TASK: &str = "UPDATE tasks SET sync_status = $3, change_xid = pg_current_xact_id() \
     WHERE id = $1 AND user_id = $2";

/// Parks an operation inside `tx`: its failure record, its outcome `error`, its task marked,
/// and the feed notice for its user. The four statements go out together, one round trip, in
/// that order (the log row copies the failure times of the record written just before it): they
/// are prepared first, then each is sent on the first poll of its future, which `tokio::join!`
/// does in the order written.
async fn park_operation(
    tx: &deadpool_postgres::Transaction<'_>,
    failure: &Failure<'_>,
    op: &Operation,
) -> Result<(), RecordError> {
    let (upsert_sql, log_sql, mark_sql) = tokio::try_join!(
        tx.prepare_cached(UPSERT),
        tx.prepare_cached(LOG_ERROR),
        tx.prepare_cached(MARK_TASK)
    )?;
    let record = UpsertValues::new(failure, RecordState::Parked);
    let fields = op.fields.storable_json();
    let attempts = record.attempts;
    let user_id = storable_text(&op.user_id);
    let last_error = storable_text(failure.error);
    let message_id = storable_text(failure.message_id);
    let error = OutcomeStatus::Error.as_str();
    let kind = op.kind.as_str();
    let task_error = SyncStatus::Error.as_str();
    let device = crate::apply::device_of(op);
    let record_params = record.params();
    let log_params: [&(dyn ToSql + Sync); 12] = [
        &op.op_id,
        &op.task_id,
        &user_id,
        &kind,
        &fields,
        &op.stamped_at,
        &op.received_at,
        &attempts,
        &last_error,
        &message_id,
        &error,
        &device,
    ];
    let mark_params: [&(dyn ToSql + Sync); 3] = [&op.task_id, &user_id, &task_error];
    let users = feed::users_json([op.user_id.as_str()]);
    let (recorded, logged, marked, notified) = tokio::join!(
        tx.execute(&upsert_sql, &record_params),
        tx.execute(&log_sql, &log_params),
        tx.execute(&mark_sql, &mark_params),
        super::notify_feed(tx, &users)
    );
    super::both(super::both(super::both(recorded, logged), marked), notified)?;
    Ok(())
}
