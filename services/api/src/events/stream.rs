//! One event stream: a task per subscriber that reads the feed from the stream's cursor through
//! the same storage function as `GET /api/changes` and hands each change to the response body
//! through a bounded channel.
//!
//! It reads when its user's streams are woken (a feed notice), on every heartbeat (a safety net
//! for a notice lost while the `LISTEN` session was down), and, when it was woken for a
//! transaction that the commit horizon has not passed yet (an older write transaction is still
//! open, so the page could not hold that transaction's changes), again after a short delay,
//! a bounded number of times, until the horizon has passed it.
//!
//! A reader that takes no event for [`SLOW_READER`] while the channel is full is dropped (the
//! stream ends; the client resumes with `Last-Event-ID`), so a dead or slow reader holds at
//! most [`CHANNEL_EVENTS`] events and one page. The stream also ends when the client goes away
//! and when the api shuts down.

use std::time::Duration;

use axum::response::sse::Event;
use chrono::Utc;
use serde_json::json;
use tasksync_shared::shutdown::stopped;
use tokio::{
    sync::mpsc::{self, error::SendTimeoutError},
    time::{Instant, MissedTickBehavior},
};

use super::hub::Subscription;
use crate::{
    cursor::FeedCursor,
    error::ApiError,
    state::AppState,
    storage::{self, FeedPage},
};

/// Events held for one stream between the reader task and the response body.
pub const CHANNEL_EVENTS: usize = 64;
/// How long a full channel may stay full before its reader counts as gone.
pub const SLOW_READER: Duration = Duration::from_secs(10);
/// Changes read per page.
const PAGE: usize = 100;
/// Re-reads while the horizon has not passed the woken-for transaction: the delay before each.
const HORIZON_RETRIES: [u64; 8] = [5, 10, 20, 40, 80, 160, 320, 640];
/// What a client waits before reconnecting, sent in the `retry` field of `ready`.
const CLIENT_RETRY: Duration = Duration::from_secs(2);

/// One event of a page: its kind, its cursor, the instant the worker applied it (changes only),
/// and the event.
#[derive(Debug)]
pub struct PageEvent {
    pub kind: &'static str,
    pub cursor: FeedCursor,
    pub applied_at: Option<chrono::DateTime<Utc>>,
    pub event: Event,
}

/// The events of one page of the feed, in feed order: each decision (`ack`, as in the page's
/// `acks`) and each change (`change`, the task as `/api/changes` serves it). The one place where
/// what the feed read becomes events.
///
/// A decision and the change it caused share a position, and a cursor names a position, not an
/// event within it: so only the **last** event of a position carries its `id` (the acks come
/// first, the change last). An `EventSource` keeps the last id it saw, so a stream cut inside a
/// position resumes before it and gets that position's events again, whole; one cut after it
/// gets none of them again. Nothing is lost either way.
pub fn page_events(page: &FeedPage) -> Result<Vec<PageEvent>, ApiError> {
    let at = |position| FeedCursor {
        position,
        generation: page.generation,
    };
    let mut items: Vec<((crate::cursor::Position, u8), PageEvent)> =
        Vec::with_capacity(page.changes.len() + page.acks.len());
    for (position, ack) in &page.acks {
        let event = Event::default()
            .event("ack")
            .json_data(ack)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("an ack as an event: {e}")))?;
        items.push((
            (*position, 0),
            PageEvent {
                kind: "ack",
                cursor: at(*position),
                applied_at: None,
                event,
            },
        ));
    }
    for (position, task) in &page.changes {
        let event = Event::default()
            .event("change")
            .json_data(task)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("a change as an event: {e}")))?;
        items.push((
            (*position, 1),
            PageEvent {
                kind: "change",
                cursor: at(*position),
                applied_at: task.last_synced_at,
                event,
            },
        ));
    }
    // Stable: the acks of one position keep their order.
    items.sort_by_key(|(key, _)| *key);
    let last_of_position: Vec<bool> = (0..items.len())
        .map(|i| items.get(i + 1).is_none_or(|next| next.0.0 != items[i].0.0))
        .collect();
    Ok(items
        .into_iter()
        .zip(last_of_position)
        .map(|((_, mut item), last)| {
            if last {
                item.event = item.event.id(item.cursor.encode());
            }
            item
        })
        .collect())
}

/// The first event of every stream: where it starts.
pub fn ready_event(start: FeedCursor) -> Event {
    Event::default()
        .event("ready")
        .id(start.encode())
        .retry(CLIENT_RETRY)
        .data(json!({ "server_time": Utc::now() }).to_string())
}

/// Why a stream ends.
enum End {
    /// The client went away, or the api is stopping.
    Closed,
    /// The reader did not keep up.
    Slow,
}

/// A stream's reader: its cursor, the transaction it waits to see passed, its channel.
struct Reader {
    state: AppState,
    user: String,
    cursor: FeedCursor,
    /// The highest transaction a wake named that no read has seen the horizon pass yet.
    waiting_for: Option<u64>,
    tx: mpsc::Sender<Event>,
}

