//! `taskctl op` in each state an operation can be in (decided, retrying, due, parked, replayed,
//! unknown), and `taskctl ops list` with its filters.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tasksync_shared::{OpKind, topology::routing_key};
use tasksync_tests::{
    TestStack,
    faults::{Failing, ScriptedFaults},
    ops,
};
use uuid::Uuid;

use clap::Parser;
use taskctl::{Cli, CtlError};

use super::{ctl, ctl_json, exit_code, failing_task, park_an_update, stack_with_failing_task};

/// `taskctl op ID --json`, for an operation taskctl knows.
async fn op(stack: &TestStack, id: Uuid) -> Value {
    ctl_json(stack, &["op", &id.to_string()]).await
}

/// `taskctl op ID --json` whatever it answers, unknown included (exit 5, JSON on stdout).
async fn op_state(stack: &TestStack, id: Uuid) -> Value {
    let (_, out) = ctl(stack, &["op", &id.to_string(), "--json"], "").await;
    let answer: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    answer["state"].clone()
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap()
}

/// A stack whose worker retries after `delays`, with its faults scripted by the test.
async fn stack_retrying_after(delays: [u64; 3]) -> (TestStack, Arc<ScriptedFaults>) {
    let faults = Arc::new(ScriptedFaults::default());
    let stack = TestStack::start_with_faults(
        |s| s.retry_delays = delays.map(Duration::from_millis).to_vec(),
        faults.clone(),
    )
    .await;
    (stack, faults)
}

