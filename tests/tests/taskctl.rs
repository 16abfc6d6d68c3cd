//! The ops CLI against a real broker and database: every command, human and `--json` output,
//! exit codes, and the parking queue's delivery budget.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, sync::Arc, time::Duration};

use clap::Parser;
use lapin::BasicProperties;
use serde_json::{Value, json};
use taskctl::{Cli, CtlError, Io};
use tasksync_shared::{OpKind, OutcomeStatus, Settings, failure::RecordState};
use tasksync_tests::{
    TestStack,
    faults::{Failing, ScriptedFaults},
    op_log::OpLog,
    ops,
};
use uuid::Uuid;

#[path = "taskctl/history.rs"]
mod history;
#[path = "taskctl/standing.rs"]
mod standing;

/// What one run of taskctl gave: its result, stdout and stderr.
struct Ran {
    result: Result<(), CtlError>,
    out: String,
    err: String,
}

/// Runs `taskctl args…` in-process with `settings`, answering prompts with `input`.
async fn ctl_with(settings: &Settings, args: &[&str], input: &str) -> Ran {
    let cli = Cli::try_parse_from(std::iter::once("taskctl").chain(args.iter().copied())).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let io = Io {
        out: &mut out,
        err: &mut err,
        input: &mut input.as_bytes(),
    };
    let result = taskctl::run(cli, settings, io).await;
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    Ran {
        result,
        out: text(out),
        err: text(err),
    }
}

/// Runs `taskctl args…` against the stack; returns its result and stdout.
async fn ctl(stack: &TestStack, args: &[&str], input: &str) -> (Result<(), CtlError>, String) {
    let ran = ctl_with(&stack.settings, args, input).await;
    (ran.result, ran.out)
}

