//! Write acknowledgements in the changes feed and the retention horizon, on the real stack:
//! a write answered `pending` shows up decided in the next pulls, exactly once; a create that
//! failed every attempt is acknowledged as an `error` in words meant for the client; a write
//! that changed nothing is acknowledged too; paging with small limits serves every ack once;
//! after a prune, an old cursor answers 410 and a pull from the start ends in the server's
//! tasks, while op ids newer than the horizon are still recognised.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{Duration as Delta, Utc};
use serde_json::{Value, json};
use tasksync_shared::Settings;
use tasksync_tests::{
    PATIENCE, TestStack,
    faults::{Failing, ScriptedFaults},
    sync_client::{create, delete, op_id, update},
};
use uuid::Uuid;

/// What paging the feed to its end from `cursor` delivered.
#[derive(Debug, Default)]
struct Pulled {
    tasks: Vec<Value>,
    acks: Vec<Value>,
    cursor: String,
    pages: usize,
}

impl Pulled {
    fn ack_ids(&self) -> Vec<String> {
        self.acks
            .iter()
            .map(|a| a["op_id"].as_str().unwrap().to_string())
            .collect()
    }

    fn ack(&self, op: &str) -> Option<&Value> {
        self.acks.iter().find(|a| a["op_id"] == op)
    }
}

/// Pages the feed from `cursor` until `has_more` is false, `limit` rows a page.
async fn pull(stack: &TestStack, cursor: &str, limit: Option<usize>) -> Pulled {
    let mut pulled = Pulled {
        cursor: cursor.to_string(),
        ..Pulled::default()
    };
    for _ in 0..10_000 {
        let page = stack.changes(&pulled.cursor, limit).await;
        assert_eq!(page.status, 200, "{page:?}");
        let changes = page.body["changes"].as_array().unwrap();
        let acks = page.body["acks"].as_array().unwrap();
        if let Some(limit) = limit {
            assert!(changes.len() <= limit, "{page:?}");
        }
        pulled.tasks.extend(changes.iter().cloned());
        pulled.acks.extend(acks.iter().cloned());
        pulled.cursor = page.body["next_cursor"].as_str().unwrap().to_string();
        pulled.pages += 1;
        if !page.body["has_more"].as_bool().unwrap() {
            return pulled;
        }
    }
    panic!("the feed did not end");
}

