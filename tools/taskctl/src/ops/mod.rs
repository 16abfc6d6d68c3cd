//! `taskctl op` and `taskctl ops list`: where operations stand, from the operation log and the
//! failure records in Postgres. Nothing here takes a message from a queue: AMQP cannot look at
//! one chosen message, and a look that requeues costs a delivery.
//!
//! Layout: [`standing`] (what the log and the record together say, and when the next attempt
//! is due: pure), [`show`] (`op OP_ID`), [`list`] (`ops list`).

pub mod list;
pub mod show;
pub mod standing;
