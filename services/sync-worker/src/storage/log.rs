//! The operation log: what it holds of a batch's op ids, and the batch's decisions.

use std::{borrow::Cow, collections::HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tasksync_shared::{OpKind, Operation, OutcomeStatus, operation::storable_text};
use tokio_postgres::{Row, Statement, types::ToSql};
use tracing::instrument;
use uuid::Uuid;

/// An operation the log already holds: its decision, and what it was (to tell a redelivery
/// from an op id reused for another operation).
#[derive(Clone, Debug)]
pub struct Logged {
    pub status: OutcomeStatus,
    pub error: Option<String>,
    /// Who pushed the operation that was decided.
    pub user_id: String,
    pub task_id: Uuid,
    pub kind: Option<OpKind>,
    /// As stored: [`tasksync_shared::OperationFields::storable_json`].
    pub fields: serde_json::Value,
    pub stamped_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

fn logged_from_row(row: &Row) -> Result<(Uuid, Logged), tokio_postgres::Error> {
    let kind = OpKind::parse(row.try_get("kind")?);
    let logged = Logged {
        status: OutcomeStatus::from_db(row.try_get("outcome")?),
        error: row.try_get("last_error")?,
        user_id: row.try_get("user_id")?,
        task_id: row.try_get("task_id")?,
        kind,
        fields: row.try_get("fields")?,
        stamped_at: row.try_get("client_ts")?,
        received_at: row.try_get("received_at")?,
    };
    Ok((row.try_get("op_id")?, logged))
}

/// The operations of `op_ids` that the log already holds.
#[instrument(skip_all, fields(ops = op_ids.len()))]
pub async fn logged_operations(
    tx: &Transaction<'_>,
    op_ids: &[Uuid],
) -> Result<HashMap<Uuid, Logged>, tokio_postgres::Error> {
    if op_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let read = tx
        .prepare_cached(
            "SELECT op_id, outcome, last_error, user_id, task_id, kind, fields, client_ts, \
                    received_at \
             FROM operations WHERE op_id = ANY($1)",
        )
        .await?;
    let rows = tx.query(&read, &[&op_ids]).await?;
    rows.iter().map(logged_from_row).collect()
}

/// A decision to record in the operation log.
#[derive(Clone, Debug)]
pub struct Decision<'a> {
    pub op: &'a Operation,
    pub status: OutcomeStatus,
    pub error: Option<String>,
    /// 1 for the first try.
    pub attempts: u32,
}

/// Column-wise parameters of [`RECORD`]. Text goes through [`storable_text`], so
/// that an operation decided invalid for a NUL in it is still recorded.
#[derive(Default)]
struct RecordColumns<'a> {
    op_id: Vec<Uuid>,
    task_id: Vec<Uuid>,
    user_id: Vec<Cow<'a, str>>,
    kind: Vec<&'static str>,
    fields: Vec<serde_json::Value>,
    stamped_at: Vec<DateTime<Utc>>,
    received_at: Vec<DateTime<Utc>>,
    outcome: Vec<&'static str>,
    error: Vec<Option<Cow<'a, str>>>,
    attempts: Vec<i32>,
    device_id: Vec<Option<&'a str>>,
}

impl<'a> RecordColumns<'a> {
    fn push(&mut self, d: &'a Decision<'_>) {
        self.op_id.push(d.op.op_id);
        self.task_id.push(d.op.task_id);
        self.user_id.push(storable_text(&d.op.user_id));
        self.kind.push(d.op.kind.as_str());
        self.fields.push(d.op.fields.storable_json());
        self.stamped_at.push(d.op.stamped_at);
        self.received_at.push(d.op.received_at);
        self.outcome.push(d.status.as_str());
        self.error.push(d.error.as_deref().map(storable_text));
        self.attempts
            .push(i32::try_from(d.attempts).unwrap_or(i32::MAX));
        self.device_id.push(crate::apply::device_of(d.op));
    }

    /// The columns as `$1`…`$11` of [`RECORD`].
    fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.op_id,
            &self.task_id,
            &self.user_id,
            &self.kind,
            &self.fields,
            &self.stamped_at,
            &self.received_at,
            &self.outcome,
            &self.error,
            &self.attempts,
            &self.device_id,
        ]
    }
}

/// Logged `error` outcomes of replayed operations, removed before their new decision is
/// recorded.
const FORGET: &str = "DELETE FROM operations WHERE op_id = ANY($1) AND outcome = 'error'";

/// New decisions; an op id already in the log is left as it is.
const RECORD: &str = "INSERT INTO operations \
       (op_id, task_id, user_id, kind, fields, client_ts, received_at, outcome, last_error, \
        attempts, device_id) \
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], \
                          $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], \
                          $10::int4[], $11::text[]) \
     ON CONFLICT (op_id) DO NOTHING";

/// Marks the failure records of operations now decided as resolved, and copies their first and
/// last failure times into the log rows just recorded.
const RESOLVE: &str = "WITH resolved AS ( \
       UPDATE operation_failures SET state = 'resolved' \
       WHERE op_id = ANY($1) AND state IN ('retrying', 'replayed') \
       RETURNING op_id, first_failed_at, last_failed_at) \
     UPDATE operations o \
     SET first_failed_at = r.first_failed_at, last_failed_at = r.last_failed_at \
     FROM resolved r WHERE o.op_id = r.op_id";

/// Writes a batch's decisions to the log: removes the logged errors of the replayed operations
/// `forget`, records `decisions`, and resolves the failure records of `resolve` (only
/// operations that can have one: a later attempt, or a replay). Each of the three statements is
/// sent only when it has something to do; they go out together, one round trip.
///
/// Their order matters (a replayed operation's error must be gone before its new decision is
/// inserted, and that row must exist before its failure times are copied into it), and the
/// server runs pipelined statements in the order they were sent. So the statements are all
/// prepared first; then each execution is sent on the first poll of its future, which
/// `tokio::join!` does in the order written.
#[instrument(skip_all, fields(forget = forget.len(), record = decisions.len(), resolve = resolve.len()))]
pub async fn write_decisions(
    tx: &Transaction<'_>,
    forget: &[Uuid],
    decisions: &[Decision<'_>],
    resolve: &[Uuid],
) -> Result<(), tokio_postgres::Error> {
    let (forget_sql, record_sql, resolve_sql) = tokio::try_join!(
        prepare_if(tx, !forget.is_empty(), FORGET),
        prepare_if(tx, !decisions.is_empty(), RECORD),
        prepare_if(tx, !resolve.is_empty(), RESOLVE),
    )?;
    let mut c = RecordColumns::default();
    for d in decisions {
        c.push(d);
    }
    let (forget_params, record_params, resolve_params) =
        ([&forget as _], c.params(), [&resolve as _]);
    let (forgotten, recorded, resolved) = tokio::join!(
        execute(tx, forget_sql.as_ref(), &forget_params),
        execute(tx, record_sql.as_ref(), &record_params),
        execute(tx, resolve_sql.as_ref(), &resolve_params),
    );
    super::both(super::both(forgotten, recorded), resolved)?;
    Ok(())
}

async fn prepare_if(
    tx: &Transaction<'_>,
    needed: bool,
    sql: &str,
) -> Result<Option<Statement>, tokio_postgres::Error> {
    if needed {
        tx.prepare_cached(sql).await.map(Some)
    } else {
        Ok(None)
    }
}

async fn execute(
    tx: &Transaction<'_>,
    statement: Option<&Statement>,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    match statement {
        Some(statement) => tx.execute(statement, params).await,
        None => Ok(0),
    }
}
