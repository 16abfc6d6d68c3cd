//! `taskctl op OP_ID`: where one operation stands — decided (in the log with its outcome),
//! retrying (attempt N failed, the next one around a time, or due), parked (why, when, whether
//! replayed), or unknown (exit 5).
//!
//! An unknown operation may still wait in the work queue: AMQP cannot look for one message
//! without taking it, so the answer gives the work queue's depth instead (a passive declare,
//! which takes nothing), when the broker answers.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tasksync_shared::{Settings, topology::Topology};
use uuid::Uuid;

use super::standing::{NextAttempt, Parking, Standing, standing};
use crate::{
    CtlError,
    broker::Broker,
    emit, emit_json,
    records::{Failure, LogEntry, Records},
};

/// What `taskctl op` says when neither the log nor a failure record knows the operation.
pub const NOT_KNOWN: &str = "not known: still queued, never sent, or older than the log keeps";

/// The work queue's depth, beside an unknown operation.
#[derive(Debug, Serialize)]
struct WorkQueue {
    name: String,
    ready: u32,
    consumers: u32,
}

/// The answer, as JSON; the human form prints the same facts.
#[derive(Debug, Serialize)]
struct Report<'a> {
    op_id: Uuid,
    /// `decided`, `retrying`, `parked` or `unknown`.
    state: &'static str,
    summary: String,
    task_id: Option<Uuid>,
    user_id: Option<&'a str>,
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt: Option<NextAttempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parking: Option<Parking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replays: Option<u32>,
    log: Option<&'a LogEntry>,
    failure: Option<&'a Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    work_queue: Option<WorkQueue>,
}

pub async fn show(
    settings: &Settings,
    op_id: Uuid,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let (log, failure) = Records::new(settings)?.operation(op_id).await?;
    let standing = standing(log, failure, &settings.retry_delays, Utc::now());
    let work_queue = match standing {
        Standing::Unknown => work_queue(settings).await,
        _ => None,
    };
    let report = report(op_id, &standing, work_queue);
    if json {
        emit_json(out, &report)?;
    }
    if let Standing::Unknown = standing {
        return Err(CtlError::Unknown(format!("op {op_id}: {}", report.summary)));
    }
    if !json {
        print(&report, out)?;
    }
    Ok(())
}

fn report(op_id: Uuid, standing: &Standing, work_queue: Option<WorkQueue>) -> Report<'_> {
    let (log, failure) = match standing {
        Standing::Decided { log, failure } => (Some(log), failure.as_ref()),
        Standing::Retrying { failure, log, .. } | Standing::Parked { failure, log, .. } => {
            (log.as_ref(), Some(failure))
        }
        Standing::Unknown => (None, None),
    };
    let record = failure.map(|f| &f.record);
    let mut report = Report {
        op_id,
        state: standing.name(),
        summary: summary(standing, work_queue.as_ref()),
        task_id: log.map(|l| l.task_id).or(record.and_then(|r| r.task_id)),
        user_id: log
            .map(|l| l.user_id.as_str())
            .or(record.and_then(|r| r.user_id.as_deref())),
        kind: log
            .map(|l| l.kind.as_str())
            .or(record.and_then(|r| r.kind.as_deref())),
        outcome: None,
        next_attempt: None,
        parking: None,
        replays: None,
        log,
        failure,
        work_queue,
    };
    match standing {
        Standing::Decided { log, .. } => report.outcome = Some(&log.outcome),
        Standing::Retrying { next, .. } => report.next_attempt = Some(*next),
        Standing::Parked {
            parking, replays, ..
        } => {
            report.parking = Some(*parking);
            report.replays = Some(*replays);
        }
        Standing::Unknown => {}
    }
    report
}

