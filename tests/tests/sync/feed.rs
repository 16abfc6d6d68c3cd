//! The changes feed: paging, its cursor, and the promise that it never skips a committed change
//! when transactions commit out of order.
//!
//! The classic bug: a feed that pages by a sequence number or a timestamp taken when a row is
//! written hands out a cursor past a row that a transaction which started earlier has not
//! committed yet; when it commits, its row lands behind the cursor and no client ever sees it.
//! The tests below hold such a transaction open on purpose, check that a naive cursor really
//! does miss its change (so they can fail), and that `/api/changes` delivers it.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use chrono::{Duration as Delta, Utc};
use deadpool_postgres::{Object, Pool};
use serde_json::json;
use sync_worker::apply::apply_first_attempts;
use tasksync_shared::{OpKind, Operation, OperationFields, db};
use tasksync_tests::{
    PATIENCE, TestStack,
    ops::{operation, title},
    sync_client::{Device, create, delete, update},
};
use tokio::sync::watch;
use uuid::Uuid;

pub(super) fn op(task: Uuid, kind: OpKind, fields: OperationFields) -> Operation {
    operation(task, kind, Utc::now(), fields)
}

pub(super) async fn hold_a_change(pool: &Pool, task: Uuid, new_title: &str) -> Object {
    let client = pool.get().await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "UPDATE tasks SET title = $2, title_at = now(), updated_at = now(), \
                    change_xid = pg_current_xact_id() WHERE id = $1",
            &[&task, &new_title],
        )
        .await
        .unwrap();
    client
}

/// A naive feed: rows after a `change_xid` cursor, with no horizon (as any sequence or
/// timestamp cursor would behave). Returns (id, title) of the page and moves `cursor`.
async fn naive_page(pool: &Pool, cursor: &mut (String, Uuid)) -> Vec<(Uuid, String)> {
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT id, title, change_xid::text AS position FROM tasks \
             WHERE title IS NOT NULL AND (change_xid, id) > ($1::text::xid8, $2) \
             ORDER BY tasks.change_xid, tasks.id LIMIT 1000",
            &[&cursor.0, &cursor.1],
        )
        .await
        .unwrap();
    if let Some(last) = rows.last() {
        *cursor = (last.get(2), last.get(0));
    }
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn the_feed_pages_every_change_in_a_stable_order_with_tombstones() {
    let stack = TestStack::start().await;
    let t0 = Utc::now() - Delta::hours(1);
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let creates: Vec<_> = ids.iter().map(|id| create(*id, "t", t0)).collect();
    stack.push(&creates).await;
    stack.push(&[delete(ids[4], t0 + Delta::minutes(1))]).await;
    stack.feed_caught_up().await;

    let mut order = Vec::new();
    let mut cursor = String::new();
    let mut has_more = true;
    while has_more {
        let page = stack.changes(&cursor, Some(2)).await;
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.body["server_time"].is_string());
        let changes = page.body["changes"].as_array().unwrap();
        assert!(changes.len() <= 2);
        order.extend(
            changes
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string()),
        );
        has_more = page.body["has_more"].as_bool().unwrap();
        assert_eq!(has_more, order.len() < 5, "has_more only while rows remain");
        cursor = page.body["next_cursor"].as_str().unwrap().to_string();
        assert!(order.len() <= 5, "a row delivered twice: {order:?}");
    }
    let mut sorted = order.clone();
    sorted.sort();
    let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(sorted, expected, "every task, the deleted one included");
    assert_eq!(
        order.last().unwrap(),
        &ids[4].to_string(),
        "the delete came last"
    );

    let end = stack.changes(&cursor, None).await.body;
    assert_eq!(end["changes"], json!([]));
    assert_eq!(
        end["acks"],
        json!([]),
        "every decision came with its change"
    );
    assert_eq!(end["has_more"], false);
    let after_end = stack
        .changes(end["next_cursor"].as_str().unwrap(), None)
        .await
        .body;
    assert_eq!(
        after_end["changes"],
        json!([]),
        "the last page's cursor is the end of the feed"
    );
    let again = stack.changes("", Some(1000)).await.body;
    let replay: Vec<&str> = again["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(replay, order, "the same order every time");

    // A task changed again moves past the cursor.
    stack
        .push(&[update(
            ids[0],
            json!({"completed": true}),
            t0 + Delta::minutes(2),
        )])
        .await;
    stack.feed_caught_up().await;
    let next = stack.changes(&cursor, None).await.body;
    assert_eq!(next["changes"].as_array().unwrap().len(), 1);
    assert_eq!(next["changes"][0]["id"], ids[0].to_string());
    assert_eq!(next["changes"][0]["completed"], true);
}

