//! The api's read paths and their edges: the paged task list, `/api/status` under load and with
//! a stalled broker, reads without a database, readiness, operation errors, and shutdown while
//! the broker refuses the login.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use tasksync_shared::Settings;
use tasksync_tests::{
    TestStack,
    faults::{Failing, ScriptedFaults},
    processes::{ServiceProcess, free_port},
    proxy::FaultyProxy,
};
use uuid::Uuid;

/// Stores `count` tasks of the default user straight in the table, created a millisecond apart
/// in the order of their titles (`task 0001`, ...), each with a description of `text_len` bytes.
async fn store_tasks(stack: &TestStack, count: i32, text_len: i32) {
    let client = stack.db.get().await.unwrap();
    client
        .execute(
            "INSERT INTO tasks (id, user_id, title, description, created_at, updated_at, \
                                sync_status, last_synced_at) \
             SELECT gen_random_uuid(), 'default', 'task ' || lpad(g::text, 4, '0'), \
                    repeat('d', $2), now() - interval '1 day' + g * interval '1 ms', now(), \
                    'synced', now() \
             FROM generate_series(1, $1) g",
            &[&count, &text_len],
        )
        .await
        .unwrap();
}

/// GETs an absolute URL; (status, headers, JSON body).
async fn get_url(stack: &TestStack, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = stack.http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The titles of a list page, and the absolute URL of its `rel="next"` link, if any.
async fn list_page(stack: &TestStack, url: &str) -> (Vec<String>, Option<String>) {
    let (status, headers, body) = get_url(stack, url).await;
    assert_eq!(status, 200, "{url}: {body}");
    let titles = body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_string())
        .collect();
    let next = headers.get("link").map(|link| {
        let link = link.to_str().unwrap();
        assert!(link.ends_with(">; rel=\"next\""), "{link}");
        let cursor = headers["x-next-cursor"].to_str().unwrap();
        assert!(link.contains(&format!("after={cursor}")), "{link}");
        let origin = stack.base.trim_end_matches("/api");
        format!("{origin}{}", &link[1..link.find('>').unwrap()])
    });
    (titles, next)
}

/// Follows `rel="next"` from `url` to the end; every title, and the size of each page.
async fn list_all(stack: &TestStack, url: &str) -> (Vec<String>, Vec<usize>) {
    let (mut titles, mut pages, mut next) = (Vec::new(), Vec::new(), Some(url.to_string()));
    while let Some(url) = next {
        assert!(pages.len() < 50, "the list does not end");
        let (page, following) = list_page(stack, &url).await;
        pages.push(page.len());
        titles.extend(page);
        next = following;
    }
    (titles, pages)
}

#[tokio::test]
async fn a_plain_task_list_is_capped_at_a_thousand_and_links_to_the_rest() {
    let stack = TestStack::start().await;
    store_tasks(&stack, 1_005, 0).await;
    let expected: Vec<String> = (1..=1_005).map(|n| format!("task {n:04}")).collect();

    let (first, next) = list_page(&stack, &format!("{}/tasks", stack.base)).await;
    assert_eq!(first.len(), 1_000, "a plain call gets the first thousand");
    assert_eq!(first, expected[..1_000]);
    let (titles, pages) = list_all(&stack, &format!("{}/tasks", stack.base)).await;
    assert!(next.is_some());
    assert_eq!(pages, [1_000, 5]);
    assert_eq!(titles, expected, "every task once, in creation order");

    let (titles, pages) = list_all(&stack, &format!("{}/tasks?limit=400", stack.base)).await;
    assert_eq!(pages, [400, 400, 205]);
    assert_eq!(titles, expected);
}

#[tokio::test]
async fn list_pages_keep_their_filter_and_a_page_stops_at_its_byte_budget() {
    let stack = TestStack::start().await;
    // 500 tasks of 10 kB text: 5 MB, past what one page may hold.
    store_tasks(&stack, 500, 10_000).await;
    let client = stack.db.get().await.unwrap();
    client
        .execute(
            "UPDATE tasks SET is_deleted = true WHERE title LIKE '%0'",
            &[],
        )
        .await
        .unwrap();
    let (titles, pages) = list_all(&stack, &format!("{}/tasks?limit=1000", stack.base)).await;
    assert!(
        pages.len() >= 2 && pages[0] < 450,
        "cut by bytes: {pages:?}"
    );
    assert_eq!(titles.len(), 450, "deleted ones left out on every page");
    assert_eq!(titles.iter().collect::<HashSet<_>>().len(), 450);
    let url = format!("{}/tasks?limit=1000&include_deleted=true", stack.base);
    let (titles, _) = list_all(&stack, &url).await;
    assert_eq!(titles.len(), 500, "include_deleted travels with the link");
}

