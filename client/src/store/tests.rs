//! Unit tests of the store and its queue: local changes, recorded answers, pulled pages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, Utc};
use tasksync_shared::{
    OpKind, SyncStatus, Task,
    operation::ItemStatus,
    sync::{ChangesPage, OperationStatus, Processed, PushResponse},
};

use super::*;
use crate::error::Error;

fn store() -> Store {
    Store::open_in_memory().unwrap()
}

fn add(store: &mut Store, title: &str) -> Task {
    store
        .add(NewTask {
            title: title.into(),
            ..NewTask::default()
        })
        .unwrap()
}

/// The server's copy of `task` with other values, as of `updated_at`.
fn server_copy(task: &Task, title: &str, completed: bool, updated_at: DateTime<Utc>) -> Task {
    Task {
        title: title.into(),
        completed,
        updated_at,
        sync_status: SyncStatus::Synced,
        server_id: Some(task.id.to_string()),
        last_synced_at: Some(updated_at),
        ..task.clone()
    }
}

fn answer(items: Vec<Processed>) -> PushResponse {
    PushResponse {
        processed_items: items,
        success: true,
        synced_items: 0,
        conflict_items: 0,
        failed_items: 0,
        pending_items: 0,
        errors: vec![],
        server_time: Utc::now(),
    }
}

fn processed(op: &QueuedOp, status: ItemStatus, task: Option<Task>) -> Processed {
    Processed {
        client_id: Some(op.task_id.to_string()),
        op_id: Some(op.op_id.to_string()),
        server_id: task.as_ref().map(|t| t.id.to_string()),
        status,
        error: (status == ItemStatus::Error).then(|| "title: too long".to_string()),
        code: (status == ItemStatus::Error).then(|| "invalid_request".to_string()),
        resolved_data: task,
    }
}

fn page(changes: Vec<Task>, cursor: &str) -> ChangesPage {
    ChangesPage {
        changes,
        acks: Vec::new(),
        next_cursor: cursor.into(),
        has_more: false,
        server_time: Utc::now(),
    }
}

#[test]
fn a_new_task_is_pending_with_its_create_queued_as_the_protocol_item() {
    let mut store = store();
    let task = add(&mut store, "  buy milk ");
    assert_eq!(task.title, "buy milk", "trimmed like the server does");
    assert_eq!(task.sync_status, SyncStatus::Pending);
    assert_eq!(task.server_id, None);
    let queued = store.queue(QueueState::Queued).unwrap();
    assert_eq!(queued.len(), 1);
    let item = serde_json::to_value(queued[0].item()).unwrap();
    assert_eq!(item["operation"], "create");
    assert_eq!(item["task_id"], task.id.to_string());
    assert_eq!(item["data"]["title"], "buy milk");
    assert_eq!(item["retry_count"], 0);
    assert_eq!(
        item["data"]["updated_at"], item["created_at"],
        "stamped at the edit"
    );
    assert_eq!(store.tasks(false).unwrap(), vec![task]);
}

#[test]
fn edits_stamp_in_order_and_a_deleted_task_takes_no_more_edits() {
    let mut store = store();
    let task = add(&mut store, "a");
    let edited = store
        .edit(
            task.id,
            Edit {
                title: Some("b".into()),
                description: Some(Some("d".into())),
                ..Edit::default()
            },
        )
        .unwrap();
    let done = store
        .edit(
            task.id,
            Edit {
                completed: Some(true),
                ..Edit::default()
            },
        )
        .unwrap();
    assert_eq!((done.title.as_str(), done.completed), ("b", true));
    assert_eq!(done.description.as_deref(), Some("d"));
    assert!(task.updated_at < edited.updated_at && edited.updated_at < done.updated_at);
    let deleted = store.delete(task.id).unwrap();
    assert!(deleted.is_deleted);
    assert!(store.tasks(false).unwrap().is_empty());
    assert_eq!(store.tasks(true).unwrap().len(), 1);
    assert!(matches!(store.delete(task.id), Err(Error::NotFound(_))));
    let kinds: Vec<_> = store
        .queue(QueueState::Queued)
        .unwrap()
        .iter()
        .map(|op| op.operation)
        .collect();
    assert_eq!(
        kinds,
        [
            OpKind::Create,
            OpKind::Update,
            OpKind::Update,
            OpKind::Delete
        ]
    );
}

