//! `events`: `--subscribers` streams of `GET /api/events`, each on its own connection, while a
//! writer creates tasks at `--rate` per second for `--duration` seconds; then it waits (up to
//! `--drain-timeout`) until every stream has received every change it is owed.
//!
//! With `JWT_SECRET` set (and no `--token`), subscriber `i` is the user `<--user>-<i>` with a
//! token of its own, and the writer creates task `n` for user `n mod S`: each change is owed to
//! exactly one stream. Without (development mode, or one `--token`), every stream is the one
//! user, and every change is owed to every stream: each write wakes them all.
//!
//! Latency is apply → receipt: the task's `last_synced_at` (the worker's transaction time, just
//! before its commit) against the moment the event was parsed here (same machine, same clock).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};
use url::Url;
use uuid::Uuid;

use crate::{
    cli::{Common, Scenario},
    report::{Latency, Report, Requests},
    tally::{Tally, histogram},
    target,
};

/// Streams opened at once while setting up.
const OPENING: usize = 100;
/// Writes in flight at once.
const WRITES_IN_FLIGHT: usize = 64;
/// Longest wait for a stream's `ready` event.
const READY_WAIT: Duration = Duration::from_secs(30);

/// What the `events` scenario measured.
#[derive(Debug, Serialize)]
pub struct EventsFigures {
    pub subscribers: usize,
    /// Distinct users behind the streams (1 in development mode or with `--token`).
    pub users: usize,
    /// Streams that opened and sent `ready`.
    pub streams_ready: usize,
    /// Writes per second asked for.
    pub rate: f64,
    /// Changes owed to the streams: for each accepted write, one per stream of its user.
    pub events_expected: u64,
    /// Owed changes received (each task counted once per stream).
    pub events_received: u64,
    /// A task's change received again by the same stream (the writer creates each task once).
    pub events_repeated: u64,
    /// Apply (`last_synced_at`) → receipt, per received change.
    pub apply_to_event_ms: Option<Latency>,
    /// Seconds from the last write to the last owed event (or the drain timeout).
    pub drain_seconds: f64,
}

/// What one stream saw.
#[derive(Debug, Default)]
struct Seen {
    tasks: HashMap<Uuid, u32>,
    /// µs from `last_synced_at` to receipt, one per change.
    delays: Vec<u64>,
    error: Option<String>,
}

