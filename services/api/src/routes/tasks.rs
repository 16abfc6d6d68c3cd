//! Task CRUD. Reads come from Postgres; every write becomes one operation published to the
//! broker, and the answer waits up to `WRITE_WAIT_MS` for the worker's outcome:
//! 201/200/204 once applied, 202 with the task as accepted (`sync_status: "pending"`) if not
//! applied in time, or at once with `Prefer: respond-async` (then with
//! `Preference-Applied: respond-async`).
//!
//! Conditional requests (RFC 9110 §13): a task's read and the write answers that carry it
//! have an `ETag` ([`tasksync_shared::etag`]); a read with a matching `If-None-Match` answers
//! 304. An update or delete with `If-Match` carries the header in its operation, and the
//! worker checks it when it applies the operation, under the task's lock (the api's read may
//! be stale by then): 412 with the current `ETag` when the task changed, nothing written.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::Deserialize;
use tasksync_shared::{
    OpKind, Operation, OperationFields, OutcomeReport, SyncStatus, Task, etag,
    model::to_db_precision,
    operation::{ItemStatus, Rejection, exists_message, present},
    validate,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    broker::{PublishError, Submitted},
    cursor::{ListPosition, page_limit},
    error::ApiError,
    extract::{ApiJson, ApiQuery, CurrentUser, TaskId},
    openapi::{
        BadRequest, NotFound, OperationFailed, PayloadTooLarge, PreconditionFailed, RequestTimeout,
        UnsupportedMediaType,
    },
    state::AppState,
    storage,
};

/// Most tasks one `GET /api/tasks` answers, and the page size when `limit` is absent: a plain
/// call (the seed's) gets the whole list up to this many, and a `Link` to the rest beyond it.
pub const LIST_MAX_LIMIT: usize = 1_000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Also list deleted tasks.
    #[serde(default)]
    include_deleted: bool,
    // Read as text so that a bad value gets our message naming the parameter.
    /// Most tasks in the answer (default and maximum 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Where the page starts: the `X-Next-Cursor` of the previous page (opaque).
    after: Option<String>,
}

