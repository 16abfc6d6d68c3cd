//! Tasks created before a read scenario, through the api itself, and awaited until readable.

use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::Utc;
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use super::{accept_batch, batch_of_creates};
use crate::{http::Http, tally::Tally};

/// Longest the seeding may take.
const PATIENCE: Duration = Duration::from_secs(120);

/// Pushes `count` new tasks in pushes of at most `per_push`, then waits until every one of them
/// reads back 200. The seeding's requests are not part of the measured load.
pub async fn tasks(http: &Http, count: usize, per_push: usize) -> anyhow::Result<Vec<Uuid>> {
    let deadline = Instant::now() + PATIENCE;
    let mut tally = Tally::default();
    let mut ids = Vec::with_capacity(count);
    let mut tag = u64::MAX / 2;
    while ids.len() < count && Instant::now() < deadline {
        tag += 1;
        let body = batch_of_creates((count - ids.len()).min(per_push.max(1)), tag);
        if let Some(answer) = http
            .send(&mut tally, Method::POST, "/api/batch", Some(&body))
            .await
        {
            if answer.status.is_success() {
                ids.extend(accept_batch(&mut tally, &answer.body, Utc::now()));
            }
        }
        if let Some(e) = tally.first_error.take() {
            bail!("seeding {count} tasks: {e}");
        }
    }
    for id in &ids {
        readable(http, &mut tally, *id, deadline).await?;
    }
    Ok(ids)
}

async fn readable(
    http: &Http,
    tally: &mut Tally,
    id: Uuid,
    deadline: Instant,
) -> anyhow::Result<()> {
    let path = format!("/api/tasks/{id}");
    while Instant::now() < deadline {
        if let Some(a) = http.send(tally, Method::GET, &path, None).await {
            if a.status == StatusCode::OK {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("seeded task {id} not readable within {PATIENCE:?}")
}
