//! The sync-worker: the only writer of tasks.
//!
//! It consumes operations from the work queue, applies them in batches under field-level
//! last-write-wins, records each decision in the operation log in the same transaction, acks
//! after commit and reports outcomes to the api instance that published them.
//!
//! Layout:
//! - [`apply`]: the step, one batch in one transaction, no AMQP (tests call it directly);
//! - [`storage`]: all SQL of the worker, with the failure records in [`storage::failures`];
//! - [`consumer`]: the loop around the step: connect, consume, decide each delivery's fate
//!   (applied, retried, parked, held for the database), carry it out, reconnect;
//! - [`retention`]: the periodic sweep of history past `RETENTION_DAYS`;
//! - [`http`]: the worker's own listener (`WORKER_HTTP_PORT`): `/health`, `/ready`, `/metrics`;
//! - [`metrics`]: its Prometheus recorder and the liveness facts the probes read;
//! - [`faults`]: failure injection, reachable only from code (tests).

pub mod apply;
pub mod consumer;
pub mod faults;
pub mod http;
pub mod metrics;
pub mod retention;
pub mod storage;

use std::{future::Future, sync::Arc};

use faults::{FaultInjector, NoFaults};

use tasksync_shared::{Settings, amqp::Backoff, db, shutdown::stopped};
use tokio::{net::TcpListener, sync::watch};

use crate::metrics::WorkerMetrics;

/// Prepares the database (creating it and migrating, retrying until it answers) and consumes
/// until `shutdown` resolves. Every start-up step races it; once consuming, the batches in flight
/// when it resolves are finished or handed back.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    Worker::build(settings, Arc::new(NoFaults))
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// [`run`] with failures injected by `injector` (tests only; the binary always uses [`run`]).
pub async fn run_with_faults(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
    injector: Arc<dyn FaultInjector>,
) -> anyhow::Result<()> {
    Worker::build(settings, injector)
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// A built worker: its HTTP listener bound (`HOST:WORKER_HTTP_PORT`), not yet consuming.
#[derive(Debug)]
pub struct Worker {
    settings: Settings,
    injector: Arc<dyn FaultInjector>,
    listener: TcpListener,
    port: u16,
    metrics: WorkerMetrics,
    pool: deadpool_postgres::Pool,
    liveness_limit: std::time::Duration,
}

impl Worker {
    /// Binds the worker's HTTP port (0 picks a free one) and prepares its pool (connections
    /// are made when used).
    pub async fn build(
        settings: Settings,
        injector: Arc<dyn FaultInjector>,
    ) -> anyhow::Result<Self> {
        let listener =
            TcpListener::bind((settings.host.as_str(), settings.worker_http_port)).await?;
        let port = listener.local_addr()?.port();
        let pool = db::pool_for(&settings)?;
        Ok(Self {
            injector,
            listener,
            port,
            metrics: WorkerMetrics::new(),
            pool,
            liveness_limit: http::liveness_limit(&settings),
            settings,
        })
    }

    /// Replaces the derived [`http::liveness_limit`] (tests freeze the loop for a second or
    /// two, not for the production limit).
    pub fn with_liveness_limit(mut self, limit: std::time::Duration) -> Self {
        self.liveness_limit = limit;
        self
    }

    /// The bound port of `/health`, `/ready` and `/metrics`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves the probes at once, then prepares the database and consumes until `shutdown`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Self {
            settings,
            injector,
            listener,
            port,
            metrics,
            pool,
            liveness_limit,
        } = self;
        let (stop_tx, stop) = watch::channel(false);
        let router = http::router(metrics.clone(), pool.clone(), liveness_limit);
        let mut http_stop = stop.clone();
        let listening = tokio::spawn(http::serve(listener, router, async move {
            stopped(&mut http_stop).await;
        }));
        tracing::info!(port, "worker probes and metrics listening");
        let work = async {
            if !prepare_database(&settings, stop.clone()).await {
                return Ok(());
            }
            tokio::spawn(storage::heartbeat::beat(
                pool.clone(),
                metrics.clone(),
                settings.db_timeout,
                stop.clone(),
            ));
            tokio::spawn(retention::sweep_periodically(
                pool.clone(),
                settings.retention_days,
                settings.retention_sweep,
                stop.clone(),
            ));
            consumer::consume(&settings, &pool, injector, &metrics, stop.clone()).await;
            Ok::<_, anyhow::Error>(())
        };
        let signal = async {
            shutdown.await;
            let _ = stop_tx.send(true);
            std::future::pending::<()>().await;
        };
        let result = tokio::select! {
            result = work => result,
            () = signal => Ok(()),
        };
        listening.abort();
        result
    }
}

/// Creates and migrates the database, retrying with backoff until it answers. Every attempt
/// races `stop`: a database that accepts connections and never answers must not hold up a
/// shutdown. Returns false when stopped first.
async fn prepare_database(settings: &Settings, mut stop: watch::Receiver<bool>) -> bool {
    let mut backoff = Backoff::new();
    loop {
        let migrated = tokio::select! {
            migrated = db::migrate(&settings.database_url) => migrated,
            () = stopped(&mut stop) => return false,
        };
        let Err(error) = migrated else {
            return true;
        };
        let delay = backoff.next_delay();
        tracing::warn!(%error, ?delay, "cannot prepare the database yet; retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return false,
        }
    }
}
