//! Nothing lost under faults. Each test drives writes from several devices during one fault and
//! then checks that every write the driver issued was acknowledged (2xx or 202), that every
//! acknowledged write was applied exactly once, and that the final tasks are the expected
//! ones. Private broker nodes, proxies and child processes only: the machine's shared Postgres
//! and RabbitMQ are never stopped.
//!
//! Each test prints its figures (`sent, acknowledged, applied, lost, duplicated, diverged`) to
//! stderr; the README's "Guarantees" section quotes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, time::Duration};

use serde_json::json;
use tasksync_shared::{OpKind, OutcomeStatus, Settings, topology::routing_key};
use tasksync_tests::{
    ApiClient, TestStack,
    load::{self, Figures, Load, Mode, Spec},
    op_log::OpLog,
    ops,
    processes::{ServiceProcess, free_port},
    proxy::FaultyProxy,
    rabbit_node::RabbitNode,
    services,
};
use uuid::Uuid;

/// Four devices updating their own tasks, `writes` times each.
fn updates(writes: usize) -> Spec {
    Spec {
        devices: 4,
        writes_per_device: writes,
        mode: Mode::CreateAndUpdate,
    }
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
    queued.verify(&stack.db, "broker restart, queued").await;

    // A restart while the api publishes and the worker consumes.
    let load = Load::start(&stack, updates(40), 40).await;
    node.stop_app().await;
    let down = stack.client().ready().await;
    assert_eq!(down.status, 503, "{down:?}");
    assert_eq!(down.body["checks"]["rabbitmq"]["status"], "down");
    node.start_app().await;
    let ledger = load.finish().await;
    assert!(
        ledger.refused > 0,
        "the api refused writes while the broker was down"
    );
    ledger.verify(&stack.db, "broker restart under load").await;
}

#[tokio::test]
async fn a_database_outage_pauses_the_worker_and_the_reads_and_loses_nothing() {
    let (proxy, stack) = behind_a_postgres_proxy(|_| {}).await;

    let load = Load::start(&stack, updates(30), 20).await;
    proxy.cut();
    let late = work_for_the_worker(&stack).await;
    let read = stack.list_tasks().await;
    assert_eq!(read.status, 503, "{read:?}");
    assert_eq!(read.header("retry-after"), Some("1"));
    let ready = stack.client().ready().await;
    assert_eq!(ready.body["checks"]["postgres"]["status"], "down");
    stack
        .eventually("the worker keeps trying", || async { proxy.refused() >= 5 })
        .await;
    heal_the_database(&proxy, &stack, (load, late), "database outage").await;
}

#[tokio::test]
async fn a_silent_path_to_the_database_is_noticed_and_healed() {
    let (proxy, stack) = behind_a_postgres_proxy(|s| {
        s.db_timeout = Duration::from_millis(1000);
    })
    .await;

    let load = Load::start(&stack, updates(30), 20).await;
    // Nothing closes: queries and connections just stop getting answers.
    proxy.stall();
    let late = work_for_the_worker(&stack).await;
    let started = std::time::Instant::now();
    let read = stack.list_tasks().await;
    assert_eq!(read.status, 503, "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the read gave up after {:?}",
        started.elapsed()
    );
    heal_the_database(&proxy, &stack, (load, late), "silent database path").await;
}

/// Publishes one create straight to the work queue, so that the worker surely meets the
/// database fault (the load may be past its last write). Returns its op id.
async fn work_for_the_worker(stack: &TestStack) -> Uuid {
    let create = ops::operation(
        Uuid::new_v4(),
        OpKind::Create,
        chrono::Utc::now(),
        ops::title("published during the fault"),
    );
    let body = create.encode().unwrap();
    stack
        .publish_raw(&routing_key(OpKind::Create), &[body])
        .await;
    create.op_id
}

