//! All SQL of the worker's apply step: locking the tasks of a batch, reading the operation
//! log, and writing merged tasks and decided operations. Every function works inside the
//! caller's transaction and runs one statement (none when it has nothing to do), whatever the
//! size of the batch. Rows are read by column name.
//!
//! - [`tasks`]: the task rows (lock, save, remove unused placeholders);
//! - [`log`]: the operation log (read, record, forget replayed errors, resolve failure records).

mod log;
mod tasks;

pub use log::{
    Decision, Logged, forget_decisions, logged_operations, record_operations, resolve_failures,
};
pub use tasks::{LockedTask, delete_placeholders, lock_tasks, save_tasks};
