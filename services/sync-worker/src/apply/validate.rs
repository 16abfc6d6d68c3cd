//! The first stage of the step: check each operation again, since the worker trusts no message
//! (a publisher other than the api, an api of another version, a replay). Pure.

use tasksync_shared::{Operation, validate};

/// Why each operation can never apply (`None` when it is valid), in order.
pub fn problems(ops: &[Operation]) -> Vec<Option<String>> {
    ops.iter().map(problem).collect()
}

fn problem(op: &Operation) -> Option<String> {
    let checked = validate::normalize(op.kind, op.fields.clone())
        // The api clamps stamps to its clock; a message from elsewhere may hold any time, and
        // one RFC 3339 cannot express would be served back as an invalid timestamp.
        .and_then(|_| validate::stamp("updated_at", op.stamped_at))
        .and_then(|_| validate::stamp("received_at", op.received_at));
    if let Err(e) = checked {
        return Some(e.to_string());
    }
    unstorable(op)
}

/// Postgres text holds no NUL: an operation carrying one would fail its statement on every
/// attempt. Checked here whatever the field rules say, so that it is decided `error` once.
fn unstorable(op: &Operation) -> Option<String> {
    let nul = |s: &str| s.contains('\0');
    let f = &op.fields;
    if f.title.as_deref().is_some_and(nul) {
        Some("title: must not contain NUL characters".into())
    } else if f
        .description
        .as_ref()
        .and_then(Option::as_deref)
        .is_some_and(nul)
    {
        Some("description: must not contain NUL characters".into())
    } else if nul(&op.user_id) {
        Some("user: must not contain NUL characters".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use tasksync_shared::{OpKind, OperationFields};
    use uuid::Uuid;

    use super::*;

    fn op(title: &str, description: Option<&str>) -> Operation {
        Operation {
            op_id: Uuid::new_v4(),
            task_id: Uuid::new_v4(),
            user_id: "u".into(),
            kind: OpKind::Create,
            fields: OperationFields {
                title: Some(title.into()),
                description: Some(description.map(str::to_string)),
                completed: None,
            },
            stamped_at: Utc::now(),
            received_at: Utc::now(),
            if_absent: false,
            if_match: None,
            device_id: None,
        }
    }

    #[test]
    fn a_nul_anywhere_postgres_stores_text_is_a_problem_naming_the_field() {
        let found = problems(&[
            op("fine", None),
            op("nul\0title", None),
            op("t", Some("a\0b")),
            op("   ", None),
        ]);
        assert_eq!(found[0], None);
        assert!(found[1].as_deref().unwrap().starts_with("title: "));
        assert!(found[2].as_deref().unwrap().starts_with("description: "));
        assert!(found[3].as_deref().unwrap().starts_with("title: "));
    }

    #[test]
    fn a_stamp_outside_what_rfc_3339_can_express_is_a_problem_naming_it() {
        let mut ancient = op("fine", None);
        ancient.stamped_at = chrono::DateTime::from_timestamp(-62_167_219_200, 0).unwrap();
        let mut received_late = op("fine", None);
        received_late.received_at = chrono::DateTime::from_timestamp(253_402_300_800, 0).unwrap();
        let found = problems(&[ancient, received_late]);
        assert!(
            found[0].as_deref().unwrap().starts_with("updated_at: "),
            "{found:?}"
        );
        assert!(
            found[1].as_deref().unwrap().starts_with("received_at: "),
            "{found:?}"
        );
    }
}
