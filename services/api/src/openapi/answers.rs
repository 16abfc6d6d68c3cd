//! The error body and the shared error answers, as the document describes them: components
//! referenced by status from the operations (`response = …`) and by the conventions of
//! [`super::ApiDoc`]. Descriptions only: the answers are rendered by [`crate::error`] and
//! [`crate::auth::reject`], and schemathesis checks them against the document.
#![allow(dead_code)] // descriptions, never built

use chrono::{DateTime, Utc};
use utoipa::{ToResponse, ToSchema};

/// The JSON the api answers for every error (SPEC §3).
#[derive(Debug, ToSchema)]
pub struct ErrorBody {
    /// What went wrong; a 400 starts with the offending field (`title: must not be blank`).
    error: String,
    /// Machine-readable and stable, snake_case: `invalid_request`, `unauthorized`,
    /// `not_found`, `method_not_allowed`, `timeout`, `exists`, `conflict`, `cursor_expired`,
    /// `precondition_failed`, `payload_too_large`, `uri_too_long`, `unsupported_media_type`,
    /// `rate_limited`, `operation_failed`, `internal`, `unavailable`.
    #[schema(example = "not_found")]
    code: String,
    timestamp: DateTime<Utc>,
    /// The request's path.
    path: String,
}

/// Bad input; the message names the offending field or parameter.
#[derive(Debug, ToResponse)]
pub struct BadRequest(ErrorBody);

/// No valid bearer token (only with authentication on). `WWW-Authenticate` says why:
/// `Bearer` when none was sent, `Bearer error="invalid_token", error_description="…"` for
/// an invalid one.
#[derive(Debug, ToResponse)]
#[response(headers(("WWW-Authenticate" = String, description = "The bearer challenge")))]
pub struct Unauthorized(ErrorBody);

/// No such task for the caller (another user's task answers the same).
#[derive(Debug, ToResponse)]
pub struct NotFound(ErrorBody);

/// The changes cursor is older than the retention horizon: rows it had not reached yet were
/// pruned. Resync: pull from an empty cursor to the end, replace the local copy of every task
/// with what it returns (dropping tasks it does not), keep unpushed edits and push them.
#[derive(Debug, ToResponse)]
pub struct CursorExpired(ErrorBody);

/// `If-Match` did not hold when the worker applied the operation: the task changed since the
/// client read it (or is gone). Nothing was written; `ETag` is the current tag, when the task
/// still exists.
#[derive(Debug, ToResponse)]
#[response(headers(("ETag" = String, description = "The task's current version, when it exists")))]
pub struct PreconditionFailed(ErrorBody);

/// The body did not arrive within `HTTP_REQUEST_TIMEOUT_MS`.
#[derive(Debug, ToResponse)]
pub struct RequestTimeout(ErrorBody);

/// The body is over `BODY_LIMIT_BYTES`, or a push has more than `MAX_BATCH_ITEMS` items.
#[derive(Debug, ToResponse)]
pub struct PayloadTooLarge(ErrorBody);

/// The path and query are over 8 KiB.
#[derive(Debug, ToResponse)]
pub struct UriTooLong(ErrorBody);

/// The body is not `application/json` (nor `application/*+json`).
#[derive(Debug, ToResponse)]
pub struct UnsupportedMediaType(ErrorBody);

/// Slow down: the caller's rate limit (`RATE_LIMIT_RPS`), or, for writes, a work queue
/// over `QUEUE_HIGH_WATER`. Nothing of the request was published.
#[derive(Debug, ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Whole seconds to wait, at least 1")))]
pub struct TooManyRequests(ErrorBody);

/// The worker tried the operation every time and parked it for operators.
#[derive(Debug, ToResponse)]
pub struct OperationFailed(ErrorBody);

/// A dependency is unavailable (the message names it; a write was not accepted and may be
/// retried), or the answer was not ready within `HTTP_REQUEST_TIMEOUT_MS`.
#[derive(Debug, ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))]
pub struct Unavailable(ErrorBody);