/// Pulls from `cursor` (moving it) until the ack of `op` has come, then once more; returns
/// every ack delivered meanwhile, by op id, with how many times each came.
async fn pull_until_acked(
    stack: &TestStack,
    cursor: &mut String,
    op: &str,
    limit: Option<usize>,
) -> (Value, HashMap<String, usize>) {
    let deadline = Instant::now() + PATIENCE;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut found = None;
    loop {
        let pulled = pull(stack, cursor, limit).await;
        *cursor = pulled.cursor.clone();
        for ack in &pulled.acks {
            *seen
                .entry(ack["op_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        if let Some(ack) = pulled.ack(op) {
            found = Some(ack.clone());
        } else if let Some(ack) = found {
            // One more pull after it came: it does not come again.
            return (ack, seen);
        }
        assert!(Instant::now() < deadline, "no ack of {op}: {seen:?}");
        if found.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_write_answered_pending_shows_up_decided_in_the_next_pull_exactly_once() {
    let stack = TestStack::start().await;
    let mut cursor = pull(&stack, "", None).await.cursor;
    let task = Uuid::new_v4();
    let reply = stack
        .client()
        .create_task_async(json!({"id": task, "title": "later"}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let op = reply.operation_id().to_string();

    let (ack, seen) = pull_until_acked(&stack, &mut cursor, &op, Some(1)).await;
    assert_eq!(seen[&op], 1, "acknowledged exactly once: {seen:?}");
    assert_eq!(ack["outcome"], "success", "{ack}");
    assert_eq!(ack["operation"], "create");
    assert_eq!(ack["task_id"], task.to_string());
    assert!(ack.get("error").is_none(), "{ack}");
    assert!(ack["decided_at"].is_string(), "{ack}");
}

#[tokio::test]
async fn a_create_parked_after_every_attempt_is_acknowledged_as_an_error_in_client_words() {
    let faults = Arc::new(ScriptedFaults::default());
    let stack = TestStack::start_with_faults(
        |s| s.retry_delays = [20, 40, 60].map(Duration::from_millis).to_vec(),
        faults.clone(),
    )
    .await;
    let mut cursor = pull(&stack, "", None).await.cursor;
    let task = Uuid::new_v4();
    faults.fail(task, Failing::Always);
    let reply = stack
        .client()
        .create_task_async(json!({"id": task, "title": "doomed"}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let op = reply.operation_id().to_string();

    let (ack, seen) = pull_until_acked(&stack, &mut cursor, &op, None).await;
    assert_eq!(seen[&op], 1, "{seen:?}");
    assert_eq!(ack["outcome"], "error", "{ack}");
    assert_eq!(ack["operation"], "create");
    let error = ack["error"].as_str().unwrap();
    assert!(
        error.starts_with("the operation could not be applied after 4 attempts"),
        "{error}"
    );
    assert!(!error.contains("injected"), "no internal text: {error}");
    let lookup = stack.operation(&op).await.body;
    assert_eq!(lookup["last_error"], error, "the lookup says the same");
    assert!(
        pull(&stack, "", None)
            .await
            .tasks
            .iter()
            .all(|t| t["id"] != task.to_string()),
        "a create that never applied has no task"
    );
}

#[tokio::test]
async fn a_write_that_changed_nothing_is_acknowledged_though_no_task_changed() {
    let stack = TestStack::start().await;
    let task = Uuid::new_v4();
    let now = Utc::now();
    let first = create(task, "first", now - Delta::hours(2));
    let latest = update(task, json!({"title": "newest"}), now);
    stack.push(&[first.clone(), latest.clone()]).await;
    let mut cursor = String::new();
    pull_until_acked(&stack, &mut cursor, &op_id(&latest), None).await;
    let before_stale = cursor.clone();

    let stale = update(task, json!({"title": "older"}), now - Delta::hours(1));
    let answer = stack.push(std::slice::from_ref(&stale)).await;
    assert_eq!(answer.body["processed_items"][0]["status"], "conflict");
    let (ack, seen) = pull_until_acked(&stack, &mut cursor, &op_id(&stale), Some(1)).await;
    assert_eq!(ack["outcome"], "conflict", "{ack}");
    assert_eq!(seen[&op_id(&stale)], 1);
    let since = pull(&stack, &before_stale, None).await;
    assert!(since.tasks.is_empty(), "nothing changed: {since:?}");
    assert_eq!(since.ack_ids(), [op_id(&stale)]);
    let shown = stack.get_task(&task.to_string()).await.body;
    assert_eq!(shown["title"], "newest");
}

#[tokio::test]
async fn paging_with_small_limits_serves_every_ack_and_every_task_exactly_once() {
    let stack = TestStack::start().await;
    let t0 = Utc::now() - Delta::hours(1);
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let mut items: Vec<Value> = ids.iter().map(|id| create(*id, "t", t0)).collect();
    // Several writes to one task in one push: often one transaction, so one position.
    for minute in 1..4 {
        items.push(update(
            ids[0],
            json!({"title": format!("v{minute}")}),
            t0 + Delta::minutes(minute),
        ));
    }
    items.push(delete(ids[4], t0 + Delta::minutes(5)));
    stack.push(&items).await;
    let mut ops: Vec<String> = items.iter().map(op_id).collect();
    // Three decisions at one position (one transaction, one task), more than a page of 1 or 2
    // holds: the page carries them whole.
    let shared_task = ids[1];
    let client = stack.db.get().await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    for _ in 0..3 {
        let op = Uuid::new_v4();
        client
            .execute(
                "INSERT INTO operations (op_id, task_id, user_id, kind, fields, client_ts, \
                   received_at, outcome) \
                 VALUES ($1, $2, 'default', 'update', '{}', now(), now(), 'conflict')",
                &[&op, &shared_task],
            )
            .await
            .unwrap();
        ops.push(op.to_string());
    }
    client.batch_execute("COMMIT").await.unwrap();
    ops.sort();

    let deadline = Instant::now() + PATIENCE;
    let mut whole = pull(&stack, "", None).await;
    while whole.acks.len() < ops.len() {
        assert!(Instant::now() < deadline, "acks missing: {whole:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        whole = pull(&stack, "", None).await;
    }
    for limit in [1, 2, 3] {
        let pulled = pull(&stack, "", Some(limit)).await;
        let mut acked = pulled.ack_ids();
        acked.sort();
        assert_eq!(acked, ops, "limit {limit}: every ack once");
        let mut tasks: Vec<String> = pulled
            .tasks
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        tasks.sort();
        let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
        expected.sort();
        assert_eq!(tasks, expected, "limit {limit}: every task once");
        assert!(
            pulled.pages > 2,
            "limit {limit}: paged ({} pages)",
            pulled.pages
        );
    }
}

/// Runs `taskctl` with `args` against the stack's database.
async fn taskctl(settings: &Settings, args: &[&str]) -> (Result<(), taskctl::CtlError>, String) {
    use clap::Parser;
    let cli = taskctl::Cli::try_parse_from(std::iter::once("taskctl").chain(args.iter().copied()))
        .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut input = std::io::empty();
    let io = taskctl::Io {
        out: &mut out,
        err: &mut err,
        input: &mut std::io::BufReader::new(&mut input),
    };
    let result = taskctl::run(cli, settings, io).await;
    (result, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn after_a_prune_an_old_cursor_answers_410_and_a_pull_from_the_start_ends_in_the_servers_tasks()
 {
    let stack = TestStack::start().await;
    let t0 = Utc::now() - Delta::hours(2);
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let creates = [create(a, "a", t0), create(b, "b", t0), create(c, "c", t0)];
    stack.push(&creates).await;
    stack.feed_caught_up().await;
    // A device that pulled before the delete: it has not seen the tombstone.
    let old_cursor = pull(&stack, "", None).await.cursor;
    stack.push(&[delete(c, t0 + Delta::minutes(1))]).await;
    stack.feed_caught_up().await;
    let seen_delete = pull(&stack, "", None).await.cursor;

    let horizon = Utc::now();
    let newer = update(a, json!({"completed": true}), Utc::now());
    assert_eq!(
        stack.push(std::slice::from_ref(&newer)).await.body["processed_items"][0]["status"],
        "success"
    );
    stack.feed_caught_up().await;
    let recent_cursor = pull(&stack, &old_cursor, None).await.cursor;

    let before = horizon.to_rfc3339();
    let (result, out) = taskctl(&stack.settings, &["--json", "prune", "--before", &before]).await;
    result.unwrap();
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ran"], true, "{report}");
    assert_eq!(
        report["operations"], 4,
        "the creates and the delete: {report}"
    );
    assert_eq!(report["tombstones"], 1, "{report}");

    let gone = stack.changes(&old_cursor, None).await;
    assert_eq!(gone.status, 410, "{gone:?}");
    assert_eq!(gone.body["code"], "cursor_expired");
    let message = gone.body["error"].as_str().unwrap();
    assert!(message.contains("resync"), "{message}");
    assert_eq!(gone.body["path"], "/api/changes");

    for cursor in [&recent_cursor, &seen_delete] {
        let fresh = stack.changes(cursor, None).await;
        assert_eq!(
            fresh.status, 200,
            "a cursor past everything pruned: {fresh:?}"
        );
    }

    // A new device pages from the start (one row a page: its cursors lie below what was
    // pruned, and are good all the same) and ends with exactly the server's tasks.
    let resync = pull(&stack, "", Some(1)).await;
    let device: BTreeMap<String, Value> = resync
        .tasks
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    let server = stack.server_tasks().await;
    assert_eq!(device, server);
    assert_eq!(server.len(), 2, "the tombstone is gone: {server:?}");
    assert!(!server.contains_key(&c.to_string()));
    assert_eq!(
        resync.ack_ids(),
        [op_id(&newer)],
        "only the newer decision is kept"
    );

    // An op id newer than the horizon is still recognised: reused for other content it is
    // refused, and nothing of it is written.
    let mut reused = update(a, json!({"title": "other"}), Utc::now());
    reused["id"] = newer["id"].clone();
    let answer = stack.push(&[reused]).await.body;
    assert_eq!(answer["processed_items"][0]["status"], "error", "{answer}");
    let error = answer["processed_items"][0]["error"].as_str().unwrap();
    assert!(error.contains("already used"), "{error}");
    assert_eq!(stack.get_task(&a.to_string()).await.body["title"], "a");
}
