//! The services' Prometheus metrics and the worker's probes: the text parses, the counters move
//! with traffic on both services, `/metrics` is public, the worker's readiness follows its
//! database and its liveness its loop, and `/api/status` shows the operations in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use lapin::options::{BasicGetOptions, BasicRejectOptions};
use sync_worker::faults::FaultInjector;
use tasksync_shared::{OpKind, Operation, OperationFields, topology::routing_key};
use uuid::Uuid;

use serde_json::json;
use tasksync_tests::{TestStack, proxy::FaultyProxy, tokens};

/// One sample line of the text exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One scrape, parsed line by line. (A parser crate was tried: its label pattern stops at the
/// first `}`, so it drops every series whose route template has a parameter.)
#[derive(Debug)]
struct Metrics(Vec<Sample>);

impl Metrics {
    /// Parses the text format, panicking on any line it cannot read: comments (`# HELP`,
    /// `# TYPE` with a known type), blank lines, and `name{label="value",...} value`.
    fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(comment) = line.strip_prefix('#') {
                let words: Vec<&str> = comment.split_whitespace().collect();
                if words.first() == Some(&"TYPE") {
                    let kinds = ["counter", "gauge", "histogram", "summary", "untyped"];
                    assert!(kinds.contains(&words[2]), "{line}");
                }
                continue;
            }
            samples.push(parse_sample(line).unwrap_or_else(|| panic!("unreadable: {line}")));
        }
        Self(samples)
    }

    /// The value of `name` over the series whose labels include `labels` (summed); 0 when there
    /// is none yet.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    if name.is_empty() || !name.chars().all(valid) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &inner[start + 1..];
                break;
            }
            if c == ',' {
                continue;
            }
            let eq = inner[start..].find('=')? + start;
            let key = inner[start..eq].to_string();
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.insert(key, value);
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

async fn scrape(http: &reqwest::Client, url: &str) -> Metrics {
    let response = http.get(url).send().await.expect("scrape");
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Metrics::parse(&response.text().await.unwrap())
}

fn api_metrics_url(stack: &TestStack) -> String {
    format!("{}/metrics", stack.base.trim_end_matches("/api"))
}

async fn status_of(stack: &TestStack, url: &str) -> u16 {
    stack
        .http
        .get(url)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test]
