//! The wire shapes of offline sync (SPEC §3, docs/sync-protocol.md): the push request and its
//! answer, a page of the changes feed, and one operation's outcome. The api serializes them;
//! the offline client (`tasksync-client`) builds requests and reads answers with the same types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    model::Task,
    operation::{ItemStatus, OpKind, OperationFields, OutcomeStatus, Rejection},
};

/// `POST /api/sync` (and `/api/batch`): the queued operations of one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    pub items: Vec<PushItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_timestamp: Option<DateTime<Utc>>,
    /// The pushing device's name, as the `Device-Id` header would give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// One queued operation. `id` is the op id, the idempotency key: kept across every retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushItem {
    pub id: Uuid,
    pub task_id: Uuid,
    pub operation: OpKind,
    pub data: ItemData,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub retry_count: u32,
}

/// The fields an item sets, and when the device made the edit (its last-write-wins time).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemData {
    #[serde(flatten)]
    pub fields: OperationFields,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// The answer for one pushed item, in the item's position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Processed {
    /// The item's `task_id`.
    pub client_id: Option<String>,
    /// The item's `id` (op id).
    pub op_id: Option<String>,
    /// The task's id as the server keeps it, once applied.
    pub server_id: Option<String>,
    pub status: ItemStatus,
    /// The task after the operation (the winning task on a conflict); null on error or while
    /// pending.
    pub resolved_data: Option<Task>,
    /// Why the item is an `error`, for people (a field rule names the field first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the item is an `error`, for programs: one of [`ITEM_CODES`] (absent unless `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "invalid_request",
            pattern = "^(invalid_request|not_found|exists|conflict|precondition_failed|operation_failed)$"
        )
    )]
    pub code: Option<String>,
}

/// An item answered `error`, listed again with its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemError {
    pub task_id: Option<String>,
    pub operation: Option<String>,
    pub error: String,
    /// The item's machine code, as in its `processed_items` slot (one of [`ITEM_CODES`]).
    /// Read as `operation_failed` from a server that does not send it.
    #[serde(default = "unknown_code")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "invalid_request",
            pattern = "^(invalid_request|not_found|exists|conflict|precondition_failed|operation_failed)$"
        )
    )]
    pub code: String,
    pub timestamp: DateTime<Utc>,
}

/// The machine codes of item errors: the error `code`s the REST routes answer for the same
/// refusals.
///
/// - `invalid_request`: the item breaks a rule (its `error` names the field); never published.
/// - `not_found`: the task is not the caller's.
/// - `exists`: an exclusive create found its id taken.
/// - `conflict`: the op id was already used for an operation with other content (or the worker
///   refused it for a reason it did not class).
/// - `precondition_failed`: a precondition did not hold when the worker applied it.
/// - `operation_failed`: every attempt failed; the operation is parked for operators.
pub const ITEM_CODES: [&str; 6] = [
    "invalid_request",
    "not_found",
    "exists",
    "conflict",
    "precondition_failed",
    "operation_failed",
];

/// The code of an item the worker refused, from the refusal's class (`None`: the worker gave
/// none, answered as the REST routes do, `conflict`).
pub fn item_code(rejection: Option<Rejection>) -> &'static str {
    rejection.map_or("conflict", Rejection::code)
}

fn unknown_code() -> String {
    "operation_failed".into()
}

/// The answer to a push: every item in its slot, and the counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushResponse {
    pub processed_items: Vec<Processed>,
    /// No item failed.
    pub success: bool,
    /// Applied: `success` plus `conflict` items.
    pub synced_items: usize,
    pub conflict_items: usize,
    pub failed_items: usize,
    pub pending_items: usize,
    pub errors: Vec<ItemError>,
    pub server_time: DateTime<Utc>,
}

/// `GET /api/changes`: one page of the caller's changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangesPage {
    /// The changed tasks, each as it is now (a task changed twice appears once, at its latest
    /// change).
    pub changes: Vec<Task>,
    /// The caller's operations decided within this page's range of the feed, each once over
    /// the whole feed: how a client that was answered `pending` learns the outcome.
    #[serde(default)]
    pub acks: Vec<Ack>,
    /// Where the next page starts. On the last page (`has_more` false) it is the end of the
    /// feed, so it may move even when the page is empty.
    pub next_cursor: String,
    /// More changes or acknowledgements are ready past this page.
    pub has_more: bool,
    pub server_time: DateTime<Utc>,
}

/// One of the caller's operations, decided: its acknowledgement in the changes feed. Every
/// decision is acknowledged once, a write that changed nothing and one that failed for good
/// included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ack {
    pub op_id: Uuid,
    pub task_id: Uuid,
    pub operation: OpKind,
    /// `success` (won every field it wrote), `conflict` (applied, lost some field to a later
    /// write) or `error` (can never apply, or failed every attempt).
    pub outcome: OutcomeStatus,
    /// Why it is an `error`, in words meant for the client (never the database's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub decided_at: DateTime<Utc>,
}