/// The caller's tasks in creation order, one page of at most `limit` (default and maximum
/// [`LIST_MAX_LIMIT`]) after the cursor `after`. The body stays the plain JSON array of the
/// unpaginated api; when more tasks follow, `Link: <…>; rel="next"` (RFC 8288) and
/// `X-Next-Cursor` say where the next page starts. A page may also end early once it holds
/// [`storage::PAGE_TEXT_BUDGET`] bytes of task text.
#[utoipa::path(
    get,
    path = "/api/tasks",
    operation_id = "list_tasks",
    tag = "tasks",
    summary = "List the caller's tasks",
    description = "In creation order, one page of at most `limit`. The body is a plain array; \
        when more tasks follow, `Link` (rel=\"next\") and `X-Next-Cursor` say where the next \
        page starts. A page may also end early once it holds about 4 MiB of task text.",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of tasks", body = Vec<Task>, headers(
            ("Link" = String, description = "`</api/tasks?limit=N&after=CURSOR>; rel=\"next\"` when more tasks follow"),
            ("X-Next-Cursor" = String, description = "The cursor of the next page, when more tasks follow"),
        )),
        (status = 400, response = BadRequest),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(query.limit.as_deref(), LIST_MAX_LIMIT, LIST_MAX_LIMIT)?;
    let after = match query.after.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(ListPosition::decode(text).ok_or_else(|| {
            ApiError::BadRequest("after: not a cursor from this api (use X-Next-Cursor)".into())
        })?),
    };
    let page = state
        .db_round(storage::list_tasks(
            &state.db,
            &user,
            query.include_deleted,
            after,
            limit,
        ))
        .await?;
    let next = page
        .last
        .filter(|_| page.has_more)
        .map(ListPosition::encode);
    let json = HeaderValue::from_static("application/json");
    let mut response = ([(header::CONTENT_TYPE, json)], page.json).into_response();
    if let Some(cursor) = next {
        let deleted = if query.include_deleted {
            "&include_deleted=true"
        } else {
            ""
        };
        let link = format!("</api/tasks?limit={limit}&after={cursor}{deleted}>; rel=\"next\"");
        let headers = response.headers_mut();
        for (name, value) in [(header::LINK, link), (NEXT_CURSOR, cursor)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    Ok(response)
}

/// The header that carries the list's next cursor on its own.
const NEXT_CURSOR: header::HeaderName = header::HeaderName::from_static("x-next-cursor");

#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    operation_id = "get_task",
    tag = "tasks",
    summary = "Read one task",
    params(
        ("id" = Uuid, Path, description = "The task's id"),
        ("If-None-Match" = Option<String>, Header, description = "Entity tags (or `*`): 304 when the task's current tag is one of them"),
    ),
    responses(
        (status = 200, description = "The task", body = Task, headers(
            ("ETag" = String, description = "The task's version (strong)"),
        )),
        (status = 304, description = "The task has not changed since the `If-None-Match` tag", headers(
            ("ETag" = String, description = "The task's version (strong)"),
        )),
        (status = 400, response = BadRequest),
        (status = 404, description = "No such task for the caller, or it is deleted", body = crate::openapi::ErrorBody),
    ),
)]
pub async fn get_one(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    TaskId(id): TaskId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let task = existing(&state, &user, id).await?;
    let tag = etag::of_task(&task);
    let unchanged = header_text(&headers, header::IF_NONE_MATCH)
        .is_some_and(|wanted| etag::if_none_match_hits(&wanted, &tag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Json(task).into_response()
    };
    set_etag(&mut response, &tag);
    Ok(response)
}

/// A header's value(s) as text, a repeated header joined with commas (RFC 9110 §5.3). Bytes
/// that are not text are kept as replacement characters: such a condition matches no tag,
/// rather than being dropped (which would make a conditional write unconditional).
fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn set_etag(response: &mut Response, tag: &str) {
    if let Ok(value) = HeaderValue::from_str(tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

/// A new task. Titles and descriptions may not hold control characters other than tab, CR
/// and LF; a title of whitespace only is blank.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTask {
    /// The task's id, chosen by the client; a new one when absent.
    id: Option<Uuid>,
    /// Required, not blank; at most 500 characters after trimming.
    #[schema(value_type = String, min_length = 1, max_length = 500)]
    title: Option<String>,
    /// At most 10,000 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    description: Option<Option<String>>,
    /// `false` when absent or null.
    completed: Option<bool>,
}

/// `POST /api/tasks`: an exclusive create. 409 when the id is taken — by a task of the caller
/// (the message says when it is a deleted one), or of someone else (the message says no more
/// than that the id exists). The worker decides it, so of two creates racing for one id
/// exactly one answers 201.
#[utoipa::path(
    post,
    path = "/api/tasks",
    operation_id = "create_task",
    tag = "tasks",
    summary = "Create a task",
    description = "An exclusive create, decided by the worker: of two creates racing for one id \
        exactly one answers 201, the other 409. The id of a deleted task stays taken.",
    params(("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 at once instead of waiting for the worker")),
    request_body = CreateTask,
    responses(
        (status = 201, description = "Created and applied", body = Task, headers(
            ("ETag" = String, description = "The task's version (strong)"),
            ("Location" = String, description = "The task's path"),
            ("Operation-Id" = Uuid, description = "The operation's id (see /api/sync/operations/{op_id})"),
        )),
        (status = 202, description = "Accepted, not applied yet (`sync_status: pending`)", body = Task, headers(
            ("Location" = String, description = "The task's path"),
            ("Operation-Id" = Uuid, description = "The operation's id (see /api/sync/operations/{op_id})"),
            ("Preference-Applied" = String, description = "`respond-async` when the request asked for it"),
        )),
        (status = 400, response = BadRequest),
        (status = 408, response = RequestTimeout),
        (status = 409, description = "The id is taken (by a task of the caller, deleted or not, or of someone else)", body = crate::openapi::ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = OperationFailed),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateTask>,
) -> Result<Response, ApiError> {
    let fields = validate::normalize(
        OpKind::Create,
        OperationFields {
            title: body.title,
            description: body.description,
            completed: body.completed,
        },
    )?;
    let id = match body.id {
        Some(id) => {
            taken_fast_path(&state, &user, id).await?;
            id
        }
        None => Uuid::new_v4(),
    };
    // Exclusive: the worker decides `error` (409) if the id is taken by then, so that of two
    // creates with one id exactly one wins.
    let op = Operation {
        if_absent: true,
        ..operation(&user, id, OpKind::Create, fields)
    };
    let pending = pending_view(None, &op);
    submit(&state, &headers, op, pending).await
}

/// A 409 without publishing when the caller's own task already holds the id, with the
/// worker's words. Only a shortcut: the worker decides every create (another user's task,
/// a create racing this one), and a database that does not answer skips it.
async fn taken_fast_path(state: &AppState, user: &str, id: Uuid) -> Result<(), ApiError> {
    match state
        .db_round(storage::find_task(&state.db, user, id))
        .await
    {
        Ok(Some(task)) => Err(ApiError::Exists(exists_message(id, task.is_deleted))),
        Ok(None) | Err(ApiError::Unavailable(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A partial update: the fields given are set, the others kept.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateTask {
    /// Not blank; at most 500 characters after trimming; null means not given.
    #[schema(min_length = 1, max_length = 500)]
    title: Option<String>,
    /// At most 10,000 characters; null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    description: Option<Option<String>>,
    /// Null means not given.
    completed: Option<bool>,
}

#[utoipa::path(
    put,
    path = "/api/tasks/{id}",
    operation_id = "update_task",
    tag = "tasks",
    summary = "Update a task (partial)",
    params(
        ("id" = Uuid, Path, description = "The task's id"),
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 at once instead of waiting for the worker"),
        ("If-Match" = Option<String>, Header, description = "Entity tags (or `*`): apply only if the task's tag is one of them when the worker applies it, else 412"),
    ),
    request_body = UpdateTask,
    responses(
        (status = 200, description = "Applied", body = Task, headers(
            ("ETag" = String, description = "The task's version (strong)"),
            ("Location" = String, description = "The task's path"),
            ("Operation-Id" = Uuid, description = "The operation's id (see /api/sync/operations/{op_id})"),
        )),
        (status = 202, description = "Accepted, not applied yet (`sync_status: pending`)", body = Task, headers(
            ("Location" = String, description = "The task's path"),
            ("Operation-Id" = Uuid, description = "The operation's id (see /api/sync/operations/{op_id})"),
            ("Preference-Applied" = String, description = "`respond-async` when the request asked for it"),
        )),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 409, description = "A later write to the task won; fetch it and retry", body = crate::openapi::ErrorBody),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = OperationFailed),
    ),
)]
pub async fn update(
    state: State<AppState>,
    user: CurrentUser,
    id: TaskId,
    headers: HeaderMap,
    body: ApiJson<UpdateTask>,
) -> Result<Response, ApiError> {
    partial_update(state, user, id, headers, body).await
}

/// `PATCH` is `PUT`: both are the partial update (SPEC keeps `PUT`'s contract).
#[utoipa::path(
    patch,
    path = "/api/tasks/{id}",
    operation_id = "patch_task",
    tag = "tasks",
    summary = "Update a task (partial; the same as PUT)",
    params(
        ("id" = Uuid, Path, description = "The task's id"),
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 at once instead of waiting for the worker"),
        ("If-Match" = Option<String>, Header, description = "Entity tags (or `*`): apply only if the task's tag is one of them when the worker applies it, else 412"),
    ),
    request_body = UpdateTask,
    responses(
        (status = 200, description = "Applied", body = Task, headers(
            ("ETag" = String, description = "The task's version (strong)"),
            ("Location" = String, description = "The task's path"),
            ("Operation-Id" = Uuid, description = "The operation's id (see /api/sync/operations/{op_id})"),
        )),
        (status = 202, description = "Accepted, not applied yet (`sync_status: pending`)", body = Task, headers(
            ("Location" = String, description = "The task's path"),
            ("Operation-Id" = Uuid, description = "The operation's id (see /api/sync/operations/{op_id})"),
            ("Preference-Applied" = String, description = "`respond-async` when the request asked for it"),
        )),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 409, description = "A later write to the task won; fetch it and retry", body = crate::openapi::ErrorBody),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = OperationFailed),
    ),
)]
pub async fn patch(
    state: State<AppState>,
    user: CurrentUser,
    id: TaskId,
    headers: HeaderMap,
    body: ApiJson<UpdateTask>,
) -> Result<Response, ApiError> {
    partial_update(state, user, id, headers, body).await
}

