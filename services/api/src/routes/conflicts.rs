//! `GET /api/tasks/{id}/conflicts`: the fields writes to one of the caller's tasks lost, newest
//! first, paged by an opaque cursor.

use axum::{Json, extract::State};
use serde::Deserialize;
use tasksync_shared::sync::ConflictsPage;
use utoipa::IntoParams;

use crate::{
    cursor::{ConflictPosition, page_limit},
    error::ApiError,
    extract::{ApiQuery, CurrentUser, TaskId},
    openapi::BadRequest,
    state::AppState,
    storage,
};

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page.
pub const MAX_LIMIT: usize = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConflictsQuery {
    /// The `next_cursor` of the previous page (opaque); absent or empty: the newest records.
    cursor: Option<String>,
    /// Most records in the answer (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/tasks/{id}/conflicts",
    operation_id = "get_task_conflicts",
    tag = "sync",
    summary = "A task's conflict history",
    description = "Each field a write lost (its last-write-wins stamp was older than the stored \
        one and the values differed: the `conflict` outcome), newest first: the value that \
        stayed and the value that lost, each with its write's stamp (time, op id) and device. \
        A deleted task keeps its history; another user's task is a 404 like a missing one.",
    params(("id" = uuid::Uuid, Path, description = "The task's id"), ConflictsQuery),
    responses(
        (status = 200, description = "One page of the history", body = ConflictsPage),
        (status = 400, response = BadRequest),
        (status = 404, description = "No such task for the caller", body = crate::openapi::ErrorBody),
    ),
)]
pub async fn conflicts(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    TaskId(id): TaskId,
    ApiQuery(query): ApiQuery<ConflictsQuery>,
) -> Result<Json<ConflictsPage>, ApiError> {
    let cursor = query.cursor.as_deref().map(str::trim).unwrap_or_default();
    let before = if cursor.is_empty() {
        None
    } else {
        let position = ConflictPosition::decode(cursor)
            .filter(|p| p.task == id)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "cursor: not a cursor of this task's conflicts (use next_cursor)".into(),
                )
            })?;
        Some(position)
    };
    let limit = page_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    // The task must be the caller's (deleted or not); anything else reads as missing.
    state
        .db_round(storage::find_task(&state.db, &user, id))
        .await?
        .ok_or_else(ApiError::task_not_found)?;
    let (page, has_more) = state
        .db_round(storage::conflicts::task_conflicts(
            &state.db, &user, id, before, limit,
        ))
        .await?;
    let next_cursor = page.last().filter(|_| has_more).map(|(record, _)| {
        ConflictPosition {
            record: *record,
            task: id,
        }
        .encode()
    });
    Ok(Json(ConflictsPage {
        conflicts: page.into_iter().map(|(_, c)| c).collect(),
        next_cursor,
        has_more,
    }))
}
