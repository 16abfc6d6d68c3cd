//! `GET /api/sync/operations/{op_id}`: what became of one operation, for a client that was
//! told `pending` (or lost its answer).
//!
//! Decided operations come from the operation log; one the worker is still retrying comes from
//! its failure record as `pending` with its attempts and last error. An update or delete of a
//! task never created (no title yet) reads `pending` with no task, as the push answered it,
//! until a create gives the task its title. An op id neither knows is 404: still waiting in the
//! queue, or never accepted.
//!
//! `last_error` is client-safe: a rejection's reason as the worker gave it, or, for an
//! operation whose attempts failed, how many failed and what kind of failure it was. The
//! database's own words stay in the failure record for operators (`taskctl dlq show`).

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
};
use chrono::Utc;
use tasksync_shared::{OutcomeStatus, operation::ItemStatus, sync::OperationStatus};
use uuid::Uuid;

use crate::{
    client_error::client_error,
    error::ApiError,
    extract::CurrentUser,
    openapi::BadRequest,
    state::AppState,
    storage::{self, OperationRecord},
};

#[utoipa::path(
    get,
    path = "/api/sync/operations/{op_id}",
    operation_id = "get_operation",
    tag = "sync",
    summary = "What became of one operation",
    description = "For a client told `pending`, or that lost its answer. An op id not decided \
        yet (still queued) or never accepted is a 404.",
    params(("op_id" = Uuid, Path, description = "The operation's id")),
    responses(
        (status = 200, description = "The operation's state", body = OperationStatus),
        (status = 400, response = BadRequest),
        (status = 404, description = "Not decided yet (still queued) or never accepted", body = crate::openapi::ErrorBody),
    ),
)]
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
    let status = shown_status(&record).to_string();
    // Scoped to the caller: an operation on someone else's task shows no task, nor does one on
    // a task never created (a row with no title is no task yet).
    let task = state
        .db_round(storage::find_task(&state.db, &user, record.task_id))
        .await?;
    let last_error = last_error(&record);
    Ok(Json(OperationStatus {
        op_id: record.op_id,
        task_id: record.task_id,
        operation: record.kind,
        status,
        attempts: record.attempts,
        last_error,
        client_timestamp: record.client_ts,
        received_at: record.received_at,
        decided_at: record.decided_at,
        first_failed_at: record.first_failed_at,
        last_failed_at: record.last_failed_at,
        resolved_data: task,
        server_time: Utc::now(),
    }))
}

/// The status a client reads: the recorded one, except that an operation merged into a task
/// that has no title yet is `pending` (the worker's rule: it is decided for good only once a
/// create gives the task a title, and the push answered `pending` for it). An `error` stays.
fn shown_status(record: &OperationRecord) -> &str {
    if record.awaiting_create && record.status != OutcomeStatus::Error.as_str() {
        ItemStatus::Pending.as_str()
    } else {
        &record.status
    }
}

/// The record's last error as a client may read it ([`client_error`]).
fn last_error(record: &OperationRecord) -> Option<String> {
    client_error(
        record.last_error.as_deref(),
        record.failed_an_attempt(),
        record.attempts,
        record.status == ItemStatus::Pending.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: &str, attempts: i32, error: &str, failed: bool) -> OperationRecord {
        OperationRecord {
            op_id: Uuid::nil(),
            task_id: Uuid::nil(),
            kind: "create".into(),
            status: status.into(),
            attempts,
            last_error: Some(error.into()),
            client_ts: None,
            received_at: None,
            decided_at: None,
            first_failed_at: failed.then(Utc::now),
            last_failed_at: None,
            awaiting_create: false,
        }
    }

    #[test]
    fn an_operation_on_a_task_never_created_reads_pending_until_its_create() {
        for logged in ["success", "conflict"] {
            let mut merged = record(logged, 1, "", false);
            assert_eq!(shown_status(&merged), logged);
            merged.awaiting_create = true;
            assert_eq!(shown_status(&merged), "pending", "{logged}");
        }
        let rejected = OperationRecord {
            awaiting_create: true,
            ..record("error", 1, "title: must not be blank", false)
        };
        assert_eq!(shown_status(&rejected), "error");
    }

    #[test]
    fn a_rejection_keeps_its_reason_and_a_failure_hides_the_database_text() {
        let rejected = record("error", 1, "title: must not be blank", false);
        assert_eq!(
            last_error(&rejected).as_deref(),
            Some("title: must not be blank")
        );
        let raw = "failed 4 attempts; last error: injected failure (attempt 4)";
        let parked = last_error(&record("error", 4, raw, true)).unwrap();
        assert!(
            parked.starts_with("the operation could not be applied after 4 attempts"),
            "{parked}"
        );
        let retrying = last_error(&record("pending", 2, "database unavailable: x", true));
        assert_eq!(
            retrying.as_deref(),
            Some("attempt 2 failed (the database was unavailable); the worker retries it")
        );
    }
}
