//! `taskctl`: the ops tool of Task Sync. Same configuration variables as the services
//! (`DATABASE_URL`, `AMQP_URL`, `AMQP_PREFIX`, `AMQP_QUEUE_TYPE`, `RETRY_DELAYS_MS`).
//!
//! Layout: [`Cli`] (the commands), [`queues`] (depths), [`dlq`] (dead letters), [`table`]
//! (human output). Every command prints a table, or JSON with `--json`.
//!
//! Where the facts come from: AMQP cannot fetch one chosen message, and a peek that requeues
//! counts as a delivery on quorum queues, so `dlq list` and `dlq show` read the failure records
//! the worker keeps in Postgres, while `dlq replay` and `dlq purge` act on the parking queue and
//! then update those records. `dlq list` reports the queue depth beside the record count, so a
//! difference (for instance messages the broker dead-lettered after its delivery limit, which
//! have no record) is visible.
//!
//! Exit codes: 0 success; 1 failure (a dependency unreachable, the broker refused); 2 usage
//! error; 3 a named message was not found; 4 aborted (purge not confirmed).

pub mod dlq;
pub mod queues;
pub mod table;

use std::io::{BufRead, Write};

use clap::{Parser, Subcommand};
use tasksync_shared::Settings;

/// Inspect Task Sync's queues and dead letters.
#[derive(Debug, Parser)]
#[command(name = "taskctl", version)]
pub struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Depth of the work, retry and parking queues: ready, unacknowledged, consumers, rates.
    Queues {
        /// RabbitMQ management API, for unacknowledged counts and rates
        /// (e.g. http://guest:guest@127.0.0.1:15672). Without it, AMQP gives ready and
        /// consumers only.
        #[arg(long, env = "RABBITMQ_MANAGEMENT_URL")]
        management_url: Option<String>,
    },
    /// Parked operations (the dead-letter queue).
    #[command(subcommand)]
    Dlq(Dlq),
}

#[derive(Debug, Subcommand)]
pub enum Dlq {
    /// Parked operations, newest failure first, with counts by error.
    List {
        /// Only those whose last error contains this text.
        #[arg(long)]
        error: Option<String>,
        /// Only this task's.
        #[arg(long)]
        task: Option<uuid::Uuid>,
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One parked operation: record, failure history and message body.
    Show {
        /// The op id (or the message id given to an undecodable message).
        id: String,
    },
    /// Re-publishes parked operations to the work queue with a fresh attempt count; each is
    /// removed from the parking queue only after the broker confirmed its copy.
    Replay {
        /// Op ids (or message ids) to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Replay every parked message.
        #[arg(long)]
        all: bool,
        /// Show what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many replays per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
    },
    /// Deletes every parked message (asks first).
    Purge {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// Why a command failed, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("aborted")]
    Aborted,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl CtlError {
    pub const FAILED: u8 = 1;
    pub const NOT_FOUND: u8 = 3;
    pub const ABORTED: u8 = 4;

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotFound(_) => Self::NOT_FOUND,
            Self::Aborted => Self::ABORTED,
            Self::Failed(_) => Self::FAILED,
        }
    }
}

impl From<tokio_postgres::Error> for CtlError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Failed(e.into())
    }
}

impl From<lapin::Error> for CtlError {
    fn from(e: lapin::Error) -> Self {
        Self::Failed(e.into())
    }
}

/// Runs one command, writing its output to `out` and reading confirmations from `input`.
pub async fn run(
    cli: Cli,
    settings: &Settings,
    out: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result<(), CtlError> {
    match cli.command {
        Command::Queues { management_url } => {
            queues::show(settings, management_url.as_deref(), cli.json, out).await
        }
        Command::Dlq(Dlq::List {
            error,
            task,
            user,
            limit,
        }) => {
            let filter = dlq::Filter {
                error,
                task,
                user,
                limit,
            };
            dlq::list(settings, &filter, cli.json, out).await
        }
        Command::Dlq(Dlq::Show { id }) => dlq::show(settings, &id, cli.json, out).await,
        Command::Dlq(Dlq::Replay {
            ids,
            all,
            dry_run,
            rate,
        }) => {
            let selection = if all { None } else { Some(ids) };
            dlq::replay(settings, selection, dry_run, rate, cli.json, out).await
        }
        Command::Dlq(Dlq::Purge { yes }) => dlq::purge(settings, yes, cli.json, out, input).await,
    }
}

/// Writes a line, turning an I/O error into a command failure.
pub(crate) fn emit(out: &mut dyn Write, text: &str) -> Result<(), CtlError> {
    writeln!(out, "{text}").map_err(|e| CtlError::Failed(e.into()))
}
