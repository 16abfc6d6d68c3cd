//! `tasks sync --watch`: sync rounds, one after the other, woken by the server's change events
//! when it has `GET /api/events`, else by a timer.
//!
//! The loop is bounded (a number of rounds, or until the stop future resolves, e.g. Ctrl-C, even
//! mid-round). A failed round is reported and retried at the next wake-up: local work goes on
//! meanwhile. The
//! event stream only wakes the loop: what changed is always read from the changes feed, so a
//! missed or repeated event costs nothing.

use std::{future::Future, time::Duration};

use reqwest::Response;

use crate::{
    error::Result,
    remote::Remote,
    store::Store,
    sync::{Progress, SyncOptions, SyncReport, sync_once},
};

/// How the loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// The longest wait between rounds (also the polling interval without events).
    pub interval: Duration,
    /// Stop after this many rounds (`None`: until stopped).
    pub rounds: Option<u64>,
}

/// How the loop learns that something changed on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The server's event stream.
    Events,
    /// A timer: the server has no `/api/events`.
    Polling,
}

/// Runs rounds until `rounds` are done or `stop` resolves; `each` hears every finished round's
/// result and how the loop is waiting. Returns the rounds finished.
pub async fn watch(
    store: &mut Store,
    remote: &Remote,
    options: SyncOptions,
    watch: WatchOptions,
    stop: impl Future<Output = ()>,
    progress: &(dyn Fn(Progress) + Send + Sync),
    each: &mut (dyn FnMut(&Result<SyncReport>, Wake) + Send),
) -> u64 {
    tokio::pin!(stop);
    let mut events: Option<EventStream> = None;
    let mut polling = false;
    let mut rounds = 0;
    loop {
        // Stopping mid-round is safe: every step is stored in its own local transaction (no
        // transaction spans an await), and an interrupted round is finished by the next one.
        let result = tokio::select! {
            result = sync_once(store, remote, options, progress) => result,
            () = &mut stop => return rounds,
        };
        rounds += 1;
        // (Re)open the event stream unless the server said it has none.
        if events.is_none() && !polling {
            match remote.events(None).await {
                Ok(Some(response)) => events = Some(EventStream::new(response)),
                Ok(None) => polling = true,
                Err(e) => tracing::debug!(error = %e, "no event stream this round"),
            }
        }
        each(
            &result,
            if events.is_some() {
                Wake::Events
            } else {
                Wake::Polling
            },
        );
        if watch.rounds.is_some_and(|max| rounds >= max) {
            return rounds;
        }
        let woken = async {
            match events.as_mut() {
                Some(stream) => {
                    if !stream.next_event().await {
                        events = None;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut stop => return rounds,
            () = tokio::time::sleep(watch.interval) => {}
            () = woken => {}
        }
    }
}

/// A Server-Sent Events response read event by event.
#[derive(Debug)]
struct EventStream {
    response: Response,
    buffer: String,
}

impl EventStream {
    fn new(response: Response) -> Self {
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// Waits for the next complete event that carries data; false when the stream ended.
    async fn next_event(&mut self) -> bool {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if event.lines().any(|l| l.starts_with("data:")) {
                    return true;
                }
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => {
                    self.buffer
                        .push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
                    // An event never this long: the stream is not what we expect.
                    if self.buffer.len() > 1 << 20 {
                        return false;
                    }
                }
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(body: &'static str) -> EventStream {
        EventStream::new(Response::from(http::Response::new(body)))
    }

    #[tokio::test]
    async fn events_with_data_wake_and_comments_and_the_end_do_not() {
        let mut events =
            stream(": keep-alive\r\n\r\nid: 7\r\ndata: {}\r\n\r\nid: 8\ndata: x\n\n: bye\n\n");
        assert!(events.next_event().await);
        assert!(events.next_event().await);
        assert!(!events.next_event().await, "the stream ended");
    }
}
