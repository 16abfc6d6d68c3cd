//! The api's link to RabbitMQ: publishing operations with publisher confirms, and learning
//! their outcomes from the worker.
//!
//! Each api instance declares its own exclusive, server-named reply queue on every connect and
//! puts its name in `reply_to` of what it publishes. The worker sends one reply message per api
//! instance per applied batch; [`Waiters`] hands each outcome to the request waiting for it.
//! With several replicas, each gets only its own replies. A reply that finds nobody waiting
//! (the request already answered 202) is dropped: the outcome is in the operation log.
//! Several requests may wait for the same op id at once (a client re-pushing a batch whose
//! answer it lost while the first push still waits); each of them gets the outcome.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, future::join_all, stream::FuturesUnordered};
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

/// Per op id, the requests waiting for its outcome, each under the token of its registration.
type Waiters = Mutex<HashMap<Uuid, Vec<(u64, oneshot::Sender<OutcomeReport>)>>>;

struct Inner {
    url: String,
    topology: Topology,
    publish_timeout: Duration,
    link: RwLock<Option<Link>>,
    waiters: Waiters,
    next_token: AtomicU64,
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

/// Removes a request's waiters when it stops waiting, however it stops, leaving those of other
/// requests for the same op ids in place.
struct WaitGuard<'a> {
    waiters: &'a Waiters,
    token: u64,
    op_ids: Vec<Uuid>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Ok(mut waiters) = self.waiters.lock() else {
            return;
        };
        for op_id in &self.op_ids {
            if let Some(list) = waiters.get_mut(op_id) {
                list.retain(|(token, _)| *token != self.token);
                if list.is_empty() {
                    waiters.remove(op_id);
                }
            }
        }
    }
}

impl Broker {
    pub fn new(settings: &Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                url: settings.amqp_url.expose().to_string(),
                topology: Topology::from_settings(settings),
                publish_timeout: settings.publish_timeout,
                link: RwLock::new(None),
                waiters: Mutex::new(HashMap::new()),
                next_token: AtomicU64::new(0),
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
            for (_, waiter) in waiters.remove(&outcome.op_id).unwrap_or_default() {
                let _ = waiter.send(outcome.clone());
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

    /// Registers a waiter for each of `op_ids`; the guard unregisters them all.
    fn register(&self, op_ids: &[Uuid]) -> (Vec<oneshot::Receiver<OutcomeReport>>, WaitGuard<'_>) {
        let token = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        let mut receivers = Vec::with_capacity(op_ids.len());
        if let Ok(mut waiters) = self.inner.waiters.lock() {
            for op_id in op_ids {
                let (tx, rx) = oneshot::channel();
                waiters.entry(*op_id).or_default().push((token, tx));
                receivers.push(rx);
            }
        }
        let guard = WaitGuard {
            waiters: &self.inner.waiters,
            token,
            op_ids: op_ids.to_vec(),
        };
        (receivers, guard)
    }

    /// Publishes one operation and waits up to `wait` for the worker's outcome (no wait when
    /// `None`).
    pub async fn submit(
        &self,
        op: &Operation,
        wait: Option<Duration>,
    ) -> Result<Submitted, PublishError> {
        let mut outcomes = self.submit_many(std::slice::from_ref(op), wait).await?;
        Ok(match outcomes.remove(&op.op_id) {
            Some(report) => Submitted::Decided(report),
            None => Submitted::Accepted,
        })
    }

    /// Publishes `ops` (confirms pipelined) and waits up to `wait` (none when `None`) for the
    /// worker's outcomes, returning those that came in time, by op id. An error means none of
    /// them may be assumed accepted.
    pub async fn submit_many(
        &self,
        ops: &[Operation],
        wait: Option<Duration>,
    ) -> Result<HashMap<Uuid, OutcomeReport>, PublishError> {
        let Some(wait) = wait else {
            self.publish(ops).await?;
            return Ok(HashMap::new());
        };
        // Register before publishing: a reply may come back before the confirms do.
        let op_ids: Vec<Uuid> = ops.iter().map(|op| op.op_id).collect();
        let (receivers, _guard) = self.register(&op_ids);
        self.publish(ops).await?;
        let mut outcomes = HashMap::with_capacity(ops.len());
        let mut replies: FuturesUnordered<_> = receivers.into_iter().collect();
        let _ = tokio::time::timeout(wait, async {
            while let Some(reply) = replies.next().await {
                if let Ok(report) = reply {
                    outcomes.insert(report.op_id, report);
                }
            }
        })
        .await;
        Ok(outcomes)
    }

    /// Ready messages in each durable queue, by name, read with passive declares on a
    /// throwaway channel (a missing queue closes the channel it is asked on).
    pub async fn queue_depths(&self) -> Result<Vec<(String, u32, u32)>, PublishError> {
        let link = self.link().ok_or(PublishError::NotConnected)?;
        let channel = link.connection.create_channel().await?;
        let mut depths = Vec::new();
        for name in self.inner.topology.queues() {
            let queue = amqp::inspect_queue(&channel, &name).await?;
            depths.push((name, queue.message_count(), queue.consumer_count()));
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(depths)
    }
}
