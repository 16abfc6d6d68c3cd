//! Offline-sync helpers: one [`TestStack`] method per sync endpoint (delegating to its
//! [`crate::ApiClient`]), builders of push items, and a [`Device`] that keeps a replica of the
//! caller's tasks by paging the changes feed, as a client would.

use std::{
    collections::{BTreeMap, HashSet},
    time::Instant,
};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{PATIENCE, Reply, TestStack};

/// A push item (SPEC §3) with a fresh op id; `data.updated_at` is `at`, as a device that
/// stamps its edits would send it.
pub fn item(task: Uuid, operation: &str, mut data: Value, at: DateTime<Utc>) -> Value {
    if let Value::Object(map) = &mut data {
        map.insert("updated_at".into(), json!(at));
    }
    json!({
        "id": Uuid::new_v4(),
        "task_id": task,
        "operation": operation,
        "data": data,
        "created_at": at,
        "retry_count": 0,
    })
}

pub fn create(task: Uuid, title: &str, at: DateTime<Utc>) -> Value {
    item(task, "create", json!({ "title": title }), at)
}

pub fn update(task: Uuid, data: Value, at: DateTime<Utc>) -> Value {
    item(task, "update", data, at)
}

pub fn delete(task: Uuid, at: DateTime<Utc>) -> Value {
    item(task, "delete", json!({}), at)
}

/// The op id of an item.
pub fn op_id(item: &Value) -> String {
    item["id"].as_str().expect("item id").to_string()
}

/// The `status` of each processed item of a push answer.
pub fn statuses(reply: &Reply) -> Vec<String> {
    reply.body["processed_items"]
        .as_array()
        .unwrap_or_else(|| panic!("no processed_items in {reply:?}"))
        .iter()
        .map(|p| p["status"].as_str().expect("status").to_string())
        .collect()
}

impl TestStack {
    /// `POST /api/batch`.
    pub async fn push(&self, items: &[Value]) -> Reply {
        self.client().push(items).await
    }

    /// `POST /api/sync`.
    pub async fn sync(&self, items: &[Value]) -> Reply {
        self.client().sync(items).await
    }

    pub async fn push_to(&self, path: &str, items: &[Value], headers: &[(&str, &str)]) -> Reply {
        self.client().push_to(path, items, headers).await
    }

    /// `GET /api/changes`.
    pub async fn changes(&self, since: &str, limit: Option<usize>) -> Reply {
        self.client().changes(since, limit).await
    }

    /// `GET /api/sync/operations/{op_id}`.
    pub async fn operation(&self, op_id: &str) -> Reply {
        self.client().operation(op_id).await
    }

    /// Waits until every op id has a decided outcome (none `pending`), and returns them.
    pub async fn settle(&self, op_ids: &[String]) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut outcomes = Vec::new();
        for op_id in op_ids {
            loop {
                let reply = self.operation(op_id).await;
                let status = reply.body["status"].as_str().unwrap_or("pending");
                if reply.status == 200 && status != "pending" {
                    outcomes.push(status.to_string());
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{op_id} still undecided: {reply:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        outcomes
    }

    /// Waits until every transaction that changed a task or decided an operation so far has
    /// ended, i.e. until the feed's horizon is past the last change and the last decision: a
    /// pull from then on must see all of them.
    pub async fn feed_caught_up(&self) {
        self.eventually("the feed horizon passes the last change", || async {
            let client = self.db.get().await.unwrap();
            client
                .query_one(
                    "SELECT pg_snapshot_xmin(pg_current_snapshot()) > greatest( \
                       (SELECT coalesce(max(change_xid), '0'::xid8) FROM tasks), \
                       (SELECT coalesce(max(decided_xid), '0'::xid8) FROM operations))",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        })
        .await;
    }

    /// Every task of the caller as the server holds it, deleted ones included, by id.
    pub async fn server_tasks(&self) -> BTreeMap<String, Value> {
        let reply = self.get("/tasks?include_deleted=true").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply
            .body
            .as_array()
            .expect("a list")
            .iter()
            .map(|t| (t["id"].as_str().expect("id").to_string(), t.clone()))
            .collect()
    }
}

/// A client's copy of the caller's tasks, kept up to date by pulling the changes feed.
#[derive(Debug, Default)]
pub struct Device {
    pub tasks: BTreeMap<String, Value>,
    pub cursor: String,
}

impl Device {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pages the feed from the device's cursor to its end, `limit` rows a page, replacing its
    /// copy of each task delivered. Returns how many rows came.
    pub async fn pull(&mut self, stack: &TestStack, limit: Option<usize>) -> usize {
        let mut delivered = 0;
        for _ in 0..10_000 {
            let (rows, has_more) = self.pull_page(stack, limit).await;
            delivered += rows;
            if !has_more {
                return delivered;
            }
        }
        panic!("the feed never ended");
    }

    /// Reads one page from the device's cursor and moves the cursor. Returns the rows
    /// delivered and `has_more`.
    pub async fn pull_page(&mut self, stack: &TestStack, limit: Option<usize>) -> (usize, bool) {
        let page = stack.changes(&self.cursor, limit).await;
        assert_eq!(page.status, 200, "{page:?}");
        let changes = page.body["changes"].as_array().expect("changes");
        assert!(
            changes.len() <= limit.unwrap_or(100),
            "a page longer than its limit"
        );
        let mut ids = HashSet::new();
        for task in changes {
            let id = task["id"].as_str().expect("id").to_string();
            assert!(ids.insert(id.clone()), "{id} twice in one page");
            self.tasks.insert(id, task.clone());
        }
        self.cursor = page.body["next_cursor"]
            .as_str()
            .expect("next_cursor")
            .to_string();
        let has_more = page.body["has_more"].as_bool().expect("has_more");
        (changes.len(), has_more)
    }
}
