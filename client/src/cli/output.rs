//! What the commands print: JSON with `--json`, else short text; and the progress bar.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use tasksync_shared::Task;

use super::StatusReport;
use crate::{error::Result, sync::Progress, sync::SyncReport, watch::Wake};

pub(super) fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => println!("{text}"),
        Err(e) => println!("{}", json!({ "error": e.to_string() })),
    }
}

fn short(id: &uuid::Uuid) -> String {
    id.simple().to_string()[..8].to_string()
}

pub(super) fn line(task: &Task) -> String {
    let mark = if task.completed { "x" } else { " " };
    let deleted = if task.is_deleted { " (deleted)" } else { "" };
    format!(
        "{} [{mark}] {}{deleted}  {}",
        short(&task.id),
        task.title,
        task.sync_status.as_str()
    )
}

pub(super) fn print_task(json: bool, task: &Task) {
    if json {
        print_json(task);
        return;
    }
    println!("{}", line(task));
    println!("  id:          {}", task.id);
    if let Some(d) = &task.description {
        println!("  description: {d}");
    }
    println!("  updated:     {}", task.updated_at.to_rfc3339());
    match task.last_synced_at {
        Some(at) => println!("  synced:      {}", at.to_rfc3339()),
        None => println!("  synced:      never"),
    }
}

pub(super) fn summary(r: &SyncReport) -> String {
    let o = &r.outcomes;
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut pushed = format!(
        "pushed {} in {}",
        plural(r.pushed, "operation", "operations"),
        plural(r.batches, "batch", "batches")
    );
    let mut parts = vec![format!("{} applied", o.success + o.conflict)];
    if o.conflict > 0 {
        parts.push(format!("{} lost a field to a later edit", o.conflict));
    }
    if o.pending > 0 {
        parts.push(format!("{} accepted, not applied yet", o.pending));
    }
    if o.failed + o.retrying > 0 {
        parts.push(format!("{} rejected", o.failed + o.retrying));
    }
    if r.pushed > 0 {
        pushed = format!("{pushed} ({})", parts.join(", "));
    } else {
        pushed = "nothing to push".into();
    }
    let queue = if r.queued + r.accepted + r.errors == 0 {
        "queue empty".to_string()
    } else {
        format!(
            "queue: {} to push, {} awaiting the server, {} failed (see tasks status)",
            r.queued, r.accepted, r.errors
        )
    };
    format!(
        "{pushed}; pulled {}; {queue}; {} ms",
        plural(r.pulled, "task", "tasks"),
        r.elapsed_ms
    )
}

pub(super) fn print_round(json: bool, round: u64, result: &Result<SyncReport>, wake: Wake) {
    let wake = match wake {
        Wake::Events => "events",
        Wake::Polling => "polling",
    };
    match (json, result) {
        (true, Ok(report)) => {
            print_json(&json!({ "round": round, "wake": wake, "report": report }))
        }
        (true, Err(e)) => {
            print_json(&json!({ "round": round, "wake": wake, "error": e.to_string() }))
        }
        (false, Ok(report)) => println!("round {round} ({wake}): {}", summary(report)),
        (false, Err(e)) => println!("round {round} ({wake}): failed: {e}"),
    }
}

pub(super) fn print_status(s: &StatusReport) {
    println!("database:   {}", s.db);
    println!("server:     {}", s.url);
    println!("device:     {}", s.state.device_id);
    println!("tasks:      {}", s.tasks);
    println!(
        "queue:      {} to push, {} awaiting the server, {} failed",
        s.queue.queued, s.queue.accepted, s.queue.error
    );
    match s.state.last_sync_at {
        Some(at) => println!("last sync:  {}", at.to_rfc3339()),
        None => println!("last sync:  never"),
    }
    for op in &s.failed {
        println!(
            "failed:     {} {} of task {} after {} tries: {}",
            short(&op.op_id),
            op.operation.as_str(),
            short(&op.task_id),
            op.retry_count,
            op.error.as_deref().unwrap_or("")
        );
    }
}

/// The progress bar of a large push (hidden with --json, for small queues, and when stderr is
/// not a terminal).
pub(super) struct ProgressBars {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

/// Queues shorter than this sync without a bar.
const BAR_FROM: u64 = 200;

impl ProgressBars {
    pub(super) fn new(json: bool) -> Self {
        Self {
            enabled: !json,
            bar: Mutex::new(None),
        }
    }

    pub(super) fn show(&self, progress: Progress) {
        let Progress::Pushed { done, total } = progress else {
            return;
        };
        if !self.enabled || total < BAR_FROM {
            return;
        }
        let Ok(mut bar) = self.bar.lock() else { return };
        let bar = bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} pushed ({eta})") {
                bar.set_style(style);
            }
            bar
        });
        bar.set_position(done);
    }

    pub(super) fn finish(&self) {
        if let Ok(mut bar) = self.bar.lock()
            && let Some(bar) = bar.take()
        {
            bar.finish_and_clear();
        }
    }
}
