//! `GET /api/status`: queue depths from the broker, sync state from the database.
//!
//! `pending_sync_count` counts every operation accepted and not yet decided that the broker
//! holds ready: the work queue plus the delay queues of operations waiting for a retry (those a
//! worker holds unacknowledged are not in the broker's ready count). `null` means unknown: the
//! dependency did not answer.
//!
//! `auth` says how callers are told apart: `"jwt"` (bearer tokens) or `"off"` (development
//! mode: everyone is the default user); `user` is the caller. The sync figures are the
//! caller's own, and so, with authentication on, is `dead_letter_count` (their operations parked
//! for good, from the failure records). The queue figures (`pending_sync_count`,
//! `sync_queue_size`, `retry_queue_size`, `worker_count`) are the service's backlog, the
//! broker's counts over every user, with no id or content in them: the broker cannot count one
//! user's messages, and the backlog is what tells a client how soon its writes apply. In
//! development mode the service has one user, and `dead_letter_count` is the parking queue's
//! depth (unreadable messages included).
//!
//! `in_flight_count` is what the workers hold received and not yet acknowledged (being applied,
//! settled, or held for the database), and `oldest_in_flight_age_ms` how long the oldest of them
//! has been held (`null` when none): from the workers' heartbeat rows, written every second by
//! each worker and read when fresh (10 s). A frozen worker keeps beating from its own task, so
//! its age keeps growing: that is the signal. Service-wide, like the queue figures.
//!
//! Cheap whatever the caller does: queue depths come from the broker module's sampler (one
//! channel, one sample a second shared by every caller), the sync figures from two index
//! lookups (`storage::sync_summary`).

use std::time::Duration;

use axum::{Json, extract::State};
use chrono::Utc;
use serde_json::{Value, json};

use crate::{extract::CurrentUser, state::AppState, storage};

#[utoipa::path(
    get,
    path = "/api/status",
    operation_id = "get_status",
    tag = "service",
    summary = "Queue depths and the caller's sync state",
    description = "`null` means unknown: the dependency did not answer. The queue figures are \
        the service's backlog over every user; the sync figures are the caller's.",
    responses((status = 200, description = "The figures", body = crate::openapi::bodies::StatusReport)),
)]
pub async fn status(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Json<Value> {
    let topology = state.broker.topology();
    // Bounded twice: the sampler answers within its own wait, and this caps the wait for it.
    let depths = tokio::time::timeout(Duration::from_secs(3), state.broker.queue_depths())
        .await
        .ok()
        .flatten();
    let queue = |name: String| {
        depths
            .as_ref()
            .and_then(|d| d.iter().find(|q| q.name == name).cloned())
    };
    let work = depths
        .as_deref()
        .and_then(|d| crate::broker::work_queues(topology, d));
    let sync_queue_size = work.as_ref().map(|w| w.ready);
    let retry_queue_size = topology
        .retry_queues()
        .into_iter()
        .map(|name| queue(name).map(|q| q.ready))
        .sum::<Option<u32>>();
    let pending_sync_count = sync_queue_size.zip(retry_queue_size).map(|(w, r)| w + r);
    let parked_in_queue = queue(topology.parking_queue()).map(|q| q.ready);
    let workers = work.as_ref().map(|w| w.consumers);
    let partitions = work.as_ref().map(|w| {
        w.partitions
            .iter()
            .map(|q| json!({"queue": q.name, "ready": q.ready, "consumers": q.consumers}))
            .collect::<Vec<_>>()
    });
    let summary = tokio::time::timeout(
        Duration::from_secs(3),
        storage::sync_summary(&state.db, &user),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let dead_letter_count = if state.auth.is_on() {
        summary.as_ref().map(|s| s.parked_operations)
    } else {
        parked_in_queue.map(i64::from)
    };
    let broker_online = depths.is_some();
    let database_online = summary.is_some();
    Json(json!({
        "auth": state.auth.mode(),
        "user": user,
        "pending_sync_count": pending_sync_count,
        "sync_queue_size": sync_queue_size,
        "retry_queue_size": retry_queue_size,
        "dead_letter_count": dead_letter_count,
        "worker_count": workers,
        "work_partitions": partitions,
        "in_flight_count": summary.as_ref().map(|s| s.in_flight),
        "oldest_in_flight_age_ms": summary
            .as_ref()
            .and_then(|s| s.oldest_in_flight_at)
            .map(|at| (Utc::now() - at).num_milliseconds().max(0)),
        "error_task_count": summary.as_ref().map(|s| s.errored_tasks),
        "last_sync_timestamp": summary.as_ref().and_then(|s| s.last_sync),
        "is_online": broker_online && database_online,
        "broker_online": broker_online,
        "database_online": database_online,
        "server_time": Utc::now(),
    }))
}