async fn partial_update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    TaskId(id): TaskId,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateTask>,
) -> Result<Response, ApiError> {
    let fields = validate::normalize(
        OpKind::Update,
        OperationFields {
            title: body.title,
            description: body.description,
            completed: body.completed,
        },
    )?;
    let current = existing(&state, &user, id).await?;
    let op = Operation {
        if_match: header_text(&headers, header::IF_MATCH),
        ..operation(&user, id, OpKind::Update, fields)
    };
    let pending = pending_view(Some(current), &op);
    submit(&state, &headers, op, pending).await
}

#[utoipa::path(
    delete,
    path = "/api/tasks/{id}",
    operation_id = "delete_task",
    tag = "tasks",
    summary = "Delete a task (soft)",
    params(
        ("id" = Uuid, Path, description = "The task's id"),
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 at once instead of waiting for the worker"),
        ("If-Match" = Option<String>, Header, description = "Entity tags (or `*`): delete only if the task's tag is one of them when the worker applies it, else 412"),
    ),
    responses(
        (status = 204, description = "Deleted", headers(
            ("Location" = String, description = "The task's path"),
            ("Operation-Id" = Uuid, description = "The operation's id (see /api/sync/operations/{op_id})"),
        )),
        (status = 202, description = "Accepted, not applied yet (`sync_status: pending`)", body = Task, headers(
            ("Location" = String, description = "The task's path"),
            ("Operation-Id" = Uuid, description = "The operation's id (see /api/sync/operations/{op_id})"),
            ("Preference-Applied" = String, description = "`respond-async` when the request asked for it"),
        )),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, description = "A later write to the task won; fetch it and retry", body = crate::openapi::ErrorBody),
        (status = 412, response = PreconditionFailed),
        (status = 500, response = OperationFailed),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    TaskId(id): TaskId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let current = existing(&state, &user, id).await?;
    let op = Operation {
        if_match: header_text(&headers, header::IF_MATCH),
        ..operation(&user, id, OpKind::Delete, OperationFields::default())
    };
    let pending = pending_view(Some(current), &op);
    submit(&state, &headers, op, pending).await
}