/// Runs the stream of `user` from `start` until the client goes, the reader is too slow, or
/// the api stops.
pub async fn run(
    state: AppState,
    mut subscription: Subscription,
    user: String,
    start: FeedCursor,
    tx: mpsc::Sender<Event>,
) {
    let metrics = state.events.metrics().clone();
    let heartbeat_every = state.settings.events.heartbeat;
    let mut reader = Reader {
        state,
        user,
        cursor: start,
        waiting_for: None,
        tx,
    };
    let mut heartbeat = tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut retry: Option<(Instant, usize)> = None;
    let mut closing = subscription.closing.clone();
    let mut ended = reader.send(ready_event(start), &metrics, "ready").await;
    if ended.is_none() {
        // A resumed stream catches up at once; a new one has nothing before its start.
        ended = reader.catch_up(&metrics, &mut retry).await;
    }
    while ended.is_none() {
        let retry_at = retry.map(|(at, _)| at);
        ended = tokio::select! {
            () = stopped(&mut closing) => {
                metrics.events_dropped("shutdown");
                Some(End::Closed)
            }
            () = reader.tx.closed() => Some(End::Closed),
            changed = subscription.wake.changed() => match changed {
                Ok(()) => {
                    let wake = *subscription.wake.borrow_and_update();
                    reader.waiting_for = reader.waiting_for.max(wake.xid);
                    reader.catch_up(&metrics, &mut retry).await
                }
                Err(_) => Some(End::Closed),
            },
            _ = heartbeat.tick() => {
                let keepalive = Event::default().comment("keepalive");
                match reader.send(keepalive, &metrics, "keepalive").await {
                    None => reader.catch_up(&metrics, &mut retry).await,
                    end => end,
                }
            }
            () = sleep_until(retry_at), if retry_at.is_some() => {
                reader.catch_up(&metrics, &mut retry).await
            }
        };
    }
    if matches!(ended, Some(End::Slow)) {
        metrics.events_dropped("slow");
        tracing::info!(
            user = %reader.user,
            "an event stream's reader did not keep up; ended (it resumes with Last-Event-ID)"
        );
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl Reader {
    async fn send(
        &self,
        event: Event,
        metrics: &crate::metrics::ApiMetrics,
        kind: &'static str,
    ) -> Option<End> {
        match self.tx.send_timeout(event, SLOW_READER).await {
            Ok(()) => {
                metrics.events_sent(kind, 1);
                None
            }
            Err(SendTimeoutError::Timeout(_)) => Some(End::Slow),
            Err(SendTimeoutError::Closed(_)) => Some(End::Closed),
        }
    }

    /// Reads and sends pages from the cursor until the feed has no more, then schedules a
    /// re-read in `retry` while the horizon has not passed the transaction it waits for. A
    /// failed read is logged and left to the next wake, retry or heartbeat.
    async fn catch_up(
        &mut self,
        metrics: &crate::metrics::ApiMetrics,
        retry: &mut Option<(Instant, usize)>,
    ) -> Option<End> {
        loop {
            let read = storage::read_feed(&self.state.db, &self.user, self.cursor, PAGE);
            let read = match self.state.db_round(read).await {
                Ok(read) => read,
                Err(ApiError::CursorExpired(_)) => {
                    // Retention removed what this stream had not reached: it ends, and its
                    // client's resume answers 410 and tells it to resync.
                    return Some(End::Closed);
                }
                Err(error) => {
                    tracing::warn!(%error, user = %self.user, "an event stream could not read the feed");
                    return None;
                }
            };
            if self.waiting_for.is_some_and(|xid| read.horizon > xid) {
                self.waiting_for = None;
            }
            let events = match page_events(&read) {
                Ok(events) => events,
                Err(error) => {
                    tracing::error!(%error, "an event stream cannot write its page");
                    return Some(End::Closed);
                }
            };
            let now = Utc::now();
            for event in events {
                if let Some(end) = self.send(event.event, metrics, event.kind).await {
                    return Some(end);
                }
                self.cursor = event.cursor;
                if let Some(applied) = event.applied_at {
                    let delay = (now - applied).num_microseconds().unwrap_or(0).max(0);
                    #[allow(clippy::cast_precision_loss)]
                    metrics.event_delay(delay as f64 / 1e6);
                }
            }
            // Past the page: on the last one, past decisions without a change and up to the
            // horizon (nothing sent for that stretch; a client resumes from its last event).
            self.cursor = FeedCursor {
                position: read.next,
                generation: read.generation,
            };
            if !read.has_more {
                break;
            }
        }
        *retry = match (self.waiting_for, *retry) {
            (None, _) => None,
            (Some(_), None) => Some((after(HORIZON_RETRIES[0]), 1)),
            (Some(_), Some((_, n))) if n < HORIZON_RETRIES.len() => {
                Some((after(HORIZON_RETRIES[n]), n + 1))
            }
            // Out of retries: the next wake or heartbeat reads again.
            (Some(_), Some(_)) => {
                self.waiting_for = None;
                None
            }
        };
        None
    }
}

fn after(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}
