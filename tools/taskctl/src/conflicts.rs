//! `taskctl conflicts --task ID | --user U [--limit N]`: the conflict history, newest first:
//! each field a write lost, the value that stayed and the value that lost, with both writes'
//! stamps (time, op id) and devices.

use std::io::Write;

use tasksync_shared::Settings;

use crate::{
    CtlError, emit, emit_json,
    records::{ConflictsOf, Records},
    table,
};

pub async fn conflicts(
    settings: &Settings,
    of: &ConflictsOf,
    limit: i64,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let records = Records::new(settings)?.conflicts(of, limit).await?;
    if json {
        return emit_json(out, &serde_json::json!({ "conflicts": records }));
    }
    let device = |d: &Option<String>| d.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|c| {
            vec![
                c.recorded_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                c.task_id.to_string(),
                c.field.clone(),
                c.kept.value.to_string(),
                c.kept.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                device(&c.kept.device_id),
                c.lost.value.to_string(),
                c.lost.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                device(&c.lost.device_id),
                c.lost.op_id.to_string(),
            ]
        })
        .collect();
    let headers = [
        "RECORDED (UTC)",
        "TASK",
        "FIELD",
        "KEPT",
        "KEPT AT",
        "KEPT DEVICE",
        "LOST",
        "LOST AT",
        "LOST DEVICE",
        "LOST OP",
    ];
    emit(out, &table::render(&headers, &rows))
}
