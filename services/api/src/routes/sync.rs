//! `POST /api/batch` and `POST /api/sync` (one handler): an offline device pushes the
//! operations it queued.
//!
//! Each item is read on its own ([`crate::batch`]): a bad one is an `error` in its slot and the
//! others go on. An item that repeats a key, or that reuses an earlier item's op id with other
//! content, is such an error; an op id repeated with the same content is one operation,
//! published once and answered in every slot that carries it. A repeated key outside the items,
//! or a bad `client_timestamp`, is a 400 for the whole request. The good ones are published together with pipelined confirms, and the answer
//! waits up to `WRITE_WAIT_MS` for their outcomes: `success`, `conflict` (with the winning task),
//! `error`, or `pending` (durably accepted, not applied yet). If publishing fails, nothing may
//! be assumed accepted, so the whole request answers 503; re-pushing is safe since the op id is
//! the idempotency key (a re-pushed operation reports its first outcome).

use std::collections::{HashMap, HashSet};

use axum::{Json, extract::State, http::HeaderMap};
use chrono::Utc;
use serde_json::Value;
use tasksync_shared::{
    Operation, OutcomeReport,
    device::check_device_id,
    model::to_db_precision,
    operation::ItemStatus,
    sync::{ItemError, Processed, PushResponse, item_code},
};
use uuid::Uuid;

use crate::{
    batch::{self, BadItem},
    broker::PublishError,
    device::{self, Device},
    error::ApiError,
    extract::{CurrentUser, JsonBody},
    json::{self, JsonPath, Parsed, Step},
    openapi::{
        BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType, bodies::PushRequest,
    },
    routes::tasks::respond_async,
    state::AppState,
};

#[utoipa::path(
    post,
    path = "/api/sync",
    operation_id = "push_sync",
    tag = "sync",
    summary = "Push queued operations",
    description = "Each item is read on its own and answered in its slot: `success`, `conflict` \
        (with the winning task), `error` (the field named), or `pending` (durably accepted, not \
        applied yet). The op id is the idempotency key: pushing the same items again is safe, \
        and a re-pushed operation reports its first outcome. If publishing fails nothing is \
        accepted (503) and the push may be repeated.",
    params(
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer at once, the items not yet applied `pending`"),
        ("Device-Id" = Option<String>, Header, description = "The pushing device's name, 1 to 64 characters of `A-Z a-z 0-9 . _ : -` (or the body's `device_id`; if both are given they must agree): its operations carry it, and its figures count them (`GET /api/devices`)"),
    ),
    request_body = PushRequest,
    responses(
        (status = 200, description = "Every item answered in its slot", body = PushResponse),
        (status = 400, response = BadRequest),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
)]
#[tracing::instrument(skip_all, fields(items))]
pub async fn push(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Device(header_device): Device,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Json<PushResponse>, ApiError> {
    let received_at = to_db_precision(Utc::now());
    let items = request_items(&body, state.settings.max_batch_items)?;
    let device = push_device(&body, header_device)?;
    tracing::Span::current().record("items", items.len());
    let repeated = repeated_keys_by_item(&body.duplicates);
    let mut read: Vec<Result<Operation, BadItem>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| match repeated.get(&i) {
            Some(error) => Err(BadItem::of(item, error.clone())),
            None => batch::read_item(item, &user, received_at).map(|op| Operation {
                device_id: device.clone(),
                ..op
            }),
        })
        .collect();
    refuse_reused_op_ids(&mut read, items);
    // An op id repeated with the same content is one operation: published once, and every
    // slot that carries it gets its outcome.
    let mut seen = HashSet::new();
    let unique: Vec<&Operation> = read
        .iter()
        .flatten()
        .filter(|op| seen.insert(op.op_id))
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
    let answer = answer(&read, &outcomes);
    device::record_push(&state, &user, device.as_deref(), unique.len()).await;
    Ok(Json(answer))
}

/// The pushing device: the `Device-Id` header, or the body's `device_id`; a 400 naming
/// `device_id` when it is not a valid device id or names another device than the header.
fn push_device(body: &Parsed, header: Option<String>) -> Result<Option<String>, ApiError> {
    let invalid = |why: String| ApiError::BadRequest(format!("device_id: {why}"));
    let in_body = match body.value.get("device_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            check_device_id(id).map_err(invalid)?;
            Some(id.clone())
        }
        Some(_) => return Err(invalid("must be a string".into())),
    };
    match (header, in_body) {
        (Some(header), Some(in_body)) if header != in_body => Err(invalid(format!(
            "names device {in_body:?}, but the Device-Id header names {header:?}"
        ))),
        (header, in_body) => Ok(header.or(in_body)),
    }
}

