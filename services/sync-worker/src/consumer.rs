//! The loop around [`apply_batch`]: connect, declare, consume with bounded prefetch, gather a
//! batch, apply it, then ack, reject or reply. Reconnects with backoff when the broker goes
//! away, and waits for the database instead of failing operations when it does.

use std::{collections::HashMap, time::Duration};

use deadpool_postgres::Pool;
use futures_util::{FutureExt, StreamExt};
use lapin::{
    BasicProperties, Channel, Consumer,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    },
    types::FieldTable,
};
use tasksync_shared::{
    Operation, OutcomeReport, Settings, amqp,
    amqp::Backoff,
    operation::{ReplyBatch, SCHEMA_VERSION},
    shutdown::stopped,
    topology::Topology,
};
use tokio::sync::watch;

use crate::apply::{ApplyError, apply_batch};

/// Longest wait for an ack, a reject or a publish to be written before the session is given up.
const AMQP_TIMEOUT: Duration = Duration::from_secs(10);

/// How a consuming session ended.
enum SessionEnd {
    Stopped,
}

/// Consumes until `stop` turns true, reconnecting whenever the broker connection is lost.
pub async fn consume(settings: &Settings, pool: &Pool, mut stop: watch::Receiver<bool>) {
    let topology = Topology::new(&settings.amqp_prefix, settings.queue_type);
    let mut backoff = Backoff::new();
    loop {
        match session(settings, &topology, pool, &mut stop, &mut backoff).await {
            Ok(SessionEnd::Stopped) => return,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{error:#}"), ?delay, "broker session ended; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stopped(&mut stop) => return,
                }
            }
        }
    }
}

async fn session(
    settings: &Settings,
    topology: &Topology,
    pool: &Pool,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> anyhow::Result<SessionEnd> {
    let connection = amqp::connect(&settings.amqp_url, "tasksync-sync-worker").await?;
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    // Set at every (re)connect: a new channel starts with unlimited prefetch.
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            topology.work_queue().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %topology.work_queue(), prefetch = settings.prefetch, "consuming");
    backoff.reset();

    let result = consume_batches(settings, &channel, &mut consumer, pool, stop).await;
    if let Ok(SessionEnd::Stopped) = result {
        // Cancel, then close: the broker returns whatever was prefetched and not yet acked.
        let _ = tokio::time::timeout(
            AMQP_TIMEOUT,
            channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
        )
        .await;
        let _ = tokio::time::timeout(AMQP_TIMEOUT, connection.close(200, "shutdown".into())).await;
        tracing::info!("stopped consuming");
    }
    result
}

async fn consume_batches(
    settings: &Settings,
    channel: &Channel,
    consumer: &mut Consumer,
    pool: &Pool,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<SessionEnd> {
    loop {
        let first = tokio::select! {
            biased;
            () = stopped(stop) => return Ok(SessionEnd::Stopped),
            next = consumer.next() => next,
        };
        let mut batch = vec![next_delivery(first)?];
        // Take what has already arrived, without waiting for more.
        while batch.len() < settings.batch_size {
            match consumer.next().now_or_never() {
                Some(next) => batch.push(next_delivery(next)?),
                None => break,
            }
        }
        if process(channel, pool, batch, stop).await? {
            return Ok(SessionEnd::Stopped);
        }
    }
}

fn next_delivery(next: Option<lapin::Result<Delivery>>) -> anyhow::Result<Delivery> {
    match next {
        Some(delivery) => Ok(delivery?),
        None => anyhow::bail!("the broker cancelled the consumer"),
    }
}

/// Applies one batch and settles every delivery in it. Returns true when stopped while waiting
/// for the database (the batch was handed back to the broker).
async fn process(
    channel: &Channel,
    pool: &Pool,
    batch: Vec<Delivery>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut deliveries = Vec::with_capacity(batch.len());
    let mut ops = Vec::with_capacity(batch.len());
    for delivery in batch {
        match Operation::decode(&delivery.data) {
            Ok(op) => {
                ops.push(op);
                deliveries.push(delivery);
            }
            Err(error) => {
                // It can never succeed: park it (the work queue dead-letters rejections).
                tracing::error!(%error, message_id = ?delivery.properties.message_id(), "parking undecodable message");
                settle(delivery.acker.reject(BasicRejectOptions { requeue: false })).await?;
            }
        }
    }
    if ops.is_empty() {
        return Ok(false);
    }

    let mut backoff = Backoff::new();
    let reports = loop {
        match apply_batch(pool, &ops).await {
            Ok(reports) => break reports,
            Err(ApplyError::Unavailable(error)) => {
                // Not the operations' fault: hold them and wait for the database.
                let delay = backoff.next_delay();
                tracing::warn!(%error, ?delay, held = ops.len(), "database unavailable; pausing");
                let stopped = tokio::select! {
                    () = tokio::time::sleep(delay) => false,
                    () = stopped(stop) => true,
                };
                if stopped {
                    for d in &deliveries {
                        settle(d.acker.nack(BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        }))
                        .await?;
                    }
                    return Ok(true);
                }
            }
            Err(ApplyError::Rejected(error)) if ops.len() > 1 => {
                tracing::warn!(%error, size = ops.len(), "batch rejected; applying one by one");
                return apply_one_by_one(channel, pool, deliveries, ops, stop).await;
            }
            Err(ApplyError::Rejected(error)) => {
                tracing::error!(%error, op_id = %ops[0].op_id, "operation cannot be written; parking it");
                settle(
                    deliveries[0]
                        .acker
                        .reject(BasicRejectOptions { requeue: false }),
                )
                .await?;
                return Ok(false);
            }
        }
    };
    finish(channel, &deliveries, reports).await?;
    Ok(false)
}