#[test]
fn an_invalid_change_stores_nothing() {
    let mut store = store();
    assert!(matches!(
        store.add(NewTask {
            title: " \u{200B} ".into(),
            ..NewTask::default()
        }),
        Err(Error::Invalid(_))
    ));
    let task = add(&mut store, "a");
    let err = store
        .edit(
            task.id,
            Edit {
                title: Some("x".repeat(501)),
                ..Edit::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("title:"), "{err}");
    assert_eq!(store.queue_counts().unwrap().queued, 1);
    assert_eq!(store.task(task.id).unwrap().unwrap().title, "a");
}

#[test]
fn success_forgets_the_entry_and_shows_the_server_copy() {
    let mut store = store();
    let task = add(&mut store, "a");
    let batch = store.to_push(0, 10).unwrap();
    let server = server_copy(&task, "a", false, task.updated_at);
    let tally = store
        .record_push(
            &batch,
            &answer(vec![processed(
                &batch[0],
                ItemStatus::Success,
                Some(server),
            )]),
        )
        .unwrap();
    assert_eq!(tally.success, 1);
    assert_eq!(store.queue_counts().unwrap(), QueueCounts::default());
    let stored = store.task(task.id).unwrap().unwrap();
    assert_eq!(stored.sync_status, SyncStatus::Synced);
    assert_eq!(stored.server_id, Some(task.id.to_string()));
    assert!(stored.last_synced_at.is_some());
}

#[test]
fn a_rejected_operation_is_retried_then_ends_in_error_while_others_sync() {
    let mut store = store();
    let bad = add(&mut store, "bad");
    let good = add(&mut store, "good");
    for attempt in 1..=MAX_TRIES {
        let batch = store.to_push(0, 10).unwrap();
        let items = batch
            .iter()
            .map(|op| {
                if op.task_id == bad.id {
                    processed(op, ItemStatus::Error, None)
                } else {
                    processed(
                        op,
                        ItemStatus::Success,
                        Some(server_copy(&good, "good", false, good.updated_at)),
                    )
                }
            })
            .collect();
        let tally = store.record_push(&batch, &answer(items)).unwrap();
        let status = store.task(bad.id).unwrap().unwrap().sync_status;
        if attempt < MAX_TRIES {
            assert_eq!(tally.retrying, 1);
            assert_eq!(status, SyncStatus::Pending);
        } else {
            assert_eq!(tally.failed, 1);
            assert_eq!(status, SyncStatus::Error);
        }
    }
    assert!(
        store.to_push(0, 10).unwrap().is_empty(),
        "never pushed again"
    );
    let failed = store.queue(QueueState::Error).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].retry_count, MAX_TRIES);
    assert_eq!(failed[0].error.as_deref(), Some("title: too long"));
    let good = store.task(good.id).unwrap().unwrap();
    assert_eq!(good.sync_status, SyncStatus::Synced);
}

#[test]
fn a_pending_answer_is_kept_until_a_lookup_decides_it() {
    let mut store = store();
    let task = add(&mut store, "a");
    let batch = store.to_push(0, 10).unwrap();
    store
        .record_push(
            &batch,
            &answer(vec![processed(&batch[0], ItemStatus::Pending, None)]),
        )
        .unwrap();
    assert!(store.to_push(0, 10).unwrap().is_empty(), "not pushed again");
    let accepted = store.accepted(10).unwrap();
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        store.task(task.id).unwrap().unwrap().sync_status,
        SyncStatus::Pending
    );
    let lookup = OperationStatus {
        op_id: accepted[0].op_id,
        task_id: task.id,
        operation: "create".into(),
        status: "success".into(),
        attempts: 1,
        last_error: None,
        client_timestamp: Some(task.updated_at),
        received_at: None,
        decided_at: None,
        first_failed_at: None,
        last_failed_at: None,
        resolved_data: Some(server_copy(&task, "a", false, task.updated_at)),
        server_time: Utc::now(),
    };
    store.record_lookup(&accepted[0], &lookup).unwrap();
    assert_eq!(store.queue_counts().unwrap(), QueueCounts::default());
    assert_eq!(
        store.task(task.id).unwrap().unwrap().sync_status,
        SyncStatus::Synced
    );
}