/// The items of a push, after the checks that concern the whole request: a JSON object with
/// `items` (at most `max`), no repeated key outside the items, a valid `client_timestamp`.
fn request_items(body: &Parsed, max: usize) -> Result<&[Value], ApiError> {
    let Some(items) = body.value.get("items").and_then(Value::as_array) else {
        return Err(ApiError::BadRequest(
            "items: required, an array of operations in a JSON object".into(),
        ));
    };
    if let Some(path) = body.duplicates.iter().find(|p| item_index(p).is_none()) {
        return Err(ApiError::BadRequest(json::repeated_key(path)));
    }
    if items.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "items: at most {max} per request, got {}; push them in smaller batches",
            items.len()
        )));
    }
    if let Some(object) = body.value.as_object() {
        batch::timestamp(object, "client_timestamp").map_err(ApiError::BadRequest)?;
    }
    Ok(items)
}

/// The item a repeated key lies in (`items[i]…`), if any.
fn item_index(path: &JsonPath) -> Option<usize> {
    match path.0.as_slice() {
        [Step::Key(items), Step::Index(i), _, ..] if items == "items" => Some(*i),
        _ => None,
    }
}

/// The error of each item that repeats a key, naming the key by its path within the item.
fn repeated_keys_by_item(duplicates: &[JsonPath]) -> HashMap<usize, String> {
    let mut by_item = HashMap::new();
    for path in duplicates {
        if let Some(i) = item_index(path) {
            let within = JsonPath(path.0[2..].to_vec());
            by_item
                .entry(i)
                .or_insert_with(|| json::repeated_key(&within));
        }
    }
    by_item
}

/// An op id names one operation: a later item that reuses an earlier item's op id with other
/// content (task, kind, fields or stamp) is an error in its slot and is not published, so that
/// neither operation silently takes the other's place.
fn refuse_reused_op_ids(read: &mut [Result<Operation, BadItem>], items: &[Value]) {
    let mut first: HashMap<Uuid, usize> = HashMap::new();
    let mut reused = Vec::new();
    for (i, slot) in read.iter().enumerate() {
        let Ok(op) = slot else { continue };
        match first.get(&op.op_id) {
            None => {
                first.insert(op.op_id, i);
            }
            Some(&earlier) if read[earlier].as_ref().is_ok_and(|e| e == op) => {}
            Some(_) => reused.push((i, op.op_id)),
        }
    }
    for (i, op_id) in reused {
        read[i] = Err(BadItem::of(
            &items[i],
            format!("id: op id {op_id} is used by another item of this push with other content"),
        ));
    }
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

/// The code of an item refused before publishing (it breaks a rule).
const INVALID: &str = "invalid_request";

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
                    status: ItemStatus::Error,
                    resolved_data: None,
                    error: Some(bad.error.clone()),
                    code: Some(INVALID.into()),
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
                    code: slot.code.clone().unwrap_or_else(|| INVALID.into()),
                    timestamp: server_time,
                });
            }
            slot
        })
        .collect();
    let count = |status: ItemStatus| processed.iter().filter(|p| p.status == status).count();
    let conflict_items = count(ItemStatus::Conflict);
    let failed_items = count(ItemStatus::Error);
    PushResponse {
        success: failed_items == 0,
        synced_items: count(ItemStatus::Success) + conflict_items,
        conflict_items,
        failed_items,
        pending_items: count(ItemStatus::Pending),
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
            status: ItemStatus::Pending,
            resolved_data: None,
            error: None,
            code: None,
        };
    };
    let failed = report.status == ItemStatus::Error;
    let error = failed.then(|| report.error.clone().unwrap_or_else(|| "rejected".into()));
    let code = failed.then(|| item_code(report.rejection).to_string());
    let task = (report.status != ItemStatus::Error)
        .then(|| report.task.clone())
        .flatten();
    Processed {
        client_id: Some(op.task_id.to_string()),
        op_id: Some(op.op_id.to_string()),
        server_id: task.as_ref().and_then(|t| t.server_id.clone()),
        status: report.status,
        resolved_data: task,
        error,
        code,
    }
}
