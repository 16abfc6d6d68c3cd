//! Per-request limits, checked before a handler runs (SPEC §3: bad input gets a 4xx in our
//! error body).
//!
//! - A path and query longer than [`MAX_URI_BYTES`] is a 414 with our body (hyper's own 414,
//!   for URIs over 64 KiB, has none).
//! - A declared `Content-Length` over `BODY_LIMIT_BYTES` is a 413 at once: the body is never
//!   read, so hyper never sends `100 Continue` to a client that asked for it. Bodies without a
//!   length (chunked) are cut at the limit while they are read.
//! - `HTTP_REQUEST_TIMEOUT_MS` bounds the request from its headers to its answer: the body
//!   extractors stop waiting at the [`BodyDeadline`] (408, the client was slow), and an answer
//!   not ready by then is a 503 (we were slow). Both use the same instant; the 408 wins a tie
//!   because the inner future is polled before the outer timer.

use std::time::Duration;

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::time::Instant;

use crate::{error::ApiError, extract::BodyDeadline};

/// Longest path and query the api reads; its longest real one is under 200 bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The limits [`guard`] applies.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    pub body_limit: usize,
    pub request_timeout: Duration,
}

pub async fn guard(
    State(limits): State<RequestLimits>,
    mut request: Request,
    next: Next,
) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return ApiError::UriTooLong(format!(
            "the path and query are {uri_bytes} bytes, over the limit of {MAX_URI_BYTES}"
        ))
        .into_response();
    }
    if let Some(declared) = declared_length(&request) {
        if declared > limits.body_limit as u64 {
            return ApiError::PayloadTooLarge(format!(
                "request body too large: Content-Length {declared} is over the limit of {} bytes",
                limits.body_limit
            ))
            .into_response();
        }
    }
    let deadline = BodyDeadline {
        at: Instant::now() + limits.request_timeout,
        timeout: limits.request_timeout,
    };
    request.extensions_mut().insert(deadline);
    match tokio::time::timeout_at(deadline.at, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms = limits.request_timeout.as_millis(),
                "request not answered in time"
            );
            ApiError::Unavailable(format!(
                "the request was not answered within {} ms",
                limits.request_timeout.as_millis()
            ))
            .into_response()
        }
    }
}

/// The `Content-Length` the client declared, if it is a number (hyper has already refused
/// conflicting or malformed ones).
fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
