//! Doc-only schemas of bodies that handlers build as JSON values or read item by item; their
//! faithfulness is checked against live answers by schemathesis
//! (`response_schema_conformance`).
#![allow(dead_code)] // descriptions, never built

use chrono::{DateTime, Utc};
use tasksync_shared::OpKind;
use utoipa::ToSchema;
use uuid::Uuid;

/// `GET /api/health`.
#[derive(Debug, ToSchema)]
pub struct Health {
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
    timestamp: DateTime<Utc>,
}

/// One dependency's state.
#[derive(Debug, ToSchema)]
pub struct Check {
    #[schema(value_type = String, pattern = "^(up|down)$")]
    status: &'static str,
    /// Why it is down.
    error: Option<String>,
}

/// The dependencies checked by `/api/ready`.
#[derive(Debug, ToSchema)]
pub struct Checks {
    postgres: Check,
    rabbitmq: Check,
    /// Only with `JWT_JWKS_URL`: whether the key set has been fetched.
    jwks: Option<Check>,
}

/// `GET /api/ready`; when not ready, also the error fields (`error` names what is down).
#[derive(Debug, ToSchema)]
pub struct Readiness {
    #[schema(value_type = String, pattern = "^(ready|unavailable)$")]
    status: &'static str,
    timestamp: DateTime<Utc>,
    checks: Checks,
    error: Option<String>,
    /// `unavailable` when not ready (the error body's `code`).
    code: Option<String>,
    path: Option<String>,
}

/// `GET /api/status`. `null` means unknown: the dependency did not answer. The queue
/// figures are the service's backlog over every user; the sync figures are the caller's.
#[derive(Debug, ToSchema)]
pub struct StatusReport {
    /// `jwt` (bearer tokens) or `off` (development mode).
    #[schema(value_type = String, pattern = "^(jwt|off)$")]
    auth: &'static str,
    /// The caller.
    user: String,
    /// Operations accepted, not yet decided, that the broker holds ready (work queue plus
    /// delay queues).
    pending_sync_count: Option<u32>,
    sync_queue_size: Option<u32>,
    retry_queue_size: Option<u32>,
    /// Operations parked for good (the caller's with authentication on).
    dead_letter_count: Option<i64>,
    /// Workers consuming the least-served work partition (with one partition: the workers);
    /// 0 means some partition has no worker.
    worker_count: Option<u32>,
    /// Every work partition (`WORK_PARTITIONS`), partition 0 first; `null` when the broker did
    /// not answer.
    work_partitions: Option<Vec<WorkPartition>>,
    /// Operations the workers hold received and not yet decided (every worker with a fresh
    /// heartbeat); `null` when the database did not answer.
    in_flight_count: Option<i64>,
    /// How long the oldest of them has been held, in milliseconds; `null` when none is.
    oldest_in_flight_age_ms: Option<i64>,
    error_task_count: Option<i64>,
    last_sync_timestamp: Option<DateTime<Utc>>,
    is_online: bool,
    broker_online: bool,
    database_online: bool,
    server_time: DateTime<Utc>,
}

/// One work partition in `GET /api/status`.
#[derive(Debug, ToSchema)]
pub struct WorkPartition {
    /// The partition's work queue.
    queue: String,
    /// Operations ready in it.
    ready: u32,
    /// Workers consuming it.
    consumers: u32,
}

/// The body of `POST /api/sync` and `POST /api/batch`.
#[derive(Debug, ToSchema)]
pub struct PushRequest {
    /// The operations, answered each in its slot (at most `MAX_BATCH_ITEMS`, default 1000).
    items: Vec<PushItem>,
    /// The device's clock when it sent the push (informative).
    client_timestamp: Option<DateTime<Utc>>,
    /// The pushing device's name (1 to 64 characters of `A-Z a-z 0-9 . _ : -`), as an
    /// alternative to the `Device-Id` header; if both are given they must agree.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:-]{1,64}$")]
    device_id: Option<String>,
}

/// One queued operation. A bad item is an `error` in its own slot; the others go on.
#[derive(Debug, ToSchema)]
pub struct PushItem {
    /// The op id: the client's UUID, the idempotency key of the operation.
    id: Uuid,
    task_id: Uuid,
    operation: OpKind,
    /// The fields to set (ignored for a delete).
    data: Option<PushData>,
    /// When the device queued the operation; its write time unless `data.updated_at`
    /// says when the task changed. Required unless `data.updated_at` is given.
    created_at: Option<DateTime<Utc>>,
    /// The device's own retry counter (informative).
    retry_count: Option<i64>,
}

/// The fields of a pushed operation; `null` for `title` or `completed` means not given,
/// `null` for `description` clears it.
#[derive(Debug, ToSchema)]
pub struct PushData {
    #[schema(max_length = 500)]
    title: Option<String>,
    #[schema(max_length = 10000)]
    description: Option<String>,
    completed: Option<bool>,
    /// When the device changed the task.
    updated_at: Option<DateTime<Utc>>,
}