/// An update of a failing task, sent without waiting; returns its op id once it is retrying.
async fn retrying_update(stack: &TestStack, faults: &ScriptedFaults) -> (Uuid, Uuid) {
    let task = failing_task(stack, faults, Failing::Always).await;
    let reply = stack
        .client()
        .update_task_async(&task.to_string(), json!({"completed": true}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let id = reply.operation_id();
    stack
        .eventually("the update is retrying", || async {
            op_state(stack, id).await == "retrying"
        })
        .await;
    (task, id)
}

#[tokio::test]
async fn op_gives_a_decided_operation_its_outcome_task_and_user() {
    let stack = TestStack::start().await;
    let created = stack.create_task(json!({"title": "plain"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.operation_id();
    let task = created.body["id"].as_str().unwrap();

    let decided = op(&stack, id).await;
    assert_eq!(decided["state"], "decided");
    assert_eq!(decided["outcome"], "success");
    assert_eq!(decided["task_id"], task);
    assert_eq!(decided["user_id"], "default");
    assert_eq!(decided["kind"], "create");
    assert_eq!(decided["log"]["attempts"], 1);
    assert_eq!(decided["failure"], Value::Null);
    let decided_at = time(&decided["log"]["decided_at"]);
    assert!(decided_at <= Utc::now() && Utc::now() - decided_at < chrono::Duration::minutes(5));
    let (result, human) = ctl(&stack, &["op", &id.to_string()], "").await;
    result.unwrap();
    assert!(human.contains("decided success at"), "{human}");
    assert!(human.contains(task), "{human}");

    // An operation that can never apply is decided `error` at once, with the reason.
    let poison = ops::operation(
        Uuid::new_v4(),
        OpKind::Create,
        Utc::now(),
        ops::title("nul\u{0}title"),
    );
    stack
        .publish_raw(&routing_key(OpKind::Create), &[poison.encode().unwrap()])
        .await;
    stack
        .eventually("the poison is decided", || async {
            op_state(&stack, poison.op_id).await == "decided"
        })
        .await;
    let refused = op(&stack, poison.op_id).await;
    assert_eq!(refused["state"], "decided");
    assert_eq!(refused["outcome"], "error");
    assert_eq!(refused["task_id"], poison.task_id.to_string());
    let error = refused["log"]["last_error"].as_str().unwrap();
    assert!(error.starts_with("title: "), "{refused}");
    let summary = refused["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("decided error at ") && summary.contains(error),
        "{summary}"
    );
}

#[tokio::test]
async fn op_tells_when_a_retrying_operation_makes_its_next_attempt() {
    let (stack, faults) = stack_retrying_after([60_000, 60_000, 60_000]).await;
    let (task, id) = retrying_update(&stack, &faults).await;

    let retrying = op(&stack, id).await;
    assert_eq!(retrying["task_id"], task.to_string());
    assert_eq!(retrying["kind"], "update");
    assert_eq!(retrying["log"], Value::Null);
    assert_eq!(retrying["failure"]["state"], "retrying");
    assert_eq!(retrying["failure"]["attempts"], 1);
    let next = &retrying["next_attempt"];
    assert_eq!(
        (&next["number"], &next["of"], &next["due"]),
        (&json!(2), &json!(4), &json!(false))
    );
    // The delay queue of attempt 1 holds it for the first delay from the recorded failure.
    let failed_at = time(&retrying["failure"]["last_failed_at"]);
    assert_eq!(time(&next["at"]), failed_at + chrono::Duration::seconds(60));
    let summary = retrying["summary"].as_str().unwrap();
    let around = time(&next["at"]).format("%H:%M:%S").to_string();
    assert!(
        summary.contains("attempt 1 of 4 failed")
            && summary.contains(&format!("next attempt around {around} UTC")),
        "{summary}"
    );
    let (result, human) = ctl(&stack, &["op", &id.to_string()], "").await;
    result.unwrap();
    assert!(
        human.contains("retrying") && human.contains(&around),
        "{human}"
    );

    let listed = ctl_json(&stack, &["ops", "list", "--state", "retrying"]).await;
    let listed = listed["operations"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["op_id"], id.to_string());
    assert_eq!(listed[0]["state"], "retrying");
    assert_eq!(listed[0]["next_attempt"]["at"], next["at"]);
    let parked = ctl_json(&stack, &["ops", "list", "--state", "parked"]).await;
    assert_eq!(parked["operations"], json!([]));
}

#[tokio::test]
async fn a_retrying_operation_whose_delay_has_ended_is_due() {
    // The first delay leaves time to stop the worker before the second attempt.
    let (mut stack, faults) = stack_retrying_after([3_000, 60_000, 60_000]).await;
    let (_, id) = retrying_update(&stack, &faults).await;
    // Without a worker, the copy comes back from its delay queue and waits in the work queue.
    stack.stop_worker().await;
    let work = stack.topology().work_queue();
    stack
        .eventually("the copy is back in the work queue", || async {
            stack.queue_depth(&work).await == 1
        })
        .await;
    let due = op(&stack, id).await;
    assert_eq!(due["state"], "retrying");
    assert_eq!(due["failure"]["attempts"], 1);
    assert_eq!(due["next_attempt"]["due"], true);
    assert!(time(&due["next_attempt"]["at"]) <= Utc::now());
    let summary = due["summary"].as_str().unwrap();
    assert!(summary.ends_with("next attempt due"), "{summary}");
    let (result, human) = ctl(&stack, &["ops", "list", "--state", "retrying"], "").await;
    result.unwrap();
    assert!(
        human.contains(&id.to_string()) && human.contains("due"),
        "{human}"
    );
}

#[tokio::test]
async fn op_tells_why_and_when_an_operation_was_parked_and_whether_it_was_replayed() {
    let (mut stack, faults, task) = stack_with_failing_task().await;
    let id = park_an_update(&stack, task).await;

    let parked = op(&stack, id).await;
    assert_eq!(parked["state"], "parked");
    assert_eq!(parked["parking"], "waiting");
    assert_eq!(parked["replays"], 0);
    assert_eq!(parked["failure"]["attempts"], 4);
    assert_eq!(parked["log"]["outcome"], "error");
    let reason = parked["failure"]["last_error"].as_str().unwrap();
    assert!(reason.contains("injected failure"), "{reason}");
    let summary = parked["summary"].as_str().unwrap();
    let at = time(&parked["failure"]["last_failed_at"])
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(
        summary.starts_with(&format!("parked at {at} after 4 attempt(s): "))
            && summary.contains(reason)
            && summary.ends_with("not replayed"),
        "{summary}"
    );

    // Replayed while no worker runs: back in the work queue, not decided again yet.
    stack.stop_worker().await;
    ctl_json(&stack, &["dlq", "replay", &id.to_string()]).await;
    let replayed = op(&stack, id).await;
    assert_eq!(replayed["state"], "parked");
    assert_eq!(replayed["parking"], "replayed");
    assert!(
        replayed["summary"]
            .as_str()
            .unwrap()
            .contains("replayed to the work queue"),
        "{replayed}"
    );

    // Still failing: parked again, with one replay behind it.
    stack.start_worker().await;
    stack
        .eventually("the replay is parked again", || async {
            op(&stack, id).await["parking"] == "waiting"
        })
        .await;
    let again = op(&stack, id).await;
    assert_eq!(again["replays"], 1);
    assert!(
        again["summary"]
            .as_str()
            .unwrap()
            .ends_with("(replayed 1 time(s) before)"),
        "{again}"
    );

    // Fixed and replayed: decided, its failed attempts kept beside the outcome.
    faults.heal(task);
    ctl_json(&stack, &["dlq", "replay", &id.to_string()]).await;
    stack
        .eventually("the replay is decided", || async {
            op(&stack, id).await["state"] == "decided"
        })
        .await;
    let decided = op(&stack, id).await;
    assert_eq!(decided["outcome"], "success");
    assert_eq!(decided["failure"]["state"], "resolved");
}

#[tokio::test]
async fn an_operation_nobody_knows_is_unknown_with_exit_code_5() {
    let mut stack = TestStack::start().await;
    let nobody = Uuid::new_v4().to_string();
    let (result, out) = ctl(&stack, &["op", &nobody], "").await;
    let error = result.unwrap_err();
    assert_eq!(error.exit_code(), CtlError::UNKNOWN);
    assert_eq!(CtlError::UNKNOWN, 5);
    assert!(
        error
            .to_string()
            .contains("not known: still queued, never sent"),
        "{error}"
    );
    assert_eq!(out, "", "the human answer is the error line on stderr");

    // Accepted but not consumed: still queued, which the work queue's depth hints at.
    stack.stop_worker().await;
    let reply = stack
        .client()
        .create_task_async(json!({"title": "waiting"}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let queued = reply.operation_id().to_string();
    let (result, out) = ctl(&stack, &["op", &queued, "--json"], "").await;
    assert_eq!(exit_code(result), CtlError::UNKNOWN);
    let unknown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(unknown["op_id"], queued);
    assert_eq!(unknown["state"], "unknown");
    assert_eq!(unknown["log"], Value::Null);
    assert_eq!(unknown["failure"], Value::Null);
    assert_eq!(unknown["work_queue"]["name"], stack.topology().work_queue());
    assert_eq!(unknown["work_queue"]["ready"], 1);
    assert_eq!(unknown["work_queue"]["consumers"], 0);

    stack.start_worker().await;
    let id: Uuid = queued.parse().unwrap();
    stack
        .eventually("the queued create is decided", || async {
            op_state(&stack, id).await == "decided"
        })
        .await;
    assert_eq!(op(&stack, id).await["outcome"], "success");
}

#[tokio::test]
async fn ops_list_filters_by_state_user_and_task_newest_first() {
    let (stack, faults) = super::stack_with_faults().await;
    let a = failing_task(&stack, &faults, Failing::Always).await;
    let b = failing_task(&stack, &faults, Failing::Always).await;
    let on_a = park_an_update(&stack, a).await;
    let on_b = park_an_update(&stack, b).await;
    let ids = |listed: &Value| -> Vec<String> {
        listed["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["op_id"].as_str().unwrap().to_string())
            .collect()
    };

    let parked = ctl_json(&stack, &["ops", "list", "--state", "parked"]).await;
    assert_eq!(
        ids(&parked),
        [on_b.to_string(), on_a.to_string()],
        "newest first"
    );
    assert!(
        parked["operations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["state"] == "parked" && o["next_attempt"].is_null())
    );
    let mine = ctl_json(
        &stack,
        &["ops", "list", "--state", "parked", "--user", "default"],
    )
    .await;
    assert_eq!(ids(&mine).len(), 2);
    let theirs = ctl_json(
        &stack,
        &["ops", "list", "--state", "parked", "--user", "someone"],
    )
    .await;
    assert_eq!(ids(&theirs), Vec::<String>::new());
    let of_a = ctl_json(
        &stack,
        &["ops", "list", "--state", "parked", "--task", &a.to_string()],
    )
    .await;
    assert_eq!(ids(&of_a), [on_a.to_string()]);
    let both = [
        "ops",
        "list",
        "--state",
        "parked",
        "--task",
        &b.to_string(),
        "--user",
        "default",
    ];
    assert_eq!(ids(&ctl_json(&stack, &both).await), [on_b.to_string()]);
    let newest = ctl_json(
        &stack,
        &["ops", "list", "--state", "parked", "--limit", "1"],
    )
    .await;
    assert_eq!(ids(&newest), [on_b.to_string()]);
    let retrying = ctl_json(&stack, &["ops", "list", "--state", "retrying"]).await;
    assert_eq!(ids(&retrying), Vec::<String>::new());

    let (result, human) = ctl(&stack, &["ops", "list", "--state", "parked"], "").await;
    result.unwrap();
    assert!(
        human.starts_with("OP / MESSAGE ID") && human.contains(&on_a.to_string()),
        "{human}"
    );

    // The state is required, and only the stuck ones can be asked for.
    for args in [
        &["ops", "list"][..],
        &["ops", "list", "--state", "resolved"],
        &["ops", "list", "--state", "parked", "--limit", "0"],
    ] {
        let parsed = Cli::try_parse_from(std::iter::once("taskctl").chain(args.iter().copied()));
        assert!(parsed.is_err(), "{args:?}");
    }
}
