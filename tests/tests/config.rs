//! Configuration, start-up and shutdown of the real `api` and `sync-worker` binaries, and the
//! database session limits: an invalid value or a refused login stops a service at start naming
//! the variable and never showing a password; SIGTERM stops it within a bound whatever its
//! connections are doing and whatever became of its log pipe; statements and the migration
//! lock wait a bounded time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "config/database.rs"]
mod database;
#[path = "config/shutdown.rs"]
mod shutdown;
#[path = "config/startup.rs"]
mod startup;

use std::str::FromStr;

use tasksync_tests::services;

/// Both service binaries.
const SERVICES: [&str; 2] = ["api", "sync-worker"];

/// Nothing listens on port 1 of the loopback: connecting fails at once.
const NOWHERE_DB: &str = "postgres://postgres@127.0.0.1:1/tasksync_nowhere";
const NOWHERE_MQ: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

/// A complete, valid environment for a service whose Postgres and RabbitMQ are `db` and `mq`,
/// with `extra` set over it.
fn env_with<'a>(db: &'a str, mq: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut vars = vec![
        ("DATABASE_URL", db),
        ("AMQP_URL", mq),
        ("AMQP_PREFIX", "test-config"),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("RUST_LOG", "info"),
    ];
    for (name, value) in extra {
        vars.retain(|(n, _)| n != name);
        vars.push((name, value));
    }
    vars
}

/// `host:port` of the test Postgres and of the test RabbitMQ.
async fn real_hosts() -> (String, String) {
    let services = services::get().await;
    let pg = tokio_postgres::Config::from_str(&services.database_url("postgres")).unwrap();
    let pg_host = match &pg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    let pg_port = pg.get_ports().first().copied().unwrap_or(5432);
    let mq: lapin::uri::AMQPUri = services.amqp_url.parse().unwrap();
    (
        format!("{pg_host}:{pg_port}"),
        format!("{}:{}", mq.authority.host, mq.authority.port),
    )
}
