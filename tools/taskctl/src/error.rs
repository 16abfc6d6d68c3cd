//! Why a command failed, worded for an operator, with its exit code.
//!
//! Library errors never reach the terminal as they are: a lapin error is described by
//! [`crate::broker::describe`], a Postgres error by its message, always with what was being done.

use tasksync_shared::db;

/// Why a command failed. The exit code of each variant is documented in the crate doc.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line asks for something that cannot be done (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A named message or queue does not exist (exit 3).
    #[error("{0}")]
    NotFound(String),
    /// The operator declined a confirmation (exit 4).
    #[error("aborted")]
    Aborted,
    /// `taskctl op`: neither the operation log nor a failure record knows the operation
    /// (exit 5). Not a failure of the command: the operation may still be queued.
    #[error("{0}")]
    Unknown(String),
    /// A dependency is unreachable or refused (exit 1).
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl CtlError {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const ABORTED: u8 = 4;
    pub const UNKNOWN: u8 = 5;

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => Self::USAGE,
            Self::NotFound(_) => Self::NOT_FOUND,
            Self::Aborted => Self::ABORTED,
            Self::Unknown(_) => Self::UNKNOWN,
            Self::Failed(_) => Self::FAILED,
        }
    }

    /// A failure described in words.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(anyhow::Error::msg(message.into()))
    }

    /// A Postgres error while `doing` something.
    pub fn postgres(doing: &str, error: &tokio_postgres::Error) -> Self {
        let reason = match error.as_db_error() {
            Some(db) => db.message().to_string(),
            None => db::describe(error),
        };
        Self::failed(format!("{doing} (Postgres, DATABASE_URL): {reason}"))
    }
}

impl From<serde_json::Error> for CtlError {
    fn from(e: serde_json::Error) -> Self {
        Self::failed(format!("writing JSON: {e}"))
    }
}
