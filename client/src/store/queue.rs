//! The sync queue: one entry per local edit, kept exactly as first built (op id, data, times)
//! until the server has decided it, so that re-pushing it is always the same operation.
//!
//! An entry is `queued` (to push), `accepted` (the server holds it durably but had not decided
//! it when it answered: resolved by a lookup) or `error` (rejected [`MAX_TRIES`] times, or
//! failed for good on the server: kept for the user to see, never pushed again).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};
use serde::Serialize;
use tasksync_shared::{
    OpKind, Operation, OperationFields,
    merge::Write,
    sync::{ItemData, PushItem},
};
use uuid::Uuid;

use super::{
    Store,
    rows::{micros, time, uuid},
};
use crate::error::{Error, Result};

/// Pushes of one operation the server answers `error` before it is given up (the seed's
/// "retried up to three times").
pub const MAX_TRIES: u32 = 3;

/// Where a queue entry stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    Queued,
    Accepted,
    Error,
}

impl QueueState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Accepted => "accepted",
            Self::Error => "error",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Queued, Self::Accepted, Self::Error]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// One queued operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueuedOp {
    /// Its place in the order the edits were made.
    pub seq: i64,
    pub op_id: Uuid,
    pub task_id: Uuid,
    pub operation: OpKind,
    pub data: ItemData,
    pub created_at: DateTime<Utc>,
    pub state: QueueState,
    /// Pushes the server answered `error`.
    pub retry_count: u32,
    /// The server's last error about it.
    pub error: Option<String>,
}

/// Entries of the queue by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub queued: u64,
    pub accepted: u64,
    pub error: u64,
}

impl QueuedOp {
    /// The push item, as first built (only `retry_count` moves).
    pub fn item(&self) -> PushItem {
        PushItem {
            id: self.op_id,
            task_id: self.task_id,
            operation: self.operation,
            data: self.data.clone(),
            created_at: self.created_at,
            retry_count: self.retry_count,
        }
    }

    /// Its last-write-wins time.
    pub fn stamped_at(&self) -> DateTime<Utc> {
        self.data.updated_at.unwrap_or(self.created_at)
    }

    /// The write it makes, by the shared rule of which fields each kind writes.
    pub(crate) fn write(&self) -> Write {
        let at = self.stamped_at();
        Write::from_operation(&Operation {
            op_id: self.op_id,
            task_id: self.task_id,
            user_id: String::new(),
            kind: self.operation,
            fields: self.data.fields.clone(),
            stamped_at: at,
            received_at: at,
            if_absent: false,
            if_match: None,
            device_id: None,
        })
    }
}

fn read_op(row: &Row) -> rusqlite::Result<std::result::Result<QueuedOp, Error>> {
    let op_id: String = row.get("op_id")?;
    let task_id: String = row.get("task_id")?;
    let operation: String = row.get("operation")?;
    let data: String = row.get("data")?;
    let state: String = row.get("state")?;
    let seq: i64 = row.get("seq")?;
    let created_at = time(row.get("created_at")?)?;
    let retry_count: u32 = row.get("retry_count")?;
    let error: Option<String> = row.get("error")?;
    Ok((|| {
        Ok(QueuedOp {
            seq,
            op_id: uuid(&op_id)?,
            task_id: uuid(&task_id)?,
            operation: OpKind::parse(&operation)
                .ok_or_else(|| Error::Corrupt(format!("bad operation {operation:?}")))?,
            data: serde_json::from_str(&data)
                .map_err(|e| Error::Corrupt(format!("bad queued data: {e}")))?,
            created_at,
            state: QueueState::parse(&state)
                .ok_or_else(|| Error::Corrupt(format!("bad queue state {state:?}")))?,
            retry_count,
            error,
        })
    })())
}

pub(crate) fn select(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<QueuedOp>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, read_op)?;
    let mut ops = Vec::new();
    for row in rows {
        ops.push(row??);
    }
    Ok(ops)
}

/// Appends an operation for `task_id` stamped `at`.
pub(crate) fn enqueue(
    conn: &Connection,
    task_id: Uuid,
    kind: OpKind,
    fields: OperationFields,
    at: DateTime<Utc>,
) -> Result<QueuedOp> {
    let data = ItemData {
        fields,
        updated_at: Some(at),
    };
    let op_id = Uuid::new_v4();
    let json = serde_json::to_string(&data)
        .map_err(|e| Error::Corrupt(format!("cannot encode an operation: {e}")))?;
    conn.execute(
        "INSERT INTO sync_queue (op_id, task_id, operation, data, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            op_id.to_string(),
            task_id.to_string(),
            kind.as_str(),
            json,
            micros(at)
        ],
    )?;
    Ok(QueuedOp {
        seq: conn.last_insert_rowid(),
        op_id,
        task_id,
        operation: kind,
        data,
        created_at: at,
        state: QueueState::Queued,
        retry_count: 0,
        error: None,
    })
}

/// The undecided entries (queued or accepted) of one task, in edit order.
pub(crate) fn undecided_of(conn: &Connection, task_id: Uuid) -> Result<Vec<QueuedOp>> {
    select(
        conn,
        "SELECT * FROM sync_queue WHERE task_id = ?1 AND state IN ('queued', 'accepted')
         ORDER BY seq",
        [task_id.to_string()],
    )
}

impl Store {
    /// Up to `limit` entries to push, in edit order, after `after_seq`.
    pub fn to_push(&self, after_seq: i64, limit: usize) -> Result<Vec<QueuedOp>> {
        select(
            &self.conn,
            "SELECT * FROM sync_queue WHERE state = 'queued' AND seq > ?1 ORDER BY seq LIMIT ?2",
            params![after_seq, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// Up to `limit` entries the server accepted but had not decided.
    pub fn accepted(&self, limit: usize) -> Result<Vec<QueuedOp>> {
        select(
            &self.conn,
            "SELECT * FROM sync_queue WHERE state = 'accepted' ORDER BY seq LIMIT ?1",
            params![i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// Every entry in one state, in edit order.
    pub fn queue(&self, state: QueueState) -> Result<Vec<QueuedOp>> {
        select(
            &self.conn,
            "SELECT * FROM sync_queue WHERE state = ?1 ORDER BY seq",
            [state.as_str()],
        )
    }

    pub fn queue_counts(&self) -> Result<QueueCounts> {
        let mut counts = QueueCounts::default();
        let mut stmt = self
            .conn
            .prepare("SELECT state, count(*) AS n FROM sync_queue GROUP BY state")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>("state")?, r.get::<_, i64>("n")?))
        })?;
        for row in rows {
            let (state, n) = row?;
            let n = n.unsigned_abs();
            match QueueState::parse(&state) {
                Some(QueueState::Queued) => counts.queued = n,
                Some(QueueState::Accepted) => counts.accepted = n,
                Some(QueueState::Error) => counts.error = n,
                None => return Err(Error::Corrupt(format!("bad queue state {state:?}"))),
            }
        }
        Ok(counts)
    }
}
