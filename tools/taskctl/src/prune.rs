//! `taskctl prune [--before RFC3339]`: one retention sweep now, the one the sync-worker runs
//! every `RETENTION_SWEEP_SECS` ([`tasksync_shared::retention::sweep`]). The horizon is
//! `--before`, else `RETENTION_DAYS` ago; with `RETENTION_DAYS=0` and no `--before` there is
//! nothing to prune (a usage error says so). A sweep another process is running already makes
//! this one do nothing (said in the answer, exit 0).

use std::io::Write;

use chrono::{DateTime, Utc};
use tasksync_shared::{Settings, db, retention};

use crate::{CtlError, emit, emit_json};

pub async fn prune(
    settings: &Settings,
    before: Option<DateTime<Utc>>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let before = match (before, settings.retention_days) {
        (Some(before), _) => before,
        (None, 0) => {
            return Err(CtlError::Usage(
                "RETENTION_DAYS=0 keeps history forever: give --before to prune anyway".into(),
            ));
        }
        (None, days) => Utc::now() - chrono::Duration::days(i64::from(days)),
    };
    let pool = db::pool(&settings.database_url, 1)
        .map_err(|e| CtlError::failed(format!("DATABASE_URL: {e}")))?;
    let report = retention::sweep(&pool, before)
        .await
        .map_err(|e| CtlError::failed(format!("pruning (Postgres, DATABASE_URL): {e}")))?;
    if json {
        return emit_json(out, &report);
    }
    if !report.ran {
        return emit(
            out,
            "another retention sweep is running (a sync-worker's): nothing pruned",
        );
    }
    emit(
        out,
        &format!(
            "pruned before {}: {} operations, {} tombstones, {} failure records, {} conflict \
             records; cursors below position {}/{} now answer 410 cursor_expired",
            before.to_rfc3339(),
            report.operations,
            report.tombstones,
            report.failure_records,
            report.conflicts,
            report.pruned_xid,
            report.pruned_task,
        ),
    )
}
