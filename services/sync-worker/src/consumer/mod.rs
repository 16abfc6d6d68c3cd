//! The loop around the apply step: connect, declare, consume with bounded prefetch, gather a
//! batch, apply it, then ack, retry, park or reply. Reconnects with backoff when the broker goes
//! away, and waits for the database instead of failing operations when it does.
//!
//! What happens to each delivery:
//! - undecodable, or of an unknown schema version: parked at once with the reason;
//! - (classic queues only) redelivered more than [`CRASH_LIMIT`] times: parked, as a message
//!   that may be crashing the worker (quorum queues do this themselves with a delivery limit);
//! - applied: acked after the commit, its outcome sent to the api that published it;
//! - the database unreachable: held, retried with backoff, no attempt spent;
//! - the operation's own statement failed: the batch is split to isolate it; it is republished
//!   to the delay queue of its attempt, or after the last retry parked with outcome `error`.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use futures_util::{FutureExt, StreamExt};
use lapin::{
    Channel, Consumer,
    message::Delivery,
    options::{
        BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
        ConfirmSelectOptions,
    },
    types::FieldTable,
};
use tasksync_shared::{
    Operation, Settings, amqp,
    amqp::Backoff,
    config::QueueType,
    failure::{self, header},
    shutdown::stopped,
    topology::Topology,
};
use tokio::sync::watch;

mod failing;
mod settle;

use failing::{attempt_of, fail_attempt, headers_of, original_routing_key, park};
use settle::{ack, finish, publish, settle};

use crate::{
    apply::{ApplyError, Attempt, apply_batch},
    faults::FaultInjector,
};

/// Longest wait for an ack, a reject or a publish confirm before the session is given up.
const AMQP_TIMEOUT: Duration = Duration::from_secs(10);

/// Redeliveries after which a classic work queue's message is parked as a likely crash loop.
pub const CRASH_LIMIT: u32 = 5;

/// What one consuming session needs.
struct Ctx<'a> {
    settings: &'a Settings,
    topology: &'a Topology,
    pool: &'a Pool,
    faults: &'a dyn FaultInjector,
    /// Channel in confirm mode for retry and parked copies, and replies.
    publisher: Channel,
}

/// A decoded delivery and the attempt it is on.
struct Incoming {
    delivery: Delivery,
    op: Operation,
    attempt: Attempt,
}

