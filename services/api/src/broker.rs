//! The api's link to RabbitMQ: publishing operations with publisher confirms, and learning
//! their outcomes from the worker.
//!
//! Each api instance declares its own exclusive, server-named reply queue on every connect and
//! puts its name in `reply_to` of what it publishes. The worker sends one reply message per api
//! instance per applied batch; [`Waiters`] hands each outcome to the request waiting for it.
//! With several replicas, each gets only its own replies. A reply that finds nobody waiting
//! (the request already answered 202) is dropped: the outcome is in the operation log.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use futures_util::{StreamExt, future::join_all};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{
        BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{FieldTable, ShortString},
};
use tasksync_shared::{
    Operation, OutcomeReport, Settings, amqp,
    amqp::Backoff,
    operation::ReplyBatch,
    shutdown::stopped,
    topology::{Topology, routing_key},
};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

/// Why an operation was not durably accepted. The client may retry.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("message broker unavailable")]
    NotConnected,
    #[error("message broker did not confirm in time")]
    Timeout,
    #[error("message broker refused the operation")]
    Refused,
    #[error("message broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("could not encode the operation: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What became of a submitted operation.
#[derive(Debug)]
pub enum Submitted {
    /// The worker decided it within the wait.
    Decided(OutcomeReport),
    /// The broker confirmed it; the worker has not decided yet.
    Accepted,
}

#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    channel: Channel,
    reply_queue: ShortString,
}

type Waiters = Mutex<HashMap<Uuid, oneshot::Sender<OutcomeReport>>>;

struct Inner {
    url: String,
    topology: Topology,
    publish_timeout: Duration,
    link: RwLock<Option<Link>>,
    waiters: Waiters,
}

/// Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("prefix", &self.inner.topology.prefix())
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Removes a waiter when the request stops waiting, however it stops.
struct WaitGuard<'a> {
    waiters: &'a Waiters,
    op_id: Uuid,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&self.op_id);
        }
    }
}

impl Broker {
    pub fn new(settings: &Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                url: settings.amqp_url.clone(),
                topology: Topology::from_settings(settings),
                publish_timeout: settings.publish_timeout,
                link: RwLock::new(None),
                waiters: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    fn link(&self) -> Option<Link> {
        self.inner.link.read().ok().and_then(|l| l.clone())
    }

    fn set_link(&self, link: Option<Link>) {
        if let Ok(mut current) = self.inner.link.write() {
            *current = link;
        }
    }

    pub fn is_connected(&self) -> bool {
        self.link()
            .is_some_and(|l| l.connection.status().connected() && l.channel.status().connected())
    }

    /// Keeps a connection up until `stop` turns true: connects with backoff, declares the
    /// topology, consumes replies, and starts over when the connection is lost.
    pub async fn maintain(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new();
        loop {
            let result = self.session(&mut stop, &mut backoff).await;
            self.set_link(None);
            match result {
                Ok(()) => return,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %format!("{error:#}"), ?delay, "broker connection lost; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stopped(&mut stop) => return,
                    }
                }
            }
        }
    }

    async fn session(
        &self,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let connection = Arc::new(amqp::connect(&self.inner.url, "tasksync-api").await?);
        let channel = connection.create_channel().await?;
        self.inner.topology.declare(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let reply_queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut replies = channel
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
        self.set_link(Some(Link {
            connection: connection.clone(),
            channel,
            reply_queue: reply_queue.name().clone(),
        }));
        backoff.reset();
        tracing::info!(reply_queue = %reply_queue.name(), "connected to the broker");

        loop {
            tokio::select! {
                () = stopped(stop) => {
                    self.set_link(None);
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
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
        let batch: ReplyBatch = match serde_json::from_slice(body) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "ignoring an unreadable reply");
                return;
            }
        };
        let Ok(mut waiters) = self.inner.waiters.lock() else {
            return;
        };
        for outcome in batch.outcomes {
            if let Some(waiter) = waiters.remove(&outcome.op_id) {
                let _ = waiter.send(outcome);
            }
        }
    }

    /// Publishes `ops` with publisher confirms, all in flight at once, and returns when the
    /// broker has confirmed every one. Any failure means some may not be durably accepted.
    pub async fn publish(&self, ops: &[Operation]) -> Result<(), PublishError> {
        let link = self.link().ok_or(PublishError::NotConnected)?;
        let exchange: ShortString = self.inner.topology.ops_exchange().into();
        let timestamp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
        let publishing = async {
            let mut confirms = Vec::with_capacity(ops.len());
            for op in ops {
                let id: ShortString = op.op_id.to_string().into();
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(id.clone())
                    .with_correlation_id(id)
                    .with_reply_to(link.reply_queue.clone())
                    .with_timestamp(timestamp);
                let confirm = link
                    .channel
                    .basic_publish(
                        exchange.clone(),
                        routing_key(op.kind).into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &op.encode()?,
                        properties,
                    )
                    .await?;
                confirms.push(confirm);
            }
            for confirmation in join_all(confirms).await {
                match confirmation? {
                    Confirmation::Ack(None) => {}
                    // Returned (unroutable) or nacked: not stored.
                    _ => return Err(PublishError::Refused),
                }
            }
            Ok(())
        };
        tokio::time::timeout(self.inner.publish_timeout, publishing)
            .await
            .map_err(|_| PublishError::Timeout)?
    }

    /// Publishes one operation and waits up to `wait` for the worker's outcome (no wait when
    /// `None`).
    pub async fn submit(
        &self,
        op: &Operation,
        wait: Option<Duration>,
    ) -> Result<Submitted, PublishError> {
        let Some(wait) = wait else {
            self.publish(std::slice::from_ref(op)).await?;
            return Ok(Submitted::Accepted);
        };
        // Register before publishing: the reply may come back before the confirm does.
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiters) = self.inner.waiters.lock() {
            waiters.insert(op.op_id, tx);
        }
        let _guard = WaitGuard {
            waiters: &self.inner.waiters,
            op_id: op.op_id,
        };
        self.publish(std::slice::from_ref(op)).await?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(report)) => Ok(Submitted::Decided(report)),
            _ => Ok(Submitted::Accepted),
        }
    }

    /// Ready messages in each durable queue, by name, read with passive declares on a
    /// throwaway channel (a missing queue closes the channel it is asked on).
    pub async fn queue_depths(&self) -> Result<Vec<(String, u32, u32)>, PublishError> {
        let link = self.link().ok_or(PublishError::NotConnected)?;
        let channel = link.connection.create_channel().await?;
        let mut depths = Vec::new();
        for name in self.inner.topology.queues() {
            let queue = channel
                .queue_declare(
                    name.clone().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            depths.push((name, queue.message_count(), queue.consumer_count()));
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(depths)
    }
}
