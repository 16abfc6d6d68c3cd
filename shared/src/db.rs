//! Postgres: the connection pool, creating the database, and the embedded migrations.

use std::{str::FromStr, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Client, Config, NoTls, error::SqlState};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory lock key held while migrating, so concurrent workers migrate one at a time.
const MIGRATION_LOCK: i64 = 0x7461_736b_7379_6e63; // "tasksync"

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("DATABASE_URL is not a valid Postgres connection string: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("DATABASE_URL names no database")]
    NoDatabaseName,
    #[error("could not build the connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

fn config(url: &str) -> Result<Config, DbSetupError> {
    let mut config = Config::from_str(url).map_err(DbSetupError::Url)?;
    // A path to Postgres that goes silent must end in an error, not a hang: keepalives notice
    // an idle connection in about 25 s, the user timeout a connection with data in flight in
    // 30 s; the error then counts as "database unavailable" (wait, spend no attempt).
    config
        .connect_timeout(Duration::from_secs(5))
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30))
        .application_name("tasksync");
    Ok(config)
}

/// A pool whose waits are bounded: a request never hangs on a database that does not answer.
pub fn pool(url: &str, size: usize) -> Result<Pool, DbSetupError> {
    let manager = Manager::from_config(
        config(url)?,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()?)
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Creates the database named in `url` when it does not exist, through the maintenance
/// database `postgres`. A concurrent creator winning the race is fine.
pub async fn ensure_database(url: &str) -> Result<(), DbSetupError> {
    let config = config(url)?;
    match connect(&config).await {
        Ok(_) => return Ok(()),
        Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(e) => return Err(e.into()),
    }
    let name = config
        .get_dbname()
        .ok_or(DbSetupError::NoDatabaseName)?
        .to_string();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance).await?;
    let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&statement).await {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the database if needed and applies the pending migrations.
pub async fn migrate(url: &str) -> Result<(), DbSetupError> {
    ensure_database(url).await?;
    let mut client = connect(&config(url)?).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    // The lock dies with the session anyway; unlocking early lets the next worker go on.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    for migration in report?.applied_migrations() {
        tracing::info!(migration = %migration, "applied migration");
    }
    Ok(())
}

/// Whether the schema the services need is there (the worker creates it at start).
pub async fn schema_ready(pool: &Pool) -> bool {
    let Ok(client) = pool.get().await else {
        return false;
    };
    client
        .query_one("SELECT to_regclass('public.operations') IS NOT NULL", &[])
        .await
        .and_then(|row| row.try_get::<_, bool>(0))
        .unwrap_or(false)
}

/// Whether a database error is about reaching the database rather than about the statement:
/// the connection is gone, the server is shutting down or starting, or we ran out of time.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        // Class 08: connection exception; 57P01-57P03: admin shutdown, crash, cannot connect now;
        // 53300: too many connections; 40001/40P01: serialization failure and deadlock, which a
        // plain retry resolves.
        Some(code) => {
            let c = code.code();
            c.starts_with("08")
                || matches!(c, "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
        }
        // No SQLSTATE: an I/O or protocol failure on the way to the server.
        None => true,
    }
}

/// Whether a pool error is about reaching the database.
pub fn pool_error_is_transient(error: &deadpool_postgres::PoolError) -> bool {
    use deadpool_postgres::PoolError;
    match error {
        PoolError::Backend(e) => is_transient(e),
        PoolError::Timeout(_) | PoolError::Closed | PoolError::NoRuntimeSpecified => true,
        PoolError::PostCreateHook(_) => true,
    }
}
