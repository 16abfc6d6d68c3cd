//! One trace per operation: the api reads the request's `traceparent` (or starts a trace),
//! answers with it, carries it in the operation's message, and both services' JSON log lines
//! about the operation carry its trace id and op id; the access log line of each request; the
//! request id, echoed or generated.
//!
//! The services run as child processes with `LOG_FORMAT=json`, so that their real log output
//! is what the tests read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value,
};
use prost::Message;

use serde_json::{Value, json};
use tasksync_tests::{
    ApiClient, PATIENCE, TestStack,
    processes::{ServiceProcess, free_port},
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A stack whose api and worker are child processes logging JSON lines (the api with its
/// debug lines, which are the ones about an operation).
/// The processes stop (on drop) before the stack removes its database and queues.
struct JsonStack {
    api: ServiceProcess,
    worker: ServiceProcess,
    client: ApiClient,
    /// Held for its clean-up on drop.
    _stack: TestStack,
}

impl JsonStack {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`Self::start`], with `vars` set in both processes' environment.
    async fn start_with(vars: &[(&str, &str)]) -> Self {
        let mut stack = TestStack::start().await;
        stack.stop_api().await;
        stack.stop_worker().await;
        stack.settings.port = free_port();
        let mut worker_vars = vec![("LOG_FORMAT", "json")];
        worker_vars.extend_from_slice(vars);
        let mut api_vars = vec![("LOG_FORMAT", "json"), ("RUST_LOG", "info,api=debug")];
        api_vars.extend_from_slice(vars);
        let worker = ServiceProcess::spawn_with("sync-worker", &stack.settings, &worker_vars);
        let api = ServiceProcess::spawn_with("api", &stack.settings, &api_vars);
        let client = ApiClient::new(
            stack.http.clone(),
            format!("http://127.0.0.1:{}/api", stack.settings.port),
        );
        let queue = stack.topology().work_queue();
        stack
            .eventually("the worker process consumes", || async {
                stack.queue_consumers(&queue).await > 0
            })
            .await;
        stack
            .eventually("the api process is ready", || client.is_ready())
            .await;
        Self {
            _stack: stack,
            api,
            worker,
            client,
        }
    }

    /// Waits until `process` has logged a line that `matches`, and returns it.
    async fn line(
        &self,
        process: &ServiceProcess,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = process.log_text();
            if let Some(line) = json_lines(&text).into_iter().find(|line| matches(line)) {
                return line;
            }
            assert!(Instant::now() < deadline, "no log line {what} in:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every line that is a JSON object (a line cut by a write in progress is skipped).
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(Value::is_object)
        .collect()
}

/// The value of `field` on the line itself or on any of its spans.
fn field<'a>(line: &'a Value, field: &str) -> Option<&'a str> {
    let spans = line["spans"].as_array().into_iter().flatten();
    std::iter::once(line)
        .chain(spans)
        .find_map(|object| object[field].as_str())
}

fn about(line: &Value, trace_id: &str, op_id: &str) -> bool {
    field(line, "trace_id") == Some(trace_id) && field(line, "op_id") == Some(op_id)
}

#[tokio::test]
async fn a_requests_trace_reaches_the_workers_log_lines_of_its_operation() {
    let s = JsonStack::start().await;
    let reply = s
        .client
        .request(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"title": "traced"})),
            &[
                ("traceparent", TRACEPARENT),
                ("x-request-id", "client-req-1"),
            ],
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let op_id = reply.operation_id().to_string();
    // The answer names the trace, from the api's own span in it.
    let answered = reply.header("traceparent").expect("traceparent answered");
    assert!(
        answered.starts_with(&format!("00-{TRACE_ID}-")),
        "{answered}"
    );
    assert_ne!(answered, TRACEPARENT);
    assert_eq!(reply.header("x-request-id"), Some("client-req-1"));

    // The worker's lines about the operation: its decision, under the delivery span.
    let decided = s
        .line(&s.worker, "about the operation", |l| {
            about(l, TRACE_ID, &op_id)
        })
        .await;
    assert_eq!(field(&decided, "user"), Some("default"), "{decided}");
    // The api's own lines about it (publish, wait) carry both too.
    s.line(&s.api, "about the operation", |l| {
        l["target"] != "api::access" && about(l, TRACE_ID, &op_id)
    })
    .await;
    // One access line for the request.
    let access = s
        .line(&s.api, "of access", |l| {
            l["target"] == "api::access" && l["request_id"] == "client-req-1"
        })
        .await;
    assert_eq!(access["method"], "POST", "{access}");
    assert_eq!(access["route"], "/api/tasks", "{access}");
    assert_eq!(access["status"], 201, "{access}");
    assert_eq!(access["op_id"], op_id.as_str(), "{access}");
    assert_eq!(access["user"], "default", "{access}");
    assert_eq!(access["trace_id"], TRACE_ID, "{access}");
    assert_eq!(access["level"], "INFO", "{access}");
    assert!(access["latency_ms"].is_u64(), "{access}");
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace_that_the_worker_continues() {
    let s = JsonStack::start().await;
    let invalid = TRACEPARENT.to_uppercase();
    let reply = s
        .client
        .request(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"title": "new trace"})),
            &[("traceparent", &invalid)],
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let op_id = reply.operation_id().to_string();
    let answered = reply.header("traceparent").expect("traceparent answered");
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(parts.len(), 4, "{answered}");
    let trace_id = parts[1];
    assert_eq!(trace_id.len(), 32, "{answered}");
    assert_ne!(trace_id, TRACE_ID);
    s.line(&s.worker, "about the operation", |l| {
        about(l, trace_id, &op_id)
    })
    .await;
    // A generated request id, answered and logged.
    let request_id = reply.header("x-request-id").expect("a request id");
    assert!(!request_id.is_empty());
    let access = s
        .line(&s.api, "of access", |l| {
            l["target"] == "api::access" && l["request_id"] == request_id
        })
        .await;
    assert_eq!(access["trace_id"], trace_id, "{access}");
}

