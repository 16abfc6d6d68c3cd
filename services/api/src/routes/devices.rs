//! `GET /api/devices`: the caller's devices and their sync health.

use axum::{Json, extract::State};
use chrono::Utc;
use tasksync_shared::device::DeviceList;

use crate::{error::ApiError, extract::CurrentUser, openapi::BadRequest, state::AppState, storage};

#[utoipa::path(
    get,
    path = "/api/devices",
    operation_id = "list_devices",
    tag = "sync",
    summary = "The caller's devices",
    description = "Every device that named itself (`Device-Id` header, or a push's `device_id`) \
        in a push or a pull, most recently seen first: its pushes and what became of them \
        (`pending` = pushed − applied − conflicted − failed − duplicate, never below 0), its \
        latest pull with the cursor it was handed, and the time since (`pull_lag_seconds`).",
    params(("Device-Id" = Option<String>, Header, description = "The calling device's name (checked, not recorded, on this route)")),
    responses(
        (status = 200, description = "The caller's devices", body = DeviceList),
        (status = 400, response = BadRequest),
    ),
)]
pub async fn devices(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<DeviceList>, ApiError> {
    let devices = state
        .db_round(storage::devices::list_devices(&state.db, &user))
        .await?;
    Ok(Json(DeviceList {
        devices,
        server_time: Utc::now(),
    }))
}
