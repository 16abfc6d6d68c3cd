//! Database session limits, the migration lock, the api's wait for the schema, and printed
//! state without passwords.

use std::time::{Duration, Instant};

use tasksync_shared::{Settings, db, db::DbSetupError};
use tasksync_tests::{processes::BareProcess, services};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{NOWHERE_MQ, env_with};

fn fresh_database_url() -> String {
    format!(
        "tasksync_cfg_{}",
        &Uuid::new_v4().simple().to_string()[..16]
    )
}

#[tokio::test]
async fn a_runaway_statement_is_cancelled_by_the_server() {
    let url = services::get().await.database_url("postgres");
    let pool = db::pool_with_timeout(&url, 1, Duration::from_millis(300)).unwrap();
    let client = pool.get().await.unwrap();
    let started = Instant::now();
    let error = client
        .execute("SELECT pg_sleep(10)", &[])
        .await
        .expect_err("a 10 s statement outlived a 300 ms statement_timeout");
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The server's timeout counts like the client's: the database is unavailable.
    assert!(db::is_transient(&error));
    // The connection stays usable.
    client.execute("SELECT 1", &[]).await.unwrap();
}

#[tokio::test]
async fn a_second_migrator_gives_up_on_a_held_migration_lock() {
    let url = services::get().await.database_url(&fresh_database_url());
    db::migrate(&url).await.unwrap();
    let (holder, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&db::MIGRATION_LOCK])
        .await
        .unwrap();

    let started = Instant::now();
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        db::migrate_with_lock_wait(&url, Duration::from_secs(1)),
    )
    .await
    .expect("the migrator waited for the lock without limit")
    .expect_err("migrated while another session held the lock");
    assert!(
        matches!(error, DbSetupError::MigrationLockBusy(_)),
        "{error}"
    );
    assert!(error.to_string().contains("migration lock"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&db::MIGRATION_LOCK])
        .await
        .unwrap();
    db::migrate_with_lock_wait(&url, Duration::from_secs(1))
        .await
        .expect("migrates once the lock is free");
    drop(holder);
    services::drop_database(&url).await;
}

#[tokio::test]
async fn while_the_api_waits_for_the_schema_it_logs_why() {
    // A database that does not exist: the api waits (the worker would create it).
    let name = fresh_database_url();
    let url = services::get().await.database_url(&name);
    let vars = env_with(&url, NOWHERE_MQ, &[]);
    let process = BareProcess::spawn("api", &vars);
    assert!(
        process
            .wait_for_stdout("does not exist", Duration::from_secs(15))
            .await,
        "{}",
        process.stdout()
    );
    let waiting = process
        .stdout()
        .lines()
        .find(|l| l.contains("waiting for the database schema"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(waiting.contains(&name), "{waiting}");
    assert!(waiting.contains("does not exist"), "{waiting}");
}

#[tokio::test]
async fn printed_settings_and_api_state_never_show_a_password() {
    let settings = Settings {
        database_url: "postgres://tasks:Pg-Hidden-1@127.0.0.1:1/tasksync".into(),
        amqp_url: "amqp://tasks:Mq-Hidden-2@127.0.0.1:1/%2f".into(),
        host: "127.0.0.1".into(),
        port: 0,
        ..Settings::default()
    };
    let app = api::Application::build(settings.clone()).await.unwrap();
    for printed in [
        format!("{settings:?}"),
        format!("{app:?}"),
        format!("{app:#?}"),
    ] {
        assert!(!printed.contains("Pg-Hidden-1"), "{printed}");
        assert!(!printed.contains("Mq-Hidden-2"), "{printed}");
        assert!(printed.contains("tasks:***@127.0.0.1:1"), "{printed}");
    }
}