/// One line saying where the operation stands.
fn summary(standing: &Standing, work_queue: Option<&WorkQueue>) -> String {
    match standing {
        Standing::Decided { log, .. } => {
            let mut text = format!("decided {} at {}", log.outcome, timestamp(log.decided_at));
            if log.attempts > 1 {
                text.push_str(&format!(" after {} attempts", log.attempts));
            }
            if let Some(error) = &log.last_error {
                text.push_str(&format!(": {error}"));
            }
            text
        }
        Standing::Retrying { failure, next, .. } => {
            let failed = format!(
                "retrying: attempt {} of {} failed at {}",
                failure.record.attempts,
                next.of,
                clock(failure.record.last_failed_at)
            );
            match next.at {
                _ if next.due => format!("{failed}; next attempt due"),
                Some(at) => format!("{failed}; next attempt around {} UTC", clock(at)),
                None => format!(
                    "{failed}; RETRY_DELAYS_MS has no delay after attempt {}",
                    failure.record.attempts
                ),
            }
        }
        Standing::Parked {
            failure,
            parking,
            replays,
            ..
        } => {
            let record = &failure.record;
            let parked = format!(
                "parked at {} after {} attempt(s): {}",
                timestamp(record.last_failed_at),
                record.attempts,
                record.last_error
            );
            let before = match replays {
                0 => String::new(),
                n => format!(" (replayed {n} time(s) before)"),
            };
            match parking {
                Parking::Waiting => format!("{parked}; in the parking queue, not replayed{before}"),
                Parking::Replayed => {
                    format!("{parked}; replayed to the work queue, not decided again yet")
                }
                Parking::Purged => {
                    format!("{parked}; purged from the parking queue: never applied")
                }
            }
        }
        Standing::Unknown => match work_queue {
            Some(q) => format!(
                "{NOT_KNOWN} (the work queue {} holds {} ready message(s), {} consumer(s))",
                q.name, q.ready, q.consumers
            ),
            None => NOT_KNOWN.to_string(),
        },
    }
}

fn print(report: &Report<'_>, out: &mut dyn Write) -> Result<(), CtlError> {
    let id = |v: Option<Uuid>| v.map(|v| v.to_string());
    let text = |v: Option<&str>| v.map(str::to_string);
    let log = report.log;
    let record = report.failure.map(|f| &f.record);
    let fields = [
        ("op id", Some(report.op_id.to_string())),
        ("state", Some(report.summary.clone())),
        ("task id", id(report.task_id)),
        ("user", text(report.user_id)),
        ("kind", text(report.kind)),
        ("outcome", text(report.outcome)),
        ("decided at", log.map(|l| timestamp(l.decided_at))),
        ("received at", log.map(|l| timestamp(l.received_at))),
        ("attempts", record.map(|r| r.attempts.to_string())),
        ("first failed", record.map(|r| timestamp(r.first_failed_at))),
        ("last failed", record.map(|r| timestamp(r.last_failed_at))),
        ("last error", record.map(|r| r.last_error.clone())),
        (
            "record",
            report.failure.map(|f| f.state.as_str().to_string()),
        ),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            emit(out, &format!("{name:<13} {value}"))?;
        }
    }
    Ok(())
}

/// The work queue's depth and consumers, if the broker answers; the answer stands without it.
/// With several partitions: their ready messages together and the consumers of the
/// least-served one.
async fn work_queue(settings: &Settings) -> Option<WorkQueue> {
    let topology = Topology::from_settings(settings);
    let names = topology.work_queues();
    let mut broker = Broker::connect(settings).await.ok()?;
    let mut queues = Vec::with_capacity(names.len());
    for name in &names {
        queues.push(broker.inspect(name).await);
    }
    broker.close().await;
    let queues = queues.into_iter().collect::<Result<Vec<_>, _>>().ok()?;
    let name = match names.as_slice() {
        [one] => one.clone(),
        [first, .., last] => format!("{first} … {last} ({} partitions)", names.len()),
        [] => return None,
    };
    Some(WorkQueue {
        name,
        ready: queues.iter().map(lapin::Queue::message_count).sum(),
        consumers: queues.iter().map(lapin::Queue::consumer_count).min()?,
    })
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A time of day in UTC, to the second.
fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S").to_string()
}
