//! The api's `LISTEN` session: one connection of its own (not from the pool: a pooled
//! connection goes back to other work, and `LISTEN` belongs to a session), on the pool's
//! `DATABASE_URL` and connect settings. Each notification on [`CHANNEL`] wakes the streams of
//! the users it names ([`Hub::notify`]). When the session ends or cannot be opened, it is
//! opened again with backoff; once it listens again, every stream is woken, since notices sent
//! meanwhile are lost.

use std::future::poll_fn;

use tasksync_shared::{amqp::Backoff, config::SecretUrl, db, feed::CHANNEL, shutdown::stopped};
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use super::hub::Hub;

/// Notifications read off the connection and not yet handed to the hub: the connection waits
/// (and Postgres queues them) when the hub falls behind.
const BACKLOG: usize = 1_024;

/// Listens until `stop` is set, reconnecting with backoff.
pub async fn run(hub: Hub, database: SecretUrl, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new();
    loop {
        let ended = tokio::select! {
            ended = listen(&hub, &database, &mut backoff) => ended,
            () = stopped(&mut stop) => break,
        };
        hub.metrics().events_listening(false);
        let delay = backoff.next_delay();
        match ended {
            Ok(()) => tracing::warn!(?delay, "the feed LISTEN session closed; reopening"),
            Err(reason) => tracing::warn!(
                database = %database.redacted(),
                %reason,
                ?delay,
                "the feed LISTEN session failed; reopening (event streams fall back to their \
                 heartbeat reads meanwhile)"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => break,
        }
    }
    hub.metrics().events_listening(false);
}

/// One session: connect, `LISTEN`, wake everyone, then hand every notification to the hub until
/// the connection ends.
async fn listen(hub: &Hub, database: &SecretUrl, backoff: &mut Backoff) -> Result<(), String> {
    let (client, mut connection) = db::dedicated_connection(database.expose())
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::channel(BACKLOG);
    // Driving the connection is what carries the `LISTEN` below to the server and its
    // notifications back; both run in this one task, side by side.
    let drive = async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    };
    let serve = async {
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| e.to_string())?;
        backoff.reset();
        hub.metrics().events_listening(true);
        tracing::info!(channel = CHANNEL, "listening for feed notices");
        hub.wake_all();
        while let Some(payload) = rx.recv().await {
            hub.notify(&payload);
        }
        Ok(())
    };
    tokio::select! {
        ended = drive => ended,
        ended = serve => ended,
    }
}
