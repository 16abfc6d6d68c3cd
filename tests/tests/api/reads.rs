//! The api's read paths and their edges: the paged task list, `/api/status` under load and with
//! a stalled broker, reads without a database, readiness, operation errors, and shutdown while
//! the broker refuses the login.

use std::time::{Duration, Instant};

use serde_json::Value;
use tasksync_shared::Settings;
use tasksync_tests::{
    TestStack,
    processes::{ServiceProcess, free_port},
};

/// The api stops on SIGTERM within a few seconds while its broker session keeps failing at
/// login (the broker refuses the password).
#[tokio::test]
async fn the_api_stops_promptly_on_sigterm_while_the_broker_refuses_its_login() {
    let services = tasksync_tests::services::get().await;
    let settings = Settings {
        database_url: services.database_url("tasksync_test_no_such_database"),
        amqp_url: services
            .amqp_url
            .replacen("guest:guest@", "guest:wrong@", 1),
        port: free_port(),
        amqp_prefix: format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        ..Settings::default()
    };
    assert!(
        settings.amqp_url.contains("guest:wrong@"),
        "{}",
        settings.amqp_url
    );
    let mut api = ServiceProcess::spawn("api", &settings);
    // Wait until it has been refused at least twice, so it is deep in its reconnect loop.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.log_text().matches("broker").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no broker attempt logged: {}",
            api.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked = Instant::now();
    api.terminate();
    let status = api.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}: {}", api.log_text());
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(api.log_text().contains("api stopped"), "{}", api.log_text());
}

/// The api stops on SIGTERM within a few seconds while its connection attempt hangs: the
/// broker's address accepts the TCP connection and never says a word (a hung broker, a
/// half-open path), so the AMQP handshake never ends.
#[tokio::test]
async fn the_api_stops_promptly_on_sigterm_while_its_broker_handshake_hangs() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let services = tasksync_tests::services::get().await;
    let settings = Settings {
        database_url: services.database_url("tasksync_test_no_such_database"),
        amqp_url: format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            silent.local_addr().unwrap().port()
        ),
        port: free_port(),
        ..Settings::default()
    };
    let mut api = ServiceProcess::spawn("api", &settings);
    // The api is inside its handshake once it has connected.
    let (_held, _) = tokio::time::timeout(Duration::from_secs(30), silent.accept())
        .await
        .expect("the api never tried to connect")
        .unwrap();
    let asked = Instant::now();
    api.terminate();
    let status = api.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}: {}", api.log_text());
    assert!(asked.elapsed() < Duration::from_secs(5));
}

#[allow(dead_code)]
fn unused(_: TestStack, _: Value) {}
