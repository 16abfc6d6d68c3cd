//! What every handler can reach.

use std::{future::Future, sync::Arc};

use deadpool_postgres::Pool;
use tasksync_shared::Settings;

use crate::{broker::Broker, error::ApiError, events::Hub};

#[derive(Clone, Debug)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Pool,
    pub broker: Broker,
    /// Development mode or the token verifier (for readiness and status).
    pub auth: crate::auth::Authenticator,
    /// The open event streams (`GET /api/events`) and what wakes them.
    pub events: Hub,
}

impl AppState {
    /// Runs one database round, bounded by `DB_TIMEOUT_MS`: a database that stopped answering
    /// (a frozen server, a silent network path) is "unavailable" (503), not a hung request.
    pub async fn db_round<T>(
        &self,
        round: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        tokio::time::timeout(self.settings.db_timeout, round)
            .await
            .unwrap_or_else(|_| Err(ApiError::database_unavailable()))
    }
}
