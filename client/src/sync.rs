//! One sync round: push the queue, pull the changes feed (whose acknowledgements settle the
//! operations the server accepted without deciding), then look up the accepted operations the
//! feed did not settle yet.
//!
//! Every step stores what it learnt before the next one starts (a push answer, a lookup, a page
//! and its cursor, each in its own local transaction), so a round killed or cut at any point is
//! simply run again: entries not yet answered are pushed again unchanged, with the same op ids,
//! and the server applies each operation once. A pull cursor the server no longer serves (410,
//! older than its retention horizon) starts a resync: the pull begins again from an empty
//! cursor and its end replaces the local copy, keeping the edits still queued.

use std::time::Instant;

use chrono::Utc;
use futures_util::{StreamExt, stream};
use serde::Serialize;
use tasksync_shared::sync::PushRequest;

use crate::{
    error::Result,
    remote::{Remote, RemoteError},
    store::{MAX_TRIES, Store, Tally},
};

/// The server's `MAX_BATCH_ITEMS` default: a larger push is a 413.
pub const MAX_BATCH: usize = 1000;
/// The largest page `/api/changes` serves.
pub const MAX_PAGE: usize = 1000;

/// How a round runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncOptions {
    /// Items per push (1 to [`MAX_BATCH`]; halved by itself when a server with a lower limit
    /// answers 413).
    pub batch_size: usize,
    /// Rows per page of the changes feed (1 to [`MAX_PAGE`]).
    pub page_size: usize,
    /// Accepted operations looked up at once.
    pub lookups_in_flight: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            page_size: MAX_PAGE,
            lookups_in_flight: 8,
        }
    }
}

/// What a round did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Items sent (an item sent again after a rejection counts again).
    pub pushed: u64,
    /// Pushes made.
    pub batches: u64,
    /// Outcomes of pushes and lookups.
    pub outcomes: Tally,
    /// Tasks received from the changes feed.
    pub pulled: u64,
    /// What is left in the queue after the round.
    pub queued: u64,
    pub accepted: u64,
    pub errors: u64,
    pub elapsed_ms: u64,
}

/// Where a round is, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// `done` of `total` queued items pushed so far.
    Pushed { done: u64, total: u64 },
    /// Tasks pulled so far.
    Pulled { done: u64 },
}

/// Runs one round; `progress` hears about each push and page.
pub async fn sync_once(
    store: &mut Store,
    remote: &Remote,
    options: SyncOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<SyncReport> {
    let started = Instant::now();
    let mut report = SyncReport::default();
    push(store, remote, options, progress, &mut report).await?;
    pull(store, remote, options, progress, &mut report).await?;
    resolve_accepted(store, remote, options, &mut report).await?;
    store.mark_synced(Utc::now())?;
    let counts = store.queue_counts()?;
    report.queued = counts.queued;
    report.accepted = counts.accepted;
    report.errors = counts.error;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Pushes every queued entry in edit order. An entry the server rejects stays queued and goes
/// again in the next pass, until it has been rejected [`MAX_TRIES`] times.
async fn push(
    store: &mut Store,
    remote: &Remote,
    options: SyncOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
    report: &mut SyncReport,
) -> Result<()> {
    let mut batch_size = options.batch_size.clamp(1, MAX_BATCH);
    let total = store.queue_counts()?.queued;
    let mut done = 0;
    for _pass in 0..MAX_TRIES {
        let mut after = 0;
        let mut sent_this_pass = 0;
        loop {
            let batch = store.to_push(after, batch_size)?;
            let Some(last) = batch.last() else { break };
            let request = PushRequest {
                items: batch.iter().map(|op| op.item()).collect(),
                client_timestamp: Some(Utc::now()),
                device_id: None,
            };
            let answer = match remote.push(&request).await {
                Err(RemoteError::Status { status: 413, .. }) if batch_size > 1 => {
                    batch_size /= 2;
                    tracing::info!(batch_size, "the server refused the batch as too large");
                    continue;
                }
                other => other?,
            };
            after = last.seq;
            let tally = store.record_push(&batch, &answer)?;
            report.outcomes.add(tally);
            report.pushed += batch.len() as u64;
            report.batches += 1;
            sent_this_pass += batch.len();
            done += tally.success + tally.conflict + tally.pending + tally.failed;
            progress(Progress::Pushed {
                done: done.min(total),
                total,
            });
        }
        if sent_this_pass == 0 {
            break;
        }
    }
    Ok(())
}

/// Asks the server about entries it accepted without deciding and the pull did not settle
/// (their decision was not in the feed yet): decided ones are stored like a push answer;
/// undecided ones (still queued on the server, or retried there) wait for the next round.
async fn resolve_accepted(
    store: &mut Store,
    remote: &Remote,
    options: SyncOptions,
    report: &mut SyncReport,
) -> Result<()> {
    let accepted = store.accepted(usize::MAX)?;
    let mut answers = stream::iter(accepted)
        .map(|op| async move { (remote.operation(op.op_id).await, op) })
        .buffer_unordered(options.lookups_in_flight.max(1));
    while let Some((answer, op)) = answers.next().await {
        if let Some(status) = answer? {
            let mut tally = store.record_lookup(&op, &status)?;
            // Still pending on the server: already counted as pending when pushed.
            tally.pending = 0;
            report.outcomes.add(tally);
        }
    }
    Ok(())
}

/// Pages the changes feed from the saved cursor to its end.
async fn pull(
    store: &mut Store,
    remote: &Remote,
    options: SyncOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
    report: &mut SyncReport,
) -> Result<()> {
    let page_size = options.page_size.clamp(1, MAX_PAGE);
    // Bounded: a feed that never ends would be a server bug, not a reason to spin forever.
    let mut resynced = false;
    for _ in 0..1_000_000 {
        let cursor = store.sync_state()?.pull_cursor;
        let page = match remote.changes(&cursor, page_size).await {
            // Once per round: a server that refuses even a fresh cursor is not looped on.
            Err(RemoteError::Status { status: 410, .. }) if !resynced && !cursor.is_empty() => {
                tracing::warn!("the pull cursor is older than the server keeps; resyncing");
                store.begin_resync()?;
                resynced = true;
                continue;
            }
            other => other?,
        };
        let absorbed = store.absorb_page(&page)?;
        report.outcomes.add(absorbed.settled);
        report.pulled += absorbed.tasks as u64;
        progress(Progress::Pulled {
            done: report.pulled,
        });
        if !page.has_more {
            return Ok(());
        }
    }
    Ok(())
}
