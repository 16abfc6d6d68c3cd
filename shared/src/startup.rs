//! What both services do around their work at start: check, beside it, that RabbitMQ and
//! Postgres accept their credentials, and stop when one refuses.
//!
//! Connection strings that cannot work are refused earlier, when the settings load. A service
//! whose broker or database is merely down starts anyway and connects when it can; these checks
//! wait with it and stop the process only on a refused login, which no retry can fix. Once a
//! login has succeeded, later refusals are left to the reconnect loops.

use std::{future::Future, io::Write, process::ExitCode};

use crate::{Settings, amqp, db};

/// Runs `service` while the login checks run beside it: the service's own result, or the first
/// refused login as an error naming the variable (`AMQP_URL` or `DATABASE_URL`).
pub async fn run_checked(
    settings: &Settings,
    connection_name: &str,
    service: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let checks = async {
        let refused = tokio::select! {
            Err(error) = amqp::check_login(&settings.amqp_url, connection_name) => {
                anyhow::Error::new(error)
            }
            Err(error) = db::check_login(&settings.database_url) => anyhow::Error::new(error),
            else => return std::future::pending().await,
        };
        tracing::error!(error = %refused, "stopping: a login was refused at start");
        Err::<(), _>(refused)
    };
    tokio::select! {
        result = service => result,
        result = checks => result,
    }
}

/// A binary's exit: on failure the error with its causes on one line to stderr (no backtrace:
/// these are configuration and connection errors, for an operator) and status 1.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