#[tokio::test]
async fn bad_feed_parameters_are_400_naming_them() {
    let stack = TestStack::start().await;
    for (query, name) in [
        ("since=abc", "since"),
        ("since=0a1b2c", "since"),
        // A task-list cursor (version 2) is not a feed cursor.
        (
            "since=02000000000000000000000000000000000000000000000000",
            "since",
        ),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-3", "limit"),
        ("limit=ten", "limit"),
    ] {
        let reply = stack.get(&format!("/changes?{query}")).await;
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        let message = reply.error_message("/api/changes");
        assert!(
            message.starts_with(&format!("{name}: ")),
            "{query}: {message}"
        );
    }
}

#[tokio::test]
async fn the_feed_never_skips_a_change_that_commits_after_a_later_one() {
    let stack = TestStack::start().await;
    let pool = db::pool(&stack.settings.database_url, 4).unwrap();
    let (held, later) = (Uuid::new_v4(), Uuid::new_v4());
    apply_first_attempts(
        &pool,
        &[
            op(held, OpKind::Create, title("held v1")),
            op(later, OpKind::Create, title("later v1")),
        ],
    )
    .await
    .unwrap();
    stack.feed_caught_up().await;
    let mut device = Device::new();
    assert_eq!(device.pull(&stack, None).await, 2);
    let mut naive = (String::from("0"), Uuid::nil());
    assert_eq!(naive_page(&pool, &mut naive).await.len(), 2);

    // Writer A takes its transaction id and changes `held`, but has not committed. Writer B
    // starts after it, so it gets a later id, and commits first.
    let a = hold_a_change(&pool, held, "held v2").await;
    apply_first_attempts(&pool, &[op(later, OpKind::Update, title("later v2"))])
        .await
        .unwrap();

    // A naive reader takes B's change and moves its cursor past A's transaction id.
    assert_eq!(
        naive_page(&pool, &mut naive).await,
        [(later, "later v2".to_string())]
    );
    // The feed holds B's change back while A, which started before it, is still open.
    assert_eq!(device.pull(&stack, None).await, 0);

    a.batch_execute("COMMIT").await.unwrap();
    stack.feed_caught_up().await;
    // A's change now sorts behind the naive cursor: that reader never sees it.
    assert_eq!(naive_page(&pool, &mut naive).await, []);
    // The feed delivers both, in commit-horizon order.
    assert_eq!(device.pull(&stack, None).await, 2);
    assert_eq!(device.tasks[&held.to_string()]["title"], "held v2");
    assert_eq!(device.tasks[&later.to_string()]["title"], "later v2");
    assert_eq!(device.tasks, stack.server_tasks().await);
}

/// Commits the held transaction `a` once ten writer commits and then three reader pages went
/// by after it was opened.
pub(super) async fn commit_after(
    a: Object,
    mut commits: watch::Receiver<u64>,
    mut pages: watch::Receiver<u64>,
) {
    let c = *commits.borrow_and_update();
    tokio::time::timeout(PATIENCE, commits.wait_for(|n| *n >= c + 10))
        .await
        .expect("writers stalled")
        .unwrap();
    let p = *pages.borrow_and_update();
    tokio::time::timeout(PATIENCE, pages.wait_for(|n| *n >= p + 3))
        .await
        .expect("reader stalled")
        .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
}

/// Writer `w`: fifteen batches of random deletes, completions and retitles of `tasks`, each
/// counted in `commits` once committed.
pub(super) async fn write_rounds(
    w: u64,
    pool: Pool,
    tasks: Vec<Uuid>,
    commits: Arc<watch::Sender<u64>>,
) {
    let mut x = w * 7919 + 17;
    let mut next = |n: u64| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (x >> 33) % n
    };
    for round in 0..15 {
        let batch: Vec<Operation> = (0..1 + next(4))
            .map(|_| {
                let task = tasks[next(tasks.len() as u64) as usize];
                match next(4) {
                    0 => op(task, OpKind::Delete, OperationFields::default()),
                    1 => op(
                        task,
                        OpKind::Update,
                        OperationFields {
                            completed: Some(round % 2 == 0),
                            ..Default::default()
                        },
                    ),
                    _ => op(task, OpKind::Update, title(&format!("w{w} r{round}"))),
                }
            })
            .collect();
        apply_first_attempts(&pool, &batch).await.unwrap();
        commits.send_modify(|n| *n += 1);
    }
}

