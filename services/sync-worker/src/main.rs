use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tasksync_shared::{
    Settings,
    config::help,
    db,
    shutdown::shutdown_signal_with_deadline,
    startup::{self, run_checked},
    telemetry,
};

/// Applies task operations from RabbitMQ to Postgres. Configured by environment variables
/// (listed below, and in .env.example).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume and apply operations (the default).
    Run,
    /// Create the database if needed, apply pending migrations, and exit.
    Migrate,
    /// Exit 0 when the worker of this host answers 200 on its `/ready` (consuming, database
    /// reachable), or with `--live` on its `/health` (its loop alive); for container health
    /// checks. Asks 127.0.0.1:WORKER_HTTP_PORT.
    Healthcheck {
        /// Ask `/health` (liveness) instead of `/ready`.
        #[arg(long)]
        live: bool,
    },
}

fn main() -> ExitCode {
    startup::exit_code(run())
}

/// The command line, with `--help` ending in the environment variables it reads.
fn cli() -> Cli {
    let matches = Cli::command()
        .after_help(help::environment_help())
        .get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let cli = cli();
    let settings = Settings::from_env()?;
    let command = cli.command.unwrap_or(Command::Run);
    // Spans are exported by the running worker only, not by its one-shot commands.
    let mut log_settings = settings.clone();
    if !matches!(command, Command::Run) {
        log_settings.otlp_endpoint = None;
    }
    let telemetry = telemetry::init(&log_settings, "tasksync-worker")?;
    match command {
        Command::Run => {
            // Listening for signals from here on, before anything slow.
            let shutdown = shutdown_signal_with_deadline(settings.shutdown_timeout);
            let work = sync_worker::run(settings.clone(), shutdown);
            let worked = run_checked(&settings, "tasksync-sync-worker-login-check", work).await;
            // The last spans leave now (bounded): the exporter's own thread does the sending.
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
            worked
        }
        Command::Migrate => Ok(db::migrate(&settings.database_url).await?),
        Command::Healthcheck { live } => {
            let probe = if live { "/health" } else { "/ready" };
            sync_worker::http::check(settings.worker_http_port, probe).await
        }
    }
}
