//! The decisions of [`super::decide`], without a database.

#![allow(clippy::unwrap_used)]

use chrono::{Duration, TimeZone};
use tasksync_shared::{OperationFields, SyncStatus, Task, merge::TaskState};

use super::*;
use crate::{apply::report::Shown, faults::NoFaults, storage::DeviceTally};

const ME: &str = "me";

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn op(task: Uuid, kind: OpKind, secs: i64, title: Option<&str>) -> Operation {
    Operation {
        op_id: Uuid::new_v4(),
        task_id: task,
        user_id: ME.into(),
        kind,
        fields: OperationFields {
            title: title.map(str::to_string),
            ..Default::default()
        },
        stamped_at: at(secs),
        // Received a minute later: the stamp is the client's own, not clamped.
        received_at: at(secs + 60),
        if_absent: false,
        if_match: None,
        device_id: None,
    }
}

fn exclusive(task: Uuid, secs: i64) -> Operation {
    Operation {
        if_absent: true,
        ..op(task, OpKind::Create, secs, Some("t"))
    }
}

/// A locked task of `owner`: not stored yet, or the state of `ops` applied in turn.
fn row(task: Uuid, owner: &str, ops: &[&Operation]) -> LockedTask {
    let mut state = TaskState::default();
    for o in ops {
        state.apply(&Write::from_operation(o));
    }
    LockedTask {
        user_id: owner.into(),
        stored: !ops.is_empty(),
        task: Task {
            id: task,
            title: String::new(),
            description: None,
            completed: false,
            created_at: at(0),
            updated_at: at(0),
            is_deleted: state.is_deleted(),
            sync_status: SyncStatus::Synced,
            server_id: None,
            last_synced_at: None,
        },
        state,
    }
}

fn logged(o: &Operation, status: OutcomeStatus) -> Logged {
    Logged {
        status,
        error: (status == OutcomeStatus::Error).then(|| "boom".into()),
        user_id: o.user_id.clone(),
        task_id: o.task_id,
        kind: Some(o.kind),
        fields: o.fields.storable_json(),
        stamped_at: o.stamped_at,
        received_at: o.received_at,
    }
}

struct Run<'a> {
    ops: &'a [Operation],
    attempts: Vec<Attempt>,
    logged: HashMap<Uuid, Logged>,
    locked: HashMap<Uuid, LockedTask>,
}

impl<'a> Run<'a> {
    fn new(ops: &'a [Operation], rows: Vec<LockedTask>) -> Self {
        Self {
            ops,
            attempts: vec![Attempt::FIRST; ops.len()],
            logged: HashMap::new(),
            locked: rows.into_iter().map(|r| (r.task.id, r)).collect(),
        }
    }

    fn decide(&mut self) -> Plan<'a> {
        let problems = super::super::validate::problems(self.ops);
        let batch = Batch {
            ops: self.ops,
            attempts: &self.attempts,
            problems: &problems,
            logged: &self.logged,
        };
        decide(&batch, &mut self.locked, &NoFaults).unwrap()
    }
}

fn rejections(plan: &Plan<'_>) -> Vec<Option<Rejection>> {
    plan.verdicts.iter().map(|v| v.rejection).collect()
}

#[test]
fn of_two_exclusive_creates_of_one_id_only_the_first_applies() {
    let task = Uuid::new_v4();
    let ops = [exclusive(task, 0), exclusive(task, 1)];
    let mut run = Run::new(&ops, vec![row(task, ME, &[])]);
    let plan = run.decide();
    assert_eq!(plan.verdicts[0].status, OutcomeStatus::Success);
    assert_eq!(rejections(&plan), [None, Some(Rejection::Exists)]);
    assert_eq!(
        plan.verdicts[1].error.as_deref(),
        Some(exists_message(task, false).as_str())
    );
    assert_eq!(plan.record.len(), 2, "both are decided and logged");
    assert_eq!(
        run.locked[&task].state.title.as_ref().unwrap().stamp.at,
        at(0)
    );
}