/// Consumes until `stop` turns true, reconnecting whenever the broker connection is lost.
pub async fn consume(
    settings: &Settings,
    pool: &Pool,
    faults: Arc<dyn FaultInjector>,
    mut stop: watch::Receiver<bool>,
) {
    let topology = Topology::from_settings(settings);
    let mut backoff = Backoff::new();
    loop {
        match session(settings, &topology, pool, &*faults, &mut stop, &mut backoff).await {
            Ok(()) => return,
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
    faults: &dyn FaultInjector,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let connection = amqp::connect(&settings.amqp_url, "tasksync-sync-worker").await?;
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    // Set at every (re)connect: a new channel starts with unlimited prefetch.
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
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

    let ctx = Ctx {
        settings,
        topology,
        pool,
        faults,
        publisher,
    };
    consume_batches(&ctx, &mut consumer, stop).await?;
    // Cancel, then close: the broker returns whatever was prefetched and not yet acked.
    let _ = tokio::time::timeout(
        AMQP_TIMEOUT,
        channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
    )
    .await;
    let _ = tokio::time::timeout(AMQP_TIMEOUT, connection.close(200, "shutdown".into())).await;
    tracing::info!("stopped consuming");
    Ok(())
}

/// Returns `Ok` when stopped; an error when the session broke.
async fn consume_batches(
    ctx: &Ctx<'_>,
    consumer: &mut Consumer,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let first = tokio::select! {
            biased;
            () = stopped(stop) => return Ok(()),
            next = consumer.next() => next,
        };
        let mut batch = vec![next_delivery(first)?];
        // Take what has already arrived, without waiting for more.
        while batch.len() < ctx.settings.batch_size {
            match consumer.next().now_or_never() {
                Some(next) => batch.push(next_delivery(next)?),
                None => break,
            }
        }
        if process(ctx, batch, stop).await? {
            return Ok(());
        }
    }
}

fn next_delivery(next: Option<lapin::Result<Delivery>>) -> anyhow::Result<Delivery> {
    match next {
        Some(delivery) => Ok(delivery?),
        None => anyhow::bail!("the broker cancelled the consumer"),
    }
}

/// Settles one batch. Returns true when stopped while waiting for the database (the batch was
/// handed back to the broker).
async fn process(
    ctx: &Ctx<'_>,
    batch: Vec<Delivery>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut incoming = Vec::with_capacity(batch.len());
    for delivery in batch {
        if let Some(item) = triage(ctx, delivery).await? {
            incoming.push(item);
        }
    }
    apply_or_split(ctx, incoming, stop).await
}

/// Decodes a delivery, parking or re-queueing it when it must not be applied now.
async fn triage(ctx: &Ctx<'_>, delivery: Delivery) -> anyhow::Result<Option<Incoming>> {
    let op = match Operation::decode(&delivery.data) {
        Ok(op) => op,
        Err(error) => {
            park(ctx, &delivery, None, 1, &error.to_string()).await?;
            return Ok(None);
        }
    };
    if ctx.settings.queue_type == QueueType::Classic && delivery.redelivered {
        let seen = failure::header_u32(&delivery.properties, header::REDELIVERIES).unwrap_or(0) + 1;
        if seen > CRASH_LIMIT {
            let reason = format!("redelivered {seen} times: it may be crashing the worker");
            park(
                ctx,
                &delivery,
                Some(&op),
                attempt_of(&delivery).number,
                &reason,
            )
            .await?;
        } else {
            // Count the redelivery in a header of ours: a classic queue keeps no delivery count.
            let mut headers = headers_of(&delivery);
            failure::set_u32(&mut headers, header::REDELIVERIES, seen);
            let key = original_routing_key(&delivery);
            publish(ctx, &ctx.topology.ops_exchange(), &key, &delivery, headers).await?;
            ack(&delivery).await?;
        }
        return Ok(None);
    }
    let attempt = attempt_of(&delivery);
    Ok(Some(Incoming {
        delivery,
        op,
        attempt,
    }))
}

/// Applies a batch; when a statement fails, applies its operations one by one to find the one
/// at fault. Returns true when stopped while waiting for the database.
async fn apply_or_split(
    ctx: &Ctx<'_>,
    incoming: Vec<Incoming>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    if incoming.is_empty() {
        return Ok(false);
    }
    let ops: Vec<Operation> = incoming.iter().map(|i| i.op.clone()).collect();
    let attempts: Vec<Attempt> = incoming.iter().map(|i| i.attempt).collect();
    let mut backoff = Backoff::new();
    loop {
        // A database that stops answering (frozen, or a silent network path) must not hang the
        // worker: past DB_TIMEOUT_MS it counts as unavailable, like a refused connection.
        let applied = tokio::time::timeout(
            ctx.settings.db_timeout,
            apply_batch(ctx.pool, &ops, &attempts, ctx.faults),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ApplyError::Unavailable(format!(
                "no answer within {:?}",
                ctx.settings.db_timeout
            )))
        });
        match applied {
            Ok(reports) => {
                finish(ctx, &incoming, reports).await?;
                return Ok(false);
            }
            Err(ApplyError::Unavailable(error)) => {
                // Not the operations' fault: hold them, spend nothing, wait for the database.
                let delay = backoff.next_delay();
                tracing::warn!(%error, ?delay, held = ops.len(), "database unavailable; pausing");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stopped(stop) => {
                        for i in &incoming {
                            settle(i.delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false })).await?;
                        }
                        return Ok(true);
                    }
                }
            }
            Err(ApplyError::Failed(error)) if incoming.len() > 1 => {
                tracing::warn!(%error, size = ops.len(), "batch failed; applying one by one");
                for item in incoming {
                    if Box::pin(apply_or_split(ctx, vec![item], stop)).await? {
                        return Ok(true);
                    }
                }
                return Ok(false);
            }
            Err(ApplyError::Failed(error)) => {
                let Some(item) = incoming.into_iter().next() else {
                    return Ok(false);
                };
                fail_attempt(ctx, item, &error).await?;
                return Ok(false);
            }
        }
    }
}
