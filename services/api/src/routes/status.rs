//! `GET /api/status`: queue depths from the broker, sync state from the database.
//!
//! `pending_sync_count` counts every operation accepted and not yet decided that the broker
//! holds ready: the work queue plus the delay queues of operations waiting for a retry (those a
//! worker holds unacknowledged are not in the broker's ready count). `null` means unknown: the
//! dependency did not answer.

use std::time::Duration;

use axum::{Json, extract::State};
use chrono::Utc;
use serde_json::{Value, json};

use crate::{extract::CurrentUser, state::AppState, storage};

pub async fn status(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> Json<Value> {
    let topology = state.broker.topology();
    let depths = tokio::time::timeout(Duration::from_secs(3), state.broker.queue_depths())
        .await
        .ok()
        .and_then(Result::ok);
    let depth_of = |name: String| {
        depths.as_ref().and_then(|d| {
            d.iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, count, _)| *count)
        })
    };
    let sync_queue_size = depth_of(topology.work_queue());
    let retry_queue_size = topology
        .retry_queues()
        .into_iter()
        .map(depth_of)
        .sum::<Option<u32>>();
    let pending_sync_count = sync_queue_size.zip(retry_queue_size).map(|(w, r)| w + r);
    let dead_letter_count = depth_of(topology.parking_queue());
    let workers = depths.as_ref().and_then(|d| {
        d.iter()
            .find(|(n, _, _)| *n == topology.work_queue())
            .map(|(_, _, consumers)| *consumers)
    });
    let summary = tokio::time::timeout(
        Duration::from_secs(3),
        storage::sync_summary(&state.db, &user),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let broker_online = depths.is_some();
    let database_online = summary.is_some();
    Json(json!({
        "pending_sync_count": pending_sync_count,
        "sync_queue_size": sync_queue_size,
        "retry_queue_size": retry_queue_size,
        "dead_letter_count": dead_letter_count,
        "worker_count": workers,
        "error_task_count": summary.as_ref().map(|s| s.errored_tasks),
        "last_sync_timestamp": summary.as_ref().and_then(|s| s.last_sync),
        "is_online": broker_online && database_online,
        "broker_online": broker_online,
        "database_online": database_online,
        "server_time": Utc::now(),
    }))
}
