//! Everything the Task Sync services agree on.
//!
//! Layout:
//! - [`config`]: the typed settings read from the environment (SPEC §6), shared by every binary.
//! - [`model`]: the task as clients see it and how it is read from Postgres.
//! - [`operation`]: operations, the message the api publishes for each one (with its schema
//!   version) and the outcome reports the worker sends back.
//! - [`etag`]: the task's entity tag and the `If-Match` / `If-None-Match` conditions.
//! - [`merge`]: the pure last-write-wins merge (SPEC §4). No I/O.
//! - [`sync`]: the wire shapes of offline sync (push, changes feed, operation lookup), shared by
//!   the api and the offline client.
//! - [`validate`]: the field rules the api and the worker both apply.
//! - [`topology`]: exchange and queue names under the configured prefix, and their declaration.
//! - [`amqp`]: connecting to RabbitMQ with backoff.
//! - [`failure`]: the headers a failed operation carries through retries and parking.
//! - [`feed`]: the notice the worker sends (Postgres `NOTIFY`) when a transaction moved the
//!   changes feed, which wakes the apis' live event streams.
//! - [`db`]: the Postgres pool, database creation and the embedded migrations.
//! - [`retention`]: the sweep that prunes history below the retention horizon (worker and
//!   `taskctl prune`).
//! - [`telemetry`], [`startup`] and [`shutdown`]: the process plumbing both services share
//!   (logging, the login checks at start, signals and the stop deadline).

pub mod amqp;
pub mod config;
pub mod db;
pub mod device;
pub mod etag;
pub mod failure;
pub mod feed;
pub mod merge;
pub mod model;
pub mod operation;
pub mod retention;
pub mod shutdown;
pub mod startup;
pub mod sync;
pub mod telemetry;
pub mod topology;
pub mod validate;

pub use config::Settings;
pub use model::{SyncStatus, Task};
pub use operation::{OpKind, Operation, OperationFields, OutcomeReport, OutcomeStatus};
