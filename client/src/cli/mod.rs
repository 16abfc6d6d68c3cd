//! The `tasks` command line: local CRUD that works with no server, `sync` (once, or `--watch`)
//! and `status`. Every command takes `--json` and then prints one JSON document (`sync --watch`:
//! one per round, a line each); a failure prints `{"error": "..."}` and exits 1.

mod output;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::json;

use output::{ProgressBars, line, print_json, print_round, print_status, print_task, summary};

use crate::{
    config,
    error::{Error, Result},
    remote::{Remote, Token},
    store::{Edit, NewTask, QueueCounts, QueueState, QueuedOp, Store, SyncState},
    sync::{MAX_BATCH, Progress, SyncOptions, SyncReport, sync_once},
    watch::{Wake, WatchOptions, watch},
};

#[derive(Debug, Parser)]
#[command(
    name = "tasks",
    version,
    about = "Tasks that work offline and sync with a Task Sync server"
)]
pub struct Cli {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The local database (default: tasks.db in the platform's data directory).
    #[arg(long, global = true, env = "TASKS_DB")]
    db: Option<PathBuf>,
    /// The server (default: the config file's `url`, else http://localhost:3000).
    #[arg(long, global = true, env = "TASKS_URL")]
    url: Option<String>,
    /// A bearer token for the server (prefer TASKS_TOKEN or the config file: flags show in
    /// process lists).
    #[arg(long, global = true, env = "TASKS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The config file (default: config.toml in the platform's config directory).
    #[arg(long, global = true, env = "TASKS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a task.
    Add {
        title: String,
        #[arg(short, long)]
        description: Option<String>,
        /// Create it completed.
        #[arg(long)]
        done: bool,
    },
    /// List tasks.
    List {
        /// Include deleted tasks.
        #[arg(long)]
        all: bool,
    },
    /// Show one task (by id or a unique prefix of it).
    Show { id: String },
    /// Change a task's fields.
    Edit {
        id: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(short, long, conflicts_with = "clear_description")]
        description: Option<String>,
        #[arg(long)]
        clear_description: bool,
        #[arg(long, conflicts_with = "undone")]
        done: bool,
        #[arg(long)]
        undone: bool,
    },
    /// Mark a task completed (or not, with --undo).
    Done {
        id: String,
        #[arg(long)]
        undo: bool,
    },
    /// Delete a task.
    Rm { id: String },
    /// Push queued changes and pull the server's.
    Sync {
        /// Keep syncing: on the server's change events when it has them, else every --interval.
        #[arg(long)]
        watch: bool,
        /// Seconds between rounds when watching.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Stop watching after this many rounds.
        #[arg(long)]
        rounds: Option<u64>,
        /// Items per push (1 to 1000).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=MAX_BATCH as i64))]
        batch_size: Option<u16>,
        /// Tries of a request that gets no answer, a 429 or a 5xx.
        #[arg(long, default_value_t = 5)]
        attempts: u32,
    },
    /// What is queued, failed, and when the last sync ran (no server needed).
    Status,
}

/// Runs the command line.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!("{}", json!({ "error": e.to_string() }));
            } else {
                eprintln!("tasks: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Settings resolved from flags, environment and the config file.
struct Resolved {
    db: PathBuf,
    url: String,
    token: Option<String>,
    batch_size: Option<usize>,
}

fn resolve(cli: &Cli) -> Result<Resolved> {
    let file = config::load_file(cli.config.as_deref())?;
    let db = match cli.db.clone().or(file.db) {
        Some(db) => db,
        None => config::default_db_path()?,
    };
    Ok(Resolved {
        db,
        url: cli
            .url
            .clone()
            .or(file.url)
            .unwrap_or_else(|| config::DEFAULT_URL.into()),
        token: cli.token.clone().or(file.token).filter(|t| !t.is_empty()),
        batch_size: file.batch_size,
    })
}

fn execute(cli: Cli) -> Result<()> {
    let settings = resolve(&cli)?;
    let mut store = Store::open(&settings.db)?;
    let json = cli.json;
    match cli.command {
        Command::Add {
            title,
            description,
            done,
        } => {
            let task = store.add(NewTask {
                id: None,
                title,
                description,
                completed: done,
            })?;
            print_task(json, &task);
        }
        Command::List { all } => {
            let tasks = store.tasks(all)?;
            if json {
                print_json(&tasks);
            } else if tasks.is_empty() {
                println!("no tasks");
            } else {
                for task in &tasks {
                    println!("{}", line(task));
                }
            }
        }
        Command::Show { id } => {
            let id = store.resolve_id(&id)?;
            let task = store
                .task(id)?
                .ok_or_else(|| Error::NotFound(id.to_string()))?;
            print_task(json, &task);
        }
        Command::Edit {
            id,
            title,
            description,
            clear_description,
            done,
            undone,
        } => {
            let id = store.resolve_id(&id)?;
            let edit = Edit {
                title,
                description: if clear_description {
                    Some(None)
                } else {
                    description.map(Some)
                },
                completed: (done || undone).then_some(done),
            };
            print_task(json, &store.edit(id, edit)?);
        }
        Command::Done { id, undo } => {
            let id = store.resolve_id(&id)?;
            let edit = Edit {
                completed: Some(!undo),
                ..Edit::default()
            };
            print_task(json, &store.edit(id, edit)?);
        }
        Command::Rm { id } => {
            let id = store.resolve_id(&id)?;
            print_task(json, &store.delete(id)?);
        }
        Command::Sync {
            watch: watching,
            interval,
            rounds,
            batch_size,
            attempts,
        } => {
            let mut remote = Remote::new(
                &settings.url,
                settings.token.map(Token::new),
                Duration::from_secs(60),
            )?;
            remote.retry.attempts = attempts.max(1);
            let options = SyncOptions {
                batch_size: batch_size
                    .map(usize::from)
                    .or(settings.batch_size)
                    .unwrap_or(SyncOptions::default().batch_size),
                ..SyncOptions::default()
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Config(format!("cannot start the runtime: {e}")))?;
            let bar = ProgressBars::new(json);
            let progress = |p: Progress| bar.show(p);
            if watching {
                let options_watch = WatchOptions {
                    interval: Duration::from_secs(interval.max(1)),
                    rounds,
                };
                let mut round = 0u64;
                let mut each = |result: &Result<SyncReport>, wake: Wake| {
                    round += 1;
                    bar.finish();
                    print_round(json, round, result, wake);
                };
                runtime.block_on(watch(
                    &mut store,
                    &remote,
                    options,
                    options_watch,
                    async {
                        let _ = tokio::signal::ctrl_c().await;
                    },
                    &progress,
                    &mut each,
                ));
            } else {
                let report = runtime.block_on(sync_once(&mut store, &remote, options, &progress));
                bar.finish();
                let report = report?;
                if json {
                    print_json(&report);
                } else {
                    println!("{}", summary(&report));
                }
            }
        }
        Command::Status => {
            let status = StatusReport {
                db: settings.db.display().to_string(),
                url: settings.url,
                state: store.sync_state()?,
                queue: store.queue_counts()?,
                tasks: store.tasks(false)?.len(),
                failed: store.queue(QueueState::Error)?,
            };
            if json {
                print_json(&status);
            } else {
                print_status(&status);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct StatusReport {
    db: String,
    url: String,
    #[serde(flatten)]
    state: SyncState,
    queue: QueueCounts,
    tasks: usize,
    /// Operations the server rejected for good.
    failed: Vec<QueuedOp>,
}
