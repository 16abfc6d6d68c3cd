//! Live events (`GET /api/events`): a write shows up on another device's stream, a resume with
//! `Last-Event-ID` delivers exactly what was missed, streams are scoped to their user, the
//! stream delivers every committed change while several writers commit out of order (the twin
//! of the feed test), limits, and shutdown ends the streams.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use api::cursor::{FeedCursor, Position};
use serde_json::{Value, json};
use sync_worker::apply::apply_first_attempts;
use tasksync_shared::{OpKind, Operation, config::JwtSettings, db, feed::CHANNEL};
use tasksync_tests::{
    PATIENCE, TestStack, events::EventStream, ops::title, tokens::secret_settings,
};
use tokio::sync::watch;
use uuid::Uuid;

use super::feed::{commit_after, hold_a_change, op, write_rounds};

/// A stack whose streams beat every second (their safety read too).
async fn stack_with_fast_heartbeat() -> TestStack {
    TestStack::start_with(|s| s.events.heartbeat = Duration::from_secs(1)).await
}

/// A stack whose streams never beat within a test, so that only the worker's notice can bring
/// a change (the heartbeat's safety read would, within 15 s, hide a missing one).
async fn stack_woken_by_notices_only(jwt: Option<JwtSettings>) -> TestStack {
    TestStack::start_with(|s| {
        s.events.heartbeat = Duration::from_secs(3_600);
        if let Some(jwt) = jwt {
            s.jwt = jwt;
        }
    })
    .await
}

/// Opens a stream from the current end of the feed and returns it with the `ready` cursor.
async fn open_at_end(stack: &TestStack) -> (EventStream, String) {
    let mut stream = stack.client().events("", &[]).await;
    assert_eq!(stream.status, 200);
    let content_type = stream
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let ready = stream.next_event().await;
    assert_eq!(ready.event, "ready", "{ready:?}");
    assert!(ready.json()["server_time"].is_string(), "{ready:?}");
    let cursor = ready.cursor();
    (stream, cursor)
}

fn ids(events: &[tasksync_tests::events::SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.json()["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_event_arrives_for_a_write_made_by_another_device() {
    let stack = stack_woken_by_notices_only(None).await;
    let (mut phone, start) = open_at_end(&stack).await;

    let created = stack
        .create_task(json!({"title": "from the laptop", "description": "live"}))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    // The create's decision comes first, without an id of its own (it shares the change's
    // position, and only the last event of a position carries it), then the change.
    let ack = phone.next_event().await;
    assert_eq!(ack.event, "ack", "{ack:?}");
    assert_eq!(ack.json()["task_id"], created.body["id"]);
    assert_eq!(ack.json()["outcome"], "success");
    assert_eq!(ack.json()["operation"], "create");
    assert_eq!(ack.id, None, "{ack:?}");
    let change = phone.next_event().await;
    assert_eq!(change.event, "change");
    let task = change.json();
    assert_eq!(task["id"], created.body["id"]);
    assert_eq!(task["title"], "from the laptop");
    assert_eq!(task["sync_status"], "synced");

    // A pull from the stream's start serves the same task and the create's ack; a pull from
    // the event's id (a changes cursor) serves neither again: the id is past that task's
    // position, decision included.
    let pull = stack.changes(&start, None).await;
    assert_eq!(pull.body["changes"][0], task, "{pull:?}");
    assert_eq!(pull.body["acks"][0]["task_id"], task["id"], "{pull:?}");
    let after = stack.changes(&change.cursor(), None).await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(after.body["changes"], json!([]), "{after:?}");
    assert_eq!(after.body["acks"], json!([]), "{after:?}");

    // The api's metrics count the stream and what it sent.
    let scrape = format!("{}/metrics", stack.base.trim_end_matches("/api"));
    let metrics = stack
        .http
        .get(scrape)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "tasksync_api_events_subscribers 1",
        "tasksync_api_events_listening 1",
        "tasksync_api_events_sent_total{event=\"change\"} 1",
        "tasksync_api_events_sent_total{event=\"ready\"} 1",
        "tasksync_api_event_delay_seconds_count 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_resume_with_last_event_id_delivers_exactly_the_missed_writes_in_order() {
    let stack = stack_woken_by_notices_only(None).await;
    let (mut stream, _) = open_at_end(&stack).await;
    let first = stack.create_task(json!({"title": "a"})).await.task();
    let seen = stream.next_change().await;
    assert_eq!(seen.json()["id"], first.id.to_string());
    drop(stream);

    // Missed while disconnected: two creates and an update of the first task.
    let b = stack.create_task(json!({"title": "b"})).await.task();
    let c = stack.create_task(json!({"title": "c"})).await.task();
    let updated = stack
        .update_task(&first.id.to_string(), json!({"title": "a2"}))
        .await;
    assert_eq!(updated.status, 200, "{updated:?}");

    let last = seen.cursor();
    let mut resumed = stack
        .client()
        .events("", &[("Last-Event-ID", last.as_str())])
        .await;
    let ready = resumed.next_event().await;
    assert_eq!(
        (ready.event.as_str(), ready.cursor()),
        ("ready", last.clone())
    );
    let missed = resumed.changes(3).await;
    let expected = [b.id, c.id, first.id].map(|id| id.to_string());
    assert_eq!(ids(&missed), expected, "in commit order");
    assert_eq!(missed[2].json()["title"], "a2");
    // Nothing twice: the stream has nothing more (heartbeats are comments, not events).
    let more = resumed.next_event_within(Duration::from_millis(500)).await;
    assert_eq!(more, None, "an event beyond the missed ones");

    // `since` resumes the same way, and a pull from the cursor agrees with the stream.
    let mut by_query = stack.client().events(&format!("since={last}"), &[]).await;
    by_query.next_event().await;
    assert_eq!(ids(&by_query.changes(3).await), expected);
    let pull = stack.changes(&last, None).await;
    let pulled: Vec<&str> = pull.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(pulled, expected);
    // The acks of the three missed writes come with them, and nothing lies past the stream's
    // last event.
    assert_eq!(pull.body["acks"].as_array().unwrap().len(), 3, "{pull:?}");
    let after = stack.changes(&missed[2].cursor(), None).await;
    assert_eq!(after.body["changes"], json!([]), "{after:?}");
    assert_eq!(after.body["acks"], json!([]), "{after:?}");
}

#[tokio::test]
async fn bad_starting_points_are_400_naming_them() {
    let stack = TestStack::start().await;
    let list_cursor = "02000000000000000000000000000000000000000000000000";
    for (query, header, name) in [
        ("since=abc", None, "since"),
        (&*format!("since={list_cursor}"), None, "since"),
        ("", Some("not-a-cursor"), "Last-Event-ID"),
        ("since=", Some("0a1b"), "Last-Event-ID"),
    ] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("Last-Event-ID", h)).into_iter().collect();
        let stream = stack.client().events(query, &headers).await;
        assert_eq!(stream.status, 400, "{query} {header:?}");
        let body = stream.error_body().await;
        assert_eq!(body["path"], "/api/events");
        let message = body["error"].as_str().unwrap();
        assert!(message.starts_with(&format!("{name}: ")), "{message}");
    }
}