/// The caller's task, if it exists and is not deleted.
async fn existing(state: &AppState, user: &str, id: Uuid) -> Result<Task, ApiError> {
    match state
        .db_round(storage::find_task(&state.db, user, id))
        .await?
    {
        Some(task) if !task.is_deleted => Ok(task),
        _ => Err(ApiError::task_not_found()),
    }
}

/// A REST write is stamped with the time the api received it.
fn operation(user: &str, task_id: Uuid, kind: OpKind, fields: OperationFields) -> Operation {
    let now = to_db_precision(Utc::now());
    Operation {
        op_id: Uuid::new_v4(),
        task_id,
        user_id: user.to_string(),
        kind,
        fields,
        stamped_at: now,
        received_at: now,
        if_absent: false,
        if_match: None,
        device_id: None,
    }
}

/// The task as it will be once `op` applies, for a 202 answer.
fn pending_view(current: Option<Task>, op: &Operation) -> Task {
    let mut task = current.unwrap_or(Task {
        id: op.task_id,
        title: String::new(),
        description: None,
        completed: false,
        created_at: op.stamped_at,
        updated_at: op.stamped_at,
        is_deleted: false,
        sync_status: SyncStatus::Pending,
        server_id: None,
        last_synced_at: None,
    });
    if let Some(title) = &op.fields.title {
        task.title.clone_from(title);
    }
    if let Some(description) = &op.fields.description {
        task.description.clone_from(description);
    }
    if let Some(completed) = op.fields.completed {
        task.completed = completed;
    }
    task.is_deleted = op.kind == OpKind::Delete;
    task.updated_at = op.stamped_at;
    task.sync_status = SyncStatus::Pending;
    task
}

/// Whether the request asked not to wait (`Prefer: respond-async`, RFC 7240).
pub(crate) fn respond_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

