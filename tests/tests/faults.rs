//! Nothing lost under faults. Each test drives writes from several devices during one fault and
//! then checks that every acknowledged write (2xx or 202) was applied exactly once and that the
//! final tasks are the expected ones. Private broker nodes, proxies and child processes only:
//! the machine's shared Postgres and RabbitMQ are never stopped.
//!
//! Each test prints its figures (`sent, acknowledged, applied, lost, duplicated`) to stderr; the
//! README's "Guarantees" section quotes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tasksync_shared::Settings;
use tasksync_tests::{
    TestStack,
    load::{self, Figures, Mode},
    processes::{ServiceProcess, free_port},
    proxy::FaultyProxy,
    rabbit_node::RabbitNode,
    services,
};

/// Operations in the log: a progress signal to start a fault mid-stream.
async fn logged(stack: &TestStack) -> i64 {
    let client = stack.db.get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM operations", &[])
        .await
        .unwrap()
        .get(0)
}

fn report(name: &str, figures: &Figures) {
    eprintln!("FIGURES {name}: {figures}");
    assert_eq!(figures.lost, 0, "{name}: {figures}");
    assert_eq!(figures.duplicated, 0, "{name}: {figures}");
    assert_eq!(
        figures.acknowledged, figures.sent,
        "{name}: every write was finally accepted"
    );
}

#[tokio::test]
async fn a_broker_restart_loses_nothing_it_confirmed() {
    let node = RabbitNode::start(5690).await;
    let mut stack = TestStack::start_with(|s| {
        s.amqp_url = node.url().into();
        s.publish_timeout = Duration::from_secs(2);
    })
    .await;

    // What the broker confirmed survives its restart: queue it with no worker, restart, drain.
    stack.stop_worker().await;
    let queued = load::drive(&[stack.base.clone()], 2, 10, Mode::CreateOnly).await;
    assert_eq!(stack.queue_depth(&stack.topology().work_queue()).await, 20);
    node.stop_app().await;
    node.start_app().await;
    stack.start_worker().await;
    report("broker restart, queued", &queued.check(&stack.db).await);

    // A restart while the api publishes and the worker consumes.
    let base = stack.base.clone();
    let writers =
        tokio::spawn(async move { load::drive(&[base], 4, 40, Mode::CreateAndUpdate).await });
    stack
        .eventually("writes are flowing", || async {
            logged(&stack).await >= 40
        })
        .await;
    node.stop_app().await;
    let down = stack.get("/ready").await;
    assert_eq!(down.status, 503, "{down:?}");
    assert_eq!(down.body["checks"]["rabbitmq"]["status"], "down");
    node.start_app().await;
    let ledger = writers.await.unwrap();
    assert!(
        ledger.refused > 0,
        "the api refused writes while the broker was down"
    );
    report("broker restart under load", &ledger.check(&stack.db).await);
}

#[tokio::test]
async fn a_database_outage_pauses_the_worker_and_the_reads_and_loses_nothing() {
    let (proxy, stack) = behind_a_postgres_proxy(|_| {}).await;

    let base = stack.base.clone();
    let writers =
        tokio::spawn(async move { load::drive(&[base], 4, 30, Mode::CreateAndUpdate).await });
    stack
        .eventually("writes are flowing", || async {
            logged(&stack).await >= 20
        })
        .await;
    proxy.cut();
    let read = stack.list_tasks().await;
    assert_eq!(read.status, 503, "{read:?}");
    assert_eq!(read.header("retry-after"), Some("1"));
    let ready = stack.get("/ready").await;
    assert_eq!(ready.body["checks"]["postgres"]["status"], "down");
    stack
        .eventually("the worker keeps trying", || async { proxy.refused() >= 5 })
        .await;
    proxy.restore();
    stack
        .eventually("reads recover", || async {
            stack.list_tasks().await.status == 200
        })
        .await;

    let ledger = writers.await.unwrap();
    let figures = ledger.check(&stack.db).await;
    report("database outage", &figures);
    assert_eq!(
        stack.failure_records().await,
        0,
        "an outage spends no attempt"
    );
}

#[tokio::test]
async fn a_silent_path_to_the_database_is_noticed_and_healed() {
    let (proxy, stack) = behind_a_postgres_proxy(|s| {
        s.db_timeout = Duration::from_millis(1000);
    })
    .await;

    let base = stack.base.clone();
    let writers =
        tokio::spawn(async move { load::drive(&[base], 4, 30, Mode::CreateAndUpdate).await });
    stack
        .eventually("writes are flowing", || async {
            logged(&stack).await >= 20
        })
        .await;
    // Nothing closes: queries and connections just stop getting answers.
    proxy.stall();
    let started = std::time::Instant::now();
    let read = stack.list_tasks().await;
    assert_eq!(read.status, 503, "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the read gave up after {:?}",
        started.elapsed()
    );
    proxy.restore();
    stack
        .eventually("reads recover", || async {
            stack.list_tasks().await.status == 200
        })
        .await;

    let ledger = writers.await.unwrap();
    report("silent database path", &ledger.check(&stack.db).await);
    assert_eq!(
        stack.failure_records().await,
        0,
        "a silent database spends no attempt"
    );
}

