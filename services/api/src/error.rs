//! The api's one error type, and the middleware that renders every error response — ours and
//! axum's own (unknown route, wrong method) — as the SPEC §3 body
//! `{"error", "code", "timestamp", "path"}`. The only answers without it are hyper's own, written
//! before any of this runs: 400, 414 and 431 for requests it cannot parse (see [`crate::server`]).
//!
//! `code` is machine-readable: snake_case, stable (a client may branch on it; `error` is for
//! people and may change). One per variant, and one per status for answers no variant makes:
//!
//! | variant | status | `code` |
//! |---|---|---|
//! | `BadRequest` | 400, message names the field | `invalid_request` |
//! | (authentication) | 401 with `WWW-Authenticate` | `unauthorized` |
//! | `NotFound` | 404 | `not_found` |
//! | (axum: wrong method) | 405 | `method_not_allowed` |
//! | `RequestTimeout` | 408: the body was not received within `HTTP_REQUEST_TIMEOUT_MS` | `timeout` |
//! | `Exists` | 409: a create's id is taken | `exists` |
//! | `Conflict` | 409: a later write won, or the worker rejected the operation | `conflict` |
//! | `CursorExpired` | 410: a feed cursor below the retention horizon; resync from the start | `cursor_expired` |
//! | `PreconditionFailed` | 412 with the current `ETag`: `If-Match` did not hold | `precondition_failed` |
//! | `PayloadTooLarge` | 413 | `payload_too_large` |
//! | `UriTooLong` | 414: the path and query are longer than the api reads | `uri_too_long` |
//! | `UnsupportedMediaType` | 415 | `unsupported_media_type` |
//! | `TooManyRequests` | 429 with `Retry-After` (its whole seconds): see [`crate::throttle`] | `rate_limited` |
//! | `OperationFailed` | 500: the worker tried every attempt and parked the operation | `operation_failed` |
//! | `Internal` | 500, logged with its cause chain; the body says nothing more | `internal` |
//! | `Unavailable` | 503 with `Retry-After`, names the dependency | `unavailable` |

use axum::{
    Json,
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use chrono::{SecondsFormat, Utc};
use tasksync_shared::{db, validate::FieldError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Conflict(String),
    /// A changes cursor older than what retention removed (`tasksync_shared::retention`).
    #[error("{0}")]
    CursorExpired(String),
    /// The message, and the task's current entity tag when known (sent as `ETag`).
    #[error("{0}")]
    PreconditionFailed(String, Option<String>),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    TooManyRequests(String, u64),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    OperationFailed(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The message and code of an error response, carried to [`render_errors`] in the response
/// extensions.
#[derive(Clone, Debug)]
struct ErrorMessage {
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Exists(_) | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::CursorExpired(_) => StatusCode::GONE,
            Self::PreconditionFailed(..) => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::OperationFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body's machine-readable `code` (see the module's table).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "invalid_request",
            Self::NotFound(_) => "not_found",
            Self::RequestTimeout(_) => "timeout",
            Self::Exists(_) => "exists",
            Self::Conflict(_) => "conflict",
            Self::CursorExpired(_) => "cursor_expired",
            Self::PreconditionFailed(..) => "precondition_failed",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UriTooLong(_) => "uri_too_long",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::TooManyRequests(..) => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::OperationFailed(_) => "operation_failed",
            Self::Internal(_) => "internal",
        }
    }

    pub fn task_not_found() -> Self {
        Self::NotFound("task not found".into())
    }

    pub fn database_unavailable() -> Self {
        Self::Unavailable("database unavailable".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(error) = &self {
            tracing::error!(error = %format!("{error:#}"), "internal error");
        }
        let mut response = self.status().into_response();
        if matches!(self, Self::Unavailable(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::TooManyRequests(_, seconds) = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
        }
        if let Self::PreconditionFailed(_, Some(etag)) = &self {
            if let Ok(value) = HeaderValue::from_str(etag) {
                response.headers_mut().insert(header::ETAG, value);
            }
        }
        response.extensions_mut().insert(ErrorMessage {
            code: self.code(),
            message: self.to_string(),
        });
        response
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            Self::Unavailable("database schema not ready: the sync-worker creates it".into())
        } else if db::is_transient(&e) {
            Self::database_unavailable()
        } else {
            Self::Internal(e.into())
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e if db::pool_error_is_transient(&e) => Self::database_unavailable(),
            e => Self::Internal(e.into()),
        }
    }
}

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'a str,
    timestamp: String,
    path: &'a str,
}

