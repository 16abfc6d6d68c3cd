//! The items of an offline push (`POST /api/batch` and `/api/sync`, SPEC §3), read one by one.
//!
//! The body is taken as loose JSON and each item is checked on its own, so that one bad item
//! (unknown kind, malformed UUID, blank title, bad timestamp, missing field) becomes an `error`
//! in its own slot while the rest of the batch goes on. A good item becomes an [`Operation`]
//! stamped with its client time, clamped to the time the api received it (SPEC §4).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tasksync_shared::{OpKind, Operation, OperationFields, model::to_db_precision, validate};
use uuid::Uuid;

/// An item that cannot become an operation, with what could be read of it for its slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadItem {
    /// The item's `task_id` as sent, when it is a string.
    pub task_id: Option<String>,
    /// The item's `id` (op id) as sent, when it is a string.
    pub op_id: Option<String>,
    /// The item's `operation` as sent, when it is a string.
    pub operation: Option<String>,
    /// `<field>: <reason>`.
    pub error: String,
}

impl BadItem {
    /// The slot of `item`, refused for `error` (`<field>: <reason>`).
    pub fn of(item: &Value, error: String) -> Self {
        let text = |name: &str| item.get(name).and_then(Value::as_str).map(str::to_string);
        Self {
            task_id: text("task_id"),
            op_id: text("id"),
            operation: text("operation"),
            error,
        }
    }
}

/// Reads one item for `user`. `received_at` is when the api received the request (already at
/// database precision): no item is stamped later than that, so a device whose clock runs ahead
/// cannot win the future.
pub fn read_item(
    item: &Value,
    user: &str,
    received_at: DateTime<Utc>,
) -> Result<Operation, BadItem> {
    let Some(object) = item.as_object() else {
        return Err(BadItem::of(item, "item: must be an object".into()));
    };
    parse(object, user, received_at).map_err(|error| BadItem::of(item, error))
}

fn parse(
    item: &Map<String, Value>,
    user: &str,
    received_at: DateTime<Utc>,
) -> Result<Operation, String> {
    let op_id = uuid(item, "id")?;
    let task_id = uuid(item, "task_id")?;
    let kind = match item.get("operation").and_then(Value::as_str) {
        Some("create") => OpKind::Create,
        Some("update") => OpKind::Update,
        Some("delete") => OpKind::Delete,
        _ => return Err("operation: must be one of create, update, delete".into()),
    };
    let empty = Map::new();
    let data = match item.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(data)) => data,
        Some(_) => return Err("data: must be an object".into()),
    };
    // The write's time: when the device changed the task, else when it queued the operation.
    // Both are checked whichever is used.
    let updated_at = timestamp(data, "updated_at")?;
    let created_at = timestamp(item, "created_at")?;
    let client_time = updated_at
        .or(created_at)
        .ok_or("created_at: is required (or data.updated_at)")?;
    let fields = match kind {
        // A delete writes only the deleted flag; whatever else it carries is not applied.
        OpKind::Delete => OperationFields::default(),
        _ => validate::normalize(kind, fields(data)?).map_err(|e| e.to_string())?,
    };
    Ok(Operation {
        op_id,
        task_id,
        user_id: user.to_string(),
        kind,
        fields,
        stamped_at: to_db_precision(client_time.min(received_at)),
        received_at,
        // A pushed create merges under last-write-wins with what exists.
        if_absent: false,
        if_match: None,
        device_id: None,
    })
}

fn uuid(item: &Map<String, Value>, name: &str) -> Result<Uuid, String> {
    match item.get(name) {
        None | Some(Value::Null) => Err(format!("{name}: is required")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("{name}: must be a UUID, got {s:?}")),
        Some(_) => Err(format!("{name}: must be a UUID string")),
    }
}

/// An optional client timestamp: RFC 3339, within [`validate::stamp`]'s bounds.
pub fn timestamp(
    object: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<DateTime<Utc>>, String> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => validate::parse_stamp(name, s)
            .map(Some)
            .map_err(|e| e.to_string()),
        Some(_) => Err(format!("{name}: must be an RFC 3339 timestamp string")),
    }
}

