//! One trace per request, and its access log line.
//!
//! [`access`] wraps everything the api serves. It reads the request's `traceparent` (W3C Trace
//! Context; an invalid one starts a new trace, never a 4xx) or starts a trace, runs the request
//! inside a `request` span carrying `trace_id`, `request_id` and (once authenticated) `user`,
//! answers with `traceparent` (the api's span in that trace) and `X-Request-Id`, and logs one
//! `info` line per request on target `api::access`: request id, method, route template, status,
//! latency, `Operation-Id` when the answer has one, user and trace id. Never tokens or bodies.
//!
//! With OTLP export on (`OTEL_EXPORTER_OTLP_ENDPOINT`), the `request` span is exported as a
//! child of the request's `traceparent` (or as a new trace's root), and its exported span id is
//! the one answered and published.
//!
//! The publisher reads the request's trace with [`current`] to put it in each operation's AMQP
//! headers, so the worker's log lines of the operation carry the same trace id.
//! [`user`] sits inside authentication, where the user is known, and hands it out to [`access`].

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderMap, HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tasksync_shared::telemetry::{
    export,
    traceparent::{HEADER as TRACEPARENT, TraceParent},
};
use tracing::{Instrument, Span, field::Empty};
use uuid::Uuid;

use crate::extract::CurrentUser;

/// The request id header, echoed when the client sent a usable one, generated otherwise.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client request id echoed; longer ones are replaced.
const MAX_REQUEST_ID: usize = 128;

tokio::task_local! {
    /// The api's span in the trace of the request being served.
    static CURRENT: TraceParent;
}

/// The trace of the request this task serves (what a published operation carries), if any.
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(|trace| *trace).ok()
}

/// Where [`user`] leaves the authenticated user for [`access`]'s log line.
#[derive(Clone, Debug, Default)]
struct UserSlot(Arc<OnceLock<String>>);

/// The outer layer: trace, request id, request span, response headers, access log line.
pub async fn access(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let incoming = incoming_trace(request.headers());
    let request_id =
        client_request_id(request.headers()).unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let slot = UserSlot::default();
    request.extensions_mut().insert(slot.clone());
    let span = tracing::info_span!(
        "request",
        trace_id = Empty,
        request_id = %request_id,
        user = Empty,
    );
    // Exporting spans, the api's span in the trace is the exported one; otherwise a new id.
    let trace = export::continue_trace(&span, incoming.as_ref())
        .unwrap_or_else(|| incoming.map_or_else(TraceParent::new_root, |t| t.child()));
    span.record("trace_id", tracing::field::display(trace.trace_id));
    let mut response = CURRENT
        .scope(trace, next.run(request))
        .instrument(span)
        .await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        headers.insert(HeaderName::from_static(TRACEPARENT), value);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID, value);
    }
    let op_id = headers
        .get("operation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    tracing::info!(
        target: "api::access",
        request_id = %request_id,
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        op_id = %op_id,
        user = slot.0.get().map_or("-", String::as_str),
        trace_id = %trace.trace_id,
        "request"
    );
    response
}

/// The inner layer (inside authentication): records the request's user on its span and for
/// the access log line.
pub async fn user(request: Request, next: Next) -> Response {
    if let (Some(CurrentUser(user)), Some(slot)) = (
        request.extensions().get::<CurrentUser>(),
        request.extensions().get::<UserSlot>(),
    ) {
        Span::current().record("user", user.as_str());
        let _ = slot.0.set(user.clone());
    }
    next.run(request).await
}

/// The request's `traceparent`, when there is exactly one and it is valid.
fn incoming_trace(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => TraceParent::parse(value.to_str().ok()?),
        _ => None,
    }
}

/// The client's `X-Request-Id` when it is one value of 1 to 128 visible ASCII characters
/// (anything else could forge or break log lines).
fn client_request_id(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(REQUEST_ID).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let bytes = value.as_bytes();
    let sane = !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID
        && bytes.iter().all(|b| b.is_ascii_graphic());
    sane.then(|| String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_request_id_is_echoed_only_when_sane() {
        let ok = "abc-123_X.y";
        assert_eq!(
            client_request_id(&with("x-request-id", &[ok])).as_deref(),
            Some(ok)
        );
        let long = "a".repeat(MAX_REQUEST_ID + 1);
        for bad in ["", "has space", long.as_str()] {
            assert_eq!(client_request_id(&with("x-request-id", &[bad])), None);
        }
        assert_eq!(client_request_id(&with("x-request-id", &["a", "b"])), None);
        assert_eq!(client_request_id(&HeaderMap::new()), None);
    }

    #[test]
    fn two_traceparents_count_as_none() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(incoming_trace(&with("traceparent", &[valid])).is_some());
        assert!(incoming_trace(&with("traceparent", &[valid, valid])).is_none());
    }
}
