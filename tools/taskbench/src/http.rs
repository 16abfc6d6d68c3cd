//! One HTTP exchange, counted: the request is tallied as sent before it leaves, the answer is
//! classed (2xx / 202 / 429 / 4xx / 5xx / none), and a 429's `Retry-After` is honoured.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, header::HeaderMap};
use url::Url;

use crate::tally::Tally;

/// Longest any single request may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a 429 makes a connection wait, whatever `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    base: Url,
    token: Option<String>,
    respond_async: bool,
}

/// An answer other than 429.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Http {
    pub fn new(
        base: Url,
        token: Option<String>,
        connections: usize,
        respond_async: bool,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections.max(1))
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            client,
            base,
            token,
            respond_async,
        })
    }

    /// Sends one request and counts it. `None` when there was no usable answer (throttled, or
    /// no answer at all); the caller simply goes on with its next request.
    pub async fn send(
        &self,
        tally: &mut Tally,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Option<Answer> {
        let url = self.base.join(path).ok()?;
        let mut request = self.client.request(method.clone(), url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
            if self.respond_async {
                request = request.header("prefer", "respond-async");
            }
        }
        tally.sent += 1;
        let started = Instant::now();
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                tally.transport_errors += 1;
                tally.note_error(|| format!("{method} {path}: {e}"));
                return None;
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let Ok(body) = body else {
            tally.transport_errors += 1;
            tally.note_error(|| format!("{method} {path}: body cut off"));
            return None;
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            tally.throttled += 1;
            tokio::time::sleep(retry_after(&headers)).await;
            return None;
        }
        let _ = tally.latency.record(micros.max(1));
        classify(tally, status, || {
            format!("{method} {path}: {status} {}", snippet(&body))
        });
        Some(Answer {
            status,
            headers,
            body: body.to_vec(),
        })
    }
}

fn classify(tally: &mut Tally, status: StatusCode, what: impl FnOnce() -> String) {
    match status.as_u16() {
        202 => tally.accepted_202 += 1,
        200..=299 => tally.ok += 1,
        500..=599 => {
            tally.server_errors += 1;
            tally.note_error(what);
        }
        _ => {
            tally.client_errors += 1;
            tally.note_error(what);
        }
    }
}

/// The wait a 429 asks for (seconds), at least 50 ms, at most [`MAX_BACKOFF`].
fn retry_after(headers: &HeaderMap) -> Duration {
    let secs = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs).clamp(Duration::from_millis(50), MAX_BACKOFF)
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    use super::retry_after;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        assert_eq!(retry_after(&with("2")), Duration::from_secs(2));
        assert_eq!(retry_after(&with("0")), Duration::from_millis(50));
        assert_eq!(retry_after(&with("3600")), Duration::from_secs(5));
        assert_eq!(retry_after(&with("soon")), Duration::from_secs(1));
        assert_eq!(retry_after(&HeaderMap::new()), Duration::from_secs(1));
    }
}