#[tokio::test]
async fn bad_list_parameters_are_400_naming_them() {
    let stack = TestStack::start().await;
    let feed_cursor = stack.changes("", Some(1)).await.body["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    for (query, name) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after=abc", "after"),
        (&format!("after={feed_cursor}") as &str, "after"),
    ] {
        let reply = stack.get(&format!("/tasks?{query}")).await;
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        let message = reply.error_message("/api/tasks");
        assert!(
            message.starts_with(&format!("{name}: ")),
            "{query}: {message}"
        );
    }
}

/// Reads of an api whose database does not exist answer 503 naming the database, and its
/// readiness names its real path.
#[tokio::test]
async fn reads_without_the_database_are_503_and_ready_names_its_path() {
    let stack = TestStack::start().await;
    let mut settings = stack.settings.clone();
    settings.database_url = tasksync_tests::services::get()
        .await
        .database_url(&format!(
            "tasksync_test_missing_{}",
            Uuid::new_v4().simple()
        ))
        .into();
    let extra = stack.spawn_api(settings).await;
    let base = extra.base.clone();
    let id = Uuid::new_v4();
    for path in [
        "/tasks".to_string(),
        format!("/tasks/{id}"),
        "/changes".into(),
        format!("/sync/operations/{id}"),
    ] {
        let (status, headers, body) = get_url(&stack, &format!("{base}{path}")).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(headers["retry-after"], "1");
        assert!(
            body["error"].as_str().unwrap().contains("database"),
            "{body}"
        );
        assert_eq!(body["path"], format!("/api{path}"));
    }
    let (status, _, body) = get_url(&stack, &format!("{base}/ready")).await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["postgres"]["status"], "down");
    assert_eq!(body["path"], "/api/ready", "{body}");
    extra.stop().await;
}

