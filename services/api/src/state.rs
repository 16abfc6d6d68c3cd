//! What every handler can reach.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tasksync_shared::Settings;

use crate::broker::Broker;

#[derive(Clone, Debug)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Pool,
    pub broker: Broker,
}