async fn submit(
    state: &AppState,
    headers: &HeaderMap,
    op: Operation,
    pending: Task,
) -> Result<Response, ApiError> {
    // A device that names itself carries its name through the operation to the log, and its
    // figures count the write like a push of one operation.
    let device = crate::device::from_headers(headers)?;
    let op = Operation {
        device_id: device.clone(),
        ..op
    };
    let asked_async = respond_async(headers);
    let wait = (!asked_async).then_some(state.settings.write_wait);
    let submitted = state.broker.submit(&op, wait).await.map_err(|e| match e {
        PublishError::Encode(e) => ApiError::Internal(e.into()),
        other => {
            tracing::warn!(error = %other, op_id = %op.op_id, "operation not accepted");
            ApiError::Unavailable(format!("{other}; the operation was not accepted, retry it"))
        }
    })?;
    crate::device::record_push(state, &op.user_id, device.as_deref(), 1).await;
    let location = format!("/api/tasks/{}", op.task_id);
    let mut response = match submitted {
        // Pending: merged into a task nobody can read yet (not for REST writes, which name
        // a task that exists); the operation is accepted all the same.
        Submitted::Accepted => (StatusCode::ACCEPTED, Json(pending)).into_response(),
        Submitted::Decided(report) if report.status == ItemStatus::Pending => {
            (StatusCode::ACCEPTED, Json(pending)).into_response()
        }
        Submitted::Decided(report) if report.rejection == Some(Rejection::PreconditionFailed) => {
            precondition_failed(state, &op, report)
                .await
                .into_response()
        }
        // A rejection keeps the operation's headers: its id leads to the logged outcome.
        Submitted::Decided(report) => {
            decided(op.kind, report).unwrap_or_else(|e| e.into_response())
        }
    };
    if asked_async && response.status() == StatusCode::ACCEPTED {
        response.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("respond-async"),
        );
    }
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&op.op_id.to_string()) {
        headers.insert("operation-id", v);
    }
    Ok(response)
}

/// The 412 of an operation whose `If-Match` did not hold when it applied, with the task's
/// current tag as the api reads it now (after the worker's commit): none when the task is
/// gone or the read fails.
async fn precondition_failed(state: &AppState, op: &Operation, report: OutcomeReport) -> ApiError {
    let current = state
        .db_round(storage::find_task(&state.db, &op.user_id, op.task_id))
        .await;
    let tag = match current {
        Ok(Some(task)) if !task.is_deleted => Some(etag::of_task(&task)),
        _ => None,
    };
    let reason = report
        .error
        .unwrap_or_else(|| tasksync_shared::operation::PRECONDITION_MESSAGE.into());
    ApiError::PreconditionFailed(reason, tag)
}

/// The answer to a decided write. The worker's `error` reasons are written for the caller:
/// on another user's task they say no more than "not found" or, for a create, that the id
/// exists.
fn decided(kind: OpKind, report: OutcomeReport) -> Result<Response, ApiError> {
    match (report.status, report.task) {
        (ItemStatus::Success, Some(task)) => {
            let tag = etag::of_task(&task);
            let mut response = match kind {
                OpKind::Create => (StatusCode::CREATED, Json(task)).into_response(),
                OpKind::Update => (StatusCode::OK, Json(task)).into_response(),
                OpKind::Delete => return Ok(StatusCode::NO_CONTENT.into_response()),
            };
            set_etag(&mut response, &tag);
            Ok(response)
        }
        (ItemStatus::Conflict, _) => Err(ApiError::Conflict(
            "a later write to this task won; fetch it and retry".into(),
        )),
        (_, _) => {
            let reason = report.error.unwrap_or_else(|| "rejected".into());
            Err(match (report.rejection, kind) {
                (Some(Rejection::Invalid), _) => ApiError::BadRequest(reason),
                (Some(Rejection::Exists), _) => ApiError::Exists(reason),
                (Some(Rejection::OpIdReused), _) => ApiError::Conflict(reason),
                (Some(Rejection::PreconditionFailed), _) => {
                    ApiError::PreconditionFailed(reason, None)
                }
                // From a worker that predates exclusive creates.
                (Some(Rejection::NotFound), OpKind::Create) => {
                    ApiError::Exists(exists_message(report.task_id, false))
                }
                (Some(Rejection::NotFound), _) => ApiError::task_not_found(),
                (Some(Rejection::Failed), _) => ApiError::OperationFailed(format!(
                    "the operation failed and was parked for operators: {reason}"
                )),
                (None, _) => ApiError::Conflict(format!("operation rejected: {reason}")),
            })
        }
    }
}