#[test]
fn an_exclusive_create_finds_a_deleted_task_of_its_user_and_nothing_of_anothers() {
    let task = Uuid::new_v4();
    let create = op(task, OpKind::Create, 0, Some("old"));
    let delete = op(task, OpKind::Delete, 5, None);
    let ops = [exclusive(task, 10)];

    let mut mine = Run::new(&ops, vec![row(task, ME, &[&create, &delete])]);
    let plan = mine.decide();
    assert_eq!(rejections(&plan), [Some(Rejection::Exists)]);
    assert_eq!(plan.verdicts[0].error, Some(exists_message(task, true)));
    assert!(mine.locked[&task].state.is_deleted(), "not resurrected");
    assert!(plan.changed.is_empty());

    let mut theirs = Run::new(&ops, vec![row(task, "mallory", &[&create, &delete])]);
    let plan = theirs.decide();
    assert_eq!(rejections(&plan), [Some(Rejection::Exists)]);
    assert_eq!(
        plan.verdicts[0].error,
        Some(exists_message(task, false)),
        "another user's deleted task reads like any taken id"
    );
}

#[test]
fn a_pushed_create_of_an_existing_task_merges_and_an_exclusive_one_may_follow_updates() {
    let task = Uuid::new_v4();
    let first = op(task, OpKind::Create, 0, Some("a"));
    let pushed = [op(task, OpKind::Create, 5, Some("b"))];
    let plan = Run::new(&pushed, vec![row(task, ME, &[&first])]).decide();
    assert_eq!(plan.verdicts[0].status, OutcomeStatus::Success);

    // Updates that arrived before any create leave a row without a title: not a task yet.
    let mut early = op(task, OpKind::Update, 3, None);
    early.fields.completed = Some(true);
    let ops = [exclusive(task, 1)];
    let plan = Run::new(&ops, vec![row(task, ME, &[&early])]).decide();
    assert_eq!(rejections(&plan), [None]);
    assert_eq!(
        plan.verdicts[0].status,
        OutcomeStatus::Conflict,
        "`completed` lost"
    );
}

#[test]
fn an_op_id_reused_for_other_content_is_an_error_and_the_logged_one_stands() {
    let task = Uuid::new_v4();
    let original = op(task, OpKind::Create, 0, Some("first"));
    let mut other_task = original.clone();
    other_task.task_id = Uuid::new_v4();
    let mut other_title = original.clone();
    other_title.fields.title = Some("second".into());
    let mut other_stamp = original.clone();
    other_stamp.stamped_at = at(1);
    let ops = [
        other_task.clone(),
        other_title,
        other_stamp,
        original.clone(),
    ];
    let mut run = Run::new(
        &ops,
        vec![
            row(task, ME, &[&original]),
            row(other_task.task_id, ME, &[]),
        ],
    );
    run.logged
        .insert(original.op_id, logged(&original, OutcomeStatus::Success));
    let plan = run.decide();
    let reused = Some(Rejection::OpIdReused);
    assert_eq!(rejections(&plan), [reused, reused, reused, None]);
    assert_eq!(plan.verdicts[0].error, Some(reused_message(original.op_id)));
    assert_eq!(
        plan.verdicts[3].status,
        OutcomeStatus::Success,
        "the same one repeats"
    );
    assert!(plan.record.is_empty(), "the log is untouched");
    assert!(plan.written.is_empty() && plan.changed.is_empty());
}

#[test]
fn an_item_pushed_again_with_a_clamped_stamp_is_the_same_operation() {
    let task = Uuid::new_v4();
    // A device clock ahead: the api clamped the stamp to its receive time, twice.
    let mut first = op(task, OpKind::Update, 0, Some("ahead"));
    first.stamped_at = first.received_at;
    let mut again = first.clone();
    again.received_at = first.received_at + Duration::seconds(30);
    again.stamped_at = again.received_at;
    let ops = [again];
    let mut run = Run::new(&ops, vec![row(task, ME, &[&first])]);
    run.logged
        .insert(first.op_id, logged(&first, OutcomeStatus::Conflict));
    let plan = run.decide();
    assert_eq!(plan.verdicts[0].status, OutcomeStatus::Conflict);
    assert!(plan.verdicts[0].repeat, "answered from the log");
    assert_eq!(rejections(&plan), [None]);
}

