//! An invalid value or a refused login stops both services at start, naming the variable.

use std::time::Duration;

use tasksync_tests::processes::BareProcess;

use super::{NOWHERE_DB, NOWHERE_MQ, SERVICES, env_with, real_hosts};

/// How long a service may take to refuse its configuration.
const PROMPTLY: Duration = Duration::from_secs(15);

/// Runs `binary` with `vars` and expects it to stop with an error: returns stdout and stderr.
async fn refused(binary: &str, vars: &[(&str, &str)]) -> (String, String) {
    stops(BareProcess::spawn(binary, vars), binary, vars).await
}

async fn stops(mut process: BareProcess, binary: &str, vars: &[(&str, &str)]) -> (String, String) {
    let status = process.wait_exit(PROMPTLY).await;
    let (stdout, stderr) = (process.stdout(), process.stderr());
    let status = status.unwrap_or_else(|| {
        panic!(
            "{binary} {vars:?} still runs after {PROMPTLY:?}\nstdout: {stdout}\nstderr: {stderr}"
        )
    });
    assert!(
        !status.success(),
        "{binary} {vars:?} exited 0\nstderr: {stderr}"
    );
    (stdout, stderr)
}

#[tokio::test]
async fn every_invalid_value_stops_both_services_naming_the_variable() {
    let cases = [
        ("AMQP_URL", "garbage"),
        ("AMQP_URL", "amqps://127.0.0.1:1/%2f"),
        ("AMQP_URL", "amqp://127.0.0.1:1/"),
        ("AMQP_URL", "http://127.0.0.1:1/%2f"),
        ("DATABASE_URL", "garbage"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1"),
        (
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/db?sslmode=require",
        ),
        ("DB_POOL_SIZE", "00"),
        ("WORKER_BATCH_SIZE", "0"),
        ("PORT", "eighty"),
        ("HOST", "not a host"),
        ("RUST_LOG", "info,api=loud"),
        ("SHUTDOWN_TIMEOUT_MS", "soon"),
        ("AMQP_QUEUE_TYPE", "lazy"),
        ("LOG_FORMAT", "xml"),
        ("RETRY_DELAYS_MS", "1,2"),
        ("AMQP_PREFIX", "a b"),
        ("RATE_LIMIT_RPS", "-1"),
        ("QUEUE_HIGH_WATER", "lots"),
        ("CORS_ALLOWED_ORIGINS", "https://app.example.com/"),
    ];
    for binary in SERVICES {
        for (name, value) in cases {
            let vars = env_with(NOWHERE_DB, NOWHERE_MQ, &[(name, value)]);
            let (_, stderr) = refused(binary, &vars).await;
            assert!(stderr.contains(name), "{binary} {name}={value}: {stderr}");
            assert!(
                stderr.contains(&format!("{value:?}")),
                "{binary} {name}={value}: the value given is not reported: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn a_refused_broker_login_stops_both_services_without_showing_the_password() {
    let (_, mq) = real_hosts().await;
    let wrong_password = format!("amqp://guest:Wr0ng-Secret-42@{mq}/%2f");
    let no_such_vhost = format!("amqp://guest:guest@{mq}/tasksync-no-such-vhost");
    for binary in SERVICES {
        for url in [&wrong_password, &no_such_vhost] {
            let vars = env_with(NOWHERE_DB, url, &[]);
            let (stdout, stderr) = refused(binary, &vars).await;
            assert!(stderr.contains("AMQP_URL"), "{binary} {url}: {stderr}");
            assert!(stderr.contains("login refused"), "{binary} {url}: {stderr}");
            for output in [&stdout, &stderr] {
                assert!(!output.contains("Wr0ng-Secret-42"), "{binary}: {output}");
            }
        }
    }
}

#[tokio::test]
async fn a_refused_database_login_stops_both_services_without_showing_the_password() {
    let (pg, _) = real_hosts().await;
    let url = format!("postgres://tasksync_no_such_role:Pg-Secret-77@{pg}/tasksync_nowhere");
    for binary in SERVICES {
        let vars = env_with(&url, NOWHERE_MQ, &[]);
        let (stdout, stderr) = refused(binary, &vars).await;
        assert!(stderr.contains("DATABASE_URL"), "{binary}: {stderr}");
        assert!(stderr.contains("login refused"), "{binary}: {stderr}");
        for output in [&stdout, &stderr] {
            assert!(!output.contains("Pg-Secret-77"), "{binary}: {output}");
        }
    }
}

#[tokio::test]
async fn a_password_in_a_refused_url_is_masked() {
    for binary in SERVICES {
        let url = "amqps://guest:Mq-Secret-13@127.0.0.1:1/%2f";
        let vars = env_with(NOWHERE_DB, url, &[]);
        let (stdout, stderr) = refused(binary, &vars).await;
        assert!(
            stderr.contains("guest:***@127.0.0.1:1"),
            "{binary}: {stderr}"
        );
        assert!(
            !format!("{stdout}{stderr}").contains("Mq-Secret-13"),
            "{binary}"
        );
    }
}

#[tokio::test]
async fn a_dotenv_file_is_read_and_an_unreadable_one_stops_both_services() {
    for binary in SERVICES {
        let vars = env_with(NOWHERE_DB, NOWHERE_MQ, &[]);
        let without_url: Vec<_> = vars
            .iter()
            .copied()
            .filter(|(n, _)| *n != "AMQP_URL")
            .collect();
        let process = BareProcess::spawn_with_dotenv(binary, &without_url, "AMQP_URL=garbage\n");
        let (_, stderr) = stops(process, binary, &without_url).await;
        assert!(
            stderr.contains("AMQP_URL=\"garbage\""),
            "{binary}: {stderr}"
        );

        let process = BareProcess::spawn_with_dotenv(binary, &vars, "PORT 3000\n");
        let (_, stderr) = stops(process, binary, &vars).await;
        assert!(stderr.contains(".env"), "{binary}: {stderr}");
    }
}
