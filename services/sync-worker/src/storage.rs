//! All SQL of the worker. Rows are read by column name.
//!
//! - [`tasks`]: the task rows (lock without writing, read, insert or update);
//! - [`log`]: the operation log (read, record, forget replayed errors, resolve failure records).
//!
//! - [`conflicts`]: the conflict history (fields arriving writes lost), and its pruning;
//! - [`devices`]: the devices' decided counts.
//!
//! The functions of these work inside the apply step's transaction; each of their statements is
//! sent once per batch (not at all when it has nothing to do), whatever the size of the batch.
//! - [`heartbeat`]: the worker's row of work in flight, written every second for `/api/status`;
//! - [`notify`]: the feed notice (`pg_notify`) of a transaction that decided anything, sent
//!   with the transaction's other writes;
//! - [`failures`]: failure records, written outside the apply transaction, each write one round
//!   bounded by `DB_TIMEOUT_MS`.
//!
//! Every statement is prepared once per connection (`prepare_cached`) and then costs one round
//! trip; statements that do not depend on each other's answers are sent together (pipelined:
//! the server runs them one after another, in the order sent).

pub mod conflicts;
mod devices;
pub mod failures;
pub mod heartbeat;
mod log;
mod notify;
mod tasks;

use tokio_postgres::error::SqlState;

pub use conflicts::{Conflict, record_conflicts};
pub use devices::{DeviceTally, count_decisions};
pub use log::{Decision, Logged, logged_operations, write_decisions};
pub use notify::notify_feed;
pub use tasks::{LockedTask, lock_key, lock_tasks, read_tasks, save_tasks};

/// The results of statements sent together in one transaction, or the error that failed them.
/// After a statement fails, the ones sent behind it fail only because the transaction is aborted
/// (SQLSTATE 25P02): the error reported is the one that caused it.
pub fn both<A, B>(
    a: Result<A, tokio_postgres::Error>,
    b: Result<B, tokio_postgres::Error>,
) -> Result<(A, B), tokio_postgres::Error> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(if aborted(&a) { b } else { a }),
    }
}

fn aborted(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION)
}
