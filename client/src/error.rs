//! The client's error type: local validation and lookups, the local database, the server.

use tasksync_shared::validate::FieldError;

use crate::remote::RemoteError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field breaks the same rule the server would apply (checked before anything is queued).
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("no task matches {0:?}")]
    NotFound(String),
    #[error("{0:?} matches several tasks; give more of the id")]
    Ambiguous(String),
    #[error("a task with id {0} already exists")]
    Exists(uuid::Uuid),
    #[error("local database: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("local database: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("configuration: {0}")]
    Config(String),
}
