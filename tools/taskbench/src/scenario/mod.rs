//! The HTTP scenarios: each is one loop per connection over a shared [`Ctx`].

pub mod batch;
pub mod events;
pub mod mixed;
pub mod reads;
pub mod rest_write;
pub mod seed;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{drive::Budget, http::Http, tally::Tally};

/// What every connection of a scenario shares.
#[derive(Debug)]
pub struct Ctx {
    pub http: Http,
    pub budget: Arc<Budget>,
    /// Items per batch push.
    pub items: usize,
    /// Tasks that exist before the load starts (reads).
    pub seeds: Vec<Uuid>,
}

/// `POST /api/tasks` of a new task; returns its id when the api accepted it.
pub async fn create(ctx: &Ctx, tally: &mut Tally, n: u64) -> Option<Uuid> {
    let id = Uuid::new_v4();
    let body = json!({ "id": id, "title": format!("bench {n}"), "description": "taskbench" });
    let sent_at = Utc::now();
    let answer = ctx
        .http
        .send(tally, Method::POST, "/api/tasks", Some(&body))
        .await?;
    accept_rest(tally, &answer, sent_at).then_some(id)
}

/// `PUT /api/tasks/{id}` of the title.
pub async fn update(ctx: &Ctx, tally: &mut Tally, id: Uuid, n: u64) {
    let body = json!({ "title": format!("bench {n} again"), "completed": n % 2 == 0 });
    let sent_at = Utc::now();
    let path = format!("/api/tasks/{id}");
    if let Some(answer) = ctx.http.send(tally, Method::PUT, &path, Some(&body)).await {
        accept_rest(tally, &answer, sent_at);
    }
}

/// Records the `operation-id` of a 2xx write; whether it was accepted.
fn accept_rest(tally: &mut Tally, answer: &crate::http::Answer, sent_at: DateTime<Utc>) -> bool {
    if !answer.status.is_success() {
        return false;
    }
    let op = answer
        .headers
        .get("operation-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok());
    match op {
        Some(op) => tally.accepted.push((op, sent_at)),
        None => tally.note_error(|| "a write answered 2xx without operation-id".into()),
    }
    true
}

/// A push of `n` creates of new tasks.
pub fn batch_of_creates(n: usize, tag: u64) -> Value {
    let now = Utc::now();
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": Uuid::new_v4(), "task_id": Uuid::new_v4(), "operation": "create",
                "data": { "title": format!("bench {tag}.{i}"), "description": "taskbench" },
                "created_at": now, "retry_count": 0
            })
        })
        .collect();
    json!({ "items": items, "client_timestamp": now })
}

/// Counts a push's per-item answers: every item not `error` was accepted (published).
pub fn accept_batch(tally: &mut Tally, body: &[u8], sent_at: DateTime<Utc>) -> Vec<Uuid> {
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        tally.note_error(|| "a push answer was not JSON".into());
        return Vec::new();
    };
    let mut tasks = Vec::new();
    let items = answer["processed_items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for item in items {
        let op = item["op_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
        let task = item["client_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok());
        match (item["status"].as_str(), op) {
            (Some("success" | "pending" | "conflict"), Some(op)) => {
                tally.accepted.push((op, sent_at));
                tasks.extend(task);
            }
            _ => {
                tally.refused_items += 1;
                tally.note_error(|| format!("push item refused: {item}"));
            }
        }
    }
    tasks
}
