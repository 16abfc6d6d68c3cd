//! The shutdown signal both services wait for: Ctrl-C or SIGTERM, and the deadline that bounds
//! how long a stop may take.

use std::time::Duration;

/// Resolves on Ctrl-C or SIGTERM. If a handler cannot be installed the other one still works.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}

/// [`shutdown_signal`], after which the process has `limit` (`SHUTDOWN_TIMEOUT_MS`) to stop:
/// past it, it logs an error and exits with status 1, whatever its connections are doing.
pub async fn shutdown_signal_with_deadline(limit: Duration) {
    shutdown_signal().await;
    arm_deadline(limit);
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
