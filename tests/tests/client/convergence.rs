//! Devices that edit offline and sync in either order end with the server's tasks.

use tasksync_client::Edit;
use tasksync_tests::TestStack;

use super::{ClientDevice, fully_synced, server_shown, shown};

/// A edits the title and the description of a shared task and deletes another; B, later,
/// edits the title and completes the shared task and adds one of its own. Both offline; they
/// sync in the order given, then each syncs once more to pull the other's work.
async fn two_devices_converge(a_first: bool) {
    let stack = TestStack::start().await;
    let mut a = ClientDevice::of(&stack);
    let mut b = ClientDevice::of(&stack);
    let shared = a.add("plan trip");
    let doomed = a.add("old chore");
    a.sync().await.unwrap();
    stack.feed_caught_up().await;
    b.sync().await.unwrap();
    assert_eq!(shown(&b.tasks()), shown(&a.tasks()), "B pulled A's tasks");

    // Offline.
    a.edit(
        shared.id,
        Edit {
            title: Some("plan trip to Rome".into()),
            description: Some(Some("flights first".into())),
            ..Edit::default()
        },
    );
    a.store.delete(doomed.id).unwrap();
    b.edit(
        shared.id,
        Edit {
            title: Some("plan trip to Lisbon".into()),
            completed: Some(true),
            ..Edit::default()
        },
    );
    let own = b.add("pack");

    let (first, second) = if a_first {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    first.sync().await.unwrap();
    second.sync().await.unwrap();
    stack.feed_caught_up().await;
    first.sync().await.unwrap();
    second.sync().await.unwrap();

    let server = server_shown(&stack).await;
    assert_eq!(shown(&a.tasks()), server, "A ends with the server's tasks");
    assert_eq!(shown(&b.tasks()), server, "B ends with the server's tasks");
    fully_synced(&a);
    fully_synced(&b);
    let task = a.store.task(shared.id).unwrap().unwrap();
    // B's title is the later edit; A's description and B's completion both survive.
    assert_eq!(task.title, "plan trip to Lisbon");
    assert_eq!(task.description.as_deref(), Some("flights first"));
    assert!(task.completed);
    assert!(a.store.task(doomed.id).unwrap().unwrap().is_deleted);
    assert!(a.store.task(own.id).unwrap().is_some());
}

#[tokio::test]
async fn two_devices_editing_offline_converge_when_the_first_editor_syncs_first() {
    two_devices_converge(true).await;
}

#[tokio::test]
async fn two_devices_editing_offline_converge_when_the_later_editor_syncs_first() {
    two_devices_converge(false).await;
}
