//! Command line: one subcommand per scenario, the options every scenario shares.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "taskbench", about = "Load generator for Task Sync")]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Creates then updates (`POST` / `PUT /api/tasks`) at a fixed number of connections.
    RestWrite,
    /// `--connections` pushers, each sending `--items`-item `/api/batch` pushes of creates.
    Batch,
    /// `GET /api/tasks/{id}` of seeded tasks.
    ReadOne,
    /// `GET /api/tasks` of the bench user (seeded to about 1,000 rows).
    ReadList,
    /// 20% creates, 20% updates, 60% `GET /api/tasks/{id}`.
    Mixed,
    /// The broker + database limit: publish with confirms → consume → batched upsert → ack.
    Ceiling,
    /// `--subscribers` live streams (`GET /api/events`) while creates go in at `--rate`/s:
    /// apply → event latency, and events received against owed.
    Events,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The api to drive.
    #[arg(long, global = true, default_value = "http://127.0.0.1:3000")]
    pub base_url: String,
    /// Allow a host other than 127.0.0.1, localhost or ::1.
    #[arg(long, global = true)]
    pub allow_remote: bool,
    /// Concurrent connections (pushers for `batch`, publishers for `ceiling`).
    #[arg(long, global = true, default_value_t = 16)]
    pub connections: usize,
    /// How long to send, in seconds (ignored when `--requests` is given).
    #[arg(long, global = true, default_value_t = 10.0)]
    pub duration: f64,
    /// Send exactly this many requests (messages for `ceiling`) instead of running for a time.
    #[arg(long, global = true)]
    pub requests: Option<u64>,
    /// Items per `/api/batch` push; deliveries per upsert for `ceiling`.
    #[arg(long, global = true, default_value_t = 1000)]
    pub items: usize,
    /// Send `Prefer: respond-async` on writes (answers 202 once published).
    #[arg(long, global = true)]
    pub respond_async: bool,
    /// Bearer token for every request.
    #[arg(long, global = true, env = "TASKBENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Mint an HS256 token for this user with `JWT_SECRET` (when no `--token`).
    #[arg(long, global = true, default_value = "taskbench")]
    pub user: String,
    /// The api's database: lets the bench see applied operations in the operation log, and
    /// hosts the scratch database of `ceiling`.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The broker, for `ceiling`.
    #[arg(
        long,
        global = true,
        env = "AMQP_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// `quorum` or `classic`: the `ceiling` queue's type (match the services' `AMQP_QUEUE_TYPE`).
    #[arg(long, global = true, default_value = "quorum")]
    pub queue_type: String,
    /// Longest wait, in seconds, for every accepted operation to reach the log.
    #[arg(long, global = true, default_value_t = 60.0)]
    pub drain_timeout: f64,
    /// The api's PID, to report its peak RSS.
    #[arg(long, global = true)]
    pub api_pid: Option<u32>,
    /// The worker's PID, to report its peak RSS.
    #[arg(long, global = true)]
    pub worker_pid: Option<u32>,
    /// Print the report as JSON (and no progress bar).
    #[arg(long, global = true)]
    pub json: bool,
    /// `events`: open event streams (each its own user when JWT_SECRET is set).
    #[arg(long, global = true, default_value_t = 1000)]
    pub subscribers: usize,
    /// `events`: creates per second while the streams are open.
    #[arg(long, global = true, default_value_t = 50.0)]
    pub rate: f64,
}

impl Common {
    pub fn run_time(&self) -> Duration {
        Duration::from_secs_f64(self.duration.clamp(0.1, 86_400.0))
    }

    pub fn drain_time(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout.clamp(0.0, 3_600.0))
    }
}
