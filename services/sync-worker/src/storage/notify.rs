//! The feed notice ([`tasksync_shared::feed`]): one `pg_notify` in a transaction that decided
//! anything, which Postgres delivers to the apis' `LISTEN` connections at commit (never on
//! rollback), so that their live event streams read the feed again.

use deadpool_postgres::GenericClient;
use tasksync_shared::feed::CHANNEL;
use tokio_postgres::types::ToSql;

/// `$1` is the users' JSON ([`tasksync_shared::feed::users_json`]); the transaction id comes
/// from the database. The payload is built by concatenation, so its length is the users' JSON
/// plus a fixed few bytes (a `json_build_object` would re-space the array).
fn sql() -> String {
    format!(
        "SELECT pg_notify('{CHANNEL}', \
           '{{\"xid\":\"' || pg_current_xact_id()::text || '\",\"users\":' || $1::text || '}}')"
    )
}

/// Queues the notice in the transaction of `client`: one statement, sent with the others of the
/// round (pipelined), so it adds no round trip.
pub async fn notify_feed(
    client: &impl GenericClient,
    users_json: &str,
) -> Result<(), tokio_postgres::Error> {
    let statement = client.prepare_cached(&sql()).await?;
    let params: [&(dyn ToSql + Sync); 1] = [&users_json];
    client.query(&statement, &params).await?;
    Ok(())
}
