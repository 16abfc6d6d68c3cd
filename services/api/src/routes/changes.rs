//! `GET /api/changes?since=CURSOR&limit=N`: the pull side of offline sync.
//!
//! Every change of the caller's tasks after the cursor, deleted ones included, in commit-horizon
//! order (`storage::changes_after` says why that order never skips a committed change), with
//! the cursor to continue from. Clients treat the cursor as opaque and page until `has_more` is
//! false; an empty or absent `since` starts from the beginning.

use axum::{Json, extract::State};
use chrono::Utc;
use serde::Deserialize;
use tasksync_shared::sync::ChangesPage;
use utoipa::IntoParams;

use crate::{
    cursor::{Position, page_limit},
    device::{self, Device},
    error::ApiError,
    extract::{ApiQuery, CurrentUser},
    openapi::BadRequest,
    state::AppState,
    storage,
};

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page.
pub const MAX_LIMIT: usize = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// The `next_cursor` of the previous page (opaque); empty or absent: from the start.
    since: Option<String>,
    // Read as text so that a bad value gets our message naming the parameter.
    /// Most changes in the answer (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/changes",
    operation_id = "get_changes",
    tag = "sync",
    summary = "Pull what changed",
    description = "Every change of the caller's tasks after the cursor, deleted ones included, \
        each task as it is now. Page from the returned `next_cursor` while `has_more` is true.",
    params(
        ChangesQuery,
        ("Device-Id" = Option<String>, Header, description = "The pulling device's name: its latest pull (time, and the cursor handed out) is recorded (`GET /api/devices`)"),
    ),
    responses(
        (status = 200, description = "One page of changes", body = ChangesPage),
        (status = 400, response = BadRequest),
    ),
)]
pub async fn changes(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Device(device): Device,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> Result<Json<ChangesPage>, ApiError> {
    let since = query.since.unwrap_or_default();
    let after = Position::decode(since.trim()).ok_or_else(|| {
        ApiError::BadRequest("since: not a cursor from this api (use next_cursor)".into())
    })?;
    let limit = page_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let (page, has_more) = state
        .db_round(storage::changes_after(&state.db, &user, after, limit))
        .await?;
    let next = page.last().map_or(after, |(position, _)| *position);
    let next_cursor = next.encode();
    device::record_pull(&state, &user, device.as_deref(), &next_cursor).await;
    Ok(Json(ChangesPage {
        changes: page.into_iter().map(|(_, task)| task).collect(),
        next_cursor,
        has_more,
        server_time: Utc::now(),
    }))
}