/// Isolates the operation that made a batch fail by applying each on its own.
async fn apply_one_by_one(
    channel: &Channel,
    pool: &Pool,
    deliveries: Vec<Delivery>,
    ops: Vec<Operation>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    for (delivery, op) in deliveries.into_iter().zip(ops) {
        let stopped = Box::pin(process_decoded(channel, pool, delivery, op, stop)).await?;
        if stopped {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn process_decoded(
    channel: &Channel,
    pool: &Pool,
    delivery: Delivery,
    op: Operation,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut backoff = Backoff::new();
    loop {
        match apply_batch(pool, std::slice::from_ref(&op)).await {
            Ok(reports) => {
                finish(channel, std::slice::from_ref(&delivery), reports).await?;
                return Ok(false);
            }
            Err(ApplyError::Unavailable(error)) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, ?delay, "database unavailable; pausing");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stopped(stop) => {
                        settle(delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false })).await?;
                        return Ok(true);
                    }
                }
            }
            Err(ApplyError::Rejected(error)) => {
                tracing::error!(%error, op_id = %op.op_id, "operation cannot be written; parking it");
                settle(delivery.acker.reject(BasicRejectOptions { requeue: false })).await?;
                return Ok(false);
            }
        }
    }
}

/// Acks the applied deliveries (after commit), then sends each api instance one reply.
async fn finish(
    channel: &Channel,
    deliveries: &[Delivery],
    reports: Vec<OutcomeReport>,
) -> anyhow::Result<()> {
    for (delivery, report) in deliveries.iter().zip(&reports) {
        tracing::debug!(op_id = %report.op_id, task_id = %report.task_id, status = report.status.as_str(), "decided");
        settle(delivery.acker.ack(BasicAckOptions::default())).await?;
    }
    let mut by_reply_to: HashMap<&str, Vec<OutcomeReport>> = HashMap::new();
    for (delivery, report) in deliveries.iter().zip(reports) {
        if let Some(reply_to) = delivery.properties.reply_to() {
            by_reply_to
                .entry(reply_to.as_str())
                .or_default()
                .push(report);
        }
    }
    for (reply_to, outcomes) in by_reply_to {
        let body = serde_json::to_vec(&ReplyBatch {
            v: SCHEMA_VERSION,
            outcomes,
        })?;
        // Best effort: an api that went away simply answers 202 or its client asks again.
        let publish = channel.basic_publish(
            "".into(),
            reply_to.into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_content_type("application/json".into()),
        );
        tokio::time::timeout(AMQP_TIMEOUT, publish).await??;
    }
    Ok(())
}

async fn settle(action: impl Future<Output = lapin::Result<bool>>) -> anyhow::Result<()> {
    tokio::time::timeout(AMQP_TIMEOUT, action).await??;
    Ok(())
}
