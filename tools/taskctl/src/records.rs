//! Every SQL statement of taskctl: the failure records (`operation_failures`) the worker keeps,
//! and the operation log (`operations`), read only.
//!
//! A record's key is its `message_id`: the op id, or for a message that could not be decoded,
//! the id the worker gave it. A key named on the command line may also be an op id. Rows are
//! read by column name.

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, Pool};
use serde::Serialize;
use serde_json::Value;
use tasksync_shared::{Settings, db, failure::RecordState};
use tokio_postgres::{IsolationLevel, Row};
use uuid::Uuid;

use crate::CtlError;

/// Filters of `dlq list`; they apply to the rows and to the counts alike.
#[derive(Debug, Default)]
pub struct Filter {
    pub error: Option<String>,
    pub task: Option<Uuid>,
    pub user: Option<String>,
    pub limit: i64,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.error.is_none() && self.task.is_none() && self.user.is_none()
    }
}

/// One failure record, as `dlq list` and `dlq show` print it.
#[derive(Debug, Serialize)]
pub struct Parked {
    pub message_id: String,
    pub op_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub user_id: Option<String>,
    pub kind: Option<String>,
    pub routing_key: String,
    pub attempts: i32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    pub age_seconds: i64,
    pub last_error: String,
}

/// A record with its state, failure history and the message body.
#[derive(Debug)]
pub struct Detail {
    pub record: Parked,
    pub state: String,
    pub history: Value,
    pub body: Vec<u8>,
}

/// Filters of `ops list`: one state, and optionally one task and one user.
#[derive(Debug)]
pub struct StuckFilter {
    pub state: RecordState,
    pub task: Option<Uuid>,
    pub user: Option<String>,
    pub limit: i64,
}

/// A failure record with its state, as `taskctl op` and `ops list` print it.
#[derive(Debug, Serialize)]
pub struct Failure {
    #[serde(flatten)]
    pub record: Parked,
    #[serde(serialize_with = "state_name")]
    pub state: RecordState,
}