/// A stack whose api and worker reach Postgres through a fault-injecting proxy.
async fn behind_a_postgres_proxy(
    configure: impl FnOnce(&mut Settings),
) -> (FaultyProxy, TestStack) {
    let pg = services::get().await.database_url("postgres");
    let pg: tokio_postgres::Config = pg.parse().unwrap();
    let pg_port = pg.get_ports().first().copied().unwrap_or(5432);
    let proxy = FaultyProxy::start(([127, 0, 0, 1], pg_port).into()).await;
    let proxied = format!(":{}/", proxy.port);
    let stack = TestStack::start_with(|s| {
        s.database_url = s
            .database_url
            .replace(&format!(":{pg_port}/"), &proxied)
            .into();
        configure(s);
    })
    .await;
    (proxy, stack)
}

/// Settings of a stack whose services run as child processes.
fn process_settings(stack: &TestStack) -> Settings {
    let mut settings = stack.settings.clone();
    settings.port = free_port();
    settings
}

#[tokio::test]
async fn a_worker_killed_mid_batch_applies_every_operation_exactly_once_after_restart() {
    let mut stack = TestStack::start().await;
    stack.stop_worker().await;
    let queued = load::drive(&[stack.base.clone()], 4, 100, Mode::CreateOnly).await;
    let settings = process_settings(&stack);

    let mut worker = ServiceProcess::spawn("sync-worker", &settings);
    stack
        .eventually("the worker is applying", || async {
            logged(&stack).await >= 40
        })
        .await;
    worker.kill();
    let at_kill = logged(&stack).await;
    assert!(
        at_kill < 400,
        "killed mid-stream ({at_kill} of 400 applied)"
    );

    let _worker = ServiceProcess::spawn("sync-worker", &settings);
    let figures = queued.check(&stack.db).await;
    report("worker SIGKILL", &figures);
}

