//! The sync-worker: the only writer of tasks.
//!
//! It consumes operations from the work queue, applies them in batches under field-level
//! last-write-wins, records each decision in the operation log in the same transaction, acks
//! after commit and reports outcomes to the api instance that published them.
//!
//! Layout:
//! - [`apply`]: the step, one batch in one transaction, no AMQP (tests call it directly);
//! - [`storage`]: all SQL of the worker;
//! - [`consumer`]: the loop around the step: connect, consume, ack/reject, reply, reconnect.

pub mod apply;
pub mod consumer;
pub mod storage;

use std::future::Future;

use tasksync_shared::{Settings, amqp::Backoff, db, shutdown::stopped};
use tokio::sync::watch;

/// Prepares the database (creating it and migrating, retrying until it answers) and consumes
/// until `shutdown` resolves. The batch in flight when it does is finished or handed back.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    let work = async {
        let mut backoff = Backoff::new();
        loop {
            match db::migrate(&settings.database_url).await {
                Ok(()) => break,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, ?delay, "cannot prepare the database yet; retrying");
                    let mut stop = stop.clone();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stopped(&mut stop) => return Ok(()),
                    }
                }
            }
        }
        let pool = db::pool(&settings.database_url, settings.db_pool_size)?;
        consumer::consume(&settings, &pool, stop.clone()).await;
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