/// Ends a database fault: the proxy forwards again, reads recover, the operation published
/// during the fault is applied, and the load lost nothing and spent no attempt (a database
/// fault is not the operation's fault).
async fn heal_the_database(
    proxy: &FaultyProxy,
    stack: &TestStack,
    (load, late): (Load, Uuid),
    name: &str,
) {
    proxy.restore();
    stack
        .eventually("reads recover", || async {
            stack.list_tasks().await.status == 200
        })
        .await;
    let late_applied = OpLog::ops(&[late]).outcomes(&[OutcomeStatus::Success]);
    stack
        .eventually(
            "the operation published during the fault is applied",
            || async { stack.op_log_count(late_applied.clone()).await == 1 },
        )
        .await;
    let ledger = load.finish().await;
    assert!(ledger.refused > 0, "{name}: the writers felt the fault");
    ledger.verify(&stack.db, name).await;
    assert_eq!(
        stack.failure_records().await,
        0,
        "{name}: a database fault spends no attempt"
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

/// A fault-injecting proxy in front of the shared RabbitMQ, and an `AMQP_URL` through it
/// (one-second heartbeats, so that a stalled path is noticed quickly).
async fn a_broker_proxy() -> (FaultyProxy, String) {
    let amqp: lapin::uri::AMQPUri = services::get().await.amqp_url.parse().unwrap();
    let proxy = FaultyProxy::start(([127, 0, 0, 1], amqp.authority.port).into()).await;
    let url = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=1",
        proxy.port
    );
    (proxy, url)
}

/// Settings of a stack whose services run as child processes.
fn process_settings(stack: &TestStack) -> Settings {
    let mut settings = stack.settings.clone();
    settings.port = free_port();
    settings
}

/// The base URL of an api process started with `settings`.
fn process_base(settings: &Settings) -> String {
    format!("http://127.0.0.1:{}/api", settings.port)
}

#[tokio::test]
async fn a_worker_killed_mid_batch_applies_every_operation_exactly_once_after_restart() {
    let mut stack = TestStack::start().await;
    stack.stop_worker().await;
    let queued = load::drive(&[stack.base.clone()], 4, 100, Mode::CreateOnly).await;
    let mut settings = process_settings(&stack);
    // Small batches, several in flight: the kill lands mid-stream, between commits and acks.
    settings.batch_size = 16;
    settings.batches_in_flight = 4;

    let mut worker = ServiceProcess::spawn("sync-worker", &settings);
    stack
        .eventually("the worker is applying", || async {
            stack.op_log_count(OpLog::all()).await >= 40
        })
        .await;
    worker.kill();
    let at_kill = stack.op_log_count(OpLog::all()).await;
    assert!(
        at_kill < 400,
        "killed mid-stream ({at_kill} of 400 applied)"
    );

    let _worker = ServiceProcess::spawn("sync-worker", &settings);
    queued.verify(&stack.db, "worker SIGKILL").await;
}

#[tokio::test]
async fn sigterm_stops_the_api_and_the_worker_cleanly_under_load() {
    let mut stack = TestStack::start().await;
    stack.stop_worker().await;
    let settings = process_settings(&stack);
    let mut api = ServiceProcess::spawn("api", &settings);
    let mut worker = ServiceProcess::spawn("sync-worker", &settings);
    let process = ApiClient::new(stack.http.clone(), process_base(&settings));
    stack
        .eventually("the api process is ready", || process.is_ready())
        .await;

    let load = Load::start_on(&stack, &[process.base], updates(60), 40).await;
    api.terminate();
    worker.terminate();
    for (process, stopped) in [
        (&mut api, "api stopped"),
        (&mut worker, "stopped consuming"),
    ] {
        let exit = process.wait_exit(Duration::from_secs(20)).await;
        let log = process.log_text();
        assert!(exit.success(), "exit {exit:?}: {log}");
        assert!(log.contains(stopped), "{log}");
    }

    // Nothing half-applied: every task row has its log entries, every log entry its task.
    let _api = ServiceProcess::spawn("api", &settings);
    let _worker = ServiceProcess::spawn("sync-worker", &settings);
    load.finish()
        .await
        .verify(&stack.db, "SIGTERM under load")
        .await;
}

#[tokio::test]
async fn a_silent_network_cut_to_the_broker_is_noticed_and_healed() {
    let (proxy, via_proxy) = a_broker_proxy().await;
    let stack = TestStack::start_with(|s| {
        s.amqp_url = via_proxy.into();
        s.publish_timeout = Duration::from_secs(1);
    })
    .await;

    let load = Load::start(&stack, updates(40), 20).await;
    proxy.stall();
    stack
        .eventually("the api notices", || async {
            stack.client().ready().await.status == 503
        })
        .await;
    proxy.restore();
    stack
        .eventually("the api recovers", || async {
            stack.client().ready().await.status == 200
        })
        .await;
    let ledger = load.finish().await;
    assert!(ledger.refused + ledger.no_answer > 0, "the cut was felt");
    ledger.verify(&stack.db, "network cut to the broker").await;
}

#[tokio::test]
async fn two_apis_and_two_workers_on_the_same_tasks_end_in_the_last_write_wins_state() {
    let mut stack = TestStack::start_with(|s| s.batch_size = 16).await;
    let settings = process_settings(&stack);
    let _second_worker = ServiceProcess::spawn("sync-worker", &settings);
    let _second_api = ServiceProcess::spawn("api", &settings);
    let second = ApiClient::new(stack.http.clone(), process_base(&settings));
    stack
        .eventually("both apis are ready and both workers consume", || async {
            second.is_ready().await
                && stack.queue_consumers(&stack.topology().work_queue()).await == 2
        })
        .await;
    let bases = [stack.base.clone(), second.base];

    let tasks: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for (i, id) in tasks.iter().enumerate() {
        let created = stack
            .create_task(json!({"id": id, "title": format!("start {i}")}))
            .await;
        assert_eq!(created.status, 201);
    }
    let writes = write_the_same_tasks(&bases, &tasks, 4, 30).await;
    let acknowledged: Vec<Uuid> = writes.iter().filter_map(|(_, op)| *op).collect();
    stack
        .eventually("every acknowledged write is decided", || async {
            stack.op_log_count(OpLog::ops(&acknowledged)).await == acknowledged.len() as u64
        })
        .await;
    let figures = last_write_wins_figures(&stack, 120, &writes).await;
    figures.assert_clean("two apis, two workers, same tasks");
    stack.stop_worker().await;
}

/// `devices` devices write `tasks` `writes` times each, all at once, alternating between the
/// apis at `bases`. Returns every write issued — counted before its answer — with the op id of
/// its acknowledgement (`None` when it was not acknowledged).
async fn write_the_same_tasks(
    bases: &[String],
    tasks: &[Uuid],
    devices: usize,
    writes: usize,
) -> Vec<(Uuid, Option<Uuid>)> {
    let http = reqwest::Client::new();
    let runs = (0..devices).map(|d| {
        let http = http.clone();
        async move {
            let mut issued = Vec::new();
            for w in 0..writes {
                let task = tasks[(d + w) % tasks.len()];
                let api = ApiClient::new(http.clone(), &bases[(d + w) % 2]);
                let body =
                    json!({"title": format!("device {d} write {w}"), "completed": w % 2 == 0});
                let reply = api
                    .request(
                        reqwest::Method::PUT,
                        &format!("/tasks/{task}"),
                        Some(body),
                        &[("Prefer", "respond-async")],
                    )
                    .await;
                let op = (reply.status == 202).then(|| reply.operation_id());
                if op.is_none() {
                    eprintln!("write {w} of device {d} not acknowledged: {reply:?}");
                }
                issued.push((task, op));
            }
            issued
        }
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The figures of writes to shared tasks: applied means decided `success` or `conflict` (a
/// write that lost to a later one was still applied), and each task must end as its write with
/// the greatest (time, op id) per field says, as read from the log.
async fn last_write_wins_figures(
    stack: &TestStack,
    planned: u64,
    writes: &[(Uuid, Option<Uuid>)],
) -> Figures {
    let acknowledged: Vec<Uuid> = writes.iter().filter_map(|(_, op)| *op).collect();
    let applied = stack
        .op_log_count(
            OpLog::ops(&acknowledged).outcomes(&[OutcomeStatus::Success, OutcomeStatus::Conflict]),
        )
        .await;
    let mut per_task: HashMap<Uuid, u64> = HashMap::new();
    for (task, op) in writes {
        *per_task.entry(*task).or_default() += u64::from(op.is_some());
    }
    let mut figures = Figures {
        planned,
        sent: writes.len() as u64,
        acknowledged: acknowledged.len() as u64,
        applied,
        lost: acknowledged.len() as u64 - applied,
        ..Figures::default()
    };
    let client = stack.db.get().await.unwrap();
    for (task, acknowledged_here) in per_task {
        let expected = client
            .query_one(
                "SELECT fields->>'title', (fields->>'completed')::bool FROM operations \
                 WHERE task_id = $1 AND kind = 'update' ORDER BY client_ts DESC, op_id DESC LIMIT 1",
                &[&task],
            )
            .await
            .unwrap();
        let stored = stack.get_task(&task.to_string()).await.task();
        let as_expected = Some(stored.title.as_str()) == expected.get::<_, Option<&str>>(0)
            && Some(stored.completed) == expected.get::<_, Option<bool>>(1)
            && stored.sync_status == tasksync_shared::SyncStatus::Synced;
        figures.diverged += u64::from(!as_expected);
        // Its create, plus one entry per acknowledged update.
        let logged = stack.op_log_count(OpLog::task(task)).await;
        figures.duplicated += logged.saturating_sub(1 + acknowledged_here);
    }
    figures
}

/// The check of every test above can fail: a write acknowledged and then missing from the log
/// is counted lost.
#[tokio::test]
async fn the_check_fails_when_an_acknowledged_write_is_missing_from_the_log() {
    let stack = TestStack::start().await;
    let ledger = load::drive(std::slice::from_ref(&stack.base), 2, 4, Mode::CreateOnly).await;
    let figures = ledger.check(&stack.db).await;
    assert_eq!(figures.problems(), Vec::<String>::new(), "{figures}");

    let client = stack.db.get().await.unwrap();
    let removed = client
        .execute(
            "DELETE FROM operations WHERE op_id = (SELECT op_id FROM operations LIMIT 1)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let figures = ledger
        .check_within(&stack.db, Duration::from_millis(200))
        .await;
    assert_eq!((figures.sent, figures.acknowledged), (8, 8));
    assert_eq!((figures.applied, figures.lost), (7, 1), "{figures}");
    assert_eq!(figures.problems(), ["1 acknowledged writes lost"]);
}

/// A test that fails while its stack's paths to Postgres and RabbitMQ are cut or stalled still
/// leaves no database, queue or exchange behind, and its cleanup ends in bounded time.
#[tokio::test]
async fn a_stack_dropped_during_a_fault_still_removes_its_database_and_queues() {
    let (broker_proxy, via_proxy) = a_broker_proxy().await;
    let (database_proxy, stack) = behind_a_postgres_proxy(|s| s.amqp_url = via_proxy.into()).await;
    let database = stack
        .settings
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let work_queue = stack.topology().work_queue();

    database_proxy.cut();
    broker_proxy.stall();
    let dropped = tokio::task::spawn_blocking(move || drop(stack));
    tokio::time::timeout(Duration::from_secs(60), dropped)
        .await
        .expect("the cleanup ends in bounded time")
        .unwrap();

    let services = services::get().await;
    let config: tokio_postgres::Config = services.database_url("postgres").parse().unwrap();
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let left = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .unwrap();
    assert!(left.is_none(), "{database} left behind");
    let connection = tasksync_shared::amqp::connect(&services.amqp_url, "cleanup-check")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = tasksync_shared::amqp::inspect_queue(&channel, &work_queue).await;
    assert!(queue.is_err(), "{work_queue} left behind");
}
