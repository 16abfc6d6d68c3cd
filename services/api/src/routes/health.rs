//! `GET /api/health` (liveness) and `GET /api/ready` (both dependencies answer, and, with
//! `JWT_JWKS_URL`, the key set has been fetched).

use std::time::Duration;

use axum::{
    Json,
    extract::{OriginalUri, State},
    http::StatusCode,
    response::IntoResponse,
};
use chrono::Utc;
use serde_json::json;

use tasksync_shared::db;

use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/health",
    operation_id = "health",
    tag = "service",
    summary = "Liveness",
    responses((status = 200, description = "The process answers", body = crate::openapi::bodies::Health)),
)]
pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok", "timestamp": Utc::now() }))
}

/// The error fields name the request's own path: inside the nested `/api` router a plain `Uri`
/// would say `/ready`, hence `OriginalUri`.
#[utoipa::path(
    get,
    path = "/api/ready",
    operation_id = "ready",
    tag = "service",
    summary = "Readiness: Postgres, RabbitMQ (and the JWKS) answer",
    responses(
        (status = 200, description = "Ready", body = crate::openapi::bodies::Readiness),
        (status = 503, description = "Not ready: `error` names what is down", body = crate::openapi::bodies::Readiness, headers(
            ("Retry-After" = u64, description = "Seconds to wait"),
        )),
    ),
)]
pub async fn ready(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
) -> impl IntoResponse {
    let database = tokio::time::timeout(Duration::from_secs(3), db::database_ready(&state.db))
        .await
        .unwrap_or_else(|_| Err(db::NotReady::Unreachable("timed out".into())))
        .map_err(|e| e.to_string());
    let broker = if state.broker.is_connected() {
        Ok(())
    } else {
        Err("not connected".to_string())
    };
    let keys = state.auth.key_set_status().map(|s| s.map(|_| ()));
    let ready = database.is_ok() && broker.is_ok() && keys.as_ref().is_none_or(Result::is_ok);
    let describe = |r: &Result<(), String>| match r {
        Ok(()) => json!({ "status": "up" }),
        Err(e) => json!({ "status": "down", "error": e }),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "timestamp": Utc::now(),
        "checks": { "postgres": describe(&database), "rabbitmq": describe(&broker) },
    });
    if let Some(keys) = &keys {
        body["checks"]["jwks"] = describe(keys);
    }
    if !ready {
        // The SPEC §3 error fields, besides the checks.
        let down: Vec<String> = [("postgres", &database), ("rabbitmq", &broker)]
            .into_iter()
            .chain(keys.as_ref().map(|k| ("jwks", k)))
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect();
        body["error"] = json!(format!("not ready: {}", down.join("; ")));
        body["code"] = json!("unavailable");
        body["path"] = json!(uri.path());
    }
    // Not an ApiError: the body says which dependency is down, which is the point.
    (status, [(axum::http::header::RETRY_AFTER, "1")], Json(body))
}