pub async fn run(common: &Common) -> anyhow::Result<Report> {
    let base = target::checked_base(&common.base_url, common.allow_remote)?;
    let subscribers = common.subscribers.max(1);
    let per_user =
        common.token.is_none() && std::env::var("JWT_SECRET").is_ok_and(|s| !s.trim().is_empty());
    let users = if per_user { subscribers } else { 1 };
    let tokens: Vec<Option<String>> = (0..users)
        .map(|i| {
            let user = if per_user {
                format!("{}-{i}", common.user)
            } else {
                common.user.clone()
            };
            target::bearer(common.token.as_deref(), &user)
        })
        .collect::<anyhow::Result<_>>()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(subscribers + WRITES_IN_FLIGHT)
        .build()?;
    let url = base.join("/api/events")?;

    // Open every stream, a hundred at a time, and wait for each one's `ready`.
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(subscribers);
    let opening = Arc::new(Semaphore::new(OPENING));
    let mut streams = JoinSet::new();
    for i in 0..subscribers {
        let token = tokens[i % users].clone();
        let stream = Stream {
            client: client.clone(),
            url: url.clone(),
            token,
            received: received.clone(),
            stop: stop.clone(),
        };
        let (opening, ready_tx) = (opening.clone(), ready_tx.clone());
        streams.spawn(async move { (i, stream.follow(opening, ready_tx).await) });
    }
    drop(ready_tx);
    let mut streams_ready = 0;
    let mut first_error = None;
    for _ in 0..subscribers {
        match tokio::time::timeout(READY_WAIT, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => streams_ready += 1,
            Ok(Some(Err(e))) => {
                first_error.get_or_insert(e);
            }
            Ok(None) | Err(_) => break,
        }
    }
    if streams_ready == 0 {
        let _ = stop_tx.send(true);
        bail!(
            "no event stream opened: {}",
            first_error.unwrap_or_default()
        );
    }

    // Write at the fixed rate.
    let (tally, written, seconds) = write(common, &client, &base, &tokens).await?;
    let wrote_at = Instant::now();
    let expected: u64 = written.len() as u64 * (subscribers / users) as u64
        + written
            .iter()
            .filter(|(user, _)| *user < subscribers % users)
            .count() as u64;
    let deadline = wrote_at + common.drain_time();
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_seconds = wrote_at.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);

    // Tally what every stream owed and received.
    let owed: HashMap<usize, HashSet<Uuid>> =
        written
            .iter()
            .fold(HashMap::new(), |mut by_user, (user, task)| {
                by_user.entry(*user).or_default().insert(*task);
                by_user
            });
    let mut delays = histogram();
    let (mut events_received, mut events_repeated) = (0, 0);
    while let Some(joined) = streams.join_next().await {
        let Ok((i, seen)) = joined else { continue };
        if let Some(e) = &seen.error {
            first_error.get_or_insert_with(|| e.clone());
        }
        let mine = owed.get(&(i % users));
        for (task, times) in &seen.tasks {
            if mine.is_some_and(|m| m.contains(task)) {
                events_received += 1;
                events_repeated += u64::from(times.saturating_sub(1));
            }
        }
        for d in seen.delays {
            let _ = delays.record(d.max(1));
        }
    }
    Ok(Report {
        scenario: Scenario::Events,
        connections: subscribers,
        seconds,
        requests: Requests::of(&tally),
        requests_per_s: tally.answered() as f64 / seconds.max(1e-3),
        latency_ms: Latency::of(&tally.latency),
        ops: None,
        list_rows: None,
        list_has_more: None,
        api_rss: None,
        worker_rss: None,
        ceiling: None,
        events: Some(EventsFigures {
            subscribers,
            users,
            streams_ready,
            rate: common.rate,
            events_expected: expected,
            events_received,
            events_repeated,
            apply_to_event_ms: Latency::of(&delays),
            drain_seconds,
        }),
        first_error: first_error.or(tally.first_error.clone()),
    })
}

