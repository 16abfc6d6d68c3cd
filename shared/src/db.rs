//! Postgres: the connection pool, creating the database, the embedded migrations, and whether
//! the schema is there.
//!
//! Every wait is bounded: connecting (TCP and handshake), each pooled statement
//! (`statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout` from
//! `DB_TIMEOUT_MS`, so the server cancels what the client gave up on), and the wait for the
//! migration lock.

use std::{str::FromStr, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Client, Config, NoTls, error::SqlState};

use crate::amqp::Backoff;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory lock key held while migrating, so concurrent workers migrate one at a time.
pub const MIGRATION_LOCK: i64 = 0x7461_736b_7379_6e63; // "tasksync"

/// How long a migrator waits for another one holding the migration lock.
pub const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Longest wait for a new connection, TCP connect and startup handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Statement limits of [`pool`] when the caller has no `DB_TIMEOUT_MS` of its own.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("DATABASE_URL is not a valid Postgres connection string: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("DATABASE_URL names no database")]
    NoDatabaseName,
    #[error("could not build the connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    #[error("postgres at {target}: {}", describe(source))]
    Postgres {
        target: String,
        source: tokio_postgres::Error,
    },
    #[error("postgres at {0}: no answer within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout(String),
    #[error("DATABASE_URL: login refused by postgres at {target}: {reason}")]
    LoginRefused { target: String, reason: String },
    #[error(
        "another process has held the migration lock for {0:?}; \
         is a migration still running? (retry, or look at pg_locks for advisory locks)"
    )]
    MigrationLockBusy(Duration),
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

/// Where `config` connects, for messages: `host:port/database`, never a password.
fn target(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = config.get_ports().get(i).or(config.get_ports().first());
            let name = match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            format!("{name}:{}", port.copied().unwrap_or(5432))
        })
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

/// Adds the session settings to the options sent at connect, keeping any the URL sets: the
/// limits, and custom plans for prepared statements.
///
/// The services prepare their statements once per connection (one round trip per statement
/// instead of two), and Postgres then switches a statement to a generic plan after five
/// executions. For `id = ANY($1)` with a batch's array, the generic plan does not know the
/// array and costs the table's whole key range: the worker's batch reads became scans that
/// slowed with the table (3.3k instead of 10.5k ops/s through `/api/batch`, measured). A custom
/// plan per execution costs a few tens of microseconds and is right for the actual values.
fn with_session_limits(config: &mut Config, limit: Duration) {
    let ms = limit.as_millis();
    let limits = format!(
        "-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={ms} \
         -c plan_cache_mode=force_custom_plan"
    );
    let options = match config.get_options() {
        Some(own) if !own.trim().is_empty() => format!("{own} {limits}"),
        _ => limits,
    };
    config.options(options);
}

/// A pool with the default statement limits (30 s); see [`pool_with_timeout`].
pub fn pool(url: &str, size: usize) -> Result<Pool, DbSetupError> {
    pool_with_timeout(url, size, DEFAULT_STATEMENT_TIMEOUT)
}

/// A pool whose waits are bounded: a request never hangs on a database that does not answer,
/// and the server cancels any statement (or lock wait) of its connections that runs longer
/// than `statement_timeout` (the services pass `DB_TIMEOUT_MS`).
pub fn pool_with_timeout(
    url: &str,
    size: usize,
    statement_timeout: Duration,
) -> Result<Pool, DbSetupError> {
    let mut config = config(url)?;
    with_session_limits(&mut config, statement_timeout);
    let manager = Manager::from_config(
        config,
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

/// The services' pool: `DB_POOL_SIZE` connections, statements bounded by `DB_TIMEOUT_MS`.
pub fn pool_for(settings: &crate::Settings) -> Result<Pool, DbSetupError> {
    pool_with_timeout(
        &settings.database_url,
        settings.db_pool_size,
        settings.db_timeout,
    )
}

async fn connect(config: &Config) -> Result<Client, DbSetupError> {
    let connecting = config.connect(NoTls);
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(source)) => {
            return Err(DbSetupError::Postgres {
                target: target(config),
                source,
            });
        }
        Err(_) => return Err(DbSetupError::ConnectTimeout(target(config))),
    };
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres connection closed");
        }
    });
    Ok(client)
}

/// A connection of its own (not pooled) to the database of `url`, with the pool's connect
/// settings (keepalives, user timeout, no TLS) and no statement limits: the api's `LISTEN`
/// session, which must stay open and idle. The caller drives the returned connection (its
/// notifications come from `poll_message`).
pub async fn dedicated_connection(
    url: &str,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    DbSetupError,
> {
    let config = config(url)?;
    match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls)).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(source)) => Err(DbSetupError::Postgres {
            target: target(&config),
            source,
        }),
        Err(_) => Err(DbSetupError::ConnectTimeout(target(&config))),
    }
}

/// The SQLSTATE of a Postgres error, if the server sent one.
fn sql_state(error: &DbSetupError) -> Option<&SqlState> {
    match error {
        DbSetupError::Postgres { source, .. } => source.code(),
        _ => None,
    }
}