#[test]
fn a_pulled_older_state_never_hides_an_unpushed_edit_but_a_newer_one_wins() {
    let mut store = store();
    let task = add(&mut store, "a");
    let batch = store.to_push(0, 10).unwrap();
    let synced = server_copy(&task, "a", false, task.updated_at);
    store
        .record_push(
            &batch,
            &answer(vec![processed(
                &batch[0],
                ItemStatus::Success,
                Some(synced.clone()),
            )]),
        )
        .unwrap();
    // Offline: the title changes here.
    let mine = store
        .edit(
            task.id,
            Edit {
                title: Some("mine".into()),
                ..Edit::default()
            },
        )
        .unwrap();
    // Another device completed it a little earlier than my edit, and the feed brings that.
    let older = server_copy(
        &task,
        "a",
        true,
        mine.updated_at - Duration::milliseconds(1),
    );
    store.absorb_page(&page(vec![older], "c1")).unwrap();
    let shown = store.task(task.id).unwrap().unwrap();
    assert_eq!(shown.title, "mine", "my unpushed edit stays");
    assert!(shown.completed, "their edit of another field merges");
    assert_eq!(shown.sync_status, SyncStatus::Pending);
    assert_eq!(store.sync_state().unwrap().pull_cursor, "c1");
    // A later title from elsewhere wins over mine, as it will on the server.
    let newer = server_copy(
        &task,
        "theirs",
        true,
        mine.updated_at + Duration::seconds(5),
    );
    store.absorb_page(&page(vec![newer], "c2")).unwrap();
    let shown = store.task(task.id).unwrap().unwrap();
    assert_eq!(shown.title, "theirs");
    assert_eq!(
        store.queue_counts().unwrap().queued,
        1,
        "my edit is still queued"
    );
}

#[test]
fn a_pulled_task_unknown_here_is_stored_as_the_server_has_it() {
    let mut store = store();
    let at = tasksync_shared::model::to_db_precision(Utc::now());
    let remote = Task {
        id: uuid::Uuid::new_v4(),
        title: "from elsewhere".into(),
        description: None,
        completed: false,
        created_at: at,
        updated_at: at,
        is_deleted: false,
        sync_status: SyncStatus::Synced,
        server_id: None,
        last_synced_at: Some(at),
    };
    store.absorb_page(&page(vec![remote.clone()], "c")).unwrap();
    assert_eq!(store.task(remote.id).unwrap(), Some(remote.clone()));
    let deleted = Task {
        is_deleted: true,
        ..remote.clone()
    };
    store.absorb_page(&page(vec![deleted], "d")).unwrap();
    assert!(store.tasks(false).unwrap().is_empty());
}

#[test]
fn ids_resolve_from_a_unique_prefix() {
    let mut store = store();
    let task = add(&mut store, "a");
    let prefix = &task.id.to_string()[..8];
    assert_eq!(store.resolve_id(prefix).unwrap(), task.id);
    assert_eq!(store.resolve_id(&task.id.to_string()).unwrap(), task.id);
    assert!(matches!(store.resolve_id("zz"), Err(Error::NotFound(_))));
}

#[test]
fn a_store_on_disk_keeps_its_tasks_queue_and_device_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/tasks.db");
    let (task, device) = {
        let mut store = Store::open(&path).unwrap();
        (
            add(&mut store, "kept"),
            store.sync_state().unwrap().device_id,
        )
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.task(task.id).unwrap(), Some(task));
    assert_eq!(store.queue_counts().unwrap().queued, 1);
    assert_eq!(store.sync_state().unwrap().device_id, device);
}

