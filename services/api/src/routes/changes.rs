//! `GET /api/changes?since=CURSOR&limit=N`: the pull side of offline sync.
//!
//! Every change of the caller's tasks after the cursor, deleted ones included, and the caller's
//! operations decided in the same range (`acks`), in commit-horizon order (`storage::read_feed`
//! says why that order never skips a committed change), with the cursor to continue from.
//! Clients treat the cursor as opaque and page until `has_more` is false; an empty or absent
//! `since` starts from the beginning. A cursor older than the retention horizon is a 410.

use axum::{Json, extract::State};
use chrono::Utc;
use serde::Deserialize;
use tasksync_shared::sync::ChangesPage;
use utoipa::IntoParams;

use crate::{
    cursor::{FeedCursor, page_limit},
    device::{self, Device},
    error::ApiError,
    extract::{ApiQuery, CurrentUser},
    openapi::{BadRequest, CursorExpired},
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
        each task as it is now, and the caller's operations decided in the same range \
        (`acks`: each decision once, including writes that changed nothing and writes that \
        failed for good). Page from the returned `next_cursor` while `has_more` is true. A \
        cursor older than the retention horizon answers 410 `cursor_expired`: pull again from \
        an empty cursor and replace the local copy.",
    params(
        ChangesQuery,
        ("Device-Id" = Option<String>, Header, description = "The pulling device's name: its latest pull (time, and the cursor handed out) is recorded (`GET /api/devices`)"),
    ),
    responses(
        (status = 200, description = "One page of changes and acknowledgements", body = ChangesPage),
        (status = 400, response = BadRequest),
        (status = 410, response = CursorExpired),
    ),
)]
pub async fn changes(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Device(device): Device,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> Result<Json<ChangesPage>, ApiError> {
    let since = query.since.unwrap_or_default();
    let after = FeedCursor::decode(since.trim()).ok_or_else(|| {
        ApiError::BadRequest("since: not a cursor from this api (use next_cursor)".into())
    })?;
    let limit = page_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = state
        .db_round(storage::read_feed(&state.db, &user, after, limit))
        .await?;
    let answer = page.into_answer(Utc::now());
    device::record_pull(&state, &user, device.as_deref(), &answer.next_cursor).await;
    Ok(Json(answer))
}