#[test]
fn an_op_id_met_twice_in_one_batch_is_decided_once_unless_its_content_differs() {
    let task = Uuid::new_v4();
    let create = op(task, OpKind::Create, 0, Some("a"));
    let mut reused = create.clone();
    reused.fields.title = Some("b".into());
    let mut stolen = create.clone();
    stolen.user_id = "mallory".into();
    let ops = [create.clone(), create.clone(), reused, stolen];
    let plan = Run::new(&ops, vec![row(task, ME, &[])]).decide();
    // The copy repeats the first decision, and says so (counted once, by outcome).
    assert_eq!(
        plan.verdicts[1],
        Verdict {
            repeat: true,
            ..plan.verdicts[0].clone()
        }
    );
    let repeats: Vec<bool> = plan.verdicts.iter().map(|v| v.repeat).collect();
    assert_eq!(repeats, [false, true, false, false]);
    assert_eq!(
        rejections(&plan),
        [
            None,
            None,
            Some(Rejection::OpIdReused),
            Some(Rejection::NotFound)
        ]
    );
    assert_eq!(plan.record.len(), 1);
}

#[test]
fn another_users_logged_op_id_reveals_nothing() {
    let task = Uuid::new_v4();
    let theirs = op(task, OpKind::Create, 0, Some("private"));
    let mut mine = theirs.clone();
    mine.user_id = "someone".into();
    let ops = [mine];
    let mut run = Run::new(&ops, vec![row(task, ME, &[&theirs])]);
    run.logged
        .insert(theirs.op_id, logged(&theirs, OutcomeStatus::Success));
    let plan = run.decide();
    assert_eq!(plan.verdicts[0], Verdict::not_found());
    assert!(plan.record.is_empty());
}

#[test]
fn a_replayed_error_is_decided_anew_and_its_failure_record_resolved() {
    let task = Uuid::new_v4();
    let parked = op(task, OpKind::Create, 0, Some("a"));
    let retried = op(Uuid::new_v4(), OpKind::Create, 0, Some("b"));
    let first = op(Uuid::new_v4(), OpKind::Create, 0, Some("c"));
    let ops = [parked.clone(), retried.clone(), first.clone()];
    let mut run = Run::new(
        &ops,
        vec![
            row(task, ME, &[]),
            row(retried.task_id, ME, &[]),
            row(first.task_id, ME, &[]),
        ],
    );
    run.logged
        .insert(parked.op_id, logged(&parked, OutcomeStatus::Error));
    run.attempts = vec![
        Attempt {
            number: 1,
            replay: true,
            trace_id: None,
        },
        Attempt {
            number: 3,
            replay: false,
            trace_id: None,
        },
        Attempt::FIRST,
    ];
    let plan = run.decide();
    assert!(
        plan.verdicts
            .iter()
            .all(|v| v.status == OutcomeStatus::Success)
    );
    assert_eq!(plan.forget, [parked.op_id]);
    assert_eq!(
        plan.resolve,
        [parked.op_id, retried.op_id],
        "not the first attempt"
    );
    assert_eq!(plan.record[1].attempts, 3);
}

#[test]
fn an_invalid_operation_is_an_error_and_merges_nothing() {
    let task = Uuid::new_v4();
    let ops = [op(task, OpKind::Create, 0, Some("nul\0title"))];
    // Invalid operations lock nothing.
    let plan = Run::new(&ops, vec![]).decide();
    assert_eq!(rejections(&plan), [Some(Rejection::Invalid)]);
    assert_eq!(plan.record.len(), 1, "decided once, and logged");
    assert!(plan.written.is_empty());
}

fn shown_after(run: &Run<'_>) -> HashMap<Uuid, Shown> {
    run.locked
        .iter()
        .map(|(id, r)| {
            let shown = Shown {
                owner: r.user_id.clone(),
                task: r.task.clone(),
                created: r.state.title.is_some(),
            };
            (*id, shown)
        })
        .collect()
}

