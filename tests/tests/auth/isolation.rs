//! Two users with tokens of their own: nothing of Alice's is visible to or changeable by Bob on
//! any path — REST, both push paths, the feed, operation lookups, status — and another user's
//! task id behaves like a missing one (a create on it: 409 that says only that the id exists).

use chrono::{Duration as Delta, Utc};
use serde_json::json;
use tasksync_shared::operation::exists_message;
use tasksync_tests::{
    TestStack,
    sync_client::{create, delete, op_id, statuses, update},
    tokens::secret_settings,
};
use uuid::Uuid;

#[tokio::test]
async fn nothing_of_one_user_is_visible_to_or_changeable_by_another() {
    let stack = TestStack::start_with_auth(secret_settings()).await;
    let (alice, bob) = (stack.client_as("alice"), stack.client_as("bob"));
    let created = alice
        .create_task(json!({"title": "alice's secret", "description": "diary"}))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.task().id;
    let at = Utc::now() - Delta::minutes(5);
    let pushed_item = create(Uuid::new_v4(), "alice's pushed", at);
    let pushed = alice.sync(std::slice::from_ref(&pushed_item)).await;
    assert_eq!(statuses(&pushed), ["success"], "{pushed:?}");
    let alice_op = created.operation_id().to_string();

    // Reads: like a missing id.
    let path = format!("/api/tasks/{id}");
    assert_eq!(bob.get_task(&id.to_string()).await.status, 404);
    let missing = bob.get_task(&Uuid::new_v4().to_string()).await;
    assert_eq!(
        bob.get_task(&id.to_string()).await.body["error"],
        missing.body["error"]
    );
    assert_eq!(bob.list_tasks().await.tasks().len(), 0);
    let feed = bob.changes("", None).await;
    assert_eq!(
        feed.body["changes"].as_array().map(Vec::len),
        Some(0),
        "{feed:?}"
    );
    assert_eq!(bob.operation(&alice_op).await.status, 404);
    assert_eq!(bob.operation(&op_id(&pushed_item)).await.status, 404);

    // REST writes: 404 like a missing id; a create on the id: 409 revealing nothing.
    let update_reply = bob
        .update_task(&id.to_string(), json!({"title": "pwned"}))
        .await;
    assert_eq!(update_reply.status, 404, "{update_reply:?}");
    assert_eq!(update_reply.error_message(&path), "task not found");
    assert_eq!(bob.delete_task(&id.to_string()).await.status, 404);
    let taken = bob
        .create_task(json!({"id": id, "title": "mine now"}))
        .await;
    assert_eq!(taken.status, 409, "{taken:?}");
    assert_eq!(taken.error_message("/api/tasks"), exists_message(id, false));

    // Pushes on both paths: an error item "task not found", never Alice's data; a re-push of
    // Alice's own item (her op id) is not her outcome.
    let later = Utc::now();
    for path in ["/batch", "/sync"] {
        let items = [
            update(id, json!({"title": "pwned"}), later),
            delete(id, later),
            create(id, "mine now", later),
            pushed_item.clone(),
        ];
        let reply = bob.push_to(path, &items, &[]).await;
        assert_eq!(statuses(&reply), ["error"; 4], "{path}: {reply:?}");
        let text = reply.body.to_string();
        assert!(!text.contains("alice") && !text.contains("diary"), "{text}");
        for processed in reply.body["processed_items"].as_array().unwrap() {
            assert!(processed["resolved_data"].is_null(), "{processed}");
        }
    }

    // Status: Bob's own figures.
    let status = bob.status().await;
    assert_eq!(status.body["user"], "bob");
    assert!(status.body["last_sync_timestamp"].is_null(), "{status:?}");

    // Alice's tasks are untouched, and hers alone.
    let mine = alice.get_task(&id.to_string()).await.task();
    assert_eq!(
        (mine.title.as_str(), mine.is_deleted),
        ("alice's secret", false)
    );
    assert_eq!(alice.list_tasks().await.tasks().len(), 2);
    // The feed serves what no open transaction of the server can still precede.
    stack.feed_caught_up().await;
    let feed = alice.changes("", None).await;
    assert_eq!(
        feed.body["changes"].as_array().map(Vec::len),
        Some(2),
        "{feed:?}"
    );
    assert_eq!(alice.operation(&alice_op).await.status, 200);
    let status = alice.status().await;
    assert!(status.body["last_sync_timestamp"].is_string(), "{status:?}");
}

#[tokio::test]
async fn every_user_route_needs_a_token_and_the_probes_do_not() {
    let stack = TestStack::start_with_auth(secret_settings()).await;
    let anonymous = stack.client();
    let id = Uuid::new_v4().to_string();
    let one = format!("/api/tasks/{id}");
    let op = format!("/api/sync/operations/{id}");
    let replies = [
        ("/api/tasks", anonymous.list_tasks().await),
        (
            "/api/tasks",
            anonymous.create_task(json!({"title": "x"})).await,
        ),
        (&one, anonymous.get_task(&id).await),
        (
            &one,
            anonymous.update_task(&id, json!({"title": "x"})).await,
        ),
        (&one, anonymous.delete_task(&id).await),
        ("/api/batch", anonymous.push(&[]).await),
        ("/api/sync", anonymous.sync(&[]).await),
        ("/api/changes", anonymous.changes("", None).await),
        (&op, anonymous.operation(&id).await),
        ("/api/status", anonymous.status().await),
    ];
    for (path, reply) in &replies {
        super::unauthorized(reply, path);
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{path}");
    }
    // Nothing of the refused writes was published (a create would be applied by now).
    let client = stack.db.get().await.unwrap();
    let logged: i64 = client
        .query_one("SELECT count(*) FROM operations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 0);
    assert_eq!(anonymous.health().await.status, 200);
    assert_eq!(anonymous.ready().await.status, 200);
}

/// With authentication on, the dead letters `/api/status` counts are the caller's own parked
/// operations, never the parking queue's depth (which holds everyone's, and unreadable ones).
#[tokio::test]
async fn each_user_counts_only_their_own_dead_letters() {
    let stack = TestStack::start_with_auth(secret_settings()).await;
    let (alice, bob) = (stack.client_as("alice"), stack.client_as("bob"));
    // An unreadable message is parked with no user.
    stack
        .publish_raw("op.create", &[b"not json".to_vec()])
        .await;
    stack
        .eventually("the unreadable message is parked", || async {
            stack.queue_depth(&stack.topology().parking_queue()).await == 1
        })
        .await;
    // One of Alice's operations parked for good, as the worker records it after its attempts.
    stack
        .db
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO operation_failures (message_id, op_id, task_id, user_id, kind, \
               routing_key, attempts, first_failed_at, last_failed_at, last_error, history, \
               state, body) \
             VALUES ($1, $2, $3, 'alice', 'update', 'op.update', 4, now(), now(), 'boom', \
               '[]'::jsonb, 'parked', '\\x'::bytea)",
            &[
                &Uuid::new_v4().to_string(),
                &Uuid::new_v4(),
                &Uuid::new_v4(),
            ],
        )
        .await
        .unwrap();

    let alices = alice.status().await.body;
    assert_eq!(alices["dead_letter_count"], 1, "{alices}");
    let bobs = bob.status().await.body;
    assert_eq!(bobs["dead_letter_count"], 0, "{bobs}");
}