/// The task fields of `data`. As in a REST body, `null` means absent (`title`, `completed`),
/// except for `description`, where `null` clears it.
fn fields(data: &Map<String, Value>) -> Result<OperationFields, String> {
    let title = match data.get("title") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("title: must be a string".into()),
    };
    let description = match data.get("description") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => return Err("description: must be a string or null".into()),
    };
    let completed = match data.get("completed") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err("completed: must be true or false".into()),
    };
    Ok(OperationFields {
        title,
        description,
        completed,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use chrono::Duration;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        to_db_precision(Utc::now())
    }

    fn item(operation: &str, data: Value) -> Value {
        json!({
            "id": Uuid::new_v4(), "task_id": Uuid::new_v4(), "operation": operation,
            "data": data, "created_at": "2026-01-02T03:04:05.123456789Z", "retry_count": 0,
        })
    }

    #[test]
    fn a_good_item_becomes_an_operation_stamped_with_its_update_time() {
        let at = now();
        let stamp = at - Duration::minutes(5);
        let data = json!({"title": " t ", "description": null, "updated_at": stamp.to_rfc3339()});
        let op = read_item(&item("update", data), "u", at).unwrap();
        assert_eq!(op.kind, OpKind::Update);
        assert_eq!(op.fields.title.as_deref(), Some("t"));
        assert_eq!(op.fields.description, Some(None));
        assert_eq!(op.stamped_at, stamp);
        assert_eq!(op.received_at, at);
    }

    #[test]
    fn created_at_stands_in_for_a_missing_update_time_at_microsecond_precision() {
        let op = read_item(&item("create", json!({"title": "t"})), "u", now()).unwrap();
        assert_eq!(
            op.stamped_at.to_rfc3339(),
            "2026-01-02T03:04:05.123456+00:00"
        );
    }

    #[test]
    fn a_clock_in_the_future_is_clamped_to_the_receive_time() {
        let at = now();
        let ahead = (at + Duration::days(1)).to_rfc3339();
        let op = read_item(
            &item("update", json!({"completed": true, "updated_at": ahead})),
            "u",
            at,
        );
        assert_eq!(op.unwrap().stamped_at, at);
    }

    #[test]
    fn a_delete_writes_nothing_but_the_flag() {
        let op = read_item(&item("delete", json!({"title": ""})), "u", now()).unwrap();
        assert_eq!(op.fields, OperationFields::default());
    }

    #[test]
    fn each_bad_item_names_its_field() {
        let cases = [
            (json!(5), "item"),
            (json!({"id": "x"}), "id"),
            (json!({"id": Uuid::new_v4(), "task_id": 7}), "task_id"),
            (item("rename", json!({})), "operation"),
            (item("create", json!({"title": "   "})), "title"),
            (item("create", json!({})), "title"),
            (item("update", json!({"completed": "yes"})), "completed"),
            (item("update", json!({"description": 3})), "description"),
            (
                item("update", json!({"title": "t", "updated_at": "yesterday"})),
                "updated_at",
            ),
            (item("update", json!("t")), "data"),
            (
                json!({"id": Uuid::new_v4(), "task_id": Uuid::new_v4(), "operation": "delete"}),
                "created_at",
            ),
        ];
        for (value, field) in cases {
            let bad = read_item(&value, "u", now()).unwrap_err();
            assert!(
                bad.error.starts_with(&format!("{field}: ")),
                "{value}: {bad:?}"
            );
        }
        let bad = read_item(&item("rename", json!({})), "u", now()).unwrap_err();
        assert_eq!(bad.operation.as_deref(), Some("rename"));
        assert!(bad.task_id.is_some() && bad.op_id.is_some());
    }

    #[test]
    fn timestamps_outside_the_epoch_to_year_9999_are_refused_wherever_they_are() {
        let at = now();
        let mut early = item(
            "update",
            json!({"title": "t", "updated_at": "0000-01-01T00:00:00+23:59"}),
        );
        let bad = read_item(&early, "u", at).unwrap_err();
        assert!(
            bad.error.starts_with("updated_at: ") && bad.error.contains("1970"),
            "{bad:?}"
        );
        // created_at is checked even when data.updated_at is the stamp used.
        early["data"]["updated_at"] = json!("2026-01-01T00:00:00Z");
        early["created_at"] = json!("1969-12-31T23:59:59Z");
        let bad = read_item(&early, "u", at).unwrap_err();
        assert!(bad.error.starts_with("created_at: "), "{bad:?}");
        early["created_at"] = json!("9999-12-31T23:59:59-01:00");
        let bad = read_item(&early, "u", at).unwrap_err();
        assert!(
            bad.error.starts_with("created_at: ") && bad.error.contains("9999"),
            "{bad:?}"
        );
        early["created_at"] = json!("1970-01-01T00:00:00Z");
        assert!(read_item(&early, "u", at).is_ok());
    }

    #[test]
    fn null_title_and_completed_mean_absent_and_null_description_clears() {
        let op = read_item(
            &item(
                "update",
                json!({"title": null, "completed": null, "description": null}),
            ),
            "u",
            now(),
        )
        .unwrap();
        assert_eq!(
            op.fields,
            OperationFields {
                title: None,
                description: Some(None),
                completed: None
            }
        );
        let bad = read_item(&item("create", json!({"title": null})), "u", now()).unwrap_err();
        assert_eq!(bad.error, "title: is required");
    }

    #[test]
    fn control_characters_in_text_fields_are_item_errors() {
        let bad = read_item(
            &item("create", json!({"title": "nul\u{0}title"})),
            "u",
            now(),
        );
        assert!(bad.unwrap_err().error.starts_with("title: "));
        let bad = read_item(
            &item("create", json!({"title": "t", "description": "a\u{1b}b"})),
            "u",
            now(),
        );
        assert!(bad.unwrap_err().error.starts_with("description: "));
    }
}
