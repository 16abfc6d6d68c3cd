//! The offline Task Sync client: a local SQLite store where every change is made first, a sync
//! queue of the operations not yet decided by the server, and the sync round that pushes them
//! and pulls what changed elsewhere (docs/sync-protocol.md; the design: docs/client.md).
//!
//! Layout:
//! - [`store`]: the SQLite store (schema and migrations, local CRUD, the queue, and merging
//!   what the server says with the shared last-write-wins rule).
//! - [`remote`]: the server's sync endpoints over HTTP, with bounded retries and `Retry-After`.
//! - [`sync`]: one sync round (push, resolve accepted operations, pull).
//! - [`watch`]: rounds in a loop, woken by server events or a timer.
//! - [`config`]: where the server, token and database come from.
//! - [`cli`]: the `tasks` command line (the binary's `main` only calls [`cli::run`]).

pub mod cli;
pub mod config;
pub mod error;
pub mod remote;
pub mod store;
pub mod sync;
pub mod watch;

pub use error::{Error, Result};
pub use remote::{Remote, RetryPolicy, Token};
pub use store::{Edit, NewTask, Store};
pub use sync::{SyncOptions, SyncReport, sync_once};
