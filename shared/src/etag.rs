//! The task's entity tag (`ETag`, RFC 9110 §8.8.3) and the two conditions that compare with it.
//!
//! The validator is a strong one: a SHA-256 (first 16 bytes, hex) of the task's fields as
//! served — id, title, description, completed, is_deleted, created_at and updated_at (the
//! latest field stamp, to the microsecond). The worker computes it from the merged state it
//! holds under the task's lock, the api from the row it reads or the task the worker reports:
//! both are the one stored version, so every replica gives the same tag, and every applied
//! change that changes the task changes it (a change moves a value or the latest stamp). The
//! sync bookkeeping (`sync_status`, `server_id`, `last_synced_at`) is not part of it.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{merge::TaskState, model::Task, model::to_db_precision};

/// The quoted strong entity tag of a task's version.
pub fn of_fields(
    id: Uuid,
    title: &str,
    description: Option<&str>,
    completed: bool,
    is_deleted: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> String {
    let mut hash = Sha256::new();
    hash.update(id.as_bytes());
    // Lengths first, so that no two field lists hash the same bytes.
    hash.update((title.len() as u64).to_be_bytes());
    hash.update(title.as_bytes());
    match description {
        Some(d) => {
            hash.update([1]);
            hash.update((d.len() as u64).to_be_bytes());
            hash.update(d.as_bytes());
        }
        None => hash.update([0]),
    }
    hash.update([u8::from(completed), u8::from(is_deleted)]);
    for t in [created_at, updated_at] {
        hash.update(to_db_precision(t).timestamp_micros().to_be_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The entity tag of a task as it is served.
pub fn of_task(task: &Task) -> String {
    of_fields(
        task.id,
        &task.title,
        task.description.as_deref(),
        task.completed,
        task.is_deleted,
        task.created_at,
        task.updated_at,
    )
}

/// The entity tag of a merged state, as the task will be served once stored; `None` while the
/// task does not exist for readers (no create gave it a title yet, or it is deleted).
pub fn of_state(id: Uuid, state: &TaskState) -> Option<String> {
    let title = state.title.as_ref()?;
    if state.is_deleted() {
        return None;
    }
    Some(of_fields(
        id,
        &title.value,
        state.description.as_ref().and_then(|r| r.value.as_deref()),
        state.completed.as_ref().is_some_and(|r| r.value),
        false,
        state.created_at?,
        state.updated_at()?,
    ))
}

/// The entity tags of a condition header's value: `*`, or a comma-separated list of quoted
/// tags, each maybe weak (`W/"…"`). Returns `None` for `*`.
fn tags(header: &str) -> Option<Vec<&str>> {
    if header.trim() == "*" {
        return None;
    }
    Some(
        header
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

/// `If-Match` (RFC 9110 §13.1.1): true when the task exists (`current` is its tag) and the
/// header is `*` or lists its tag. Strong comparison: a weak tag never matches.
pub fn if_match_holds(header: &str, current: Option<&str>) -> bool {
    match (tags(header), current) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(tags), Some(current)) => tags.contains(&current),
    }
}

/// `If-None-Match` (RFC 9110 §13.1.2) on a read: true when the client's copy is current
/// (answer 304), i.e. the header is `*` or lists the tag. Weak comparison: `W/` is ignored.
pub fn if_none_match_hits(header: &str, current: &str) -> bool {
    match tags(header) {
        None => true,
        Some(tags) => tags
            .iter()
            .any(|t| t.strip_prefix("W/").unwrap_or(t) == current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpKind, Operation, OperationFields, merge::Write};
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn write(state: &mut TaskState, id: Uuid, kind: OpKind, secs: i64, title: Option<&str>) {
        let op = Operation {
            op_id: Uuid::new_v4(),
            task_id: id,
            user_id: "u".into(),
            kind,
            fields: OperationFields {
                title: title.map(str::to_string),
                ..Default::default()
            },
            stamped_at: at(secs),
            received_at: at(secs),
            if_absent: false,
            if_match: None,
            device_id: None,
        };
        state.apply(&Write::from_operation(&op));
    }

    #[test]
    fn the_state_and_the_stored_task_give_one_tag_that_moves_with_every_change() {
        let id = Uuid::new_v4();
        let mut state = TaskState::default();
        assert_eq!(of_state(id, &state), None);
        write(&mut state, id, OpKind::Create, 0, Some("a"));
        let first = of_state(id, &state).unwrap();
        let task = Task {
            id,
            title: "a".into(),
            description: None,
            completed: false,
            created_at: at(0),
            updated_at: at(0),
            is_deleted: false,
            sync_status: crate::SyncStatus::Synced,
            server_id: Some(id.to_string()),
            last_synced_at: Some(at(99)),
        };
        assert_eq!(of_task(&task), first);
        write(&mut state, id, OpKind::Update, 5, Some("a"));
        let second = of_state(id, &state).unwrap();
        assert_ne!(first, second, "a newer stamp is a new version");
        write(&mut state, id, OpKind::Update, 3, Some("b"));
        assert_eq!(of_state(id, &state), Some(second), "an older write lost");
        write(&mut state, id, OpKind::Delete, 9, None);
        assert_eq!(of_state(id, &state), None);
    }

    #[test]
    fn conditions_read_star_lists_and_weak_tags() {
        let tag = "\"abc\"";
        assert!(if_match_holds("*", Some(tag)));
        assert!(!if_match_holds("*", None));
        assert!(if_match_holds("\"x\", \"abc\"", Some(tag)));
        assert!(!if_match_holds("W/\"abc\"", Some(tag)));
        assert!(!if_match_holds("\"x\"", Some(tag)));
        assert!(if_none_match_hits("*", tag));
        assert!(if_none_match_hits("\"x\" , W/\"abc\"", tag));
        assert!(!if_none_match_hits("\"x\"", tag));
    }
}