#[tokio::test]
async fn sigterm_stops_the_api_and_the_worker_cleanly_under_load() {
    let mut stack = TestStack::start().await;
    stack.stop_worker().await;
    let settings = process_settings(&stack);
    let mut api = ServiceProcess::spawn("api", &settings);
    let mut worker = ServiceProcess::spawn("sync-worker", &settings);
    let base = format!("http://127.0.0.1:{}/api", settings.port);
    stack
        .eventually("the api process is ready", || async {
            reqwest::get(format!("{base}/ready"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;

    let writers = tokio::spawn({
        let base = base.clone();
        async move { load::drive(&[base], 4, 60, Mode::CreateAndUpdate).await }
    });
    stack
        .eventually("writes are flowing", || async {
            logged(&stack).await >= 40
        })
        .await;
    api.terminate();
    worker.terminate();
    let api_exit = api.wait_exit(Duration::from_secs(20)).await;
    let worker_exit = worker.wait_exit(Duration::from_secs(20)).await;
    assert!(
        api_exit.success(),
        "api exit {api_exit:?}: {}",
        api.log_text()
    );
    assert!(
        worker_exit.success(),
        "worker exit {worker_exit:?}: {}",
        worker.log_text()
    );
    assert!(
        worker.log_text().contains("stopped consuming"),
        "{}",
        worker.log_text()
    );
    assert!(api.log_text().contains("api stopped"), "{}", api.log_text());

    // Nothing half-applied: every task row has its log entries, every log entry its task.
    let _api = ServiceProcess::spawn("api", &settings);
    let _worker = ServiceProcess::spawn("sync-worker", &settings);
    let ledger = writers.await.unwrap();
    report("SIGTERM under load", &ledger.check(&stack.db).await);
}

#[tokio::test]
async fn a_silent_network_cut_to_the_broker_is_noticed_and_healed() {
    let shared = tasksync_shared::Settings::from_env().unwrap();
    let amqp: lapin::uri::AMQPUri = services::get().await.amqp_url.parse().unwrap();
    let proxy = FaultyProxy::start(([127, 0, 0, 1], amqp.authority.port).into()).await;
    let via_proxy = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=1",
        proxy.port
    );
    let stack = TestStack::start_with(|s| {
        s.amqp_url = via_proxy.into();
        s.publish_timeout = Duration::from_secs(1);
    })
    .await;
    drop(shared);

    let base = stack.base.clone();
    let writers =
        tokio::spawn(async move { load::drive(&[base], 4, 40, Mode::CreateAndUpdate).await });
    stack
        .eventually("writes are flowing", || async {
            logged(&stack).await >= 20
        })
        .await;
    proxy.stall();
    stack
        .eventually("the api notices", || async {
            stack.get("/ready").await.status == 503
        })
        .await;
    proxy.restore();
    stack
        .eventually("the api recovers", || async {
            stack.get("/ready").await.status == 200
        })
        .await;
    let ledger = writers.await.unwrap();
    assert!(ledger.refused + ledger.no_answer > 0, "the cut was felt");
    report("network cut to the broker", &ledger.check(&stack.db).await);
}

#[tokio::test]
async fn two_apis_and_two_workers_on_the_same_tasks_end_in_the_last_write_wins_state() {
    use serde_json::json;
    use uuid::Uuid;

    let mut stack = TestStack::start_with(|s| s.batch_size = 16).await;
    let settings = process_settings(&stack);
    let _second_worker = ServiceProcess::spawn("sync-worker", &settings);
    let _second_api = ServiceProcess::spawn("api", &settings);
    let bases = [
        stack.base.clone(),
        format!("http://127.0.0.1:{}/api", settings.port),
    ];
    stack
        .eventually("both apis are ready and both workers consume", || async {
            let second = reqwest::get(format!("{}/ready", bases[1])).await;
            second.is_ok_and(|r| r.status() == 200)
                && stack.queue_consumers(&stack.topology().work_queue()).await == 2
        })
        .await;

    let tasks: Vec<String> = (0..3).map(|_| Uuid::new_v4().to_string()).collect();
    for (i, id) in tasks.iter().enumerate() {
        let created = stack
            .create_task(json!({"id": id, "title": format!("start {i}")}))
            .await;
        assert_eq!(created.status, 201);
    }
    // Four devices write the same three tasks at once, alternating between the two apis.
    let http = reqwest::Client::new();
    let devices = (0..4).map(|d| {
        let (http, bases, tasks) = (http.clone(), bases.clone(), tasks.clone());
        async move {
            let mut acknowledged = Vec::new();
            for w in 0..30 {
                let task = &tasks[(d + w) % tasks.len()];
                let base = &bases[(d + w) % 2];
                let reply = http
                    .put(format!("{base}/tasks/{task}"))
                    .header("Prefer", "respond-async")
                    .json(
                        &json!({"title": format!("device {d} write {w}"), "completed": w % 2 == 0}),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(reply.status(), 202);
                let op: Uuid = reply.headers()["operation-id"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                acknowledged.push(op);
            }
            acknowledged
        }
    });
    let acknowledged: Vec<Uuid> = futures_util::future::join_all(devices)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(acknowledged.len(), 120);
    stack
        .eventually("every write is decided", || async {
            let client = stack.db.get().await.unwrap();
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM operations WHERE op_id = ANY($1)",
                    &[&acknowledged],
                )
                .await
                .unwrap()
                .get(0);
            n == 120
        })
        .await;

    // The expectation, from the log: per field, the write with the greatest (time, op id).
    let client = stack.db.get().await.unwrap();
    let applied: i64 = client
        .query_one(
            "SELECT count(*) FROM operations WHERE op_id = ANY($1) AND outcome IN ('success', 'conflict')",
            &[&acknowledged],
        )
        .await
        .unwrap()
        .get(0);
    let applied = applied.unsigned_abs();
    let mut figures = Figures {
        sent: 120,
        acknowledged: acknowledged.len() as u64,
        applied,
        lost: 120 - applied,
        duplicated: 0,
    };
    for id in &tasks {
        let id: Uuid = id.parse().unwrap();
        let expected = client
            .query_one(
                "SELECT fields->>'title', (fields->>'completed')::bool FROM operations \
                 WHERE task_id = $1 AND kind = 'update' ORDER BY client_ts DESC, op_id DESC LIMIT 1",
                &[&id],
            )
            .await
            .unwrap();
        let logged: i64 = client
            .query_one("SELECT count(*) FROM operations WHERE task_id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        let task = stack.get_task(&id.to_string()).await.body;
        assert_eq!(task["title"].as_str(), expected.get::<_, Option<&str>>(0));
        assert_eq!(
            task["completed"].as_bool(),
            expected.get::<_, Option<bool>>(1)
        );
        assert_eq!(task["sync_status"], "synced");
        figures.duplicated += (logged - 41).unsigned_abs(); // 40 updates + the create
    }
    report("two apis, two workers, same tasks", &figures);
    stack.stop_worker().await;
}