#[tokio::test]
async fn a_stream_never_carries_another_users_change() {
    let stack = stack_woken_by_notices_only(Some(secret_settings())).await;
    let (alice, bob) = (stack.client_as("alice"), stack.client_as("bob"));
    let mut alices = alice.events("", &[]).await;
    let mut bobs = bob.events("", &[]).await;
    assert_eq!(alices.next_event().await.event, "ready");
    assert_eq!(bobs.next_event().await.event, "ready");

    let hers = alice.create_task(json!({"title": "alice's secret"})).await;
    assert_eq!(hers.status, 201, "{hers:?}");
    assert_eq!(alices.next_change().await.json()["id"], hers.body["id"]);
    // Bob's own later write is the first change his stream carries: Alice's, committed
    // before it, never came.
    let his = bob.create_task(json!({"title": "bob's"})).await;
    assert_eq!(his.status, 201, "{his:?}");
    let first = bobs.next_change().await;
    assert_eq!(first.json()["id"], his.body["id"], "{first:?}");
    assert!(!first.data.contains("alice"), "{first:?}");

    // Without a token: 401, like every protected route.
    let anonymous = stack.client().events("", &[]).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn streams_over_the_limits_are_refused_429_per_user_and_503_per_api() {
    let stack = TestStack::start_with(|s| {
        s.jwt = secret_settings();
        s.events.max_subscribers = 2;
        s.events.max_per_user = 1;
    })
    .await;
    let alice = stack.client_as("alice");
    let mut open = alice.events("", &[]).await;
    assert_eq!(open.next_event().await.event, "ready");
    let second = alice.events("", &[]).await;
    assert_eq!(second.status, 429);
    assert!(second.headers.contains_key("retry-after"));
    let mut bobs = stack.client_as("bob").events("", &[]).await;
    assert_eq!(bobs.next_event().await.event, "ready");
    let third = stack.client_as("carol").events("", &[]).await;
    assert_eq!(third.status, 503);
    assert!(third.headers.contains_key("retry-after"));
    // A closed stream frees its place.
    drop(open);
    stack
        .eventually("alice's closed stream is released", || async {
            let again = alice.events("", &[]).await;
            again.status == 200
        })
        .await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let mut stack = TestStack::start().await;
    let (mut stream, _) = open_at_end(&stack).await;
    // `stop_api` fails the test unless the api stops well before its drain timeout (40 s).
    tokio::time::timeout(PATIENCE, stack.stop_api())
        .await
        .expect("the api did not stop: an open stream held the drain");
    assert_eq!(stream.next_within(PATIENCE).await, None);
    assert!(stream.ended, "the stream's body ended");
}

#[tokio::test]
async fn the_worker_notifies_each_committed_batch_with_its_transaction_and_users() {
    let stack = TestStack::start().await;
    let url = stack.settings.database_url.expose().to_string();
    let (client, mut connection) = db::dedicated_connection(&url).await.unwrap();
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .unwrap();

    let pool = db::pool(&url, 2).unwrap();
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let mut odd = op(t2, OpKind::Create, title("two"));
    odd.user_id = "bob \"the\" ,builder".into();
    apply_first_attempts(&pool, &[op(t1, OpKind::Create, title("one")), odd])
        .await
        .unwrap();
    let (channel, payload) = tokio::time::timeout(PATIENCE, notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(channel, CHANNEL);
    let notice = tasksync_shared::feed::FeedNotice::parse(&payload).unwrap();
    let change_xid: String = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT change_xid::text FROM tasks WHERE id = $1", &[&t1])
        .await
        .unwrap()
        .get(0);
    assert_eq!(notice.xid.to_string(), change_xid, "{payload}");
    let mut users = vec![
        "bob \"the\" ,builder".to_string(),
        tasksync_shared::config::DEFAULT_USER.to_string(),
    ];
    users.sort();
    assert_eq!(
        notice.users,
        tasksync_shared::feed::NoticeUsers::Some(users),
        "{payload}"
    );
}

/// Reads `stream` into `device` (task id → task) until the writers have `finished` and the
/// device holds the server's tasks; counts every event in `events_read` and returns the ids of
/// the change events, in order.
async fn follow_until_settled(
    stream: &mut EventStream,
    device: &mut BTreeMap<String, Value>,
    finished: &AtomicBool,
    events_read: &watch::Sender<u64>,
    stack: &TestStack,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut cursors = Vec::new();
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream did not settle"
        );
        if let Some(event) = stream.next_within(Duration::from_millis(200)).await {
            if event.event == "change" {
                let task = event.json();
                device.insert(task["id"].as_str().unwrap().to_string(), task);
                cursors.push(event.cursor());
            }
            events_read.send_modify(|n| *n += 1);
            continue;
        }
        assert!(!stream.ended, "the stream ended");
        if finished.load(Ordering::SeqCst) && *device == stack.server_tasks().await {
            return cursors;
        }
    }
}

