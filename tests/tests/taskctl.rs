//! The ops CLI against a real broker and database: every command, human and `--json` output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use clap::Parser;
use reqwest::Method;
use serde_json::{Value, json};
use taskctl::{Cli, CtlError};
use tasksync_tests::{
    TestStack,
    faults::{Failing, ScriptedFaults},
};
use uuid::Uuid;

/// Runs `taskctl args…` in-process against the stack, answering prompts with `input`.
async fn ctl(stack: &TestStack, args: &[&str], input: &str) -> (Result<(), CtlError>, String) {
    let cli = Cli::try_parse_from(std::iter::once("taskctl").chain(args.iter().copied())).unwrap();
    let mut out = Vec::new();
    let mut input = input.as_bytes();
    let result = taskctl::run(cli, &stack.settings, &mut out, &mut input).await;
    (result, String::from_utf8(out).unwrap())
}

async fn ctl_json(stack: &TestStack, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (result, out) = ctl(stack, &args, "").await;
    result.unwrap_or_else(|e| panic!("taskctl {args:?} failed: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A stack whose retries are quick, with `task` created and then failing for good.
async fn stack_with_failing_task() -> (TestStack, Arc<ScriptedFaults>, Uuid) {
    let faults = Arc::new(ScriptedFaults::default());
    let stack = TestStack::start_with_faults(
        |s| s.retry_delays = [20, 40, 60].map(Duration::from_millis).to_vec(),
        faults.clone(),
    )
    .await;
    let created = stack.create_task(json!({"title": "fragile"})).await;
    let task: Uuid = created.body["id"].as_str().unwrap().parse().unwrap();
    faults.fail(task, Failing::Always);
    (stack, faults, task)
}

async fn park_an_update(stack: &TestStack, task: Uuid) -> Uuid {
    let reply = stack
        .request(
            Method::PUT,
            &format!("/tasks/{task}"),
            Some(json!({"completed": true})),
            &[("Prefer", "respond-async")],
        )
        .await;
    let op: Uuid = reply.header("operation-id").unwrap().parse().unwrap();
    stack
        .eventually("the update is parked", || async {
            let list = ctl_json(stack, &["dlq", "list"]).await;
            list["parked"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["op_id"] == op.to_string())
        })
        .await;
    op
}

#[tokio::test]
async fn a_parked_operation_is_listed_shown_and_replayed_once_its_cause_is_fixed() {
    let (stack, faults, task) = stack_with_failing_task().await;
    let op = park_an_update(&stack, task).await;
    let parking = stack.topology().parking_queue();

    let list = ctl_json(&stack, &["dlq", "list"]).await;
    let parked = &list["parked"][0];
    assert_eq!(parked["op_id"], op.to_string());
    assert_eq!(parked["task_id"], task.to_string());
    assert_eq!(parked["user_id"], "default");
    assert_eq!(parked["attempts"], 4);
    assert!(
        parked["last_error"]
            .as_str()
            .unwrap()
            .contains("injected failure")
    );
    assert!(parked["age_seconds"].as_i64().unwrap() >= 0);
    assert_eq!(list["records"], 1);
    assert_eq!(list["queue_depth"], 1);
    assert_eq!(list["counts_by_error"][0]["count"], 1);

    let (result, human) = ctl(&stack, &["dlq", "list"], "").await;
    result.unwrap();
    assert!(
        human.contains(&op.to_string()) && human.contains("ATTEMPTS"),
        "{human}"
    );
    let filtered = ctl_json(&stack, &["dlq", "list", "--error", "no such error"]).await;
    assert_eq!(filtered["parked"], json!([]));
    let by_task = ctl_json(&stack, &["dlq", "list", "--task", &task.to_string()]).await;
    assert_eq!(by_task["parked"].as_array().unwrap().len(), 1);

    let shown = ctl_json(&stack, &["dlq", "show", &op.to_string()]).await;
    assert_eq!(shown["state"], "parked");
    assert_eq!(shown["history"].as_array().unwrap().len(), 4);
    assert_eq!(shown["message"]["op_id"], op.to_string());
    assert_eq!(shown["message"]["fields"]["completed"], true);
    let (result, human) = ctl(&stack, &["dlq", "show", &op.to_string()], "").await;
    result.unwrap();
    assert!(human.contains("attempt 4"), "{human}");
    let (missing, _) = ctl(&stack, &["dlq", "show", &Uuid::new_v4().to_string()], "").await;
    assert_eq!(missing.unwrap_err().exit_code(), CtlError::NOT_FOUND);

    // A dry run changes nothing.
    let dry = ctl_json(&stack, &["dlq", "replay", &op.to_string(), "--dry-run"]).await;
    assert_eq!(dry["replayed"], json!([op.to_string()]));
    assert_eq!(stack.queue_depth(&parking).await, 1);
    assert_eq!(
        stack.get_task(&task.to_string()).await.body["completed"],
        false
    );

    // Fix the cause, replay: applied, parking queue empty, outcome replaced.
    faults.heal(task);
    let replayed = ctl_json(&stack, &["dlq", "replay", &op.to_string()]).await;
    assert_eq!(replayed["replayed"], json!([op.to_string()]));
    stack
        .eventually("the replayed update is applied", || async {
            stack.get_task(&task.to_string()).await.body["completed"] == true
        })
        .await;
    let task_json = stack.get_task(&task.to_string()).await.body;
    assert_eq!(task_json["sync_status"], "synced");
    assert_eq!(stack.queue_depth(&parking).await, 0);
    let client = stack.db.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT outcome, attempts FROM operations WHERE op_id = $1",
            &[&op],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("success".into(), 1)
    );
    let state: String = client
        .query_one(
            "SELECT state FROM operation_failures WHERE op_id = $1",
            &[&op],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "resolved");
    assert_eq!(
        ctl_json(&stack, &["dlq", "list"]).await["parked"],
        json!([])
    );

    let (unknown, _) = ctl(&stack, &["dlq", "replay", "nothing-like-it"], "").await;
    assert_eq!(unknown.unwrap_err().exit_code(), CtlError::NOT_FOUND);
}

#[tokio::test]
async fn replay_all_returns_every_parked_operation_to_work() {
    let (stack, faults, task) = stack_with_failing_task().await;
    let first = park_an_update(&stack, task).await;
    let second = park_an_update(&stack, task).await;
    faults.heal(task);
    let replayed = ctl_json(&stack, &["dlq", "replay", "--all", "--rate", "1000"]).await;
    let mut ids: Vec<String> = serde_json::from_value(replayed["replayed"].clone()).unwrap();
    ids.sort();
    let mut expected = vec![first.to_string(), second.to_string()];
    expected.sort();
    assert_eq!(ids, expected);
    stack
        .eventually("both are applied", || async {
            let client = stack.db.get().await.unwrap();
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM operations WHERE op_id = ANY($1) AND outcome = 'success'",
                    &[&vec![first, second]],
                )
                .await
                .unwrap()
                .get(0);
            n == 2
        })
        .await;
    assert_eq!(
        stack.queue_depth(&stack.topology().parking_queue()).await,
        0
    );
}

#[tokio::test]
async fn purge_asks_first_and_then_empties_the_parking_queue() {
    let stack = TestStack::start().await;
    stack
        .publish_raw("op.create", &[b"bad one".to_vec(), b"bad two".to_vec()])
        .await;
    let parking = stack.topology().parking_queue();
    stack
        .eventually("both are parked", || async {
            stack.queue_depth(&parking).await == 2
        })
        .await;

    let (refused, prompt) = ctl(&stack, &["dlq", "purge"], "no\n").await;
    assert_eq!(refused.unwrap_err().exit_code(), CtlError::ABORTED);
    assert!(prompt.contains("Delete 2 parked message(s)"), "{prompt}");
    assert_eq!(stack.queue_depth(&parking).await, 2);

    let purged = ctl_json(&stack, &["dlq", "purge", "--yes"]).await;
    assert_eq!(purged["purged"], 2);
    assert_eq!(stack.queue_depth(&parking).await, 0);
    let list = ctl_json(&stack, &["dlq", "list"]).await;
    assert_eq!(list["records"], 0);
    assert_eq!(list["queue_depth"], 0);
}

#[tokio::test]
async fn queues_reports_every_queue_with_its_depth_and_consumers() {
    let mut stack = TestStack::start().await;
    stack.stop_worker().await;
    for title in ["one", "two"] {
        let reply = stack
            .request(
                Method::POST,
                "/tasks",
                Some(json!({"title": title})),
                &[("Prefer", "respond-async")],
            )
            .await;
        assert_eq!(reply.status, 202);
    }
    let queues = ctl_json(&stack, &["queues"]).await;
    let queues = queues.as_array().unwrap();
    let names: Vec<&str> = queues.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        stack
            .topology()
            .queues()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    let roles: Vec<&str> = queues.iter().map(|q| q["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["work", "retry", "retry", "retry", "parking"]);
    assert_eq!(queues[0]["ready"], 2);
    assert_eq!(queues[0]["consumers"], 0);
    assert!(queues.iter().all(|q| q["exists"] == true));
    assert_eq!(queues[4]["ready"], 0);

    stack.start_worker().await;
    let (result, human) = ctl(&stack, &["queues"], "").await;
    result.unwrap();
    assert!(
        human.contains(&stack.topology().work_queue()) && human.contains("CONSUMERS"),
        "{human}"
    );
}