#[tokio::test]
async fn a_parked_operation_shows_clients_a_safe_error_and_keeps_the_raw_one_for_operators() {
    let faults = Arc::new(ScriptedFaults::default());
    let stack = TestStack::start_with_faults(|_| {}, faults.clone()).await;
    let task = Uuid::new_v4();
    faults.fail(task, Failing::Always);
    let reply = stack
        .request(
            Method::POST,
            "/tasks",
            Some(json!({"id": task, "title": "doomed"})),
            &[("Prefer", "respond-async")],
        )
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let op_id = reply.header("operation-id").unwrap().to_string();
    let path = format!("/sync/operations/{op_id}");
    stack
        .eventually("the operation is parked", || async {
            stack.get(&path).await.body["status"] == "error"
        })
        .await;
    let shown = stack.get(&path).await.body;
    let error = shown["last_error"].as_str().unwrap();
    assert_eq!(shown["attempts"], 4);
    assert!(
        error.starts_with("the operation could not be applied after 4 attempts"),
        "{error}"
    );
    assert!(!error.contains("injected"), "no internal text: {error}");
    let client = stack.db.get().await.unwrap();
    let raw: String = client
        .query_one(
            "SELECT last_error FROM operations WHERE op_id = $1",
            &[&op_id.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(raw.contains("injected failure"), "operators keep it: {raw}");
}

/// Channels the broker counts on connections named `name`, read with `rabbitmqctl`.
async fn broker_channels(name: &str) -> u64 {
    let output = tokio::task::spawn_blocking(|| {
        std::process::Command::new("rabbitmqctl")
            .args(["list_connections", "client_properties", "channels"])
            .args(["--formatter", "json", "-q"])
            .output()
            .expect("rabbitmqctl (the test counts the api's channels with it)")
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let connections: Value = serde_json::from_slice(&output.stdout).unwrap();
    // A connection still in its handshake has no client properties yet.
    let named = |c: &&Value| {
        c["client_properties"].as_array().is_some_and(|properties| {
            properties
                .iter()
                .any(|p| p[0] == "connection_name" && p[2] == name)
        })
    };
    let ours: Vec<&Value> = connections
        .as_array()
        .unwrap()
        .iter()
        .filter(named)
        .collect();
    assert_eq!(ours.len(), 1, "one connection named {name}: {connections}");
    ours[0]["channels"].as_u64().unwrap()
}

/// Reads the broker's channel count of connection `name` three times while fifty clients call
/// `status_url` back to back, each answer checked (three tasks queued, no worker).
async fn channels_while_fifty_clients_call(
    stack: &TestStack,
    status_url: &str,
    name: &str,
) -> Vec<u64> {
    let calling = AtomicBool::new(true);
    let answers = AtomicU64::new(0);
    let client = || async {
        while calling.load(Ordering::SeqCst) {
            let (status, _, body) = get_url(stack, status_url).await;
            assert_eq!(status, 200);
            assert_eq!(body["sync_queue_size"], 3, "{body}");
            assert_eq!(body["worker_count"], 0, "{body}");
            assert_eq!(body["is_online"], true, "{body}");
            answers.fetch_add(1, Ordering::SeqCst);
        }
    };
    let counting = async {
        let mut counts = Vec::new();
        for _ in 0..3 {
            counts.push(broker_channels(name).await);
        }
        calling.store(false, Ordering::SeqCst);
        counts
    };
    let (counts, _) = tokio::join!(counting, join_all((0..50).map(|_| client())));
    assert!(answers.load(Ordering::SeqCst) >= 100, "{answers:?}");
    counts
}

/// `/api/status` needs no credentials, so a flood of it, or calls while the broker does not
/// answer, must not open channels without bound; and what it says stays true.
#[tokio::test]
async fn status_calls_in_bursts_and_through_a_stalled_broker_keep_the_channels_bounded() {
    let mut stack = TestStack::start().await;
    // Only the api under test carries this stack's connection name.
    stack.stop_api().await;
    let amqp: lapin::uri::AMQPUri = stack.settings.amqp_url.parse().unwrap();
    let target = format!("{}:{}", amqp.authority.host, amqp.authority.port);
    let proxy = FaultyProxy::start(target.parse().unwrap()).await;
    let mut settings = stack.settings.clone();
    settings.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port).into();
    let api = stack.spawn_api(settings).await;
    let status_url = format!("{}/status", api.base);
    stack
        .eventually("the api is ready", || async {
            get_url(&stack, &format!("{}/ready", api.base)).await.0 == 200
        })
        .await;
    let name = api::broker::connection_name(&stack.settings.amqp_prefix);
    stack.stop_worker().await;
    for n in 0..3 {
        let url = format!("{}/tasks", api.base);
        let body = json!({"title": format!("queued {n}")});
        let response = stack
            .http
            .post(url)
            .header("Prefer", "respond-async")
            .json(&body);
        assert_eq!(response.send().await.unwrap().status(), 202);
    }
    // The writes' high-water checks sampled the depth too: it is shared for a second.
    stack
        .eventually("the status shows the three queued", || async {
            get_url(&stack, &status_url).await.2["sync_queue_size"] == 3
        })
        .await;

    let counts = channels_while_fifty_clients_call(&stack, &status_url, &name).await;
    assert!(
        counts.iter().all(|c| *c <= 2),
        "channels under load: {counts:?}"
    );

    // Calls while the broker does not answer: each answers in bounded time.
    proxy.stall();
    let started = Instant::now();
    let stalled = join_all((0..30).map(|_| get_url(&stack, &status_url))).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(stalled.iter().all(|(status, _, _)| *status == 200));
    proxy.restore();
    stack
        .eventually("status sees the broker again", || async {
            let body = get_url(&stack, &status_url).await.2;
            body["broker_online"] == true && body["sync_queue_size"] == 3
        })
        .await;
    let channels = broker_channels(&name).await;
    assert!(
        channels <= 2,
        "{channels} channels after calls through a stall"
    );
    api.stop().await;
}

/// Waits until the api process answers its health check (from then on it handles SIGTERM).
async fn serving(api: &ServiceProcess, port: u16) {
    let url = format!("http://127.0.0.1:{port}/api/health");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = reqwest::get(&url).await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "api not serving: {}",
            api.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The api stops on SIGTERM within a few seconds while its connection attempt hangs: the
/// broker's address accepts the TCP connection and never says a word (a hung broker, a
/// half-open path), so the AMQP handshake never ends.
#[tokio::test]
async fn the_api_stops_promptly_on_sigterm_while_its_broker_handshake_hangs() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let services = tasksync_tests::services::get().await;
    let settings = Settings {
        database_url: services
            .database_url("tasksync_test_no_such_database")
            .into(),
        amqp_url: format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            silent.local_addr().unwrap().port()
        )
        .into(),
        port: free_port(),
        ..Settings::default()
    };
    let mut api = ServiceProcess::spawn("api", &settings);
    // The api is inside its handshake once it has connected, and handles SIGTERM once it
    // serves.
    let (_held, _) = tokio::time::timeout(Duration::from_secs(30), silent.accept())
        .await
        .expect("the api never tried to connect")
        .unwrap();
    serving(&api, settings.port).await;
    let asked = Instant::now();
    api.terminate();
    let status = api.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}: {}", api.log_text());
    assert!(asked.elapsed() < Duration::from_secs(5));
}