async fn ctl_json(stack: &TestStack, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (result, out) = ctl(stack, &args, "").await;
    result.unwrap_or_else(|e| panic!("taskctl {args:?} failed: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The exit code of a run that must fail.
fn exit_code(result: Result<(), CtlError>) -> u8 {
    result.expect_err("taskctl should have failed").exit_code()
}

/// A stack whose retries are quick, with the worker's faults scripted by the test.
async fn stack_with_faults() -> (TestStack, Arc<ScriptedFaults>) {
    let faults = Arc::new(ScriptedFaults::default());
    let stack = TestStack::start_with_faults(
        |s| s.retry_delays = [20, 40, 60].map(Duration::from_millis).to_vec(),
        faults.clone(),
    )
    .await;
    (stack, faults)
}

/// A task, created and then failing as `how` says.
async fn failing_task(stack: &TestStack, faults: &ScriptedFaults, how: Failing) -> Uuid {
    let created = stack.create_task(json!({"title": "fragile"})).await;
    let task: Uuid = created.body["id"].as_str().unwrap().parse().unwrap();
    faults.fail(task, how);
    task
}

/// A stack whose retries are quick, with `task` created and then failing for good.
async fn stack_with_failing_task() -> (TestStack, Arc<ScriptedFaults>, Uuid) {
    let (stack, faults) = stack_with_faults().await;
    let task = failing_task(&stack, &faults, Failing::Always).await;
    (stack, faults, task)
}

async fn park_an_update(stack: &TestStack, task: Uuid) -> Uuid {
    let reply = stack
        .client()
        .update_task_async(&task.to_string(), json!({"completed": true}))
        .await;
    let op = reply.operation_id();
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

    list_shows_the_parked_update(&stack, op, task).await;
    show_gives_its_history_and_message(&stack, op).await;

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

/// `dlq list`, in JSON and for humans, with and without filters, shows the one parked update.
async fn list_shows_the_parked_update(stack: &TestStack, op: Uuid, task: Uuid) {
    let list = ctl_json(stack, &["dlq", "list"]).await;
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

    let (result, human) = ctl(stack, &["dlq", "list"], "").await;
    result.unwrap();
    assert!(
        human.contains(&op.to_string()) && human.contains("ATTEMPTS"),
        "{human}"
    );
    let filtered = ctl_json(stack, &["dlq", "list", "--error", "no such error"]).await;
    assert_eq!(filtered["parked"], json!([]));
    let by_task = ctl_json(stack, &["dlq", "list", "--task", &task.to_string()]).await;
    assert_eq!(by_task["parked"].as_array().unwrap().len(), 1);
}

/// `dlq show` gives the record's history and the parked message; an unknown id is not found.
async fn show_gives_its_history_and_message(stack: &TestStack, op: Uuid) {
    let shown = ctl_json(stack, &["dlq", "show", &op.to_string()]).await;
    assert_eq!(shown["state"], "parked");
    assert_eq!(shown["history"].as_array().unwrap().len(), 4);
    assert_eq!(shown["message"]["op_id"], op.to_string());
    assert_eq!(shown["message"]["fields"]["completed"], true);
    let (result, human) = ctl(stack, &["dlq", "show", &op.to_string()], "").await;
    result.unwrap();
    assert!(human.contains("attempt 4"), "{human}");
    let (missing, _) = ctl(stack, &["dlq", "show", &Uuid::new_v4().to_string()], "").await;
    assert_eq!(missing.unwrap_err().exit_code(), CtlError::NOT_FOUND);
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
            successes(&stack, &[first, second]).await == 2
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

    // The prompt goes to stderr: stdout holds results only.
    let refused = ctl_with(&stack.settings, &["dlq", "purge"], "no\n").await;
    assert_eq!(exit_code(refused.result), CtlError::ABORTED);
    assert!(
        refused.err.contains("Delete 2 parked message(s)"),
        "{}",
        refused.err
    );
    assert_eq!(refused.out, "");
    assert_eq!(stack.queue_depth(&parking).await, 2);

    // A script asking for JSON cannot answer a prompt: refused as a usage error, nothing asked.
    let scripted = ctl_with(&stack.settings, &["dlq", "purge", "--json"], "yes\n").await;
    assert_eq!(exit_code(scripted.result), CtlError::USAGE);
    assert_eq!(scripted.out, "");
    assert!(scripted.err.is_empty(), "{}", scripted.err);
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
            .client()
            .create_task_async(json!({"title": title}))
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

#[tokio::test]
async fn queues_lists_every_partition_with_its_own_delay_queues() {
    let mut stack = TestStack::start_with(|s| s.work_partitions = 3).await;
    stack.stop_worker().await;
    let topology = stack.topology();
    // A task of partition 2: its create waits in partition 2's work queue.
    let task = std::iter::repeat_with(Uuid::new_v4)
        .find(|t| topology.partition_of(*t) == 2)
        .unwrap();
    let reply = stack
        .client()
        .create_task_async(json!({"id": task, "title": "two"}))
        .await;
    assert_eq!(reply.status, 202);

    let queues = ctl_json(&stack, &["queues"]).await;
    let queues = queues.as_array().unwrap();
    let listed: Vec<(&str, &str)> = queues
        .iter()
        .map(|q| (q["name"].as_str().unwrap(), q["role"].as_str().unwrap()))
        .collect();
    let mut expected: Vec<(String, &str)> = topology
        .work_queues()
        .into_iter()
        .map(|q| (q, "work"))
        .collect();
    expected.extend(topology.retry_queues().into_iter().map(|q| (q, "retry")));
    expected.push((topology.parking_queue(), "parking"));
    assert_eq!(listed.len(), 3 + 9 + 1);
    assert_eq!(
        listed,
        expected
            .iter()
            .map(|(q, r)| (q.as_str(), *r))
            .collect::<Vec<_>>()
    );
    let ready: Vec<u64> = queues[..3]
        .iter()
        .map(|q| q["ready"].as_u64().unwrap())
        .collect();
    assert_eq!(ready, [0, 0, 1]);
}

/// Failure records of `ops` in the state `parked`.
async fn parked_records(stack: &TestStack, ops: &[Uuid]) -> i64 {
    let client = stack.db.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM operation_failures WHERE op_id = ANY($1) AND state = $2",
            &[&ops, &RecordState::Parked.as_str()],
        )
        .await
        .unwrap()
        .get(0)
}

/// Operations of `ops` applied with the outcome `success`.
async fn successes(stack: &TestStack, ops: &[Uuid]) -> u64 {
    stack
        .op_log_count(OpLog::ops(ops).outcomes(&[OutcomeStatus::Success]))
        .await
}

fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test sets a policy with rabbitmqctl, for the broker at AMQP_URL: {e}")
        });
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A delivery limit on one stack's parking queue, set by a policy (as an operator would, and
/// as RabbitMQ 4.x does by default with 20) and cleared on drop, also when the test fails.
struct DeliveryLimit {
    policy: String,
}

impl DeliveryLimit {
    async fn set(stack: &TestStack, limit: u32) -> Self {
        let queue = stack.topology().parking_queue();
        let guard = Self {
            policy: format!("{queue}.delivery-limit"),
        };
        let pattern = format!("^{}$", queue.replace('.', "\\."));
        let definition = format!(r#"{{"delivery-limit":{limit}}}"#);
        let set = ["set_policy", "--apply-to", "queues"];
        rabbitmqctl(&[&set[..], &[guard.policy.as_str(), &pattern, &definition]].concat());
        stack
            .eventually("the policy applies to the parking queue", || async {
                let listed = rabbitmqctl(&["list_queues", "-q", "name", "policy"]);
                listed
                    .lines()
                    .any(|line| line.split('\t').eq([queue.as_str(), guard.policy.as_str()]))
            })
            .await;
        guard
    }
}

impl Drop for DeliveryLimit {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["clear_policy", &self.policy])
            .output();
    }
}

#[tokio::test]
async fn dry_runs_and_partial_replays_spend_none_of_the_parking_queues_delivery_budget() {
    let (stack, faults, task) = stack_with_failing_task().await;
    let mut parked = Vec::new();
    for _ in 0..4 {
        parked.push(park_an_update(&stack, task).await);
    }
    let parking = stack.topology().parking_queue();
    let _limit = DeliveryLimit::set(&stack, 2).await;

    for round in 0..5 {
        let dry = ctl_json(&stack, &["dlq", "replay", "--all", "--dry-run"]).await;
        assert_eq!(dry["replayed"].as_array().unwrap().len(), 4);
        let one = parked[round % 4].to_string();
        let dry = ctl_json(&stack, &["dlq", "replay", &one, "--dry-run"]).await;
        assert_eq!(dry["replayed"], json!([one]));
        // Replay one from the middle or the end, so that the others are walked past. The task
        // still fails: the replayed update comes back to the parking queue after its attempts.
        let chosen = parked[3 - round % 4].to_string();
        let replayed = ctl_json(&stack, &["dlq", "replay", &chosen]).await;
        assert_eq!(replayed["replayed"], json!([chosen]));
        stack
            .eventually("every update is parked again", || async {
                stack.queue_depth(&parking).await == 4 && parked_records(&stack, &parked).await == 4
            })
            .await;
    }

    // Nothing was lost: every update parked at the start is applied once replayed.
    faults.heal(task);
    ctl_json(&stack, &["dlq", "replay", "--all", "--rate", "1000"]).await;
    stack
        .eventually("every parked update is applied", || async {
            successes(&stack, &parked).await == 4
        })
        .await;
    assert_eq!(stack.queue_depth(&parking).await, 0);
}

/// Publishes `op` straight to the work queue through the default exchange, with the
/// publisher's own message id, as a client bypassing the operations exchange would.
async fn publish_to_work_queue(stack: &TestStack, op: &tasksync_shared::Operation, id: &str) {
    let properties = BasicProperties::default().with_message_id(id.into());
    let queue = stack.topology().work_queue();
    stack
        .publish("", &queue, &[op.encode().unwrap()], properties)
        .await;
}

#[tokio::test]
async fn a_message_published_straight_to_the_work_queue_is_replayed_by_op_or_publisher_id() {
    let (stack, faults, task) = stack_with_failing_task().await;
    let now = chrono::Utc::now();
    let retitle = ops::operation(task, OpKind::Update, now, ops::title("replayed"));
    let complete = ops::operation(task, OpKind::Update, now, ops::done());
    publish_to_work_queue(&stack, &retitle, "publisher-1").await;
    publish_to_work_queue(&stack, &complete, "publisher-2").await;
    let ids = [retitle.op_id, complete.op_id];
    stack
        .eventually("both are parked", || async {
            parked_records(&stack, &ids).await == 2
        })
        .await;
    faults.heal(task);

    // Their routing key is the work queue's name, which the operations exchange cannot route.
    let by_op = ctl_with(&stack.settings, &["dlq", "replay", &ids[0].to_string()], "").await;
    if let Err(e) = by_op.result {
        panic!("replay by op id failed: {e}");
    }
    // The publisher knows its own message id only.
    let shown = ctl_json(&stack, &["dlq", "show", "publisher-2"]).await;
    assert_eq!(
        shown["record"]["op_id"],
        json!(ids[1].to_string()),
        "{shown}"
    );
    let by_publisher = ctl_json(&stack, &["dlq", "replay", "publisher-2"]).await;
    assert_eq!(by_publisher["replayed"], json!([ids[1].to_string()]));
    assert_eq!(by_publisher["not_found"], json!([]));

    stack
        .eventually("both are applied", || async {
            successes(&stack, &ids).await == 2
        })
        .await;
    let applied = stack.get_task(&task.to_string()).await.body;
    assert_eq!(
        (&applied["title"], &applied["completed"]),
        (&json!("replayed"), &json!(true))
    );
    assert_eq!(
        stack.queue_depth(&stack.topology().parking_queue()).await,
        0
    );
}

#[tokio::test]
async fn list_counts_follow_the_filters_and_group_errors_by_kind() {
    let (stack, faults) = stack_with_faults().await;
    // Failing more times than there are attempts: parked, each with its own error text.
    let a = failing_task(&stack, &faults, Failing::Times(10)).await;
    let b = failing_task(&stack, &faults, Failing::Times(20)).await;
    park_an_update(&stack, a).await;
    park_an_update(&stack, b).await;

    let all = ctl_json(&stack, &["dlq", "list"]).await;
    assert_eq!(all["records"], 2);
    let counts = all["counts_by_error"].as_array().unwrap();
    assert_eq!(counts.len(), 1, "one kind of error: {counts:?}");
    assert_eq!(counts[0]["count"], 2);
    let kind = counts[0]["error"].as_str().unwrap();
    assert!(kind.contains("injected failure"), "{kind}");
    assert!(
        !kind.contains("10") && !kind.contains("20") && !kind.contains("attempts"),
        "{kind}"
    );

    let only_a = ctl_json(&stack, &["dlq", "list", "--task", &a.to_string()]).await;
    assert_eq!(only_a["parked"].as_array().unwrap().len(), 1);
    assert_eq!(only_a["records"], 1);
    assert_eq!(
        only_a["counts_by_error"],
        json!([{"error": kind, "count": 1}])
    );
    let none = ctl_json(&stack, &["dlq", "list", "--error", "no such error"]).await;
    assert_eq!(none["records"], 0);
    assert_eq!(none["counts_by_error"], json!([]));
}

#[tokio::test]
async fn a_wrong_prefix_is_not_found_and_an_unreachable_broker_a_failure() {
    let stack = TestStack::start().await;
    let wrong_prefix = Settings {
        amqp_prefix: format!("{}-typo", stack.settings.amqp_prefix),
        ..stack.settings.clone()
    };
    let commands: [&[&str]; 5] = [
        &["dlq", "list"],
        &["dlq", "replay", "--all"],
        &["dlq", "replay", "--all", "--dry-run"],
        &["dlq", "purge", "--yes"],
        &["queues"],
    ];
    for args in commands {
        let error = ctl_with(&wrong_prefix, args, "").await.result.unwrap_err();
        assert_eq!(error.exit_code(), CtlError::NOT_FOUND, "{args:?}: {error}");
        assert!(
            error.to_string().contains("AMQP_PREFIX"),
            "{args:?}: {error}"
        );
    }

    let unreachable = Settings {
        amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        ..stack.settings.clone()
    };
    for args in commands {
        let error = ctl_with(&unreachable, args, "").await.result.unwrap_err();
        assert_eq!(error.exit_code(), CtlError::FAILED, "{args:?}: {error}");
        let text = error.to_string();
        assert!(
            text.contains("cannot reach RabbitMQ (AMQP_URL)"),
            "{args:?}: {text}"
        );
        assert!(
            !text.contains("Error {") && !text.contains("kind:"),
            "{text}"
        );
    }
}
