//! One trace per operation: the api reads the request's `traceparent` (or starts a trace),
//! answers with it, carries it in the operation's message, and both services' JSON log lines
//! about the operation carry its trace id and op id; the access log line of each request; the
//! request id, echoed or generated.
//!
//! The services run as child processes with `LOG_FORMAT=json`, so that their real log output
//! is what the tests read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

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
        let mut stack = TestStack::start().await;
        stack.stop_api().await;
        stack.stop_worker().await;
        stack.settings.port = free_port();
        let json = [("LOG_FORMAT", "json")];
        let worker = ServiceProcess::spawn_with("sync-worker", &stack.settings, &json);
        let api = ServiceProcess::spawn_with(
            "api",
            &stack.settings,
            &[("LOG_FORMAT", "json"), ("RUST_LOG", "info,api=debug")],
        );
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
