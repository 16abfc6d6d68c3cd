//! The worker's own HTTP listener on `WORKER_HTTP_PORT`: its probes and its metrics.
//!
//! - `/health`: this process's consume loop is alive: idle (waiting for deliveries, or
//!   reconnecting to the broker), or it stepped forward (a batch gathered, stepped, settled, a
//!   database pause round) within [`liveness_limit`]. A loop frozen inside a batch fails it,
//!   where the broker would still show its consumer.
//! - `/ready`: consuming the work queue, and the database answers with the schema in place.
//! - `/metrics`: Prometheus text ([`crate::metrics`]).
//!
//! Failures answer 503 with a JSON body saying what failed.

use std::{future::Future, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use chrono::Utc;
use deadpool_postgres::Pool;
use serde_json::json;
use tasksync_shared::{Settings, db};
use tokio::net::TcpListener;

use crate::metrics::WorkerMetrics;

/// Longest a readiness check waits for the database.
const READY_DB_WAIT: Duration = Duration::from_secs(2);

/// Longest the loop may stay inside its batches without a step forward and still count as
/// alive: one step's database rounds (apply, split, failure records, each bounded by
/// `DB_TIMEOUT_MS`) and a settle's broker waits (each bounded by 10 s), with room to spare.
pub fn liveness_limit(settings: &Settings) -> Duration {
    settings.db_timeout * 4 + Duration::from_secs(30)
}

#[derive(Clone, Debug)]
struct Probes {
    metrics: WorkerMetrics,
    pool: Pool,
    liveness_limit: Duration,
}

/// The listener's routes.
pub fn router(metrics: WorkerMetrics, pool: Pool, liveness_limit: Duration) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render))
        .with_state(Probes {
            metrics,
            pool,
            liveness_limit,
        })
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "the worker's HTTP listener stopped");
    }
}

async fn health(State(probes): State<Probes>) -> impl IntoResponse {
    if probes.metrics.is_alive(probes.liveness_limit) {
        answer(StatusCode::OK, "ok", None)
    } else {
        let limit = probes.liveness_limit.as_secs();
        let why = format!("the consume loop made no progress in {limit} s with batches in flight");
        answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable", Some(why))
    }
}

async fn ready(State(probes): State<Probes>) -> impl IntoResponse {
    let database = tokio::time::timeout(READY_DB_WAIT, db::database_ready(&probes.pool))
        .await
        .unwrap_or_else(|_| Err(db::NotReady::Unreachable("timed out".into())));
    let why = match (probes.metrics.is_consuming(), database) {
        (true, Ok(())) => return answer(StatusCode::OK, "ready", None),
        (false, _) => "not consuming the work queue".to_string(),
        (true, Err(e)) => format!("postgres: {e}"),
    };
    answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable", Some(why))
}

async fn render(State(probes): State<Probes>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        probes.metrics.render(),
    )
}

fn answer(
    status: StatusCode,
    word: &str,
    error: Option<String>,
) -> (StatusCode, Json<serde_json::Value>) {
    let mut body = json!({ "status": word, "timestamp": Utc::now() });
    if let Some(error) = error {
        body["error"] = json!(error);
    }
    (status, Json(body))
}

/// `sync-worker healthcheck`: asks the worker of this host (`127.0.0.1:WORKER_HTTP_PORT`) for
/// `probe` (`/ready` or `/health`); an error unless it answers 200 within 5 s.
pub async fn check(port: u16, probe: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let asking = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {probe} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), asking).await??;
    let status_line = answer.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status_line.split_whitespace().nth(1) == Some("200"),
        "{probe} on port {port}: {}",
        answer.rsplit("\r\n\r\n").next().unwrap_or(status_line)
    );
    Ok(())
}
