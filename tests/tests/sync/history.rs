//! Conflict history and devices (docs/sync-beyond.md): a lost field is recorded with both
//! values, stamps and devices; a device's figures move with its pushes and pulls; a bad
//! `Device-Id` is refused before anything is published.

use chrono::{DateTime, Duration as Delta, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use tasksync_tests::{
    TestStack,
    sync_client::{create, op_id, statuses, update},
    tokens::secret_settings,
};
use uuid::Uuid;

/// 09:00 today, an hour or more in the past (yesterday's when it is earlier than 10:00).
fn nine_o_clock() -> DateTime<Utc> {
    let day = (Utc::now() - Delta::hours(10)).date_naive();
    day.and_hms_opt(9, 0, 0).unwrap().and_utc()
}

#[tokio::test]
async fn a_lost_field_appears_in_the_conflict_history_with_both_values_stamps_and_devices() {
    let stack = TestStack::start().await;
    let api = stack.client();
    let task = Uuid::new_v4();
    let nine = nine_o_clock();
    let made = create(task, "draft", nine);
    let from_a = update(task, json!({"title": "from A"}), nine + Delta::minutes(10));
    let from_b = update(
        task,
        json!({"title": "from B", "completed": true}),
        nine + Delta::minutes(5),
    );
    let a = api
        .push_to(
            "/sync",
            &[made, from_a.clone()],
            &[("Device-Id", "phone-A")],
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    // B names itself in the body instead of the header.
    let body = json!({"items": [from_b], "device_id": "laptop-B"});
    let b = api.request(Method::POST, "/batch", Some(body), &[]).await;
    assert_eq!(b.status, 200, "{b:?}");
    let outcomes = stack.settle(&[op_id(&from_a), op_id(&from_b)]).await;
    assert_eq!(outcomes, ["success", "conflict"]);

    let reply = api.conflicts(&task.to_string(), "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let conflicts = reply.body["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "only the title was lost: {reply:?}");
    let c = &conflicts[0];
    assert_eq!(c["task_id"], json!(task));
    assert_eq!(c["field"], "title");
    assert_eq!(c["kept"]["value"], "from A");
    assert_eq!(c["kept"]["op_id"], from_a["id"]);
    assert_eq!(c["kept"]["device_id"], "phone-A");
    assert_eq!(
        c["kept"]["at"].as_str().map(parse),
        Some(nine + Delta::minutes(10))
    );
    assert_eq!(c["lost"]["value"], "from B");
    assert_eq!(c["lost"]["op_id"], from_b["id"]);
    assert_eq!(c["lost"]["device_id"], "laptop-B");
    assert_eq!(
        c["lost"]["at"].as_str().map(parse),
        Some(nine + Delta::minutes(5))
    );
    assert!(c["recorded_at"].is_string());
    assert_eq!(reply.body["has_more"], false);
    assert_eq!(reply.body["next_cursor"], Value::Null);

    // Pushed again, the losing write is a duplicate: nothing more is recorded.
    let again = api
        .push_to("/sync", &[from_b], &[("Device-Id", "laptop-B")])
        .await;
    assert_eq!(statuses(&again), ["conflict"], "{again:?}");
    let reply = api.conflicts(&task.to_string(), "").await;
    assert_eq!(reply.body["conflicts"].as_array().map(Vec::len), Some(1));
}

fn parse(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn the_history_pages_newest_first_and_another_users_task_is_not_found() {
    let stack = TestStack::start_with_auth(secret_settings()).await;
    let (alice, bob) = (stack.client_as("alice"), stack.client_as("bob"));
    let task = Uuid::new_v4();
    let nine = nine_o_clock();
    let latest = update(task, json!({"title": "latest"}), nine + Delta::minutes(30));
    let pushed = alice.sync(&[create(task, "first", nine), latest]).await;
    assert_eq!(statuses(&pushed), ["success", "success"], "{pushed:?}");
    // Three writes that each lose the title, one at a time so their order is known.
    for minute in [1, 2, 3] {
        let late = update(
            task,
            json!({"title": format!("lost {minute}")}),
            nine + Delta::minutes(minute),
        );
        let reply = alice.sync(&[late]).await;
        assert_eq!(statuses(&reply), ["conflict"], "{reply:?}");
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..5 {
        let page = alice
            .conflicts(&task.to_string(), &format!("limit=2&cursor={cursor}"))
            .await;
        assert_eq!(page.status, 200, "{page:?}");
        for c in page.body["conflicts"].as_array().unwrap() {
            seen.push(c["lost"]["value"].as_str().unwrap().to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["lost 3", "lost 2", "lost 1"]);

    // Bob: Alice's task reads exactly like a missing one.
    let path = format!("/api/tasks/{task}/conflicts");
    let theirs = bob.conflicts(&task.to_string(), "").await;
    let missing_id = Uuid::new_v4();
    let missing = bob.conflicts(&missing_id.to_string(), "").await;
    assert_eq!((theirs.status, missing.status), (404, 404), "{theirs:?}");
    assert_eq!(theirs.error_message(&path), "task not found");
    assert_eq!(
        missing.error_message(&format!("/api/tasks/{missing_id}/conflicts")),
        "task not found"
    );
    // A cursor of another task's history, and a bad limit, name their parameter.
    let other = alice
        .conflicts(&missing_id.to_string(), &format!("cursor={cursor}"))
        .await;
    assert_eq!(other.status, 400, "{other:?}");
    assert!(
        other.body["error"]
            .as_str()
            .unwrap()
            .starts_with("cursor: ")
    );
    let bad = alice.conflicts(&task.to_string(), "limit=0").await;
    assert!(bad.body["error"].as_str().unwrap().starts_with("limit: "));
}

/// The caller's device `name` as `GET /api/devices` shows it.
async fn device(stack: &TestStack, name: &str) -> Value {
    let reply = stack.client().devices().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no device {name} in {reply:?}"))
}

#[tokio::test]
async fn a_devices_figures_move_with_its_pushes_and_pulls() {
    let stack = TestStack::start().await;
    let api = stack.client();
    let at = Utc::now() - Delta::minutes(10);
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let items = [
        create(t1, "one", at),
        create(t2, "two", at),
        update(t1, json!({"completed": true}), at + Delta::seconds(1)),
    ];
    let reply = api
        .request(
            Method::POST,
            "/sync",
            Some(json!({"items": items})),
            &[("Device-Id", "D"), ("Prefer", "respond-async")],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let d = device(&stack, "D").await;
    assert_eq!(d["ops_pushed"], 3, "{d}");
    assert!(
        d["last_push_at"].is_string() && d["last_pull_at"].is_null(),
        "{d}"
    );
    assert_eq!(d["pull_lag_seconds"], Value::Null);

    let ids: Vec<String> = items.iter().map(op_id).collect();
    stack.settle(&ids).await;
    stack
        .eventually("the worker's counts reach the device", || async {
            let d = device(&stack, "D").await;
            d["ops_applied"] == 3 && d["pending"] == 0
        })
        .await;
    let d = device(&stack, "D").await;
    assert_eq!(
        (&d["ops_conflicted"], &d["ops_failed"], &d["ops_duplicate"]),
        (&json!(0), &json!(0), &json!(0)),
        "{d}"
    );
    assert!(d["last_decided_at"].is_string(), "{d}");

    stack.feed_caught_up().await;
    let pulled = api.changes_from("D", "").await;
    assert_eq!(pulled.status, 200, "{pulled:?}");
    let d = device(&stack, "D").await;
    assert_eq!(d["last_pull_cursor"], pulled.body["next_cursor"], "{d}");
    assert!(d["last_pull_at"].is_string(), "{d}");
    assert!(
        d["pull_lag_seconds"].as_i64().is_some_and(|s| s < 60),
        "{d}"
    );

    // Pushed again: a duplicate, still nothing pending; a REST write counts as one push.
    let again = api
        .push_to("/sync", &items[..1], &[("Device-Id", "D")])
        .await;
    assert_eq!(statuses(&again), ["success"], "{again:?}");
    let rest = api
        .request(
            Method::PUT,
            &format!("/tasks/{t2}"),
            Some(json!({"title": "two, renamed"})),
            &[("Device-Id", "D")],
        )
        .await;
    assert_eq!(rest.status, 200, "{rest:?}");
    stack
        .eventually("the duplicate and the REST write are counted", || async {
            let d = device(&stack, "D").await;
            d["ops_pushed"] == 5
                && d["ops_duplicate"] == 1
                && d["ops_applied"] == 4
                && d["pending"] == 0
        })
        .await;
    // Nothing of another device, nor of requests that named none.
    let all = api.devices().await;
    assert_eq!(
        all.body["devices"].as_array().map(Vec::len),
        Some(1),
        "{all:?}"
    );
}

#[tokio::test]
async fn an_invalid_device_id_is_refused_naming_it_and_nothing_is_published() {
    let mut stack = TestStack::start().await;
    // With no worker, whatever is published stays in the work queue.
    stack.stop_worker().await;
    let api = stack.client();
    let task = Uuid::new_v4();
    let items = [create(task, "never", Utc::now())];
    let too_long = "x".repeat(65);
    for bad in ["has space", "slash/ed", too_long.as_str(), ""] {
        let reply = api.push_to("/sync", &items, &[("Device-Id", bad)]).await;
        assert_eq!(reply.status, 400, "{bad:?}: {reply:?}");
        assert!(
            reply.error_message("/api/sync").starts_with("Device-Id: "),
            "{reply:?}"
        );
    }
    // On any route, reads included; and in the body, or disagreeing with the header.
    let read = api
        .request(Method::GET, "/tasks", None, &[("Device-Id", "a b")])
        .await;
    assert_eq!(read.status, 400, "{read:?}");
    let in_body = json!({"items": items, "device_id": "a b"});
    let reply = api
        .request(Method::POST, "/batch", Some(in_body), &[])
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.error_message("/api/batch").starts_with("device_id: "));
    let differ = json!({"items": items, "device_id": "one"});
    let reply = api
        .request(
            Method::POST,
            "/batch",
            Some(differ),
            &[("Device-Id", "two")],
        )
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.error_message("/api/batch").starts_with("device_id: "));
    let rest = api
        .request(
            Method::POST,
            "/tasks",
            Some(json!({"id": task, "title": "never"})),
            &[("Device-Id", "tab\there")],
        )
        .await;
    assert_eq!(rest.status, 400, "{rest:?}");

    // Nothing reached the queue, and no device was recorded.
    let work = stack.topology().work_queue();
    assert_eq!(stack.queue_depth(&work).await, 0);
    let devices = api.devices().await;
    assert_eq!(devices.body["devices"], json!([]), "{devices:?}");
    // The same push with a good name is published (the check above can see a message).
    let reply = api
        .request(
            Method::POST,
            "/sync",
            Some(json!({"items": items})),
            &[("Device-Id", "good"), ("Prefer", "respond-async")],
        )
        .await;
    assert_eq!(statuses(&reply), ["pending"], "{reply:?}");
    stack
        .eventually("the good push is in the work queue", || async {
            stack.queue_depth(&work).await == 1
        })
        .await;
}