#[test]
fn an_update_or_delete_before_its_create_merges_and_is_reported_pending_without_a_task() {
    let task = Uuid::new_v4();
    let mut complete = op(task, OpKind::Update, 0, None);
    complete.fields.completed = Some(true);
    let ops = [complete, op(task, OpKind::Delete, 1, None)];
    let mut run = Run::new(&ops, vec![row(task, ME, &[])]);
    let plan = run.decide();
    assert!(
        plan.verdicts
            .iter()
            .all(|v| v.status == OutcomeStatus::Success)
    );
    assert!(plan.changed.contains(&task), "merged, so that it converges");
    let reports = super::super::report::reports(&ops, &plan.verdicts, &shown_after(&run));
    for report in reports {
        assert_eq!(
            report.status,
            tasksync_shared::operation::ItemStatus::Pending
        );
        assert!(report.task.is_none(), "no task before its create");
    }

    // A title makes a task readable, whichever operation wrote it: then it is reported.
    let ops = [op(task, OpKind::Update, 0, Some("titled"))];
    let mut run = Run::new(&ops, vec![row(task, ME, &[])]);
    let plan = run.decide();
    let reports = super::super::report::reports(&ops, &plan.verdicts, &shown_after(&run));
    assert_eq!(
        reports[0].status,
        tasksync_shared::operation::ItemStatus::Success
    );
    assert!(reports[0].task.is_some());
}

fn if_match(o: Operation, header: &str) -> Operation {
    Operation {
        if_match: Some(header.into()),
        ..o
    }
}

#[test]
fn an_if_match_compares_with_the_tag_the_batch_left_and_a_stale_one_writes_nothing() {
    let task = Uuid::new_v4();
    let create = op(task, OpKind::Create, 0, Some("a"));
    let stored = row(task, ME, &[&create]);
    let read = etag::of_state(task, &stored.state).unwrap();
    // The first update holds the tag the client read; the second held it too, but the first
    // changed the task in the same batch, so it is stale by the time it applies.
    let ops = [
        if_match(op(task, OpKind::Update, 5, Some("b")), &read),
        if_match(op(task, OpKind::Update, 6, Some("c")), &read),
        if_match(op(task, OpKind::Delete, 7, None), "*"),
    ];
    let mut run = Run::new(&ops, vec![stored]);
    let plan = run.decide();
    assert_eq!(plan.verdicts[0].status, OutcomeStatus::Success);
    assert_eq!(
        rejections(&plan),
        [None, Some(Rejection::PreconditionFailed), None]
    );
    assert_eq!(plan.verdicts[1].status, OutcomeStatus::Error);
    assert_eq!(
        plan.verdicts[1].error.as_deref(),
        Some(PRECONDITION_MESSAGE)
    );
    assert_eq!(plan.record.len(), 3, "the failed precondition is logged");
    let state = &run.locked[&task].state;
    assert_eq!(state.title.as_ref().unwrap().value, "b", "`c` never merged");
    assert!(state.is_deleted(), "`*` holds for a task that exists");
}

#[test]
fn an_if_match_star_needs_a_task_and_anothers_task_stays_not_found() {
    let task = Uuid::new_v4();
    let early = op(task, OpKind::Update, 1, None);
    let ops = [if_match(op(task, OpKind::Update, 5, Some("b")), "*")];
    let plan = Run::new(&ops, vec![row(task, ME, &[&early])]).decide();
    assert_eq!(rejections(&plan), [Some(Rejection::PreconditionFailed)]);
    assert!(plan.changed.is_empty());

    let create = op(task, OpKind::Create, 0, Some("a"));
    let theirs = row(task, "mallory", &[&create]);
    let tag = etag::of_state(task, &theirs.state).unwrap();
    let ops = [if_match(op(task, OpKind::Update, 5, Some("b")), &tag)];
    let plan = Run::new(&ops, vec![theirs]).decide();
    assert_eq!(rejections(&plan), [Some(Rejection::NotFound)]);
}

