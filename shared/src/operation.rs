//! Operations and the messages that carry them.
//!
//! The api publishes one [`Operation`] per message (JSON with a schema version `v`); the worker
//! answers with [`ReplyBatch`]es of [`OutcomeReport`]s, one reply message per api instance per
//! applied batch.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::model::Task;

/// Version of the operation and reply message bodies. A worker parks messages of other versions.
pub const SCHEMA_VERSION: u32 = 1;

/// What an operation does to its task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Create,
    Update,
    Delete,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    /// The kind [`OpKind::as_str`] spells `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Create, Self::Update, Self::Delete]
            .into_iter()
            .find(|kind| kind.as_str() == s)
    }
}

/// The fields an operation names. `description: Some(None)` clears the description;
/// `None` leaves it alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub description: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<bool>,
}

impl OperationFields {
    /// The fields as the operation log stores them (jsonb). jsonb refuses `\u0000`, so a NUL
    /// (only ever in an operation decided invalid) is stored as U+FFFD: recording a decision
    /// can never fail on its content. Also what a logged operation is compared with.
    pub fn storable_json(&self) -> serde_json::Value {
        let text = |s: &String| storable_text(s).into_owned();
        serde_json::to_value(Self {
            title: self.title.as_ref().map(text),
            description: self.description.as_ref().map(|d| d.as_ref().map(text)),
            completed: self.completed,
        })
        .unwrap_or_default()
    }
}

/// `s` as a Postgres text column can hold it: NUL, which Postgres refuses in text and jsonb,
/// becomes U+FFFD. For what is recorded about an operation that was decided invalid.
pub fn storable_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Deserializes a field that is present (even as `null`) into `Some(value)`, so that an absent
/// field (`None`, via `#[serde(default)]`) differs from an explicit `null` (`Some(None)`).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// One create, update or delete of one task, as the api accepted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Idempotency key: chosen by the client for sync batches, by the api for REST writes.
    pub op_id: Uuid,
    pub task_id: Uuid,
    pub user_id: String,
    pub kind: OpKind,
    pub fields: OperationFields,
    /// The last-write-wins time: the client's timestamp, never later than `received_at`.
    pub stamped_at: DateTime<Utc>,
    /// When the api received the operation.
    pub received_at: DateTime<Utc>,
    /// A create that must not touch an existing task (REST `POST /api/tasks`): the worker
    /// decides it `error` ([`Rejection::Exists`]) when the id is taken, by any task in any
    /// state, so that of two creates with one id exactly one wins. Pushed creates leave it
    /// false and merge under last-write-wins. Absent in messages of pushes and of older apis.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub if_absent: bool,
    /// A REST write's `If-Match` header, as sent (`*` or a list of entity tags): the worker
    /// compares it with the locked task's current tag ([`crate::etag`]) and decides `error`
    /// ([`Rejection::PreconditionFailed`]) when it does not hold, writing nothing. Absent in
    /// messages of pushes, of writes without the header and of older apis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
    /// The device that pushed it (`Device-Id` header or the push's `device_id`, checked by
    /// [`crate::device::check_device_id`]), written to the operation log and counted in the
    /// device's figures. Absent when the client did not name itself, and in older messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

impl Operation {
    /// Whether the api clamped the client's stamp to its receive time (a device clock ahead,
    /// or a REST write). Pushed again, such an item is stamped anew, so its stamp says nothing
    /// of its identity.
    pub fn stamp_clamped(&self) -> bool {
        self.stamped_at >= self.received_at
    }
}

#[derive(Serialize)]
struct OperationMessageOut<'a> {
    v: u32,
    #[serde(flatten)]
    op: &'a Operation,
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u32,
}

/// Why a message body could not be turned into an operation. Such a message can never succeed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message body: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unknown message schema version {0} (this worker reads version {SCHEMA_VERSION})")]
    UnknownVersion(u32),
}

impl Operation {
    /// The message body for this operation.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&OperationMessageOut {
            v: SCHEMA_VERSION,
            op: self,
        })
    }

    /// Reads a message body, checking its schema version first.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let VersionProbe { v } = serde_json::from_slice(body)?;
        if v != SCHEMA_VERSION {
            return Err(DecodeError::UnknownVersion(v));
        }
        Ok(serde_json::from_slice(body)?)
    }
}

/// The outcome of one operation (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OutcomeStatus {
    /// It won every field it set.
    Success,
    /// It lost some or all of its fields to later writes.
    Conflict,
    /// It can never apply.
    Error,
}

impl OutcomeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Conflict => "conflict",
            Self::Error => "error",
        }
    }

    pub fn from_db(s: &str) -> Self {
        match s {
            "success" => Self::Success,
            "conflict" => Self::Conflict,
            _ => Self::Error,
        }
    }
}

/// The status of one pushed item in a `/api/batch` or `/api/sync` answer (SPEC §3): an
/// operation's outcome, or `pending` while it is not decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    Success,
    Conflict,
    Error,
    Pending,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Conflict => "conflict",
            Self::Error => "error",
            Self::Pending => "pending",
        }
    }
}