/// Creates the database named in `url` when it does not exist, through the maintenance
/// database `postgres`. A concurrent creator winning the race is fine.
pub async fn ensure_database(url: &str) -> Result<(), DbSetupError> {
    let config = config(url)?;
    match connect(&config).await {
        Ok(_) => return Ok(()),
        Err(e) if sql_state(&e) == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(e) => return Err(e),
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
        Err(source) => Err(DbSetupError::Postgres {
            target: target(&maintenance),
            source,
        }),
    }
}

/// Creates the database if needed and applies the pending migrations, waiting up to
/// [`MIGRATION_LOCK_WAIT`] for a concurrent migrator.
pub async fn migrate(url: &str) -> Result<(), DbSetupError> {
    migrate_with_lock_wait(url, MIGRATION_LOCK_WAIT).await
}

/// [`migrate`], giving up with [`DbSetupError::MigrationLockBusy`] when another session holds
/// the migration lock for longer than `lock_wait`.
pub async fn migrate_with_lock_wait(url: &str, lock_wait: Duration) -> Result<(), DbSetupError> {
    ensure_database(url).await?;
    let config = config(url)?;
    let mut client = connect(&config).await?;
    take_migration_lock(&client, lock_wait)
        .await
        .map_err(|e| match e {
            Some(source) => DbSetupError::Postgres {
                target: target(&config),
                source,
            },
            None => DbSetupError::MigrationLockBusy(lock_wait),
        })?;
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

/// Tries the migration lock until it is free or `wait` has passed (`Err(None)` then; a
/// database error is `Err(Some)`). Trying instead of waiting in `pg_advisory_lock` keeps the
/// wait bounded whatever the session's `lock_timeout`.
async fn take_migration_lock(
    client: &Client,
    wait: Duration,
) -> Result<(), Option<tokio_postgres::Error>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff = Backoff::new();
    loop {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        if row.try_get::<_, bool>(0)? {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(None);
        }
        tracing::info!("waiting for another process's migration to finish");
        tokio::time::sleep(backoff.next_delay().min(deadline - now)).await;
    }
}

/// Checks, at start, that Postgres accepts the credentials of `url`: retries (quietly; the
/// service logs its own attempts) while it is unreachable, returns `Ok` at the first accepted
/// login (a database that does not exist yet counts: the worker creates it), and the refusal
/// otherwise. No retry can fix a wrong password or an unknown role.
pub async fn check_login(url: &str) -> Result<(), DbSetupError> {
    let config = config(url)?;
    let mut backoff = Backoff::new();
    loop {
        match connect(&config).await {
            Ok(_) => return Ok(()),
            Err(e) if sql_state(&e) == Some(&SqlState::INVALID_CATALOG_NAME) => return Ok(()),
            Err(DbSetupError::Postgres { target, source }) if login_refused(&source) => {
                let reason = source
                    .as_db_error()
                    .map_or_else(|| source.to_string(), |db| db.message().to_string());
                return Err(DbSetupError::LoginRefused { target, reason });
            }
            Err(error) => {
                tracing::debug!(%error, "start-up login check: postgres not reachable yet");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// A wrong password, an unknown role, or no `pg_hba.conf` entry for us.
fn login_refused(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(c) if *c == SqlState::INVALID_PASSWORD
            || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    )
}

/// An error and its causes on one line. tokio-postgres shows only its kind ("db error"); the
/// server's message ("password authentication failed ...") is in the causes.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    text
}

/// Why the database is not ready for the services.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// Postgres did not answer (the message says why: refused, timed out, no such database).
    #[error("{0}")]
    Unreachable(String),
    #[error("schema not created yet (the sync-worker migrates at start)")]
    NoSchema,
}

/// The one test of "the database is ready": Postgres answers through `pool` and the schema the
/// services need is there (the worker creates it at start). Used by the api's readiness check
/// and its wait at start, and by the worker's health check.
pub async fn database_ready(pool: &Pool) -> Result<(), NotReady> {
    let unreachable = |e: &dyn std::error::Error| NotReady::Unreachable(describe(e));
    let client = pool.get().await.map_err(|e| unreachable(&e))?;
    let row = client
        .query_one("SELECT to_regclass('public.operations') IS NOT NULL", &[])
        .await
        .map_err(|e| unreachable(&e))?;
    match row.try_get::<_, bool>(0) {
        Ok(true) => Ok(()),
        Ok(false) => Err(NotReady::NoSchema),
        Err(e) => Err(unreachable(&e)),
    }
}

/// A failed database round, classified for the caller: the database could not be reached (wait
/// and try again; nothing is the operation's fault), or it refused the statement.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database refused the statement: {0}")]
    Refused(String),
}

impl From<tokio_postgres::Error> for RoundError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message, without tokio-postgres's "db error: " wrapper.
        let message = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |db| db.message().to_string());
        if is_transient(&e) {
            Self::Unavailable(message)
        } else {
            Self::Refused(message)
        }
    }
}

impl From<deadpool_postgres::PoolError> for RoundError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        if pool_error_is_transient(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Refused(e.to_string())
        }
    }
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
        // 57014/55P03: our own statement_timeout or lock_timeout fired, the server-side twin of
        // DB_TIMEOUT_MS running out, which counts as "unavailable" too.
        Some(code) => {
            let c = code.code();
            c.starts_with("08")
                || matches!(
                    c,
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01" | "57014" | "55P03"
                )
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
