//! `taskctl dlq`: parked operations. `list` and `show` read the failure records in Postgres;
//! `replay` and `purge` act on the parking queue and then update those records.
//!
//! Layout: [`list`], [`show`], [`replay`], [`purge`] (one command each), [`parking`] (taking
//! messages from the parking queue without spending its delivery budget).

pub mod list;
pub mod parking;
pub mod purge;
pub mod replay;
pub mod show;