/// One exported span, as an OTLP collector received it.
#[derive(Clone, Debug)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// A minimal OTLP/HTTP collector on the loopback: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, whose spans it keeps.
struct Collector {
    endpoint: String,
    spans: Arc<Mutex<Vec<Exported>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body)
                        .expect("a protobuf ExportTraceServiceRequest");
                    kept.lock().unwrap().extend(flatten(request));
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                        Vec::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            endpoint,
            spans,
            _server: server,
        }
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<Exported> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(Exported {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
    }
    out
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, both services export their spans of an operation in
/// the trace of the request's `traceparent`: the api's `request` span (whose id the answer and
/// the message carry) and the worker's `delivery` span, its child. The last spans leave on a
/// graceful stop.
#[tokio::test]
async fn both_services_export_the_spans_of_an_operation_in_the_requests_trace() {
    let collector = Collector::start().await;
    let mut s = JsonStack::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
        ("OTEL_SERVICE_NAME", ""),
    ])
    .await;
    let reply = s
        .client
        .request(
            reqwest::Method::POST,
            "/tasks",
            Some(json!({"title": "exported"})),
            &[("traceparent", TRACEPARENT)],
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let op_id = reply.operation_id().to_string();
    let answered = reply.header("traceparent").expect("traceparent answered");
    let api_span = answered.split('-').nth(2).expect("a span id").to_string();
    s.line(&s.worker, "about the operation", |l| {
        about(l, TRACE_ID, &op_id)
    })
    .await;
    // A graceful stop sends what the batch processors still hold.
    s.api.terminate();
    s.worker.terminate();
    assert!(
        s.api.wait_exit(PATIENCE).await.success(),
        "{}",
        s.api.log_text()
    );
    assert!(
        s.worker.wait_exit(PATIENCE).await.success(),
        "{}",
        s.worker.log_text()
    );

    let spans = collector.spans();
    let request = spans
        .iter()
        .find(|span| span.name == "request" && span.trace_id == TRACE_ID)
        .unwrap_or_else(|| panic!("no api request span in the trace: {spans:#?}"));
    assert_eq!(request.service, "tasksync-api", "{request:?}");
    assert_eq!(request.parent_span_id, "00f067aa0ba902b7", "{request:?}");
    assert_eq!(
        request.span_id, api_span,
        "the answer names the exported span"
    );
    let delivery = spans
        .iter()
        .find(|span| span.name == "delivery" && span.trace_id == TRACE_ID)
        .unwrap_or_else(|| panic!("no worker delivery span in the trace: {spans:#?}"));
    assert_eq!(delivery.service, "tasksync-worker", "{delivery:?}");
    assert_eq!(delivery.parent_span_id, api_span, "{delivery:?}");
}