fn ack(op: &QueuedOp, outcome: tasksync_shared::OutcomeStatus) -> tasksync_shared::sync::Ack {
    tasksync_shared::sync::Ack {
        op_id: op.op_id,
        task_id: op.task_id,
        operation: op.operation,
        outcome,
        error: (outcome == tasksync_shared::OutcomeStatus::Error).then(|| "failed".to_string()),
        decided_at: Utc::now(),
    }
}

#[test]
fn acks_in_a_page_settle_the_queue_entries_they_name() {
    use tasksync_shared::OutcomeStatus;
    let mut store = store();
    let kept = add(&mut store, "kept");
    let failed = add(&mut store, "failed");
    let ops = store.queue(QueueState::Queued).unwrap();
    let pending: Vec<Processed> = ops
        .iter()
        .map(|op| processed(op, ItemStatus::Pending, None))
        .collect();
    store.record_push(&ops, &answer(pending)).unwrap();
    assert_eq!(store.queue_counts().unwrap().accepted, 2);

    let mut feed = page(
        vec![server_copy(&kept, "kept", false, kept.updated_at)],
        "c1",
    );
    feed.acks = vec![
        ack(&ops[0], OutcomeStatus::Success),
        ack(&ops[1], OutcomeStatus::Error),
    ];
    // An ack of another device's operation needs nothing here.
    feed.acks.push(tasksync_shared::sync::Ack {
        op_id: uuid::Uuid::new_v4(),
        ..ack(&ops[0], OutcomeStatus::Conflict)
    });
    let absorbed = store.absorb_page(&feed).unwrap();
    assert_eq!(absorbed.settled.success, 1);
    assert_eq!(absorbed.settled.failed, 1);
    assert_eq!(absorbed.settled.conflict, 0);
    let counts = store.queue_counts().unwrap();
    assert_eq!((counts.queued, counts.accepted, counts.error), (0, 0, 1));
    assert_eq!(
        store.task(kept.id).unwrap().unwrap().sync_status,
        SyncStatus::Synced
    );
    assert_eq!(
        store.task(failed.id).unwrap().unwrap().sync_status,
        SyncStatus::Error
    );
}

#[test]
fn a_resync_replaces_the_copy_and_keeps_the_unpushed_edits() {
    let mut store = store();
    let at = tasksync_shared::model::to_db_precision(Utc::now());
    let remote = |title: &str| Task {
        id: uuid::Uuid::new_v4(),
        title: title.into(),
        description: None,
        completed: false,
        created_at: at,
        updated_at: at,
        is_deleted: false,
        sync_status: SyncStatus::Synced,
        server_id: None,
        last_synced_at: Some(at),
    };
    let (stays, gone) = (remote("stays"), remote("gone on the server"));
    store
        .absorb_page(&page(vec![stays.clone(), gone.clone()], "old"))
        .unwrap();
    let unpushed = add(&mut store, "not pushed yet");

    store.begin_resync().unwrap();
    assert_eq!(store.sync_state().unwrap().pull_cursor, "");
    let mut first = page(vec![stays.clone()], "p1");
    first.has_more = true;
    assert_eq!(store.absorb_page(&first).unwrap().dropped, 0);
    let last = page(vec![], "end");
    assert_eq!(store.absorb_page(&last).unwrap().dropped, 1);
    let mut ids: Vec<_> = store.tasks(true).unwrap().iter().map(|t| t.id).collect();
    ids.sort();
    let mut expected = vec![stays.id, unpushed.id];
    expected.sort();
    assert_eq!(ids, expected, "the server's tasks, and the local edit");
    assert_eq!(store.sync_state().unwrap().pull_cursor, "end");
    // Done: a later last page drops nothing.
    store.absorb_page(&page(vec![], "later")).unwrap();
    assert_eq!(store.tasks(true).unwrap().len(), 2);
}