impl From<OutcomeStatus> for ItemStatus {
    fn from(status: OutcomeStatus) -> Self {
        match status {
            OutcomeStatus::Success => Self::Success,
            OutcomeStatus::Conflict => Self::Conflict,
            OutcomeStatus::Error => Self::Error,
        }
    }
}

/// What the worker decided about one operation, sent back to the api that published it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeReport {
    pub op_id: Uuid,
    pub task_id: Uuid,
    /// The logged outcome, or [`ItemStatus::Pending`] for an update or delete merged into a
    /// task that was never created: it holds no title yet, so nobody can read it, and it shows
    /// (with this operation merged) once its create arrives.
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why an `error` outcome can never apply, when the worker knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// The task after the operation (the winning state on a conflict); absent when the
    /// operation was rejected or is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// The worker's own note, never sent: the log (or an earlier copy in the same batch) already
    /// held this operation's outcome, so this report repeats it (a redelivery after a broken
    /// session, a client pushing it again) rather than record a new decision.
    #[serde(skip)]
    pub repeat: bool,
}

/// The class of an `error` outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// The operation breaks a field rule.
    Invalid,
    /// The task is not the caller's (it says no more than "not found").
    NotFound,
    /// Every attempt failed; the operation is parked for operators.
    Failed,
    /// A create that must not touch an existing task found its id taken (by a task of the
    /// caller's, deleted or not, or of someone else's: the message says no more than that
    /// the id exists).
    Exists,
    /// The op id was already used for an operation with other content; that one stands.
    OpIdReused,
    /// The operation's `If-Match` did not hold when the worker locked the task: it changed
    /// since the client read it (or no longer exists). Nothing was written.
    PreconditionFailed,
}

impl Rejection {
    /// The machine code of this refusal: the `code` the REST routes answer for it, which a
    /// push's item error carries too ([`crate::sync::item_code`]).
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "invalid_request",
            Self::NotFound => "not_found",
            Self::Failed => "operation_failed",
            Self::Exists => "exists",
            Self::OpIdReused => "conflict",
            Self::PreconditionFailed => "precondition_failed",
        }
    }
}

/// The error of an operation whose `If-Match` did not hold.
pub const PRECONDITION_MESSAGE: &str =
    "precondition failed: the task changed since it was read (If-Match); fetch it and retry";

/// The error of a create ([`Operation::if_absent`]) whose id is taken. `deleted` is only ever
/// true for the caller's own task: another user's task reads like a live one, so that nothing
/// of its state shows.
pub fn exists_message(task_id: Uuid, deleted: bool) -> String {
    if deleted {
        format!("task id {task_id} belongs to a deleted task; create the task under a new id")
    } else {
        format!("a task with id {task_id} already exists")
    }
}

/// The error of an operation whose op id was already used for another operation.
pub fn reused_message(op_id: Uuid) -> String {
    format!("op id {op_id} was already used for another operation; give each operation its own id")
}

/// Outcomes of one applied batch for one api instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyBatch {
    pub v: u32,
    pub outcomes: Vec<OutcomeReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> Operation {
        let now = crate::model::to_db_precision(Utc::now());
        Operation {
            op_id: Uuid::new_v4(),
            task_id: Uuid::new_v4(),
            user_id: "u".into(),
            kind: OpKind::Update,
            fields: OperationFields {
                title: None,
                description: Some(None),
                completed: Some(true),
            },
            stamped_at: now,
            received_at: now,
            if_absent: false,
            if_match: None,
            device_id: None,
        }
    }

    #[test]
    fn an_operation_survives_the_round_trip_with_an_explicit_null() {
        let op = op();
        let body = op.encode().unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.contains("\"v\":1"), "{text}");
        assert!(text.contains("\"description\":null"), "{text}");
        assert!(!text.contains("\"title\""), "{text}");
        assert_eq!(Operation::decode(&body).unwrap(), op);
        assert!(
            !text.contains("if_absent")
                && !text.contains("if_match")
                && !text.contains("device_id"),
            "a push's message is as before: {text}"
        );
        let exclusive = Operation {
            if_absent: true,
            if_match: Some("\"abc\", \"def\"".into()),
            device_id: Some("phone-1".into()),
            ..op
        };
        assert_eq!(
            Operation::decode(&exclusive.encode().unwrap()).unwrap(),
            exclusive
        );
    }

    #[test]
    fn fields_with_a_nul_are_stored_with_a_replacement_character() {
        let fields = OperationFields {
            title: Some("nul\0title".into()),
            description: Some(Some("\0".into())),
            completed: None,
        };
        let json = fields.storable_json().to_string();
        assert!(!json.contains("\\u0000"), "{json}");
        assert!(json.contains("nul\u{FFFD}title"), "{json}");
        assert_eq!(storable_text("plain"), Cow::Borrowed("plain"));
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let mut value = serde_json::to_value(OperationMessageOut { v: 1, op: &op() }).unwrap();
        value["v"] = 7.into();
        let body = serde_json::to_vec(&value).unwrap();
        assert!(matches!(
            Operation::decode(&body),
            Err(DecodeError::UnknownVersion(7))
        ));
        assert!(matches!(
            Operation::decode(b"not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Operation::decode(b"{\"v\":1}"),
            Err(DecodeError::Malformed(_))
        ));
    }
}