async fn a_create_moves_the_request_series_of_the_api_and_the_operation_series_of_the_worker() {
    let stack = TestStack::start().await;
    let api_url = api_metrics_url(&stack);
    let worker_url = format!("{}/metrics", stack.worker_base);
    let created = [
        ("route", "/api/tasks"),
        ("method", "POST"),
        ("status", "201"),
    ];
    let api_before = scrape(&stack.http, &api_url).await;
    let worker_before = scrape(&stack.http, &worker_url).await;

    let reply = stack.create_task(json!({"title": "counted"})).await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let fetched = stack
        .get(&format!("/tasks/{}", reply.body["id"].as_str().unwrap()))
        .await;
    assert_eq!(fetched.status, 200);

    let api = scrape(&stack.http, &api_url).await;
    let requests = "tasksync_api_http_requests_total";
    assert_eq!(
        api.value(requests, &created) - api_before.value(requests, &created),
        1.0
    );
    // The route template, never the raw path with the task's id.
    let read = [
        ("route", "/api/tasks/{id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(api.value(requests, &read), 1.0, "{api:?}");
    assert!(!api.0.iter().any(|s| {
        s.labels
            .get("route")
            .is_some_and(|r| r.contains(reply.body["id"].as_str().unwrap()))
    }));
    let latency = "tasksync_api_http_request_duration_seconds_count";
    let post = [("route", "/api/tasks"), ("method", "POST")];
    assert_eq!(
        api.value(latency, &post) - api_before.value(latency, &post),
        1.0
    );
    let applied = [("answer", "applied")];
    assert_eq!(
        api.value("tasksync_api_writes_total", &applied)
            - api_before.value("tasksync_api_writes_total", &applied),
        1.0
    );
    let confirmed = [("result", "confirmed")];
    assert!(api.value("tasksync_api_publish_confirm_seconds_count", &confirmed) >= 1.0);
    assert_eq!(api.value("tasksync_api_waits_in_flight", &[]), 0.0);
    assert_eq!(api.value("tasksync_api_broker_connected", &[]), 1.0);
    assert_eq!(api.value("tasksync_api_database_up", &[]), 1.0);
    assert!(api.has("tasksync_api_db_pool_connections"));
    assert_eq!(api.value("tasksync_api_work_queue_consumers", &[]), 1.0);

    // The worker counted the operation before it replied, so before the api answered 201.
    let worker = scrape(&stack.http, &worker_url).await;
    let success = [("outcome", "success")];
    let operations = "tasksync_worker_operations_total";
    assert_eq!(
        worker.value(operations, &success) - worker_before.value(operations, &success),
        1.0
    );
    assert!(worker.value("tasksync_worker_batches_total", &[]) >= 1.0);
    assert!(worker.value("tasksync_worker_batch_size_count", &[]) >= 1.0);
    assert!(worker.value("tasksync_worker_apply_seconds_count", &[]) >= 1.0);
    let lag = "tasksync_worker_queue_lag_seconds";
    assert!(worker.value(&format!("{lag}_count"), &[]) >= 1.0);
    // To the millisecond (and finer), not in whole seconds as the AMQP timestamp has it: the
    // sum of this create's lag has a fraction.
    let lag_sum =
        worker.value(&format!("{lag}_sum"), &[]) - worker_before.value(&format!("{lag}_sum"), &[]);
    assert!(
        lag_sum > 0.0 && lag_sum.fract() != 0.0,
        "the lag is not below a second's resolution: {lag_sum}"
    );
    assert_eq!(worker.value("tasksync_worker_consuming", &[]), 1.0);
    assert!(worker.has("tasksync_worker_batches_in_flight"));
    assert_eq!(
        worker.value("tasksync_worker_deliveries_in_flight", &[]),
        0.0
    );
    assert!(worker.has("tasksync_worker_oldest_in_flight_seconds"));
    // Each service shows its own numbers only, though both run in this process.
    assert!(!worker.has(requests));
    assert!(!api.has(operations));
}

/// An operation committed whose ack was lost (the session broke between the two) comes back
/// redelivered: the worker answers it from the log and counts it as a redelivery, never a second
/// time by outcome. The same operation sent again (not redelivered) is a duplicate.
#[tokio::test]
async fn an_operation_decided_before_is_counted_as_a_repeat_never_twice_by_outcome() {
    let mut stack = TestStack::start().await;
    stack.stop_worker().await;
    let at = tasksync_shared::model::to_db_precision(chrono::Utc::now());
    let op = Operation {
        op_id: Uuid::new_v4(),
        task_id: Uuid::new_v4(),
        user_id: "default".into(),
        kind: OpKind::Create,
        fields: OperationFields {
            title: Some("committed, never acked".into()),
            ..Default::default()
        },
        stamped_at: at,
        received_at: at,
        if_absent: false,
        if_match: None,
        device_id: None,
    };
    // The commit (the worker's own code), then its delivery, taken and never acked: the broker
    // gives it again, flagged redelivered, once the session that held it is gone.
    sync_worker::apply::apply_first_attempts(&stack.db, std::slice::from_ref(&op))
        .await
        .unwrap();
    let body = op.encode().unwrap();
    stack
        .publish_raw(&routing_key(op.kind), std::slice::from_ref(&body))
        .await;
    let connection = tasksync_shared::amqp::connect(&stack.settings.amqp_url, "tasksync-test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let taken = channel
        .basic_get(
            stack.topology().work_queue().as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("the published operation");
    assert!(!taken.delivery.redelivered);
    // Handed back unacknowledged, as a broken session does.
    channel
        .basic_reject(
            taken.delivery.delivery_tag,
            BasicRejectOptions { requeue: true },
        )
        .await
        .unwrap();
    let _ = connection.close(200, "gone".into()).await;

    stack.start_worker().await;
    let worker_url = format!("{}/metrics", stack.worker_base);
    let operations = "tasksync_worker_operations_total";
    stack
        .eventually("the redelivery is counted", || async {
            scrape(&stack.http, &worker_url)
                .await
                .value("tasksync_worker_redelivered_total", &[])
                == 1.0
        })
        .await;
    let worker = scrape(&stack.http, &worker_url).await;
    assert_eq!(worker.value(operations, &[]), 0.0, "{worker:?}");
    assert_eq!(worker.value("tasksync_worker_duplicates_total", &[]), 0.0);

    // Sent again by a publisher (a client pushing it again): a duplicate, not an outcome.
    stack.publish_raw(&routing_key(op.kind), &[body]).await;
    stack
        .eventually("the duplicate is counted", || async {
            scrape(&stack.http, &worker_url)
                .await
                .value("tasksync_worker_duplicates_total", &[])
                == 1.0
        })
        .await;
    let worker = scrape(&stack.http, &worker_url).await;
    assert_eq!(worker.value(operations, &[]), 0.0, "{worker:?}");
    assert_eq!(worker.value("tasksync_worker_redelivered_total", &[]), 1.0);
    // The first decision stands, recorded once.
    assert_eq!(
        stack.operation(&op.op_id.to_string()).await.body["status"],
        "success"
    );
}

#[tokio::test]
async fn the_api_metrics_are_public_and_count_refusals_by_route() {
    let stack = TestStack::start_with(|s| s.jwt = tokens::secret_settings()).await;
    let url = api_metrics_url(&stack);

    let refused = stack.get("/tasks").await;
    assert_eq!(refused.status, 401);

    // No token needed, and never throttled.
    let metrics = scrape(&stack.http, &url).await;
    let labels = [
        ("route", "/api/tasks"),
        ("method", "GET"),
        ("status", "401"),
    ];
    assert_eq!(
        metrics.value("tasksync_api_http_requests_total", &labels),
        1.0
    );
    let missing = format!("{}/no-such-route", stack.base.trim_end_matches("/api"));
    assert_eq!(status_of(&stack, &missing).await, 404);
    let metrics = scrape(&stack.http, &url).await;
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(
        metrics.value("tasksync_api_http_requests_total", &unmatched),
        1.0
    );
}

#[tokio::test]
async fn the_worker_is_ready_only_while_it_consumes_and_its_database_answers() {
    let mut stack = TestStack::start().await;
    let ready = format!("{}/ready", stack.worker_base);
    let health = format!("{}/health", stack.worker_base);
    assert_eq!(status_of(&stack, &ready).await, 200);
    assert_eq!(status_of(&stack, &health).await, 200);

    let proxy = worker_behind_a_proxy(&mut stack).await;
    let ready = format!("{}/ready", stack.worker_base);
    let health = format!("{}/health", stack.worker_base);
    assert_eq!(status_of(&stack, &ready).await, 200);
    proxy.cut();
    stack
        .eventually("the worker is not ready", || async {
            status_of(&stack, &ready).await == 503
        })
        .await;
    let body: serde_json::Value = stack
        .http
        .get(&ready)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("postgres"),
        "{body}"
    );
    // Alive all the same: idle, waiting for deliveries.
    assert_eq!(status_of(&stack, &health).await, 200);
    proxy.restore();
    stack
        .eventually("the worker is ready again", || async {
            status_of(&stack, &ready).await == 200
        })
        .await;
}

#[tokio::test]
async fn the_healthcheck_subcommand_asks_the_workers_own_listener() {
    let stack = TestStack::start().await;
    let port: u16 = stack
        .worker_base
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    sync_worker::http::check(port, "/ready").await.unwrap();
    sync_worker::http::check(port, "/health").await.unwrap();
    // Nothing listens on a port just freed: the check fails rather than passing.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = free.local_addr().unwrap().port();
    drop(free);
    assert!(sync_worker::http::check(free_port, "/ready").await.is_err());
}

/// Holds the thread of the first operation titled "freeze" for [`FREEZE`], once: the worker's
/// loop stands still inside a batch, as a deadlock or a runaway statement would leave it.
#[derive(Debug, Default)]
struct FreezeOnce {
    frozen: AtomicBool,
}

const FREEZE: Duration = Duration::from_secs(5);

impl FaultInjector for FreezeOnce {
    fn before_apply(&self, op: &Operation, _attempt: u32) -> Result<(), String> {
        if op.fields.title.as_deref() == Some("freeze") && !self.frozen.swap(true, Ordering::SeqCst)
        {
            std::thread::sleep(FREEZE);
        }
        Ok(())
    }
}

// Several threads: the frozen one must not take the worker's listener with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_workers_health_fails_while_its_loop_is_frozen_and_recovers_after() {
    let mut stack = TestStack::start().await;
    stack.stop_worker().await;
    let worker =
        sync_worker::Worker::build(stack.settings.clone(), Arc::new(FreezeOnce::default()))
            .await
            .unwrap()
            .with_liveness_limit(Duration::from_millis(500));
    let health = format!("http://127.0.0.1:{}/health", worker.port());
    let running = tokio::spawn(worker.run_until_stopped(std::future::pending()));
    stack
        .eventually("the new worker consumes", || async {
            stack.queue_consumers(&stack.topology().work_queue()).await > 0
        })
        .await;
    assert_eq!(status_of(&stack, &health).await, 200);

    let accepted = stack
        .client()
        .create_task_async(json!({"title": "freeze"}))
        .await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    stack
        .eventually("the frozen loop fails its health", || async {
            status_of(&stack, &health).await == 503
        })
        .await;
    // `/api/status` shows the operation held, and for how long, from the worker's heartbeat.
    stack
        .eventually("the status shows the operation in flight", || async {
            let status = stack.get("/status").await.body;
            status["in_flight_count"].as_i64() == Some(1)
                && status["oldest_in_flight_age_ms"]
                    .as_i64()
                    .is_some_and(|ms| ms > 0)
        })
        .await;
    stack
        .eventually("the loop, moving again, passes it", || async {
            status_of(&stack, &health).await == 200
        })
        .await;
    stack
        .eventually("the status shows nothing in flight", || async {
            let status = stack.get("/status").await.body;
            status["in_flight_count"].as_i64() == Some(0)
                && status["oldest_in_flight_age_ms"].is_null()
        })
        .await;
    running.abort();
}

/// Restarts the worker of `stack` so that it reaches Postgres through a fault-injecting proxy.
async fn worker_behind_a_proxy(stack: &mut TestStack) -> Arc<FaultyProxy> {
    let config: tokio_postgres::Config = stack.settings.database_url.parse().unwrap();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let proxy = Arc::new(FaultyProxy::start(([127, 0, 0, 1], port).into()).await);
    let db_name = config.get_dbname().unwrap().to_string();
    stack.worker_database_url = Some(format!(
        "postgres://postgres@127.0.0.1:{}/{db_name}",
        proxy.port
    ));
    stack.stop_worker().await;
    stack.start_worker().await;
    proxy
}