/// Creates tasks at `--rate` per second for `--duration` (or `--requests` of them), task `n`
/// for user `n mod users`, with `Prefer: respond-async`. Returns the tally, the accepted
/// (user, task) pairs and the seconds it wrote.
async fn write(
    common: &Common,
    client: &reqwest::Client,
    base: &Url,
    tokens: &[Option<String>],
) -> anyhow::Result<(Tally, Vec<(usize, Uuid)>, f64)> {
    let url = base.join("/api/tasks")?;
    let rate = common.rate.clamp(0.1, 100_000.0);
    let count = common
        .requests
        .unwrap_or_else(|| (rate * common.run_time().as_secs_f64()).ceil() as u64);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let in_flight = Arc::new(Semaphore::new(WRITES_IN_FLIGHT));
    let mut writes = JoinSet::new();
    let started = Instant::now();
    for n in 0..count {
        ticks.tick().await;
        let user = (n as usize) % tokens.len();
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .context("writer semaphore")?;
        let request = client
            .post(url.clone())
            .header("prefer", "respond-async")
            .json(&json!({ "id": Uuid::new_v4(), "title": format!("events bench {n}") }));
        let request = match &tokens[user] {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        writes.spawn(async move {
            let sent = Instant::now();
            let answer = request.send().await;
            drop(permit);
            (user, sent.elapsed(), answer)
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut tally = Tally::default();
    let mut written = Vec::new();
    while let Some(joined) = writes.join_next().await {
        let Ok((user, took, answer)) = joined else {
            continue;
        };
        tally.sent += 1;
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                tally.transport_errors += 1;
                tally.note_error(|| format!("POST /api/tasks: {e}"));
                continue;
            }
        };
        let status = response.status();
        let body: Option<Value> = response.json().await.ok();
        let _ = tally
            .latency
            .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
        match status {
            StatusCode::ACCEPTED | StatusCode::CREATED => {
                if status == StatusCode::ACCEPTED {
                    tally.accepted_202 += 1;
                } else {
                    tally.ok += 1;
                }
                let id = body
                    .as_ref()
                    .and_then(|b| b["id"].as_str())
                    .and_then(|s| Uuid::parse_str(s).ok());
                match id {
                    Some(id) => written.push((user, id)),
                    None => tally.note_error(|| "a create answered without its id".into()),
                }
            }
            StatusCode::TOO_MANY_REQUESTS => tally.throttled += 1,
            s if s.is_server_error() => {
                tally.server_errors += 1;
                tally.note_error(|| format!("POST /api/tasks: {s}"));
            }
            s => {
                tally.client_errors += 1;
                tally.note_error(|| format!("POST /api/tasks: {s}"));
            }
        }
    }
    Ok((tally, written, seconds))
}

/// One subscriber.
struct Stream {
    client: reqwest::Client,
    url: Url,
    token: Option<String>,
    /// Distinct tasks received over every stream (progress, for the drain).
    received: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
}

impl Stream {
    /// Opens the stream (within the opening limit), reports `ready`, then reads changes until
    /// told to stop or the stream ends.
    async fn follow(
        mut self,
        opening: Arc<Semaphore>,
        ready: tokio::sync::mpsc::Sender<Result<(), String>>,
    ) -> Seen {
        let mut seen = Seen::default();
        let permit = opening.acquire_owned().await;
        let mut request = self.client.get(self.url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = match request.send().await {
            Ok(r) if r.status() == StatusCode::OK => r,
            Ok(r) => {
                let e = format!("GET /api/events: {}", r.status());
                let _ = ready.send(Err(e.clone())).await;
                seen.error = Some(e);
                return seen;
            }
            Err(e) => {
                let e = format!("GET /api/events: {e}");
                let _ = ready.send(Err(e.clone())).await;
                seen.error = Some(e);
                return seen;
            }
        };
        let mut parser = Parser::default();
        let mut announced = false;
        let mut permit = permit.ok();
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                _ = self.stop.wait_for(|s| *s) => break,
            };
            let bytes = match chunk {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    seen.error
                        .get_or_insert_with(|| "an event stream ended".into());
                    break;
                }
                Err(e) => {
                    seen.error
                        .get_or_insert_with(|| format!("an event stream failed: {e}"));
                    break;
                }
            };
            let now = Utc::now();
            for (event, data) in parser.feed(&bytes) {
                match event.as_str() {
                    "ready" if !announced => {
                        announced = true;
                        permit.take();
                        let _ = ready.send(Ok(())).await;
                    }
                    "change" => self.change(&data, now, &mut seen),
                    _ => {}
                }
            }
        }
        if !announced {
            let _ = ready.send(Err("the stream sent no ready".into())).await;
        }
        seen
    }

    fn change(&self, data: &str, now: DateTime<Utc>, seen: &mut Seen) {
        let Ok(task) = serde_json::from_str::<Value>(data) else {
            seen.error
                .get_or_insert_with(|| format!("a change that is not JSON: {data}"));
            return;
        };
        let id = task["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
        let applied = task["last_synced_at"]
            .as_str()
            .and_then(|s| s.parse::<DateTime<Utc>>().ok());
        if let Some(id) = id {
            let times = seen.tasks.entry(id).or_insert(0);
            *times += 1;
            if *times == 1 {
                self.received.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(applied) = applied {
            let micros = (now - applied).num_microseconds().unwrap_or(0).max(1);
            seen.delays.push(micros as u64);
        }
    }
}

/// Server-Sent Events, parsed as the bytes arrive: (event name, data) of each complete event.
#[derive(Debug, Default)]
struct Parser {
    buffer: String,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut event, mut data) = (String::new(), Vec::new());
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_string(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if !event.is_empty() {
                events.push((event, data.join("\n")));
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::Parser;

    #[test]
    fn events_are_parsed_across_chunks_and_comments_skipped() {
        let mut p = Parser::default();
        assert!(
            p.feed(b"event: ready\nid: 01\nretry: 2000\ndata: {}\n")
                .is_empty()
        );
        let got = p.feed(b"\n: keepalive\n\nevent: change\ndata: {\"id\":1}\n\nevent: cha");
        assert_eq!(
            got,
            [
                ("ready".to_string(), "{}".to_string()),
                ("change".to_string(), "{\"id\":1}".to_string())
            ]
        );
        assert_eq!(
            p.feed(b"nge\ndata:x\n\n"),
            [("change".to_string(), "x".to_string())]
        );
    }
}
