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
use serde_json::{Value, json};
use tasksync_shared::Settings;
use tasksync_tests::{
    ApiClient, TestStack,
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

/// The titles of a list page, and the path of its `rel="next"` link (below `/api`), if any.
async fn list_page(api: &ApiClient, path: &str) -> (Vec<String>, Option<String>) {
    let reply = api.get(path).await;
    assert_eq!(reply.status, 200, "{path}: {reply:?}");
    let titles = reply.tasks().into_iter().map(|t| t.title).collect();
    let next = reply.header("link").map(|link| {
        assert!(link.ends_with(">; rel=\"next\""), "{link}");
        let cursor = reply.header("x-next-cursor").unwrap();
        assert!(link.contains(&format!("after={cursor}")), "{link}");
        let target = &link[1..link.find('>').unwrap()];
        target
            .strip_prefix("/api")
            .expect("a link below /api")
            .to_string()
    });
    (titles, next)
}

/// Follows `rel="next"` from `path` to the end; every title, and the size of each page.
async fn list_all(api: &ApiClient, path: &str) -> (Vec<String>, Vec<usize>) {
    let (mut titles, mut pages, mut next) = (Vec::new(), Vec::new(), Some(path.to_string()));
    while let Some(path) = next {
        assert!(pages.len() < 50, "the list does not end");
        let (page, following) = list_page(api, &path).await;
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

    let api = stack.client();
    let (first, next) = list_page(&api, "/tasks").await;
    assert_eq!(first.len(), 1_000, "a plain call gets the first thousand");
    assert_eq!(first, expected[..1_000]);
    let (titles, pages) = list_all(&api, "/tasks").await;
    assert!(next.is_some());
    assert_eq!(pages, [1_000, 5]);
    assert_eq!(titles, expected, "every task once, in creation order");

    let (titles, pages) = list_all(&api, "/tasks?limit=400").await;
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
    let api = stack.client();
    let (titles, pages) = list_all(&api, "/tasks?limit=1000").await;
    assert!(
        pages.len() >= 2 && pages[0] < 450,
        "cut by bytes: {pages:?}"
    );
    assert_eq!(titles.len(), 450, "deleted ones left out on every page");
    assert_eq!(titles.iter().collect::<HashSet<_>>().len(), 450);
    let (titles, _) = list_all(&api, "/tasks?limit=1000&include_deleted=true").await;
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
    let id = Uuid::new_v4();
    for path in [
        "/tasks".to_string(),
        format!("/tasks/{id}"),
        "/changes".into(),
        format!("/sync/operations/{id}"),
    ] {
        let reply = extra.api.get(&path).await;
        let body = &reply.body;
        assert_eq!(reply.status, 503, "{path}: {body}");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert!(
            body["error"].as_str().unwrap().contains("database"),
            "{body}"
        );
        assert_eq!(body["path"], format!("/api{path}"));
    }
    let ready = extra.api.ready().await;
    let body = &ready.body;
    assert_eq!(ready.status, 503);
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
        .client()
        .create_task_async(json!({"id": task, "title": "doomed"}))
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let op_id = reply.operation_id();
    stack
        .eventually("the operation is parked", || async {
            stack.operation(&op_id.to_string()).await.body["status"] == "error"
        })
        .await;
    let shown = stack.operation(&op_id.to_string()).await.body;
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
            &[&op_id],
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
/// `/api/status` of `api` back to back, each answer checked (three tasks queued, no worker).
async fn channels_while_fifty_clients_call(api: &ApiClient, name: &str) -> Vec<u64> {
    let calling = AtomicBool::new(true);
    let answers = AtomicU64::new(0);
    let client = || async {
        while calling.load(Ordering::SeqCst) {
            let reply = api.status().await;
            let body = &reply.body;
            assert_eq!(reply.status, 200);
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
    let extra = stack.spawn_api(settings).await;
    stack
        .eventually("the api is ready", || extra.api.is_ready())
        .await;
    let name = api::broker::connection_name(&stack.settings.amqp_prefix);
    stack.stop_worker().await;
    for n in 0..3 {
        let body = json!({"title": format!("queued {n}")});
        assert_eq!(extra.api.create_task_async(body).await.status, 202);
    }
    // The writes' high-water checks sampled the depth too: it is shared for a second.
    stack
        .eventually("the status shows the three queued", || async {
            extra.api.status().await.body["sync_queue_size"] == 3
        })
        .await;

    let counts = channels_while_fifty_clients_call(&extra.api, &name).await;
    // The publish channels, and the one that samples depths.
    let bound = u64::try_from(stack.settings.publish_channels).unwrap() + 1;
    assert!(
        counts.iter().all(|c| *c <= bound),
        "channels under load: {counts:?}, more than {bound}"
    );

    // Calls while the broker does not answer: each answers in bounded time.
    proxy.stall();
    let started = Instant::now();
    let stalled = join_all((0..30).map(|_| extra.api.status())).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(stalled.iter().all(|reply| reply.status == 200));
    proxy.restore();
    stack
        .eventually("status sees the broker again", || async {
            let body = extra.api.status().await.body;
            body["broker_online"] == true && body["sync_queue_size"] == 3
        })
        .await;
    let channels = broker_channels(&name).await;
    assert!(
        channels <= bound,
        "{channels} channels after calls through a stall, more than {bound}"
    );
    extra.stop().await;
}

/// Waits until the api process answers its health check (from then on it handles SIGTERM).
async fn serving(api: &ServiceProcess, port: u16) {
    let client = ApiClient::new(
        reqwest::Client::new(),
        format!("http://127.0.0.1:{port}/api"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.is_serving().await {
            return;
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