/// `GET /api/sync/operations/{op_id}`: what became of one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperationStatus {
    pub op_id: Uuid,
    pub task_id: Uuid,
    /// `create`, `update` or `delete`.
    #[cfg_attr(feature = "openapi", schema(value_type = OpKind))]
    pub operation: String,
    /// `success`, `conflict`, `error`, or `pending` while the worker retries it.
    #[cfg_attr(feature = "openapi", schema(value_type = ItemStatus))]
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// The last-write-wins time the operation was applied with (after clamping).
    pub client_timestamp: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
    /// The caller's task as it is now (null when it does not exist for the caller).
    pub resolved_data: Option<Task>,
    pub server_time: DateTime<Utc>,
}

/// One side of a conflict: a value of the field, the stamp of the write that set it (or tried
/// to), and the device that pushed that write when it named itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConflictSide {
    /// A string for `title`, a string or null for `description`, a boolean for `completed`
    /// and `deleted`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub value: serde_json::Value,
    /// The write's last-write-wins time.
    pub at: DateTime<Utc>,
    pub op_id: Uuid,
    /// From the operation log; null when the write named no device (or its log row was pruned).
    pub device_id: Option<String>,
}

/// A field a write lost: its stamp was older than the stored one and the values differed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConflictRecord {
    pub task_id: Uuid,
    /// `title`, `description`, `completed` or `deleted`.
    pub field: String,
    /// The value that stayed, and the later write that set it.
    pub kept: ConflictSide,
    /// The value of the arriving write that lost.
    pub lost: ConflictSide,
    /// When the worker decided the losing write.
    pub recorded_at: DateTime<Utc>,
}

/// The select list and joins that [`ConflictRecord::from_row`] reads, over `task_conflicts c`;
/// the devices come from the operation log. Callers add `WHERE`, `ORDER BY c.id DESC` and
/// `LIMIT`.
pub const CONFLICT_SELECT: &str = "SELECT c.id, c.task_id, c.user_id, c.field, c.kept_value, \
       c.kept_at, c.kept_op, c.lost_value, c.lost_at, c.lost_op, c.recorded_at, \
       ko.device_id AS kept_device, lo.device_id AS lost_device \
     FROM task_conflicts c \
     LEFT JOIN operations ko ON ko.op_id = c.kept_op \
     LEFT JOIN operations lo ON lo.op_id = c.lost_op";

impl ConflictRecord {
    /// A row of [`CONFLICT_SELECT`].
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        let side = |kind: &str| -> Result<ConflictSide, tokio_postgres::Error> {
            Ok(ConflictSide {
                value: row.try_get(format!("{kind}_value").as_str())?,
                at: row.try_get(format!("{kind}_at").as_str())?,
                op_id: row.try_get(format!("{kind}_op").as_str())?,
                device_id: row.try_get(format!("{kind}_device").as_str())?,
            })
        };
        Ok(Self {
            task_id: row.try_get("task_id")?,
            field: row.try_get("field")?,
            kept: side("kept")?,
            lost: side("lost")?,
            recorded_at: row.try_get("recorded_at")?,
        })
    }
}

/// `GET /api/tasks/{id}/conflicts`: one page of a task's conflict history, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConflictsPage {
    pub conflicts: Vec<ConflictRecord>,
    /// Where the next (older) page starts; null when this page is the last.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_spelled_as_the_protocol_says_and_reads_back() {
        let at = DateTime::parse_from_rfc3339("2026-11-25T09:12:00.000001Z")
            .unwrap()
            .with_timezone(&Utc);
        let item = PushItem {
            id: Uuid::from_u128(1),
            task_id: Uuid::from_u128(2),
            operation: OpKind::Update,
            data: ItemData {
                fields: OperationFields {
                    description: Some(None),
                    completed: Some(true),
                    ..Default::default()
                },
                updated_at: Some(at),
            },
            created_at: at,
            retry_count: 0,
        };
        let json = serde_json::to_value(&item).unwrap();
        assert_eq!(json["operation"], "update");
        assert_eq!(json["data"]["completed"], true);
        assert!(json["data"]["description"].is_null());
        assert!(json["data"].get("title").is_none());
        assert_eq!(json["data"]["updated_at"], "2026-11-25T09:12:00.000001Z");
        let back: PushItem = serde_json::from_value(json).unwrap();
        assert_eq!(back, item);
    }

    #[test]
    fn every_refusal_has_one_of_the_documented_item_codes() {
        use Rejection::*;
        for rejection in [
            Invalid,
            NotFound,
            Failed,
            Exists,
            OpIdReused,
            PreconditionFailed,
        ] {
            assert!(
                ITEM_CODES.contains(&item_code(Some(rejection))),
                "{rejection:?}"
            );
        }
        assert_eq!(item_code(None), "conflict");
        assert_eq!(item_code(Some(PreconditionFailed)), "precondition_failed");
    }
}
