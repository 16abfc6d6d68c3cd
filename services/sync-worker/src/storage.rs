//! All SQL of the worker. Rows are read by column name.
//!
//! - [`tasks`]: the task rows (lock without writing, read, insert or update);
//! - [`log`]: the operation log (read, record, forget replayed errors, resolve failure records).
//!
//! The functions of both work inside the apply step's transaction and run one statement (none
//! when they have nothing to do), whatever the size of the batch.
//! - [`failures`]: failure records, written outside the apply transaction, each write one round
//!   bounded by `DB_TIMEOUT_MS`.

pub mod failures;
mod log;
mod tasks;

pub use log::{
    Decision, Logged, forget_decisions, logged_operations, record_operations, resolve_failures,
};
pub use tasks::{LockedTask, lock_key, lock_tasks, read_tasks, save_tasks};
