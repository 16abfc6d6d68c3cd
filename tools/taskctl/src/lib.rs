//! `taskctl`: the ops tool of Task Sync. Same configuration variables as the services
//! (`DATABASE_URL`, `AMQP_URL`, `AMQP_PREFIX`, `AMQP_QUEUE_TYPE`, `RETRY_DELAYS_MS`).
//!
//! Layout: [`Cli`] (the commands), [`queues`] (depths), [`dlq`] (dead letters, one module per
//! command), [`ops`] (where operations stand: `op`, `ops list`), [`devices`] (devices' sync
//! health), [`conflicts`] (the conflict history), [`prune`] (one retention sweep now),
//! [`records`] (every SQL statement), [`broker`] (AMQP, with errors in words),
//! [`error`] (exit codes), [`table`] (human output). Every command prints a table, or JSON with
//! `--json`; prompts and errors go to stderr.
//!
//! Where the facts come from: AMQP cannot fetch one chosen message, and a peek that requeues
//! counts as a delivery on quorum queues, so `dlq list`, `dlq show` and `dlq replay --dry-run`
//! read the failure records the worker keeps in Postgres (and the queue's depth), while
//! `dlq replay` and `dlq purge` act on the parking queue and then update those records. A
//! replay never requeues a message it walks past (see [`dlq::parking`]). `dlq list` reports the
//! queue depth beside the record count, so a difference (for instance messages the broker
//! dead-lettered after its delivery limit, which have no record) is visible.
//!
//! Exit codes: 0 success; 1 failure (Postgres or RabbitMQ unreachable, the broker refused);
//! 2 usage error (including `dlq purge --json` without `--yes`); 3 not found (a named message,
//! or a queue: most likely a wrong `AMQP_PREFIX`); 4 aborted (purge not confirmed); 5 unknown
//! (`op`: neither the operation log nor a failure record knows the op id).

pub mod broker;
pub mod conflicts;
pub mod devices;
pub mod dlq;
pub mod error;
pub mod ops;
pub mod prune;
pub mod queues;
pub mod records;
pub mod table;

use std::io::{BufRead, Write};

use clap::{Parser, Subcommand};
use serde::Serialize;
use tasksync_shared::{Settings, failure::RecordState};

pub use error::CtlError;

/// Where a command writes and reads: results to `out`, prompts to `err`, answers from `input`.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub input: &'a mut dyn BufRead,
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io").finish_non_exhaustive()
    }
}

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
    /// Where one operation stands: decided (with its outcome), retrying (and when the next
    /// attempt comes), parked (why, when, whether replayed), or unknown (exit 5).
    Op {
        /// The operation's id (the `Operation-Id` of its write).
        op_id: uuid::Uuid,
    },
    /// Operations that are not decided yet or never will be.
    #[command(subcommand)]
    Ops(Ops),
    /// Devices that named themselves (`Device-Id`): pushes, pending, failures, the latest pull
    /// and its lag; those with no pull within --stale-after are flagged stale.
    Devices {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// A device with no pull for longer than this (or never) is stale: 90s, 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = devices::parse_age)]
        stale_after: std::time::Duration,
    },
    /// The conflict history (fields writes lost), newest first, of one task or one user.
    #[command(group(clap::ArgGroup::new("of").required(true).args(["task", "user"])))]
    Conflicts {
        /// One task's history.
        #[arg(long)]
        task: Option<uuid::Uuid>,
        /// One user's history, over all their tasks.
        #[arg(long)]
        user: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
    },
    /// One retention sweep now: removes decisions, tombstones and final failure records older
    /// than the horizon (what the sync-worker does every RETENTION_SWEEP_SECS). Pull cursors
    /// older than what it removes then answer 410 cursor_expired and their clients resync.
    Prune {
        /// The horizon (RFC 3339); default RETENTION_DAYS ago.
        #[arg(long)]
        before: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Ops {
    /// Operations in one state, newest failure first.
    List {
        /// `retrying` (an attempt failed, another will come) or `parked` (every attempt
        /// failed).
        #[arg(long, value_enum)]
        state: StuckState,
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// Only this task's.
        #[arg(long)]
        task: Option<uuid::Uuid>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
    },
}

/// The states `ops list` lists.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StuckState {
    Retrying,
    Parked,
}

