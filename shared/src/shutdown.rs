//! The shutdown signal both services wait for: Ctrl-C or SIGTERM, and the deadline that bounds
//! how long a stop may take.

use std::{future::Future, time::Duration};

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a signal that comes while the service is still starting is not
/// lost (and does not kill the process with the default action). If a handler cannot be
/// installed the other one still works. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let received = async |signal: Option<tokio::signal::unix::Signal>| match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            };
            tokio::select! {
                () = received(interrupt) => tracing::info!("received Ctrl-C, shutting down"),
                () = received(terminate) => tracing::info!("received SIGTERM, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("received Ctrl-C, shutting down");
    }
}

/// [`shutdown_signal`], after which the process has `limit` (`SHUTDOWN_TIMEOUT_MS`) to stop:
/// past it, it logs an error and exits with status 1, whatever its connections are doing.
pub fn shutdown_signal_with_deadline(limit: Duration) -> impl Future<Output = ()> + Send + 'static {
    let signal = shutdown_signal();
    async move {
        signal.await;
        arm_deadline(limit);
    }
}

/// Exits the process `limit` from now unless it has ended by then.
pub fn arm_deadline(limit: Duration) {
    // A thread, not a task: it must fire even when every runtime worker is stuck.
    let armed = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(limit);
            tracing::error!(
                ?limit,
                "did not stop within SHUTDOWN_TIMEOUT_MS of the signal; exiting anyway"
            );
            std::process::exit(1);
        });
    if let Err(error) = armed {
        tracing::warn!(%error, "cannot arm the shutdown deadline; stopping without one");
    }
}

/// Resolves once `stop` holds `true` (or its sender is gone). Unlike a bare `wait_for`, it
/// holds no borrow of the value across an await, so the futures that use it stay `Send`.
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
