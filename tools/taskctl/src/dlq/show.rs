//! `taskctl dlq show`: one failure record, its history and the message body, by record key or
//! op id. It reads Postgres only: looking at a parked message in the queue would cost it a
//! delivery.

use std::io::Write;

use serde_json::{Value, json};
use tasksync_shared::Settings;

use crate::{CtlError, emit, emit_json, records::Records};

pub async fn show(
    settings: &Settings,
    id: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let records = Records::new(settings)?;
    let detail = records
        .find(id)
        .await?
        .ok_or_else(|| CtlError::NotFound(format!("no failure record for {id}")))?;
    let message = serde_json::from_slice::<Value>(&detail.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&detail.body).into_owned()));
    if json {
        let body = json!({
            "record": detail.record,
            "state": detail.state,
            "history": detail.history,
            "message": message,
        });
        return emit_json(out, &body);
    }
    let parked = &detail.record;
    let text = |v: Option<String>| v.unwrap_or_default();
    let fields = [
        ("message id", parked.message_id.clone()),
        ("state", detail.state.clone()),
        ("op id", text(parked.op_id.map(|v| v.to_string()))),
        ("task id", text(parked.task_id.map(|v| v.to_string()))),
        ("user", text(parked.user_id.clone())),
        ("kind", text(parked.kind.clone())),
        ("routing key", parked.routing_key.clone()),
        ("attempts", parked.attempts.to_string()),
        ("first failed", parked.first_failed_at.to_rfc3339()),
        ("last failed", parked.last_failed_at.to_rfc3339()),
        ("last error", parked.last_error.clone()),
    ];
    for (name, value) in fields {
        emit(out, &format!("{name:<13} {value}"))?;
    }
    emit(out, "history:")?;
    for event in detail.history.as_array().into_iter().flatten() {
        emit(
            out,
            &format!(
                "  attempt {} at {}: {}",
                event["attempt"],
                event["at"].as_str().unwrap_or("?"),
                event["error"].as_str().unwrap_or("?")
            ),
        )?;
    }
    emit(out, "message:")?;
    emit(out, &serde_json::to_string_pretty(&message)?)
}