/// A collector that cannot be reached costs nothing: writes are answered as usual, and the
/// services still stop promptly.
#[tokio::test]
async fn an_unreachable_collector_never_holds_a_request() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut s = JsonStack::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", nowhere.as_str()),
        ("OTEL_SERVICE_NAME", "renamed"),
    ])
    .await;
    for i in 0..20 {
        let started = Instant::now();
        let reply = s
            .client
            .create_task(json!({"title": format!("unexported {i}")}))
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{i}");
    }
    s.api.terminate();
    s.worker.terminate();
    assert!(s.api.wait_exit(Duration::from_secs(10)).await.success());
    assert!(s.worker.wait_exit(Duration::from_secs(10)).await.success());
}

/// Every answer has a trace and a request id: echoed when sane, generated otherwise; a read
/// answers with the route template in its access line (checked above for writes).
#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_generated_otherwise() {
    let stack = TestStack::start().await;
    let echoed = stack
        .request(
            reqwest::Method::GET,
            "/tasks",
            None,
            &[("x-request-id", "abc-123")],
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("abc-123"));
    let long = "r".repeat(129);
    let mut seen = Vec::new();
    for headers in [
        vec![],
        vec![("x-request-id", long.as_str())],
        vec![("x-request-id", "two words")],
    ] {
        let reply = stack
            .request(reqwest::Method::GET, "/tasks/not-a-uuid", None, &headers)
            .await;
        let id = reply
            .header("x-request-id")
            .expect("a request id")
            .to_string();
        assert!(!id.is_empty() && id.len() <= 128 && id != long, "{id}");
        assert!(!seen.contains(&id), "ids repeat: {id}");
        seen.push(id);
        let trace = reply.header("traceparent").expect("a traceparent");
        assert_eq!(trace.len(), 55, "{trace}");
    }
    // Also on answers no route matched.
    let unknown = stack.get("/no-such-route").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.header("x-request-id").is_some());
}

/// The variables of the README's Configuration table.
fn readme_variables() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Configuration section");
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect()
}

/// Each binary's `--help` lists every variable of the README's table, and no other.
#[test]
fn every_binarys_help_lists_the_readmes_variables() {
    let documented = readme_variables();
    assert!(documented.len() > 30, "{documented:?}");
    let dir = tasksync_tests::processes::binaries();
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "taskctl"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .unwrap();
    assert!(status.success());
    for binary in ["api", "sync-worker", "taskctl"] {
        let output = std::process::Command::new(dir.join(binary))
            .arg("--help")
            .env_clear()
            .output()
            .unwrap();
        assert!(output.status.success(), "{binary} --help: {output:?}");
        let help = String::from_utf8(output.stdout).unwrap();
        let (_, listed) = help
            .split_once("Environment variables")
            .unwrap_or_else(|| panic!("{binary} --help lists no variables:\n{help}"));
        let listed: Vec<&str> = listed
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        assert_eq!(listed, documented, "{binary} --help:\n{help}");
    }
}
