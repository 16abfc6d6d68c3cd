//! The server's sync endpoints over HTTP, with bounded retries.
//!
//! A request that gets no answer (refused, reset, timed out), a 429, or a 5xx is tried again
//! after a growing delay, or after the server's `Retry-After` when it gives one, up to
//! [`RetryPolicy::attempts`] tries. Retrying a push is safe: op ids are idempotency keys, and
//! a push that got no answer may be assumed not accepted (docs/sync-protocol.md). Anything else
//! (400, 401, 404, 413) is answered at once as a [`RemoteError::Status`].

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde::de::DeserializeOwned;
use tasksync_shared::sync::{ChangesPage, OperationStatus, PushRequest, PushResponse};
use uuid::Uuid;

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub base_delay: Duration,
    /// The longest delay, also the cap on a server's `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay before try `n + 1` after `n` failures (n ≥ 1), honouring `retry_after`.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        retry_after.unwrap_or(exp).min(self.max_delay)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No answer after every try: the server is down or unreachable.
    #[error("server unreachable at {url} after {attempts} tries: {reason}")]
    Unreachable {
        url: String,
        attempts: u32,
        reason: String,
    },
    /// An answer that retrying will not change (or a 429/5xx that lasted every try).
    #[error("server answered {status} for {path}: {message}")]
    Status {
        status: u16,
        path: String,
        message: String,
    },
    #[error("unexpected answer from {path}: {reason}")]
    Decode { path: String, reason: String },
}

impl RemoteError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A bearer token; never shown by `Debug`.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A client of one server's `/api`.
#[derive(Clone, Debug)]
pub struct Remote {
    http: reqwest::Client,
    base: String,
    token: Option<Token>,
    pub retry: RetryPolicy,
}

/// `url` as the base of the api: a bare host (`http://host:3000`) gets `/api`.
pub fn api_base(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    if rest.contains('/') {
        url.to_string()
    } else {
        format!("{url}/api")
    }
}

/// The `Retry-After` of an answer, in seconds (the form the api sends).
fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

impl Remote {
    pub fn new(url: &str, token: Option<Token>, timeout: Duration) -> Result<Self, RemoteError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| RemoteError::Unreachable {
                url: url.to_string(),
                attempts: 0,
                reason: format!("cannot build an HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            base: api_base(url),
            token,
            retry: RetryPolicy::default(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(Token(token)) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends the request `build` makes until it is answered with something other than 429 or
    /// 5xx, or the tries run out.
    async fn send(
        &self,
        path: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RemoteError> {
        let attempts = self.retry.attempts.max(1);
        let mut failures = 0;
        loop {
            let (failure, wait) = match build().send().await {
                Ok(response) if !retryable(response.status()) => return Ok(response),
                Ok(response) => {
                    let wait = retry_after(&response);
                    (Err(response), wait)
                }
                Err(e) => (Ok(e), None),
            };
            failures += 1;
            if failures >= attempts {
                return Err(match failure {
                    Err(response) => status_error(path, response).await,
                    Ok(e) => RemoteError::Unreachable {
                        url: format!("{}{path}", self.base),
                        attempts,
                        reason: describe(&e),
                    },
                });
            }
            let delay = self.retry.delay(failures, wait);
            tracing::debug!(path, failures, ?delay, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        path: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<T, RemoteError> {
        let response = self.send(path, build).await?;
        if !response.status().is_success() {
            return Err(status_error(path, response).await);
        }
        response.json().await.map_err(|e| RemoteError::Decode {
            path: path.to_string(),
            reason: describe(&e),
        })
    }

    /// `POST /api/sync`.
    pub async fn push(&self, request: &PushRequest) -> Result<PushResponse, RemoteError> {
        // Serialized once: every retry sends the same bytes.
        let body = serde_json::to_vec(request).map_err(|e| RemoteError::Decode {
            path: "/sync".into(),
            reason: e.to_string(),
        })?;
        self.json("/sync", || {
            self.request(Method::POST, "/sync")
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await
    }

    /// `GET /api/changes?since=…&limit=…`.
    pub async fn changes(&self, since: &str, limit: usize) -> Result<ChangesPage, RemoteError> {
        let limit = limit.to_string();
        self.json("/changes", || {
            self.request(Method::GET, "/changes")
                .query(&[("since", since), ("limit", limit.as_str())])
        })
        .await
    }

    /// `GET /api/sync/operations/{op_id}`; `None` when the server has not decided it (404).
    pub async fn operation(&self, op_id: Uuid) -> Result<Option<OperationStatus>, RemoteError> {
        let path = format!("/sync/operations/{op_id}");
        let response = self
            .send(&path, || self.request(Method::GET, &path))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(status_error(&path, response).await);
        }
        response
            .json()
            .await
            .map(Some)
            .map_err(|e| RemoteError::Decode {
                path,
                reason: describe(&e),
            })
    }

    /// Opens `GET /api/events` (Server-Sent Events). `None` when the server has no such route
    /// (404 or 405): the caller polls instead.
    pub async fn events(
        &self,
        last_event_id: Option<&str>,
    ) -> Result<Option<Response>, RemoteError> {
        let mut request = self
            .request(Method::GET, "/events")
            .header(header::ACCEPT, "text/event-stream")
            // The stream stays open: only connecting is bounded.
            .timeout(Duration::from_secs(24 * 60 * 60));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.map_err(|e| RemoteError::Unreachable {
            url: format!("{}/events", self.base),
            attempts: 1,
            reason: describe(&e),
        })?;
        match response.status() {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Ok(None),
            s if s.is_success() => Ok(Some(response)),
            _ => Err(status_error("/events", response).await),
        }
    }
}

/// The error of an answer, with the message of the api's error body when it has one.
async fn status_error(path: &str, response: Response) -> RemoteError {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.chars().take(200).collect());
    RemoteError::Status {
        status,
        path: path.to_string(),
        message,
    }
}

/// An HTTP error with its causes, which reqwest keeps in the source chain.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_host_gets_the_api_path_and_a_full_base_is_kept() {
        assert_eq!(
            api_base("http://localhost:3000"),
            "http://localhost:3000/api"
        );
        assert_eq!(
            api_base("http://localhost:3000/"),
            "http://localhost:3000/api"
        );
        assert_eq!(api_base("https://x.example/api/"), "https://x.example/api");
        assert_eq!(
            api_base("https://x.example/tasks/api"),
            "https://x.example/tasks/api"
        );
    }

    #[test]
    fn delays_double_and_retry_after_wins_within_the_cap() {
        let policy = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        assert_eq!(policy.delay(1, None), Duration::from_millis(100));
        assert_eq!(policy.delay(3, None), Duration::from_millis(400));
        assert_eq!(policy.delay(10, None), Duration::from_secs(2));
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(60))),
            Duration::from_secs(2)
        );
    }
}
