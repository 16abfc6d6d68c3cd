//! `GET /api/events`: the caller's changes as Server-Sent Events ([`crate::events`]).
//!
//! Where the stream starts: the `Last-Event-ID` header (what a browser's `EventSource` sends
//! when it reconnects), else the `since` query parameter (a changes cursor, e.g. the
//! `next_cursor` of the last pull), else the current end of the feed. Every stream opens with a
//! `ready` event whose `id` is that starting cursor.
//!
//! The stream is endless: the request deadline (`HTTP_REQUEST_TIMEOUT_MS`) bounds only the
//! time to its headers, and the stream ends when the client goes, when it cannot keep up, or
//! when the api shuts down.

use std::convert::Infallible;

use axum::{
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue},
    response::{IntoResponse, Response, Sse},
};
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use crate::{
    cursor::FeedCursor,
    error::ApiError,
    events::stream::{self, CHANNEL_EVENTS},
    extract::{ApiQuery, CurrentUser},
    openapi::{BadRequest, CursorExpired},
    state::AppState,
    storage,
};

/// The header a reconnecting `EventSource` sends with the last `id` it received.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// A changes cursor (`next_cursor` of a pull, or an event's `id`) to start after; empty:
    /// from the start of the feed. Ignored when `Last-Event-ID` is sent.
    since: Option<String>,
}

/// Where the stream starts: `None` for the current end of the feed.
fn starting_point(
    headers: &HeaderMap,
    since: Option<&str>,
) -> Result<Option<FeedCursor>, ApiError> {
    if let Some(value) = headers.get(&LAST_EVENT_ID) {
        let cursor = value.to_str().map(str::trim).unwrap_or("\u{0}");
        return FeedCursor::decode(cursor).map(Some).ok_or_else(|| {
            ApiError::BadRequest(
                "Last-Event-ID: not an event id from this api (send the id of the last event \
                 received)"
                    .into(),
            )
        });
    }
    match since {
        None => Ok(None),
        Some(since) => FeedCursor::decode(since.trim()).map(Some).ok_or_else(|| {
            ApiError::BadRequest("since: not a cursor from this api (use next_cursor)".into())
        }),
    }
}

#[utoipa::path(
    get,
    path = "/api/events",
    operation_id = "get_events",
    tag = "sync",
    summary = "Follow changes live (Server-Sent Events)",
    description = "An endless `text/event-stream` of the caller's changes as they commit. \
        The first event is `ready` (its `id` is the cursor the stream starts from; data \
        `{\"server_time\": ...}`). Then one `change` event per changed task, the task as \
        `/api/changes` serves it, with `id` = the changes cursor of its position: reconnect \
        with `Last-Event-ID` (or pull `/api/changes?since=`) from there to miss nothing and \
        get nothing twice. One `ack` event per decision about one of the caller's operations \
        (the same shape as an item of `/api/changes`' `acks`, same cursors). A `: keepalive` comment comes every `EVENTS_HEARTBEAT_SECS`. \
        Without `Last-Event-ID` or `since` the stream starts at the current end of the feed. \
        A cursor older than the retention horizon answers 410 `cursor_expired`: resync as for a \
        pull.",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received: resume after it (wins over `since`)"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "The stream (`event: ready`, then `event: change` and `event: ack` events, and keepalive comments)", content_type = "text/event-stream", body = String),
        (status = 400, response = BadRequest),
        (status = 410, response = CursorExpired),
    ),
)]
pub async fn events(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let start = starting_point(&headers, query.since.as_deref())?;
    let subscription = state.events.subscribe(&user)?;
    let start = match start {
        Some(cursor) => {
            state
                .db_round(storage::check_cursor(&state.db, cursor))
                .await?;
            cursor
        }
        None => FeedCursor {
            position: state.db_round(storage::feed_end(&state.db)).await?,
            generation: 0,
        },
    };
    let (tx, rx) = mpsc::channel(CHANNEL_EVENTS);
    tokio::spawn(stream::run(state.clone(), subscription, user, start, tx));
    // The body ends when the reader task drops its sender.
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    // Proxies that buffer answers (nginx) must pass this one through as it comes.
    let no_buffering = [(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    )];
    Ok((no_buffering, Sse::new(body)).into_response())
}
