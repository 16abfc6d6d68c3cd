//! What a client may read of an operation's recorded error, for the operation lookup
//! (`GET /api/sync/operations/{op_id}`) and the acknowledgements of the changes feed.
//!
//! A rejection's reason (an invalid field, an unknown task) was written for the client and is
//! shown as it is. A failed attempt's text comes from the database or the worker's internals:
//! it is summarised (how many attempts, what kind of failure), and the database's own words
//! stay in the log and the failure record for operators (`taskctl dlq show`).

/// The client's text for a recorded error `raw`. `failed_an_attempt`: some attempt of the
/// operation failed (the log row or failure record has failure times), so `raw` is a failure,
/// not a rejection. `pending`: the worker still retries it.
pub fn client_error(
    raw: Option<&str>,
    failed_an_attempt: bool,
    attempts: i32,
    pending: bool,
) -> Option<String> {
    let raw = raw?;
    if !failed_an_attempt {
        return Some(raw.to_string());
    }
    let kind = failure_kind(raw);
    Some(if pending {
        format!("attempt {attempts} failed ({kind}); the worker retries it")
    } else {
        format!(
            "the operation could not be applied after {attempts} attempts ({kind}); it is \
             kept for operators under its op id"
        )
    })
}

/// The kind of a recorded failure, from the prefixes the worker's errors carry.
fn failure_kind(raw: &str) -> &'static str {
    let raw = raw.to_ascii_lowercase();
    if raw.contains("database rejected") || raw.contains("database refused") {
        "the database refused its data"
    } else if raw.contains("database unavailable") || raw.contains("timed out") {
        "the database was unavailable"
    } else if raw.contains("malformed") || raw.contains("schema version") {
        "the message could not be read"
    } else {
        "an internal error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_keeps_its_reason_and_a_failure_hides_the_database_text() {
        assert_eq!(
            client_error(Some("title: must not be blank"), false, 1, false).as_deref(),
            Some("title: must not be blank")
        );
        let raw = "failed 4 attempts; last error: database rejected the batch: invalid byte \
                   sequence for encoding \"UTF8\": 0x00";
        assert_eq!(
            client_error(Some(raw), true, 4, false).unwrap(),
            "the operation could not be applied after 4 attempts (the database refused its \
             data); it is kept for operators under its op id"
        );
        let refused = "failed 4 attempts; last error: database refused the batch: value too long";
        let shown = client_error(Some(refused), true, 4, false).unwrap();
        assert!(shown.contains("the database refused its data"), "{shown}");
        assert!(!shown.contains("too long"), "{shown}");
        assert_eq!(
            client_error(Some("database unavailable: x"), true, 2, true).as_deref(),
            Some("attempt 2 failed (the database was unavailable); the worker retries it")
        );
        assert_eq!(client_error(None, true, 4, false), None);
    }
}
