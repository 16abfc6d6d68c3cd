//! Failure injection for tests.
//!
//! The only way to make an operation fail on purpose is to hand [`crate::run_with_faults`] an
//! implementation of [`FaultInjector`]. The binary always runs with [`NoFaults`]; nothing in the
//! configuration or the HTTP api can switch injection on.

use tasksync_shared::Operation;

/// Decides whether applying an operation should fail, as if its statement had failed.
pub trait FaultInjector: std::fmt::Debug + Send + Sync + 'static {
    /// Called inside the transaction, before the operation is merged. `attempt` is 1 for the
    /// first try. An `Err` aborts the transaction with that message as the operation's error.
    fn before_apply(&self, op: &Operation, attempt: u32) -> Result<(), String>;
}

/// Production: nothing fails on purpose.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFaults;

impl FaultInjector for NoFaults {
    fn before_apply(&self, _op: &Operation, _attempt: u32) -> Result<(), String> {
        Ok(())
    }
}
