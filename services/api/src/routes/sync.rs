//! `POST /api/batch` and `POST /api/sync` (one handler): an offline device pushes the
//! operations it queued.
//!
//! Each item is read on its own ([`crate::batch`]): a bad one is an `error` in its slot and the
//! others go on. The good ones are published together with pipelined confirms, and the answer
//! waits up to `WRITE_WAIT_MS` for their outcomes: `success`, `conflict` (with the winning task),
//! `error`, or `pending` (durably accepted, not applied yet). If publishing fails, nothing may
//! be assumed accepted, so the whole request answers 503; re-pushing is safe since the op id is
//! the idempotency key (a re-pushed operation reports its first outcome).

use std::collections::{HashMap, HashSet};

use axum::{Json, extract::State, http::HeaderMap};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tasksync_shared::{
    Operation, OutcomeReport, OutcomeStatus, Task, model::to_db_precision, operation::ItemStatus,
};
use uuid::Uuid;

use crate::{
    batch::{self, BadItem},
    broker::PublishError,
    error::ApiError,
    extract::{ApiJson, CurrentUser},
    routes::tasks::respond_async,
    state::AppState,
};

/// The answer for one item, in the item's position.
#[derive(Debug, Serialize)]
pub struct Processed {
    /// The item's `task_id`.
    client_id: Option<String>,
    op_id: Option<String>,
    server_id: Option<String>,
    /// `success`, `conflict`, `error` or `pending`.
    status: &'static str,
    /// The task after the operation (the winning task on a conflict); null on error or while
    /// pending.
    resolved_data: Option<Task>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ItemError {
    task_id: Option<String>,
    operation: Option<String>,
    error: String,
    timestamp: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct PushResponse {
    processed_items: Vec<Processed>,
    /// No item failed.
    success: bool,
    /// Applied: `success` plus `conflict` items.
    synced_items: usize,
    conflict_items: usize,
    failed_items: usize,
    pending_items: usize,
    errors: Vec<ItemError>,
    server_time: DateTime<Utc>,
}

#[tracing::instrument(skip_all, fields(items))]
pub async fn push(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<PushResponse>, ApiError> {
    let received_at = to_db_precision(Utc::now());
    let Some(items) = body.get("items").and_then(Value::as_array) else {
        return Err(ApiError::BadRequest(
            "items: required, an array of operations".into(),
        ));
    };
    tracing::Span::current().record("items", items.len());
    let max = state.settings.max_batch_items;
    if items.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "items: at most {max} per request, got {}; push them in smaller batches",
            items.len()
        )));
    }
    let read: Vec<Result<Operation, BadItem>> = items
        .iter()
        .map(|item| batch::read_item(item, &user, received_at))
        .collect();
    // An op id repeated within the request is published once; every slot gets its outcome.
    let mut seen = HashSet::new();
    let unique: Vec<Operation> = read
        .iter()
        .flatten()
        .filter(|op| seen.insert(op.op_id))
        .cloned()
        .collect();
    let outcomes = if unique.is_empty() {
        HashMap::new()
    } else {
        let wait = (!respond_async(&headers)).then_some(state.settings.write_wait);
        state
            .broker
            .submit_many(&unique, wait)
            .await
            .map_err(not_accepted)?
    };
    Ok(Json(answer(&read, &outcomes)))
}

fn not_accepted(error: PublishError) -> ApiError {
    match error {
        PublishError::Encode(e) => ApiError::Internal(e.into()),
        other => {
            tracing::warn!(error = %other, "batch not accepted");
            ApiError::Unavailable(format!(
                "{other}; the batch was not accepted, push it again"
            ))
        }
    }
}

fn answer(
    read: &[Result<Operation, BadItem>],
    outcomes: &HashMap<Uuid, OutcomeReport>,
) -> PushResponse {
    let server_time = Utc::now();
    let mut errors = Vec::new();
    let processed: Vec<Processed> = read
        .iter()
        .map(|item| {
            let slot = match item {
                Err(bad) => Processed {
                    client_id: bad.task_id.clone(),
                    op_id: bad.op_id.clone(),
                    server_id: None,
                    status: OutcomeStatus::Error.as_str(),
                    resolved_data: None,
                    error: Some(bad.error.clone()),
                },
                Ok(op) => decided(op, outcomes.get(&op.op_id)),
            };
            if let Some(error) = &slot.error {
                errors.push(ItemError {
                    task_id: slot.client_id.clone(),
                    operation: match item {
                        Ok(op) => Some(op.kind.as_str().to_string()),
                        Err(bad) => bad.operation.clone(),
                    },
                    error: error.clone(),
                    timestamp: server_time,
                });
            }
            slot
        })
        .collect();
    let count = |status: &str| processed.iter().filter(|p| p.status == status).count();
    let conflict_items = count("conflict");
    let failed_items = count("error");
    PushResponse {
        success: failed_items == 0,
        synced_items: count("success") + conflict_items,
        conflict_items,
        failed_items,
        pending_items: count("pending"),
        processed_items: processed,
        errors,
        server_time,
    }
}

fn decided(op: &Operation, report: Option<&OutcomeReport>) -> Processed {
    let Some(report) = report else {
        return Processed {
            client_id: Some(op.task_id.to_string()),
            op_id: Some(op.op_id.to_string()),
            server_id: None,
            status: "pending",
            resolved_data: None,
            error: None,
        };
    };
    let error = (report.status == ItemStatus::Error)
        .then(|| report.error.clone().unwrap_or_else(|| "rejected".into()));
    let task = (report.status != ItemStatus::Error)
        .then(|| report.task.clone())
        .flatten();
    Processed {
        client_id: Some(op.task_id.to_string()),
        op_id: Some(op.op_id.to_string()),
        server_id: task.as_ref().and_then(|t| t.server_id.clone()),
        status: report.status.as_str(),
        resolved_data: task,
        error,
    }
}
