//! `GET /api/sync/operations/{op_id}`: what became of one operation, for a client that was
//! told `pending` (or lost its answer).
//!
//! Decided operations come from the operation log; one the worker is still retrying comes from
//! its failure record as `pending` with its attempts and last error. An op id neither knows is
//! 404: still waiting in the queue, or never accepted.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tasksync_shared::Task;
use uuid::Uuid;

use crate::{error::ApiError, extract::CurrentUser, state::AppState, storage};

#[derive(Debug, Serialize)]
pub struct OperationStatus {
    op_id: Uuid,
    task_id: Uuid,
    operation: String,
    /// `success`, `conflict`, `error`, or `pending` while the worker retries it.
    status: String,
    attempts: i32,
    last_error: Option<String>,
    /// The last-write-wins time the operation was applied with (after clamping).
    client_timestamp: Option<DateTime<Utc>>,
    received_at: Option<DateTime<Utc>>,
    decided_at: Option<DateTime<Utc>>,
    first_failed_at: Option<DateTime<Utc>>,
    last_failed_at: Option<DateTime<Utc>>,
    /// The caller's task as it is now (null when it does not exist for the caller).
    resolved_data: Option<Task>,
    server_time: DateTime<Utc>,
}

pub async fn operation(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    op_id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<OperationStatus>, ApiError> {
    let Path(op_id) = op_id.map_err(|e| {
        ApiError::BadRequest(format!("op_id: not a valid UUID ({})", e.body_text()))
    })?;
    let record = state
        .db_round(storage::find_operation(&state.db, &user, op_id))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(
                "operation not found: not decided yet (still queued) or never accepted".into(),
            )
        })?;
    // Scoped to the caller: an operation on someone else's task shows no task.
    let task = state
        .db_round(storage::find_task(&state.db, &user, record.task_id))
        .await?;
    Ok(Json(OperationStatus {
        op_id: record.op_id,
        task_id: record.task_id,
        operation: record.kind,
        status: record.status,
        attempts: record.attempts,
        last_error: record.last_error,
        client_timestamp: record.client_ts,
        received_at: record.received_at,
        decided_at: record.decided_at,
        first_failed_at: record.first_failed_at,
        last_failed_at: record.last_failed_at,
        resolved_data: task,
        server_time: Utc::now(),
    }))
}
