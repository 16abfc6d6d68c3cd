//! SIGTERM stops both services within a bound, whatever their connections are doing and
//! whatever became of their log pipe; logs written to a file carry no colour codes.

use std::{
    io::{BufRead, BufReader},
    time::Duration,
};

use tasksync_tests::{processes::BareProcess, services};
use tokio::net::TcpListener;

use super::{NOWHERE_DB, NOWHERE_MQ, SERVICES, env_with};

/// The stop deadline these tests configure, and what a stop may take beyond it.
const DEADLINE_MS: &str = "1500";
const DEADLINE: Duration = Duration::from_millis(1500);
const SLACK: Duration = Duration::from_secs(3);

/// A line each service logs once it runs (with both dependencies unreachable).
fn started_line(binary: &str) -> &'static str {
    match binary {
        "api" => "api listening",
        _ => "cannot prepare the database yet",
    }
}

/// A TCP listener that accepts connections and never says anything: a frozen server.
struct Silent {
    url_port: u16,
    accepted: tokio::sync::mpsc::Receiver<tokio::net::TcpStream>,
}

impl Silent {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url_port = listener.local_addr().unwrap().port();
        let (tx, accepted) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                // Held open (by the receiver) and never answered.
                if tx.send(socket).await.is_err() {
                    return;
                }
            }
        });
        Self { url_port, accepted }
    }

    /// Waits until the service has connected (and so is stuck waiting for an answer).
    async fn wait_for_a_connection(&mut self) -> tokio::net::TcpStream {
        tokio::time::timeout(Duration::from_secs(15), self.accepted.recv())
            .await
            .expect("the service never connected")
            .unwrap()
    }
}

#[tokio::test]
async fn sigterm_with_the_log_pipe_closed_exits_zero() {
    for binary in SERVICES {
        let vars = env_with(NOWHERE_DB, NOWHERE_MQ, &[]);
        let mut process = BareProcess::spawn_piped(binary, &vars);
        let (stdout, stderr) = process.take_pipes();
        let expected = started_line(binary);
        // Read (on a thread: pipes block) until it runs, then close both read ends.
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let started = lines.any(|line| line.is_ok_and(|l| l.contains(expected)));
            drop(stderr);
            started
        });
        let started = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        assert!(started, "{binary} never logged {expected:?}");
        let status = terminated(&mut process).await;
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{binary}: {status:?}"
        );
    }
}

/// Sends SIGTERM and waits for the exit, at most the deadline and some slack.
async fn terminated(process: &mut BareProcess) -> Option<std::process::ExitStatus> {
    process.terminate();
    process.wait_exit(DEADLINE + SLACK).await
}

/// Sends SIGTERM and requires a clean exit (status 0, not the deadline's 1); returns stdout.
async fn stops_cleanly(process: &mut BareProcess, binary: &str) -> String {
    let status = terminated(process).await;
    let stdout = process.stdout();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{binary}: {status:?}\n{stdout}"
    );
    stdout
}

#[tokio::test]
async fn sigterm_stops_a_service_whose_database_and_broker_never_answer() {
    for binary in SERVICES {
        let mut db = Silent::start().await;
        let mut mq = Silent::start().await;
        let db_url = format!("postgres://postgres@127.0.0.1:{}/tasksync", db.url_port);
        let mq_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", mq.url_port);
        let vars = env_with(&db_url, &mq_url, &[("SHUTDOWN_TIMEOUT_MS", DEADLINE_MS)]);
        let mut process = BareProcess::spawn(binary, &vars);
        let _db_held = db.wait_for_a_connection().await;
        let _mq_held = mq.wait_for_a_connection().await;
        // Stopped by itself: the deadline would have exited 1 and said so.
        let stdout = stops_cleanly(&mut process, binary).await;
        assert!(
            !stdout.contains("SHUTDOWN_TIMEOUT_MS"),
            "{binary}: {stdout}"
        );
    }
}

#[tokio::test]
async fn sigterm_stops_a_worker_whose_broker_never_answers_once_its_database_is_ready() {
    let name = format!(
        "tasksync_cfg_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let db_url = services::get().await.database_url(&name);
    let mut mq = Silent::start().await;
    let mq_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", mq.url_port);
    let vars = env_with(&db_url, &mq_url, &[("SHUTDOWN_TIMEOUT_MS", DEADLINE_MS)]);
    let mut process = BareProcess::spawn("sync-worker", &vars);
    // The login check's connection and, once migrated, the consumer's: both stuck.
    let _check_held = mq.wait_for_a_connection().await;
    let _consumer_held = mq.wait_for_a_connection().await;
    let status = terminated(&mut process).await;
    let stdout = process.stdout();
    // Dropped before any assertion, so a failure leaves no database behind.
    services::drop_database(&db_url).await;
    assert!(stdout.contains("applied migration"), "{stdout}");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{status:?}\n{stdout}"
    );
}

#[tokio::test]
async fn sigterm_stops_a_service_that_cannot_reach_anything_cleanly_and_logs_have_no_colour() {
    for binary in SERVICES {
        let vars = env_with(NOWHERE_DB, NOWHERE_MQ, &[]);
        let mut process = BareProcess::spawn(binary, &vars);
        let expected = started_line(binary);
        assert!(
            process
                .wait_for_stdout(expected, Duration::from_secs(15))
                .await,
            "{binary}: {}",
            process.stdout()
        );
        let stdout = stops_cleanly(&mut process, binary).await;
        assert!(stdout.contains("SIGTERM"), "{binary}: {stdout}");
        assert!(
            !stdout.contains('\u{1b}'),
            "{binary} wrote colour codes to a file: {stdout:?}"
        );
    }
}