#[tokio::test]
async fn while_several_writers_commit_out_of_order_the_stream_delivers_every_change() {
    let stack = stack_with_fast_heartbeat().await;
    let pool = db::pool(&stack.settings.database_url, 12).unwrap();
    let tasks: Vec<Uuid> = (0..24).map(|_| Uuid::new_v4()).collect();
    let held = Uuid::new_v4();
    let mut seed: Vec<Operation> = tasks
        .iter()
        .map(|t| op(*t, OpKind::Create, title("v0")))
        .collect();
    seed.push(op(held, OpKind::Create, title("held v1")));
    // The stream starts from the beginning of the feed, before anything is written.
    let mut stream = stack.client().events("since=", &[]).await;
    assert_eq!(stream.next_event().await.event, "ready");
    apply_first_attempts(&pool, &seed).await.unwrap();

    let commits = Arc::new(watch::Sender::new(0u64));
    let events_read = Arc::new(watch::Sender::new(0u64));
    let finished = Arc::new(AtomicBool::new(false));
    // One transaction (not the worker's: it sends no notice) stays open while the writers
    // commit after it and the stream reads past them; only the horizon rule and the heartbeat
    // read can bring its change.
    let a = hold_a_change(&pool, held, "held v2").await;
    let holder = tokio::spawn(commit_after(
        a,
        commits.subscribe(),
        events_read.subscribe(),
    ));
    let writers: Vec<_> = (0..6u64)
        .map(|w| {
            tokio::spawn(write_rounds(
                w,
                pool.clone(),
                tasks.clone(),
                commits.clone(),
            ))
        })
        .collect();
    let all_done = {
        let finished = finished.clone();
        tokio::spawn(async move {
            for writer in writers {
                writer.await.unwrap();
            }
            holder.await.unwrap();
            finished.store(true, Ordering::SeqCst);
        })
    };

    let mut device = BTreeMap::new();
    let cursors =
        follow_until_settled(&mut stream, &mut device, &finished, &events_read, &stack).await;
    all_done.await.unwrap();
    let server = stack.server_tasks().await;
    assert_eq!(server.len(), 25);
    assert_eq!(
        device, server,
        "the stream saw the final state of every task"
    );
    assert_eq!(device[&held.to_string()]["title"], "held v2");
    // Every event moved the cursor forward: nothing was served twice or out of order.
    let positions: Vec<Position> = cursors
        .iter()
        .map(|c| FeedCursor::decode(c).unwrap().position)
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
}