fn state_name<S: serde::Serializer>(state: &RecordState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

/// What is known of one operation: its log entry, and its failure record with the attempt
/// numbers of the record's history, oldest first.
pub type Operation = (Option<LogEntry>, Option<(Failure, Vec<u32>)>);

/// An operation's entry in the operation log: the worker decided it.
#[derive(Debug, Serialize)]
pub struct LogEntry {
    pub task_id: Uuid,
    pub user_id: String,
    pub kind: String,
    /// `success`, `conflict` or `error`.
    pub outcome: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub client_ts: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
}

const COLUMNS: &str = "message_id, op_id, task_id, user_id, kind, routing_key, attempts, \
     first_failed_at, last_failed_at, last_error";

/// `$1` state, `$2` task, `$3` user: the filters of `ops list`. With a task, the index
/// `operation_failures_stuck_by_task` serves it; with a user, `operation_failures_stuck_by_user`;
/// with neither, `operation_failures_by_state`; each in `last_failed_at` order (migration V6).
const STUCK_FILTER: &str = "state = $1 \
     AND ($2::uuid IS NULL OR task_id = $2) \
     AND ($3::text IS NULL OR user_id = $3)";

/// `$1` state, `$2` error text, `$3` task, `$4` user.
const FILTER: &str = "state = $1 \
     AND ($2::text IS NULL OR strpos(lower(last_error), lower($2)) > 0) \
     AND ($3::uuid IS NULL OR task_id = $3) \
     AND ($4::text IS NULL OR user_id = $4)";

fn parked_from_row(row: &Row) -> Result<Parked, tokio_postgres::Error> {
    let last_failed_at: DateTime<Utc> = row.try_get("last_failed_at")?;
    Ok(Parked {
        message_id: row.try_get("message_id")?,
        op_id: row.try_get("op_id")?,
        task_id: row.try_get("task_id")?,
        user_id: row.try_get("user_id")?,
        kind: row.try_get("kind")?,
        routing_key: row.try_get("routing_key")?,
        attempts: row.try_get("attempts")?,
        first_failed_at: row.try_get("first_failed_at")?,
        last_failed_at,
        age_seconds: (Utc::now() - last_failed_at).num_seconds(),
        last_error: row.try_get("last_error")?,
    })
}

fn failure_from_row(row: &Row) -> Result<Failure, CtlError> {
    let doing = "reading a failure record";
    let state: String = row
        .try_get("state")
        .map_err(|e| CtlError::postgres(doing, &e))?;
    Ok(Failure {
        record: parked_from_row(row).map_err(|e| CtlError::postgres(doing, &e))?,
        state: RecordState::from_db(&state)
            .ok_or_else(|| CtlError::failed(format!("{doing}: unknown state {state:?}")))?,
    })
}

fn log_entry_from_row(row: &Row) -> Result<LogEntry, tokio_postgres::Error> {
    Ok(LogEntry {
        task_id: row.try_get("task_id")?,
        user_id: row.try_get("user_id")?,
        kind: row.try_get("kind")?,
        outcome: row.try_get("outcome")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        client_ts: row.try_get("client_ts")?,
        received_at: row.try_get("received_at")?,
        decided_at: row.try_get("decided_at")?,
    })
}

/// The failure records of one database.
#[derive(Debug)]
pub struct Records {
    pool: Pool,
}

impl Records {
    pub fn new(settings: &Settings) -> Result<Self, CtlError> {
        let pool = db::pool(&settings.database_url, 2)
            .map_err(|e| CtlError::failed(format!("DATABASE_URL: {e}")))?;
        Ok(Self { pool })
    }

    async fn client(&self) -> Result<Client, CtlError> {
        self.pool.get().await.map_err(|e| {
            let reason = match &e {
                deadpool_postgres::PoolError::Backend(e) => match e.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => tasksync_shared::db::describe(e),
                },
                other => tasksync_shared::db::describe(other),
            };
            CtlError::failed(format!("cannot reach Postgres (DATABASE_URL): {reason}"))
        })
    }

    /// Parked records matching `filter`, newest failure first, at most `filter.limit`.
    pub async fn parked(&self, filter: &Filter) -> Result<Vec<Parked>, CtlError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM operation_failures WHERE {FILTER} \
             ORDER BY last_failed_at DESC LIMIT $5"
        );
        let parked = RecordState::Parked.as_str();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &parked,
            &filter.error,
            &filter.task,
            &filter.user,
            &filter.limit,
        ];
        let rows = self.client().await?.query(&sql, &params).await;
        let rows = rows.map_err(|e| CtlError::postgres("reading parked records", &e))?;
        rows.iter()
            .map(parked_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| CtlError::postgres("reading parked records", &e))
    }

    /// Parked records matching `filter` (its limit aside), counted by exact error text.
    pub async fn counts_by_error(&self, filter: &Filter) -> Result<Vec<(String, i64)>, CtlError> {
        let sql = format!(
            "SELECT last_error, count(*) AS n FROM operation_failures WHERE {FILTER} \
             GROUP BY last_error"
        );
        let parked = RecordState::Parked.as_str();
        let doing = "counting parked records";
        let rows = self
            .client()
            .await?
            .query(&sql, &[&parked, &filter.error, &filter.task, &filter.user])
            .await
            .map_err(|e| CtlError::postgres(doing, &e))?;
        rows.iter()
            .map(|r| Ok((r.try_get("last_error")?, r.try_get("n")?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| CtlError::postgres(doing, &e))
    }

    /// The record whose key is `key`, or else the latest of the op `key` names.
    pub async fn find(&self, key: &str) -> Result<Option<Detail>, CtlError> {
        let op_id = Uuid::parse_str(key).ok();
        let sql = format!(
            "SELECT {COLUMNS}, state, history, body FROM operation_failures \
             WHERE message_id = $1 OR op_id = $2 OR publisher_message_id = $1 \
             ORDER BY message_id = $1 DESC, last_failed_at DESC LIMIT 1"
        );
        let doing = "reading a failure record";
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&key, &op_id])
            .await
            .map_err(|e| CtlError::postgres(doing, &e))?;
        let Some(row) = row else { return Ok(None) };
        let detail = (|| {
            Ok::<_, tokio_postgres::Error>(Detail {
                record: parked_from_row(&row)?,
                state: row.try_get("state")?,
                history: row.try_get("history")?,
                body: row.try_get("body")?,
            })
        })();
        detail.map(Some).map_err(|e| CtlError::postgres(doing, &e))
    }

    /// Operation `op_id`'s log entry (once decided) and its failure record with the attempt
    /// numbers of its history (if an attempt ever failed), read in one snapshot: an operation
    /// decided between two reads would otherwise be in neither.
    pub async fn operation(&self, op_id: Uuid) -> Result<Operation, CtlError> {
        let doing = "reading the operation log and failure records";
        let fail = |e: tokio_postgres::Error| CtlError::postgres(doing, &e);
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(fail)?;
        let log = tx
            .query_opt(
                "SELECT task_id, user_id, kind, outcome, attempts, last_error, client_ts, \
                        received_at, decided_at \
                 FROM operations WHERE op_id = $1",
                &[&op_id],
            )
            .await
            .map_err(fail)?;
        let log = log
            .as_ref()
            .map(log_entry_from_row)
            .transpose()
            .map_err(fail)?;
        let sql = format!(
            "SELECT {COLUMNS}, state, \
                    ARRAY(SELECT (e ->> 'attempt')::int4 \
                          FROM jsonb_array_elements(history) WITH ORDINALITY AS h(e, i) \
                          ORDER BY i) AS history_attempts \
             FROM operation_failures WHERE op_id = $1 \
             ORDER BY last_failed_at DESC LIMIT 1"
        );
        let row = tx.query_opt(&sql, &[&op_id]).await.map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        let Some(row) = row else {
            return Ok((log, None));
        };
        let attempts: Vec<Option<i32>> = row.try_get("history_attempts").map_err(fail)?;
        let attempts = attempts
            .into_iter()
            .map(|n| n.and_then(|n| u32::try_from(n).ok()).unwrap_or_default())
            .collect();
        Ok((log, Some((failure_from_row(&row)?, attempts))))
    }

    /// Failure records in one state, newest failure first, at most `filter.limit`.
    pub async fn stuck(&self, filter: &StuckFilter) -> Result<Vec<Failure>, CtlError> {
        let sql = format!(
            "SELECT {COLUMNS}, state FROM operation_failures WHERE {STUCK_FILTER} \
             ORDER BY last_failed_at DESC LIMIT $4"
        );
        let state = filter.state.as_str();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&state, &filter.task, &filter.user, &filter.limit];
        let rows = self.client().await?.query(&sql, &params).await;
        let rows = rows.map_err(|e| CtlError::postgres("reading failure records", &e))?;
        rows.iter().map(failure_from_row).collect()
    }

    /// Keys and op ids of the parked records, all of them or those `selection` names (by key
    /// or op id).
    pub async fn parked_keys(
        &self,
        selection: Option<&[String]>,
    ) -> Result<Vec<(String, Option<Uuid>)>, CtlError> {
        let op_ids: Option<Vec<Uuid>> =
            selection.map(|ids| ids.iter().filter_map(|id| id.parse().ok()).collect());
        let parked = RecordState::Parked.as_str();
        let doing = "reading parked records";
        let rows = self
            .client()
            .await?
            .query(
                "SELECT message_id, op_id FROM operation_failures WHERE state = $1 \
                 AND ($2::text[] IS NULL OR message_id = ANY($2) OR op_id = ANY($3)) \
                 ORDER BY last_failed_at",
                &[&parked, &selection, &op_ids],
            )
            .await
            .map_err(|e| CtlError::postgres(doing, &e))?;
        rows.iter()
            .map(|r| Ok((r.try_get("message_id")?, r.try_get("op_id")?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| CtlError::postgres(doing, &e))
    }

    /// Moves a record from one state to another. Best effort: the queue is the truth, and
    /// `dlq list` shows when the records disagree with it.
    pub async fn set_state(&self, key: &str, from: RecordState, to: RecordState) {
        if let Ok(client) = self.client().await {
            let _ = client
                .execute(
                    "UPDATE operation_failures SET state = $3 WHERE message_id = $1 AND state = $2",
                    &[&key, &from.as_str(), &to.as_str()],
                )
                .await;
        }
    }

    /// Marks purged the records parked no later than `before`; returns how many.
    pub async fn mark_purged(&self, before: DateTime<Utc>) -> Result<u64, CtlError> {
        self.client()
            .await?
            .execute(
                "UPDATE operation_failures SET state = $1 \
                 WHERE state = $2 AND last_failed_at <= $3",
                &[
                    &RecordState::Purged.as_str(),
                    &RecordState::Parked.as_str(),
                    &before,
                ],
            )
            .await
            .map_err(|e| CtlError::postgres("marking records purged", &e))
    }
}

/// Most rows `devices` lists.
pub const MAX_DEVICES: i64 = 10_000;

impl Records {
    /// Every device (or one user's), by user, most recently seen first, with its figures as of
    /// the database's clock.
    pub async fn devices(
        &self,
        user: Option<&str>,
    ) -> Result<Vec<tasksync_shared::device::DeviceFigures>, CtlError> {
        use tasksync_shared::device::{DEVICE_COLUMNS, figures_from_row};
        let doing = "reading devices";
        let sql = format!(
            "SELECT {DEVICE_COLUMNS}, now() AS now FROM devices \
             WHERE ($1::text IS NULL OR user_id = $1) \
             ORDER BY user_id, last_seen_at DESC, device_id LIMIT $2"
        );
        let rows = self
            .client()
            .await?
            .query(&sql, &[&user, &MAX_DEVICES])
            .await
            .map_err(|e| CtlError::postgres(doing, &e))?;
        rows.iter()
            .map(|row| figures_from_row(row, row.try_get("now")?))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| CtlError::postgres(doing, &e))
    }

    /// The conflict history of one task or of one user's tasks, newest first, at most
    /// `limit` records.
    pub async fn conflicts(
        &self,
        of: &ConflictsOf,
        limit: i64,
    ) -> Result<Vec<tasksync_shared::sync::ConflictRecord>, CtlError> {
        use tasksync_shared::sync::{CONFLICT_SELECT, ConflictRecord};
        let doing = "reading the conflict history";
        let client = self.client().await?;
        // One statement per filter, so each is served by its own index, newest first.
        let rows = match of {
            ConflictsOf::Task(task) => {
                let sql =
                    format!("{CONFLICT_SELECT} WHERE c.task_id = $1 ORDER BY c.id DESC LIMIT $2");
                client.query(&sql, &[task, &limit]).await
            }
            ConflictsOf::User(user) => {
                let sql =
                    format!("{CONFLICT_SELECT} WHERE c.user_id = $1 ORDER BY c.id DESC LIMIT $2");
                client.query(&sql, &[user, &limit]).await
            }
        }
        .map_err(|e| CtlError::postgres(doing, &e))?;
        rows.iter()
            .map(ConflictRecord::from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| CtlError::postgres(doing, &e))
    }
}

/// Whose conflict history `conflicts` reads.
#[derive(Clone, Debug)]
pub enum ConflictsOf {
    Task(Uuid),
    User(String),
}
