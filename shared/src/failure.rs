//! What travels with a failed operation: headers of our own on the retry and parked copies.
//!
//! Attempts are counted in `tasksync-attempts`, not in `x-death`: RabbitMQ 4.x ignores `x-death`
//! on messages a client republishes, and 3.13.0–3.13.2 miscounted it, so only a header we set
//! ourselves means the same on every broker version.

use chrono::{DateTime, Utc};
use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString},
};

/// Header names (none starts with `x-`, which the broker reserves).
pub mod header {
    /// Failed attempts so far.
    pub const ATTEMPTS: &str = "tasksync-attempts";
    pub const FIRST_FAILED_AT: &str = "tasksync-first-failed-at";
    pub const LAST_FAILED_AT: &str = "tasksync-last-failed-at";
    pub const LAST_ERROR: &str = "tasksync-last-error";
    /// The routing key the api published the operation with.
    pub const ORIGINAL_ROUTING_KEY: &str = "tasksync-original-routing-key";
    /// The failure record's key: the op id; for a message that cannot be decoded, its AMQP
    /// `message_id`, or else a hash of its body (the same on every redelivery).
    pub const MESSAGE_ID: &str = "tasksync-message-id";
    pub const OP_ID: &str = "tasksync-op-id";
    pub const TASK_ID: &str = "tasksync-task-id";
    pub const USER_ID: &str = "tasksync-user-id";
    /// Why the message was parked.
    pub const PARKED_REASON: &str = "tasksync-parked-reason";
    /// Redeliveries seen by the classic-queue crash-loop guard.
    pub const REDELIVERIES: &str = "tasksync-redeliveries";
    /// Set by `taskctl dlq replay`: the operation's earlier `error` outcome is to be replaced.
    pub const REPLAY: &str = "tasksync-replay";
    /// Not a failure header: when the api received the operation, Unix milliseconds (the
    /// AMQP `timestamp` property has whole seconds only), for the worker's queue lag. Set by
    /// the api, kept by every copy and replay.
    pub const RECEIVED_MS: &str = "tasksync-received-ms";
    /// Every header above: what a replay strips to start afresh (it then sets [`REPLAY`]).
    pub const ALL: [&str; 12] = [
        ATTEMPTS,
        FIRST_FAILED_AT,
        LAST_FAILED_AT,
        LAST_ERROR,
        ORIGINAL_ROUTING_KEY,
        MESSAGE_ID,
        OP_ID,
        TASK_ID,
        USER_ID,
        PARKED_REASON,
        REDELIVERIES,
        REPLAY,
    ];
}

/// Where a failure record (`operation_failures.state`) stands. Records move
/// `retrying → parked → replayed → resolved`, or `parked → purged`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordState {
    /// An attempt failed; the operation waits in a delay queue for its next one.
    Retrying,
    /// Every attempt failed (or the message could not be read); it sits in the parking queue.
    Parked,
    /// `taskctl dlq replay` sent it back to the work queue.
    Replayed,
    /// A later attempt or the replay decided it.
    Resolved,
    /// `taskctl dlq purge` removed it from the parking queue.
    Purged,
}

impl RecordState {
    pub const ALL: [Self; 5] = [
        Self::Retrying,
        Self::Parked,
        Self::Replayed,
        Self::Resolved,
        Self::Purged,
    ];

    /// The spelling in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retrying => "retrying",
            Self::Parked => "parked",
            Self::Replayed => "replayed",
            Self::Resolved => "resolved",
            Self::Purged => "purged",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// Reads a string header.
pub fn header_str(properties: &BasicProperties, name: &str) -> Option<String> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Reads an integer header (any integer width) that fits a `u32`.
pub fn header_u32(properties: &BasicProperties, name: &str) -> Option<u32> {
    header_i64(properties, name).and_then(|n| u32::try_from(n).ok())
}

/// Reads an integer header as `i64` (any integer width).
pub fn header_i64(properties: &BasicProperties, name: &str) -> Option<i64> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    Some(match value {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    })
}

pub fn set_i64(table: &mut FieldTable, name: &str, value: i64) {
    table.insert(name.into(), AMQPValue::LongLongInt(value));
}

/// Reads a timestamp header written by [`set_time`].
pub fn header_time(properties: &BasicProperties, name: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&header_str(properties, name)?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub fn set_str(table: &mut FieldTable, name: &str, value: &str) {
    table.insert(
        name.into(),
        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
    );
}

pub fn set_u32(table: &mut FieldTable, name: &str, value: u32) {
    table.insert(name.into(), AMQPValue::LongLongInt(value.into()));
}

pub fn set_time(table: &mut FieldTable, name: &str, value: DateTime<Utc>) {
    set_str(table, name, &value.to_rfc3339());
}

/// The headers of `properties` without ours, for a replay that starts afresh.
pub fn without_our_headers(properties: &BasicProperties) -> FieldTable {
    let mut table = FieldTable::default();
    if let Some(headers) = properties.headers() {
        for (name, value) in headers.inner() {
            if !header::ALL.contains(&name.as_str()) {
                table.insert(name.clone(), value.clone());
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_ours_can_be_stripped() {
        let mut table = FieldTable::default();
        set_u32(&mut table, header::ATTEMPTS, 3);
        set_str(&mut table, header::LAST_ERROR, "boom");
        let now = crate::model::to_db_precision(Utc::now());
        set_time(&mut table, header::FIRST_FAILED_AT, now);
        set_str(&mut table, "trace-id", "abc");
        let props = BasicProperties::default().with_headers(table);
        assert_eq!(header_u32(&props, header::ATTEMPTS), Some(3));
        assert_eq!(
            header_str(&props, header::LAST_ERROR).as_deref(),
            Some("boom")
        );
        assert_eq!(header_time(&props, header::FIRST_FAILED_AT), Some(now));
        assert_eq!(header_u32(&props, header::REDELIVERIES), None);
        let stripped = without_our_headers(&props);
        assert_eq!(stripped.inner().len(), 1);
        assert!(stripped.contains_key("trace-id"));
    }

    #[test]
    fn record_states_round_trip_through_their_column_spelling() {
        for state in RecordState::ALL {
            assert_eq!(RecordState::from_db(state.as_str()), Some(state));
        }
        assert_eq!(RecordState::from_db("gone"), None);
    }
}
