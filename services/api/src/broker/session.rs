//! The broker session: connect with backoff, declare the topology and this instance's reply
//! queue, consume replies, and start over when the connection is lost.
//!
//! Shutdown is observed in every state. Connecting and setting up race the stop signal (a
//! broker that refuses the login, or stops answering mid-handshake, must not hold the api up),
//! and an established session closes its connection within [`CLOSE_TIMEOUT`].

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use lapin::{
    Connection, Consumer,
    options::{BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
};
use tasksync_shared::{amqp, amqp::Backoff, operation::ReplyBatch, shutdown::stopped};
use tokio::sync::watch;

use super::{Broker, Link};

/// Longest wait for the broker to acknowledge closing the connection at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

impl Broker {
    /// Keeps a connection up until `stop` turns true: connects with backoff, declares the
    /// topology, consumes replies, and starts over when the connection is lost. Returns
    /// promptly once `stop` turns true, whatever the connection is doing.
    pub async fn maintain(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new();
        loop {
            let connected = tokio::select! {
                connected = self.connect() => connected,
                () = stopped(&mut stop) => return,
            };
            let result = match connected {
                Ok((connection, replies)) => {
                    backoff.reset();
                    self.serve(connection, replies, &mut stop).await
                }
                Err(error) => Err(error),
            };
            self.set_link(None);
            let Err(error) = result else {
                return;
            };
            let delay = backoff.next_delay();
            tracing::warn!(error = %format!("{error:#}"), ?delay, "broker connection lost; reconnecting");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(&mut stop) => return,
            }
        }
    }

    /// Connects, declares the topology and the reply queue, and publishes the link.
    async fn connect(&self) -> anyhow::Result<(Arc<Connection>, Consumer)> {
        let connection =
            Arc::new(amqp::connect(&self.inner.url, &self.inner.connection_name).await?);
        match self.set_up(&connection).await {
            Ok(replies) => Ok((connection, replies)),
            Err(error) => {
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    connection.close(200, "setup failed".into()),
                )
                .await;
                Err(error)
            }
        }
    }

    async fn set_up(&self, connection: &Arc<Connection>) -> anyhow::Result<Consumer> {
        let channel = connection.create_channel().await?;
        self.inner.topology.declare(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let exclusive_queue = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let reply_queue = channel
            .queue_declare("".into(), exclusive_queue, FieldTable::default())
            .await?;
        let replies = channel
            .basic_consume(
                reply_queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut channels = vec![channel];
        while channels.len() < self.inner.publish_channels {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        self.set_link(Some(Link {
            connection: connection.clone(),
            channels: channels.into(),
            reply_queue: reply_queue.name().clone(),
        }));
        tracing::info!(
            reply_queue = %reply_queue.name(),
            publish_channels = self.inner.publish_channels,
            "connected to the broker"
        );
        Ok(replies)
    }

    /// Hands replies to their waiters until the connection fails (an error) or `stop` turns
    /// true (closes the connection, bounded, and returns `Ok`).
    async fn serve(
        &self,
        connection: Arc<Connection>,
        mut replies: Consumer,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                () = stopped(stop) => {
                    self.set_link(None);
                    let _ = tokio::time::timeout(
                        CLOSE_TIMEOUT,
                        connection.close(200, "shutdown".into()),
                    ).await;
                    return Ok(());
                }
                next = replies.next() => match next {
                    Some(Ok(delivery)) => self.deliver_replies(&delivery.data),
                    Some(Err(error)) => return Err(error.into()),
                    None => anyhow::bail!("reply consumer cancelled"),
                },
            }
        }
    }

    fn deliver_replies(&self, body: &[u8]) {
        match serde_json::from_slice::<ReplyBatch>(body) {
            Ok(batch) => self.inner.waiters.deliver(batch.outcomes),
            Err(error) => tracing::warn!(%error, "ignoring an unreadable reply"),
        }
    }
}
