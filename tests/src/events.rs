//! [`EventStream`]: a client of `GET /api/events` that reads the Server-Sent Events as they
//! arrive (chunk by chunk) and parses them: event name, id, data, and comments.

use std::time::Duration;

use serde_json::Value;

use crate::{ApiClient, PATIENCE};

/// One event, or a comment line (`: keepalive`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (`message` when absent, as browsers do); `""` for a comment.
    pub event: String,
    pub id: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

impl SseEvent {
    /// The data as JSON; fails the test when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data not JSON ({e}): {self:?}"))
    }

    /// The event's id; fails the test when it has none.
    pub fn cursor(&self) -> String {
        self.id.clone().unwrap_or_else(|| panic!("no id: {self:?}"))
    }
}

/// An open event stream.
#[derive(Debug)]
pub struct EventStream {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
    buffer: String,
    /// The stream's body ended.
    pub ended: bool,
}

impl ApiClient {
    /// `GET /api/events` with `query` (e.g. `since=…`, or empty) and extra headers (e.g.
    /// `Last-Event-ID`). Returns the stream whatever its status; read an error's body with
    /// [`EventStream::error_body`].
    pub async fn events(&self, query: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut request = self.http.get(format!("{}/events?{query}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("GET /api/events");
        EventStream {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            response,
            buffer: String::new(),
            ended: false,
        }
    }
}

impl EventStream {
    /// The JSON body of an answer other than a stream.
    pub async fn error_body(self) -> Value {
        let bytes = self.response.bytes().await.expect("error body");
        serde_json::from_slice(&bytes).expect("a JSON error body")
    }

    /// The next event or comment within `wait`; `None` when none came in time or the stream
    /// ended (then [`EventStream::ended`] is set).
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.take_block() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None) | Err(_)) => self.ended = true,
            }
        }
    }

    /// The next event (comments skipped) within [`PATIENCE`]; fails the test otherwise.
    pub async fn next_event(&mut self) -> SseEvent {
        self.next_event_within(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("no event within {PATIENCE:?} (ended: {})", self.ended))
    }

    /// The next event (comments skipped) within `wait`.
    pub async fn next_event_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_within(left).await?;
            if event.comment.is_none() {
                return Some(event);
            }
        }
    }

    /// The next event other than an `ack` (the acks of a change's decisions come just before
    /// it) within [`PATIENCE`]; fails the test otherwise.
    pub async fn next_change(&mut self) -> SseEvent {
        loop {
            let event = self.next_event().await;
            if event.event != "ack" {
                return event;
            }
        }
    }

    /// The next `count` events other than acks, each of which must be a `change`.
    pub async fn changes(&mut self, count: usize) -> Vec<SseEvent> {
        let mut changes = Vec::with_capacity(count);
        while changes.len() < count {
            let event = self.next_change().await;
            assert_eq!(event.event, "change", "{event:?}");
            changes.push(event);
        }
        changes
    }

    /// Parses one complete block (ended by a blank line) off the buffer.
    fn take_block(&mut self) -> Option<SseEvent> {
        let normalized = self.buffer.replace("\r\n", "\n");
        let end = normalized.find("\n\n")?;
        let block = normalized[..end].to_string();
        self.buffer = normalized[end + 2..].to_string();
        let mut event = SseEvent {
            event: "message".into(),
            id: None,
            data: String::new(),
            comment: None,
        };
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                event.event = String::new();
                event.comment = Some(comment.trim_start().to_string());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "event" => event.event = value,
                "id" => event.id = Some(value),
                "data" => data.push(value),
                _ => {}
            }
        }
        event.data = data.join("\n");
        Some(event)
    }
}
