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
//! - [`faults`]: failure injection, reachable only from code (tests).

pub mod apply;
pub mod consumer;
pub mod faults;
pub mod storage;

use std::{future::Future, sync::Arc};

use faults::{FaultInjector, NoFaults};

use tasksync_shared::{Settings, amqp::Backoff, db, shutdown::stopped};
use tokio::sync::watch;

/// Prepares the database (creating it and migrating, retrying until it answers) and consumes
/// until `shutdown` resolves. Every start-up step races it; once consuming, the batches in flight
/// when it resolves are finished or handed back.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_with_faults(settings, shutdown, Arc::new(NoFaults)).await
}

/// [`run`] with failures injected by `injector` (tests only; the binary always uses [`run`]).
pub async fn run_with_faults(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
    injector: Arc<dyn FaultInjector>,
) -> anyhow::Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    let work = async {
        if !prepare_database(&settings, stop.clone()).await {
            return Ok(());
        }
        let pool = db::pool_for(&settings)?;
        consumer::consume(&settings, &pool, injector, stop.clone()).await;
        Ok::<_, anyhow::Error>(())
    };
    let signal = async {
        shutdown.await;
        let _ = stop_tx.send(true);
        std::future::pending::<()>().await;
    };
    tokio::select! {
        result = work => result,
        () = signal => Ok(()),
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

/// Whether a worker of this stack is at work: the schema exists and the work queue has at least
/// one consumer. Used as the container health check.
pub async fn healthcheck(settings: &Settings) -> anyhow::Result<()> {
    let check = async {
        let pool = db::pool(&settings.database_url, 1)?;
        db::database_ready(&pool).await?;
        let connection =
            tasksync_shared::amqp::connect(&settings.amqp_url, "tasksync-healthcheck").await?;
        let channel = connection.create_channel().await?;
        let topology = tasksync_shared::topology::Topology::from_settings(settings);
        let queue = tasksync_shared::amqp::inspect_queue(&channel, &topology.work_queue()).await?;
        let _ = connection.close(200, "done".into()).await;
        anyhow::ensure!(
            queue.consumer_count() > 0,
            "no consumer on {}",
            topology.work_queue()
        );
        Ok(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), check).await?
}