fn from(device: &str, o: Operation) -> Operation {
    Operation {
        device_id: Some(device.into()),
        ..o
    }
}

#[test]
fn a_lost_field_goes_to_the_conflict_history_with_both_stamps() {
    let task = Uuid::new_v4();
    let create = op(task, OpKind::Create, 0, Some("a"));
    let late = from("phone", op(task, OpKind::Update, 600, Some("late")));
    let early = from("laptop", op(task, OpKind::Update, 300, Some("early")));
    let ops = [late.clone(), early.clone()];
    let mut run = Run::new(&ops, vec![row(task, ME, &[&create])]);
    let plan = run.decide();
    assert_eq!(plan.verdicts[1].status, OutcomeStatus::Conflict);
    assert_eq!(plan.conflicts.len(), 1, "{:?}", plan.conflicts);
    let c = &plan.conflicts[0];
    assert_eq!((c.task_id, c.user_id), (task, ME));
    assert_eq!(c.lost.field, tasksync_shared::merge::Field::Title);
    assert_eq!(c.lost.kept.value, "late");
    assert_eq!(c.lost.kept.stamp.op_id, late.op_id);
    assert_eq!(c.lost.lost, "early");
    assert_eq!(c.lost_stamp.op_id, early.op_id);
    assert_eq!(c.lost_stamp.at, at(300));
}

#[test]
fn a_repeated_conflict_is_not_recorded_again_and_counts_as_a_duplicate() {
    let task = Uuid::new_v4();
    let create = op(task, OpKind::Create, 0, Some("a"));
    let late = op(task, OpKind::Update, 600, Some("late"));
    let early = from("laptop", op(task, OpKind::Update, 300, Some("early")));
    let ops = [early.clone(), early.clone()];
    let mut run = Run::new(&ops, vec![row(task, ME, &[&create, &late])]);
    run.logged
        .insert(early.op_id, logged(&early, OutcomeStatus::Conflict));
    let plan = run.decide();
    assert!(plan.conflicts.is_empty() && plan.record.is_empty());
    assert_eq!(
        plan.devices[&(ME, "laptop")],
        DeviceTally {
            duplicate: 2,
            ..Default::default()
        }
    );
}

#[test]
fn each_operation_of_a_device_settles_once_by_its_outcome() {
    let task = Uuid::new_v4();
    let create = from("d", op(task, OpKind::Create, 0, Some("a")));
    let late = from("d", op(task, OpKind::Update, 600, Some("late")));
    let early = from("d", op(task, OpKind::Update, 300, Some("early")));
    let invalid = from("d", op(task, OpKind::Update, 700, Some("nul\0")));
    let anonymous = op(task, OpKind::Update, 800, Some("x"));
    let badly_named = from("a b", op(task, OpKind::Update, 900, Some("y")));
    let ops = [
        create.clone(),
        late.clone(),
        early,
        invalid,
        late,
        anonymous,
        badly_named,
    ];
    let mut run = Run::new(&ops, vec![row(task, ME, &[])]);
    let plan = run.decide();
    assert_eq!(
        plan.devices.len(),
        1,
        "no device, or a bad name: not counted"
    );
    assert_eq!(
        plan.devices[&(ME, "d")],
        DeviceTally {
            applied: 2,
            conflicted: 1,
            failed: 1,
            duplicate: 1,
        }
    );
    // A replayed error decided anew leaves `failed` for its new outcome.
    let parked = from("d", op(Uuid::new_v4(), OpKind::Create, 0, Some("p")));
    let ops = [parked.clone()];
    let mut run = Run::new(&ops, vec![row(parked.task_id, ME, &[])]);
    run.logged
        .insert(parked.op_id, logged(&parked, OutcomeStatus::Error));
    run.attempts = vec![Attempt {
        number: 1,
        replay: true,
        trace_id: None,
    }];
    let plan = run.decide();
    assert_eq!(
        plan.devices[&(ME, "d")],
        DeviceTally {
            applied: 1,
            failed: -1,
            ..Default::default()
        }
    );
}
