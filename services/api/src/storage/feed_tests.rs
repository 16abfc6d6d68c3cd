use chrono::Utc;
use tasksync_shared::{OpKind, OutcomeStatus, SyncStatus, Task, sync::Ack};
use uuid::Uuid;

use super::*;

fn at(xid: u64, id: u128) -> Position {
    Position {
        xid,
        id: Uuid::from_u128(id),
    }
}

fn task(p: Position) -> (Position, Task) {
    let now = Utc::now();
    let task = Task {
        id: p.id,
        title: "t".into(),
        description: None,
        completed: false,
        created_at: now,
        updated_at: now,
        is_deleted: false,
        sync_status: SyncStatus::Synced,
        server_id: None,
        last_synced_at: None,
    };
    (p, task)
}

fn ack(p: Position, op: u128) -> (Position, Ack) {
    let ack = Ack {
        op_id: Uuid::from_u128(op),
        task_id: p.id,
        operation: OpKind::Update,
        outcome: OutcomeStatus::Success,
        error: None,
        decided_at: Utc::now(),
    };
    (p, ack)
}

fn ops(page: &Assembled) -> Vec<u128> {
    page.acks.iter().map(|(_, a)| a.op_id.as_u128()).collect()
}

fn tasks(page: &Assembled) -> Vec<Position> {
    page.changes.iter().map(|(p, _)| *p).collect()
}

#[test]
fn the_last_page_runs_to_the_horizon_and_takes_decisions_without_a_task_row() {
    let page = assemble(
        Position::START,
        vec![task(at(10, 1))],
        false,
        vec![ack(at(10, 1), 100), ack(at(12, 9), 101)],
        5,
        20,
    );
    assert_eq!(tasks(&page), [at(10, 1)]);
    assert_eq!(ops(&page), [100, 101]);
    assert_eq!(page.next, Position::end_below(20));
    assert!(!page.has_more);
    let empty = assemble(at(30, 1), vec![], false, vec![], 5, 20);
    assert_eq!(empty.next, at(30, 1), "never behind the cursor");
}

#[test]
fn a_full_page_of_tasks_takes_only_the_acks_up_to_its_last_row() {
    let page = assemble(
        Position::START,
        vec![task(at(10, 1)), task(at(11, 2))],
        true,
        vec![
            ack(at(10, 1), 100),
            ack(at(11, 2), 101),
            ack(at(11, 3), 102),
        ],
        2,
        20,
    );
    assert_eq!(tasks(&page), [at(10, 1), at(11, 2)]);
    assert_eq!(ops(&page), [100, 101]);
    assert_eq!(page.next, at(11, 2));
    assert!(page.has_more);
}

#[test]
fn too_many_acks_end_the_page_at_the_last_position_that_fits() {
    // limit 2: three acks are read (limit + 1); the third shares no position with the second.
    let page = assemble(
        Position::START,
        vec![task(at(10, 1)), task(at(13, 4))],
        false,
        vec![
            ack(at(10, 1), 100),
            ack(at(11, 2), 101),
            ack(at(12, 3), 102),
        ],
        2,
        20,
    );
    assert_eq!(ops(&page), [100, 101]);
    assert_eq!(tasks(&page), [at(10, 1)], "the task row past the end waits");
    assert_eq!(page.next, at(11, 2));
    assert!(page.has_more);
    assert_eq!(page.split_position, None);

    // The second and third share a position: the page ends before it.
    let page = assemble(
        Position::START,
        vec![],
        false,
        vec![
            ack(at(10, 1), 100),
            ack(at(11, 2), 101),
            ack(at(11, 2), 102),
        ],
        2,
        20,
    );
    assert_eq!(ops(&page), [100]);
    assert_eq!(page.next, at(10, 1));
}

#[test]
fn one_position_with_more_acks_than_fit_is_read_whole() {
    let page = assemble(
        at(5, 0),
        vec![task(at(10, 1))],
        false,
        vec![ack(at(10, 1), 100), ack(at(10, 1), 101)],
        1,
        20,
    );
    assert_eq!(page.split_position, Some(at(10, 1)));
    assert_eq!(page.next, at(10, 1));
    assert_eq!(tasks(&page), [at(10, 1)]);
    assert!(page.has_more);
}