/// Reads the feed as a device would, and a naive feed beside it, a page of each in turn (each
/// counted in `pages`), until the writers have `finished` and the feed has nothing more.
/// Returns the device, what the naive feed saw, and the naive cursor.
async fn read_both_feeds(
    stack: &TestStack,
    pool: &Pool,
    finished: &AtomicBool,
    pages: &watch::Sender<u64>,
) -> (Device, BTreeMap<Uuid, String>, (String, Uuid)) {
    let mut device = Device::new();
    let mut naive_cursor = (String::from("0"), Uuid::nil());
    let mut naive: BTreeMap<Uuid, String> = BTreeMap::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "the feed did not settle");
        let done = finished.load(Ordering::SeqCst);
        if done {
            // From here every change has committed; wait until no transaction anywhere holds
            // the horizon below them, so that an empty page means the feed claims completeness.
            stack.feed_caught_up().await;
        }
        let (rows, has_more) = device.pull_page(stack, Some(7)).await;
        pages.send_modify(|n| *n += 1);
        naive.extend(naive_page(pool, &mut naive_cursor).await);
        if done && rows == 0 && !has_more {
            return (device, naive, naive_cursor);
        }
    }
}

#[tokio::test]
async fn paging_while_several_writers_commit_out_of_order_sees_the_final_state_of_every_task() {
    let stack = TestStack::start().await;
    let pool = db::pool(&stack.settings.database_url, 12).unwrap();
    let tasks: Vec<Uuid> = (0..24).map(|_| Uuid::new_v4()).collect();
    let held = Uuid::new_v4();
    let mut seed: Vec<Operation> = tasks
        .iter()
        .map(|t| op(*t, OpKind::Create, title("v0")))
        .collect();
    seed.push(op(held, OpKind::Create, title("held v1")));
    apply_first_attempts(&pool, &seed).await.unwrap();

    // Counts the holder waits on: writer commits, and pages the reader has read.
    let commits = Arc::new(watch::Sender::new(0u64));
    let pages = Arc::new(watch::Sender::new(0u64));
    let finished = Arc::new(AtomicBool::new(false));

    // One transaction stays open while others commit after it and the reader pages past them.
    let a = hold_a_change(&pool, held, "held v2").await;
    let holder = tokio::spawn(commit_after(a, commits.subscribe(), pages.subscribe()));
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

    let (device, mut naive, mut naive_cursor) =
        read_both_feeds(&stack, &pool, &finished, &pages).await;
    all_done.await.unwrap();
    loop {
        let page = naive_page(&pool, &mut naive_cursor).await;
        if page.is_empty() {
            break;
        }
        naive.extend(page);
    }

    let server = stack.server_tasks().await;
    assert_eq!(server.len(), 25);
    assert_eq!(
        device.tasks, server,
        "the feed saw the final state of every task"
    );
    assert_eq!(server[&held.to_string()]["title"], "held v2");
    assert_eq!(
        naive[&held], "held v1",
        "a naive cursor misses the change that committed late (the trap this test guards)"
    );
}

/// Makes the cluster's transaction ids pass `xid` (one committed transaction per id), so that
/// positions below it are under every snapshot's horizon.
async fn advance_transaction_ids_past(pool: &Pool, xid: u64) {
    let client = pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "DO $$ BEGIN \
               WHILE pg_current_xact_id() <= '{xid}'::xid8 LOOP COMMIT; END LOOP; \
             END $$"
        ))
        .await
        .unwrap();
}

/// Pages the whole feed with `limit` and returns the task ids in the order served.
async fn page_through(stack: &TestStack, limit: usize) -> Vec<String> {
    let (mut served, mut cursor) = (Vec::new(), String::new());
    for _ in 0..10 {
        let page = stack.changes(&cursor, Some(limit)).await;
        assert_eq!(page.status, 200, "{page:?}");
        let changes = page.body["changes"].as_array().unwrap();
        served.extend(
            changes
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string()),
        );
        cursor = page.body["next_cursor"].as_str().unwrap().to_string();
        if !page.body["has_more"].as_bool().unwrap() {
            return served;
        }
    }
    panic!("the feed did not end: {served:?}");
}

/// 9999 < 10000 < 10001 as positions, but "10000" < "10001" < "9999" as text: a feed that sorts
/// the text while its cursor compares numbers serves 10000 and 10001 first, moves its cursor
/// past 9999, and never serves it.
#[tokio::test]
async fn paging_across_positions_whose_text_sorts_differently_serves_every_change_once() {
    let stack = TestStack::start().await;
    let pool = db::pool(&stack.settings.database_url, 2).unwrap();
    advance_transaction_ids_past(&pool, 10_100).await;
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let creates: Vec<Operation> = ids
        .iter()
        .map(|id| op(*id, OpKind::Create, title("t")))
        .collect();
    apply_first_attempts(&pool, &creates).await.unwrap();
    let client = pool.get().await.unwrap();
    for (id, position) in ids.iter().zip(["9999", "10000", "10001"]) {
        client
            .execute(
                "UPDATE tasks SET change_xid = $2::text::xid8 WHERE id = $1",
                &[id, &position],
            )
            .await
            .unwrap();
    }
    stack.feed_caught_up().await;

    let expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    for limit in [1, 2, 3] {
        assert_eq!(
            page_through(&stack, limit).await,
            expected,
            "limit {limit}: every change once, in position order"
        );
    }
}
