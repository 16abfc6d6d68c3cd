//! `taskctl ops list --state retrying|parked`: the operations stuck in one state, newest failure
//! first, optionally one user's or one task's — "why is this user's write stuck" in one command.
//! A retrying one shows when its next attempt comes (see [`super::standing`]).

use std::io::Write;

use chrono::Utc;
use serde::Serialize;
use tasksync_shared::Settings;

use super::standing::{NextAttempt, next_attempt};
use crate::{
    CtlError, emit, emit_json,
    records::{Failure, Records, StuckFilter},
    table,
};

/// One listed operation: its failure record, and for a retrying one its next attempt.
#[derive(Debug, Serialize)]
struct Listed {
    #[serde(flatten)]
    failure: Failure,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt: Option<NextAttempt>,
}

pub async fn list(
    settings: &Settings,
    filter: &StuckFilter,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let now = Utc::now();
    let listed: Vec<Listed> = Records::new(settings)?
        .stuck(filter)
        .await?
        .into_iter()
        .map(|failure| Listed {
            next_attempt: (failure.state == tasksync_shared::failure::RecordState::Retrying)
                .then(|| next_attempt(&failure, &settings.retry_delays, now)),
            failure,
        })
        .collect();
    if json {
        return emit_json(out, &serde_json::json!({ "operations": listed }));
    }
    let id = |v: Option<uuid::Uuid>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|l| {
            let r = &l.failure.record;
            let next = match l.next_attempt {
                Some(n) if n.due => "due".to_string(),
                Some(NextAttempt { at: Some(at), .. }) => at.format("%H:%M:%S").to_string(),
                _ => "-".to_string(),
            };
            vec![
                r.message_id.clone(),
                l.failure.state.as_str().to_string(),
                id(r.task_id),
                r.user_id.clone().unwrap_or_else(|| "-".into()),
                r.attempts.to_string(),
                format!("{}s", r.age_seconds),
                next,
                r.last_error.clone(),
            ]
        })
        .collect();
    let headers = [
        "OP / MESSAGE ID",
        "STATE",
        "TASK",
        "USER",
        "ATTEMPTS",
        "AGE",
        "NEXT (UTC)",
        "LAST ERROR",
    ];
    emit(out, &table::render(&headers, &rows))
}