/// An answer with `status` and the SPEC error body `{"error", "code", "timestamp", "path"}`.
/// For layers that answer outside [`render_errors`] (authentication), and for it.
pub fn error_body(status: StatusCode, code: &str, message: &str, path: &str) -> Response {
    let body = ErrorBody {
        error: message,
        code,
        timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        path,
    };
    (status, Json(body)).into_response()
}

/// Gives every error response the JSON error body, with the request path.
pub async fn render_errors(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (code, message) = match response.extensions().get::<ErrorMessage>() {
        Some(ErrorMessage { code, message }) => (*code, message.clone()),
        // A handler that wrote its own JSON error body (readiness) keeps it.
        None if is_json(&response) => return response,
        None => (default_code(status), default_message(status)),
    };
    let (mut parts, _) = response.into_parts();
    let rendered = error_body(status, code, &message, &path);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::new(rendered.into_body()))
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// The `code` of an error answer no [`ApiError`] made (axum's own), by status.
fn default_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PRECONDITION_FAILED => "precondition_failed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::GATEWAY_TIMEOUT => "timeout",
        s if s.is_client_error() => "invalid_request",
        _ => "internal",
    }
}

fn default_message(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "no such route".into(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".into(),
        other => other
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::{Router, routing::get};
    use tower::ServiceExt;

    use super::*;

    /// Every variant, with the status and `code` its body must carry.
    fn variants() -> Vec<(ApiError, u16, &'static str)> {
        let m = || "m".to_string();
        vec![
            (ApiError::BadRequest(m()), 400, "invalid_request"),
            (ApiError::NotFound(m()), 404, "not_found"),
            (ApiError::RequestTimeout(m()), 408, "timeout"),
            (ApiError::Exists(m()), 409, "exists"),
            (ApiError::Conflict(m()), 409, "conflict"),
            (ApiError::CursorExpired(m()), 410, "cursor_expired"),
            (
                ApiError::PreconditionFailed(m(), Some("\"t\"".into())),
                412,
                "precondition_failed",
            ),
            (ApiError::PayloadTooLarge(m()), 413, "payload_too_large"),
            (ApiError::UriTooLong(m()), 414, "uri_too_long"),
            (
                ApiError::UnsupportedMediaType(m()),
                415,
                "unsupported_media_type",
            ),
            (ApiError::TooManyRequests(m(), 2), 429, "rate_limited"),
            (ApiError::OperationFailed(m()), 500, "operation_failed"),
            (
                ApiError::Internal(anyhow::anyhow!("secret")),
                500,
                "internal",
            ),
            (ApiError::Unavailable(m()), 503, "unavailable"),
        ]
    }

    #[tokio::test]
    async fn every_error_renders_its_code_beside_the_message_time_and_path() {
        for (i, (_, status, code)) in variants().into_iter().enumerate() {
            let app = Router::new()
                .route(
                    "/e",
                    get(move || async move { variants().swap_remove(i).0 }),
                )
                .layer(axum::middleware::from_fn(render_errors));
            let request = Request::builder().uri("/e").body(Body::empty()).unwrap();
            let response = app.oneshot(request).await.unwrap();
            assert_eq!(response.status().as_u16(), status);
            let etag = response.headers().get(header::ETAG).cloned();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["code"], code, "{body}");
            assert_eq!(body["path"], "/e");
            assert!(body["timestamp"].is_string());
            let message = if code == "internal" {
                "internal error"
            } else {
                "m"
            };
            assert_eq!(body["error"], message, "{body}");
            assert_eq!(etag.is_some(), code == "precondition_failed");
        }
    }

    #[test]
    fn answers_no_variant_makes_get_a_code_by_status() {
        assert_eq!(
            default_code(StatusCode::METHOD_NOT_ALLOWED),
            "method_not_allowed"
        );
        assert_eq!(default_code(StatusCode::NOT_FOUND), "not_found");
        assert_eq!(default_code(StatusCode::IM_A_TEAPOT), "invalid_request");
        assert_eq!(default_code(StatusCode::BAD_GATEWAY), "internal");
    }
}
