//! The device a request comes from: the `Device-Id` header ([`DEVICE_ID_HEADER`]), checked on
//! every `/api` route by [`check_header`] (400 naming `Device-Id` when it is not 1 to 64
//! characters of `A-Z a-z 0-9 . _ : -`), and read by handlers with the [`Device`] extractor.
//! A push may name its device in its body instead (`device_id`, see
//! [`crate::routes::sync`]).
//!
//! What the api records of a device (pushes, pulls) is written after the answer is computed,
//! one statement per request ([`crate::storage::devices`]); a failure to record is logged and
//! never fails the request, whose operations are already accepted.

use axum::{
    extract::{FromRequestParts, Request},
    http::{HeaderMap, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tasksync_shared::device::{DEVICE_ID_HEADER, check_device_id};

use crate::{error::ApiError, state::AppState, storage};

/// The device the `Device-Id` header names, if any, once checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device(pub Option<String>);

/// The `Device-Id` header of `headers`: `Ok(None)` when absent, a 400 naming it when it is not
/// a valid device id (or sent twice).
pub fn from_headers(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(DEVICE_ID_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |why: &str| ApiError::BadRequest(format!("Device-Id: {why}"));
    if values.next().is_some() {
        return Err(invalid("send it once"));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("must be visible ASCII"))?;
    check_device_id(text).map_err(|e| invalid(&e))?;
    Ok(Some(text.to_string()))
}

/// Refuses a request whose `Device-Id` header is not a valid device id, before any handler
/// runs: nothing of it is published.
pub async fn check_header(request: Request, next: Next) -> Response {
    match from_headers(request.headers()) {
        Ok(_) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        from_headers(&parts.headers).map(Self)
    }
}

/// Records that `device` of `user` had `ops` operations accepted (a push, or a REST write).
/// Logged, never failing: the operations are accepted whatever happens here.
pub async fn record_push(state: &AppState, user: &str, device: Option<&str>, ops: usize) {
    let Some(device) = device else { return };
    let ops = i64::try_from(ops).unwrap_or(i64::MAX);
    let recorded = state
        .db_round(storage::devices::record_push(&state.db, user, device, ops))
        .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, device, "could not record the device's push");
    }
}

/// Records that `device` of `user` pulled and was handed `cursor`. Logged, never failing.
pub async fn record_pull(state: &AppState, user: &str, device: Option<&str>, cursor: &str) {
    let Some(device) = device else { return };
    let recorded = state
        .db_round(storage::devices::record_pull(
            &state.db, user, device, cursor,
        ))
        .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, device, "could not record the device's pull");
    }
}