impl From<StuckState> for RecordState {
    fn from(state: StuckState) -> Self {
        match state {
            StuckState::Retrying => Self::Retrying,
            StuckState::Parked => Self::Parked,
        }
    }
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
        /// The op id, or the record key given to an undecodable message.
        id: String,
    },
    /// Re-publishes parked operations straight to the work queue with a fresh attempt count;
    /// each is removed from the parking queue only after the broker confirmed its copy.
    /// Messages walked past are moved to the tail, never requeued (no delivery is spent).
    Replay {
        /// Op ids, record keys or publishers' message ids to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Replay every parked message.
        #[arg(long)]
        all: bool,
        /// Show what would be replayed, from the failure records; take nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many replays per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
    },
    /// Deletes every parked message (asks first, on stderr).
    Purge {
        /// Do not ask (required with --json).
        #[arg(long)]
        yes: bool,
    },
}

/// Runs one command.
pub async fn run(cli: Cli, settings: &Settings, io: Io<'_>) -> Result<(), CtlError> {
    match cli.command {
        Command::Queues { management_url } => {
            queues::show(settings, management_url.as_deref(), cli.json, io.out).await
        }
        Command::Dlq(Dlq::List {
            error,
            task,
            user,
            limit,
        }) => {
            let filter = records::Filter {
                error,
                task,
                user,
                limit,
            };
            dlq::list::list(settings, &filter, cli.json, io.out).await
        }
        Command::Dlq(Dlq::Show { id }) => dlq::show::show(settings, &id, cli.json, io.out).await,
        Command::Dlq(Dlq::Replay {
            ids,
            all,
            dry_run,
            rate,
        }) => {
            let request = dlq::replay::Request {
                selection: (!all).then_some(ids),
                dry_run,
                rate,
            };
            dlq::replay::replay(settings, request, cli.json, io.out).await
        }
        Command::Dlq(Dlq::Purge { yes }) => dlq::purge::purge(settings, yes, cli.json, io).await,
        Command::Op { op_id } => ops::show::show(settings, op_id, cli.json, io.out).await,
        Command::Ops(Ops::List {
            state,
            user,
            task,
            limit,
        }) => {
            let filter = records::StuckFilter {
                state: state.into(),
                task,
                user,
                limit,
            };
            ops::list::list(settings, &filter, cli.json, io.out).await
        }
        Command::Devices { user, stale_after } => {
            devices::devices(settings, user.as_deref(), stale_after, cli.json, io.out).await
        }
        Command::Conflicts { task, user, limit } => {
            let of = match (task, user) {
                (Some(task), _) => records::ConflictsOf::Task(task),
                (None, Some(user)) => records::ConflictsOf::User(user),
                (None, None) => return Err(CtlError::Usage("give --task ID or --user U".into())),
            };
            conflicts::conflicts(settings, &of, limit, cli.json, io.out).await
        }
        Command::Prune { before } => prune::prune(settings, before, cli.json, io.out).await,
    }
}

/// Writes a line, turning an I/O error into a command failure.
pub(crate) fn emit(out: &mut dyn Write, text: &str) -> Result<(), CtlError> {
    writeln!(out, "{text}").map_err(|e| CtlError::failed(format!("writing output: {e}")))
}

/// Writes a value as pretty JSON.
pub(crate) fn emit_json(out: &mut dyn Write, value: &impl Serialize) -> Result<(), CtlError> {
    emit(out, &serde_json::to_string_pretty(value)?)
}
