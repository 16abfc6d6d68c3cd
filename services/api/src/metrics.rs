//! The api's Prometheus metrics, served at `GET /metrics` on the api's port (outside `/api`: no
//! authentication, no rate limit, like a probe; see docs/observability.md).
//!
//! Each [`ApiMetrics`] owns its recorder rather than installing a global one: tests run several
//! apis and a worker in one process, and each must show only its own numbers. Metrics are
//! registered through [`metrics::with_local_recorder`], which points the `metrics` macros at
//! this recorder for one call.
//!
//! Names (all prefixed `tasksync_api_`): `http_requests_total{method,route,status}` and
//! `http_request_duration_seconds{method,route}` (route is the template, e.g.
//! `/api/tasks/{id}`, or `unmatched`), `publish_confirm_seconds{result}`,
//! `writes_total{answer}` (`applied`: decided within the wait; `accepted`: answered 202),
//! `waits_in_flight`; for the live event streams `events_subscribers`,
//! `events_sent_total{event}`, `event_delay_seconds` (worker apply → event written),
//! `events_dropped_total{reason}`, `events_listening`; and, read at each scrape, `broker_connected`, `database_up`,
//! `db_pool_connections`, `db_pool_available`, `db_pool_waiting`, `work_queue_ready`,
//! `work_queue_consumers`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tasksync_shared::db;

use crate::state::AppState;

/// Seconds buckets: 1 ms to 60 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The api's recorder. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    pub fn new() -> Self {
        // Fails only for an empty bucket list.
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
        }
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.recorder, f)
    }

    /// One publish (of one or more operations) ended after `took`: `confirmed`, `timeout`,
    /// `refused` or `error`.
    pub fn publish_confirmed(&self, result: &'static str, took: Duration) {
        self.with(|| {
            metrics::histogram!("tasksync_api_publish_confirm_seconds", "result" => result)
                .record(took.as_secs_f64());
        });
    }

    /// Operations answered with the worker's outcome (`applied`) or accepted undecided (202).
    pub fn writes_answered(&self, applied: usize, accepted: usize) {
        self.with(|| {
            #[allow(clippy::cast_possible_truncation)]
            {
                metrics::counter!("tasksync_api_writes_total", "answer" => "applied")
                    .increment(applied as u64);
                metrics::counter!("tasksync_api_writes_total", "answer" => "accepted")
                    .increment(accepted as u64);
            }
        });
    }

    /// A request starts waiting for outcomes; the wait ends when the guard drops.
    pub fn wait_started(&self) -> WaitInFlight {
        self.with(|| metrics::gauge!("tasksync_api_waits_in_flight").increment(1.0));
        WaitInFlight {
            metrics: self.clone(),
        }
    }

    /// Open event streams moved by `delta` (`tasksync_api_events_subscribers`).
    pub fn events_subscribers(&self, delta: f64) {
        self.with(|| metrics::gauge!("tasksync_api_events_subscribers").increment(delta));
    }

    /// Events of `kind` written to streams (`tasksync_api_events_sent_total{event}`).
    pub fn events_sent(&self, kind: &'static str, count: usize) {
        #[allow(clippy::cast_possible_truncation)]
        self.with(|| {
            metrics::counter!("tasksync_api_events_sent_total", "event" => kind)
                .increment(count as u64);
        });
    }

    /// A change event left `seconds` after the worker applied it (its `last_synced_at`).
    pub fn event_delay(&self, seconds: f64) {
        self.with(|| {
            metrics::histogram!("tasksync_api_event_delay_seconds").record(seconds);
        });
    }

    /// A stream ended by the api (`tasksync_api_events_dropped_total{reason}`): `slow` (its
    /// reader did not keep up) or `shutdown`.
    pub fn events_dropped(&self, reason: &'static str) {
        self.with(|| {
            metrics::counter!("tasksync_api_events_dropped_total", "reason" => reason).increment(1);
        });
    }

    /// Whether the api's `LISTEN` session is up (`tasksync_api_events_listening`).
    pub fn events_listening(&self, up: bool) {
        self.gauge("tasksync_api_events_listening", if up { 1.0 } else { 0.0 });
    }

    fn gauge(&self, name: &'static str, value: f64) {
        self.with(|| metrics::gauge!(name).set(value));
    }
}

/// A wait for outcomes in flight (`tasksync_api_waits_in_flight`).
#[derive(Debug)]
pub struct WaitInFlight {
    metrics: ApiMetrics,
}

impl Drop for WaitInFlight {
    fn drop(&mut self) {
        self.metrics
            .with(|| metrics::gauge!("tasksync_api_waits_in_flight").decrement(1.0));
    }
}

/// Counts and times every request by method, route template and status. Added with
/// `Router::layer`, so axum has matched the route already (its [`MatchedPath`]); a request no
/// route takes is `unmatched`: raw paths would make a series per URL.
pub async fn track(State(metrics): State<ApiMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let took = started.elapsed().as_secs_f64();
    metrics.with(|| {
        metrics::counter!(
            "tasksync_api_http_requests_total",
            "method" => method, "route" => route.clone(), "status" => status
        )
        .increment(1);
        metrics::histogram!(
            "tasksync_api_http_request_duration_seconds",
            "method" => method, "route" => route
        )
        .record(took);
    });
    response
}

/// The standard methods by name; anything else one label (a client picks methods freely).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`: the Prometheus text, with the connectivity, pool and queue gauges read now
/// (the database check bounded at 2 s, the queue depths from the shared sampler).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "service",
    summary = "Prometheus metrics (text exposition format); public, not rate limited",
    responses((status = 200, description = "The metrics", content_type = "text/plain", body = String)),
)]
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let metrics = state.broker.metrics();
    let database = tokio::time::timeout(Duration::from_secs(2), db::database_ready(&state.db))
        .await
        .is_ok_and(|r| r.is_ok());
    let pool = state.db.status();
    let topology = state.broker.topology();
    let depths = tokio::time::timeout(Duration::from_secs(2), state.broker.queue_depths())
        .await
        .ok()
        .flatten();
    let work = depths
        .as_deref()
        .and_then(|d| crate::broker::work_queues(topology, d));
    let flag = |up: bool| if up { 1.0 } else { 0.0 };
    #[allow(clippy::cast_precision_loss)]
    {
        metrics.gauge(
            "tasksync_api_broker_connected",
            flag(state.broker.is_connected()),
        );
        metrics.gauge("tasksync_api_database_up", flag(database));
        metrics.gauge("tasksync_api_db_pool_connections", pool.size as f64);
        metrics.gauge("tasksync_api_db_pool_available", pool.available as f64);
        metrics.gauge("tasksync_api_db_pool_waiting", pool.waiting as f64);
        if let Some(work) = work {
            metrics.gauge("tasksync_api_work_queue_ready", f64::from(work.ready));
            metrics.gauge(
                "tasksync_api_work_queue_consumers",
                f64::from(work.consumers),
            );
        }
    }
    metrics.handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.handle.render(),
    )
}
