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

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use deadpool_postgres::Pool;
use futures_util::{FutureExt, StreamExt};
use lapin::{
    BasicProperties, Channel, Confirmation, Consumer,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    },
    types::{FieldTable, ShortString},
};
use tasksync_shared::{
    Operation, OutcomeReport, OutcomeStatus, Settings, amqp,
    amqp::Backoff,
    config::QueueType,
    failure::{self, header},
    operation::{Rejection, ReplyBatch, SCHEMA_VERSION},
    shutdown::stopped,
    topology::Topology,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    apply::{ApplyError, Attempt, apply_attempts},
    failures::{self, Failure},
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

fn attempt_of(delivery: &Delivery) -> Attempt {
    Attempt {
        number: failure::header_u32(&delivery.properties, header::ATTEMPTS).unwrap_or(0) + 1,
        replay: failure::header_u32(&delivery.properties, header::REPLAY).is_some(),
    }
}

fn original_routing_key(delivery: &Delivery) -> String {
    failure::header_str(&delivery.properties, header::ORIGINAL_ROUTING_KEY)
        .unwrap_or_else(|| delivery.routing_key.as_str().to_string())
}

fn headers_of(delivery: &Delivery) -> FieldTable {
    delivery.properties.headers().clone().unwrap_or_default()
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
        match apply_attempts(ctx.pool, &ops, &attempts, ctx.faults).await {
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
            Err(ApplyError::Rejected(error)) if incoming.len() > 1 => {
                tracing::warn!(%error, size = ops.len(), "batch failed; applying one by one");
                for item in incoming {
                    if Box::pin(apply_or_split(ctx, vec![item], stop)).await? {
                        return Ok(true);
                    }
                }
                return Ok(false);
            }
            Err(ApplyError::Rejected(error)) => {
                let Some(item) = incoming.into_iter().next() else {
                    return Ok(false);
                };
                fail_attempt(ctx, item, &error).await?;
                return Ok(false);
            }
        }
    }
}

/// An attempt of an operation failed: schedule its retry, or park it after the last one.
async fn fail_attempt(ctx: &Ctx<'_>, item: Incoming, error: &str) -> anyhow::Result<()> {
    let Incoming {
        delivery,
        op,
        attempt,
    } = item;
    let attempt = attempt.number;
    let retry_queue = ctx
        .topology
        .retry_queue(usize::try_from(attempt).unwrap_or(usize::MAX));
    let Some(retry_queue) = retry_queue else {
        let reason = format!("failed {attempt} attempts; last error: {error}");
        tracing::error!(op_id = %op.op_id, task_id = %op.task_id, attempt, %error, "parking operation");
        return park(ctx, &delivery, Some(&op), attempt, &reason).await;
    };
    tracing::warn!(op_id = %op.op_id, task_id = %op.task_id, attempt, %error, queue = %retry_queue, "attempt failed; retrying later");
    let now = Utc::now();
    let failure = Failure {
        message_id: op.op_id.to_string(),
        op: Some(&op),
        routing_key: original_routing_key(&delivery),
        attempt,
        at: now,
        error: error.to_string(),
        body: &delivery.data,
    };
    if let Err(e) = failures::record_retry(ctx.pool, &failure).await {
        // The headers carry the same facts; the record is for ops tooling.
        tracing::warn!(error = %e, op_id = %op.op_id, "could not record the failed attempt");
    }
    let headers = failure_headers(&delivery, Some(&op), attempt, error, &failure.message_id);
    publish(
        ctx,
        &ctx.topology.retry_exchange(),
        &retry_queue,
        &delivery,
        headers,
    )
    .await?;
    ack(&delivery).await
}

/// The headers of a retry or parked copy.
fn failure_headers(
    delivery: &Delivery,
    op: Option<&Operation>,
    attempt: u32,
    error: &str,
    message_id: &str,
) -> FieldTable {
    let now = Utc::now();
    let mut headers = headers_of(delivery);
    let first = failure::header_time(&delivery.properties, header::FIRST_FAILED_AT).unwrap_or(now);
    failure::set_u32(&mut headers, header::ATTEMPTS, attempt);
    failure::set_time(&mut headers, header::FIRST_FAILED_AT, first);
    failure::set_time(&mut headers, header::LAST_FAILED_AT, now);
    failure::set_str(&mut headers, header::LAST_ERROR, error);
    failure::set_str(
        &mut headers,
        header::ORIGINAL_ROUTING_KEY,
        &original_routing_key(delivery),
    );
    failure::set_str(&mut headers, header::MESSAGE_ID, message_id);
    if let Some(op) = op {
        failure::set_str(&mut headers, header::OP_ID, &op.op_id.to_string());
        failure::set_str(&mut headers, header::TASK_ID, &op.task_id.to_string());
        failure::set_str(&mut headers, header::USER_ID, &op.user_id);
    }
    headers
}

/// Parks a delivery for good: a copy with the reason goes to the parking queue (confirmed), the
/// failure record and (for an operation) its `error` outcome are written, the publishing api is
/// told, then the original is acked.
async fn park(
    ctx: &Ctx<'_>,
    delivery: &Delivery,
    op: Option<&Operation>,
    attempt: u32,
    reason: &str,
) -> anyhow::Result<()> {
    let message_id = match op {
        Some(op) => op.op_id.to_string(),
        None => failure::header_str(&delivery.properties, header::MESSAGE_ID)
            .unwrap_or_else(|| Uuid::new_v4().to_string()),
    };
    if op.is_none() {
        tracing::error!(%reason, %message_id, "parking a message that cannot be read");
    }
    let mut headers = failure_headers(delivery, op, attempt, reason, &message_id);
    failure::set_str(&mut headers, header::PARKED_REASON, reason);
    publish(ctx, &ctx.topology.dead_exchange(), "", delivery, headers).await?;
    let failure = Failure {
        message_id,
        op,
        routing_key: original_routing_key(delivery),
        attempt,
        at: Utc::now(),
        error: reason.to_string(),
        body: &delivery.data,
    };
    if let Err(e) = failures::record_parked(ctx.pool, &failure).await {
        // The copy is parked already; hand the original back so that parking is recorded on
        // the next delivery (a second parked copy is harmless: replay goes by message id).
        tracing::warn!(error = %e, "could not record the parked operation; will retry");
        settle(delivery.acker.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }))
        .await?;
        return Ok(());
    }
    if let (Some(op), Some(reply_to)) = (op, delivery.properties.reply_to()) {
        let report = OutcomeReport {
            op_id: op.op_id,
            task_id: op.task_id,
            status: OutcomeStatus::Error,
            error: Some(reason.to_string()),
            rejection: Some(Rejection::Failed),
            task: None,
        };
        reply(ctx, reply_to.as_str(), vec![report]).await?;
    }
    ack(delivery).await
}

/// Publishes a copy of `delivery` with `headers` and waits for the broker's confirm.
async fn publish(
    ctx: &Ctx<'_>,
    exchange: &str,
    routing_key: &str,
    delivery: &Delivery,
    headers: FieldTable,
) -> anyhow::Result<()> {
    let properties = delivery
        .properties
        .clone()
        .with_delivery_mode(2)
        .with_headers(headers);
    let confirm = ctx
        .publisher
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &delivery.data,
            properties,
        )
        .await?;
    match tokio::time::timeout(AMQP_TIMEOUT, confirm).await?? {
        Confirmation::Ack(None) => Ok(()),
        other => {
            anyhow::bail!("broker did not take the copy for {exchange}/{routing_key}: {other:?}")
        }
    }
}

/// Acks the applied deliveries (after commit), then sends each api instance one reply.
async fn finish(
    ctx: &Ctx<'_>,
    incoming: &[Incoming],
    reports: Vec<OutcomeReport>,
) -> anyhow::Result<()> {
    for (item, report) in incoming.iter().zip(&reports) {
        tracing::debug!(op_id = %report.op_id, task_id = %report.task_id, status = report.status.as_str(), "decided");
        ack(&item.delivery).await?;
    }
    let mut by_reply_to: HashMap<ShortString, Vec<OutcomeReport>> = HashMap::new();
    for (item, report) in incoming.iter().zip(reports) {
        if let Some(reply_to) = item.delivery.properties.reply_to() {
            by_reply_to
                .entry(reply_to.clone())
                .or_default()
                .push(report);
        }
    }
    for (reply_to, outcomes) in by_reply_to {
        reply(ctx, reply_to.as_str(), outcomes).await?;
    }
    Ok(())
}

/// Best effort: an api that went away answers 202, and the outcome is in the operation log.
async fn reply(ctx: &Ctx<'_>, reply_to: &str, outcomes: Vec<OutcomeReport>) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&ReplyBatch {
        v: SCHEMA_VERSION,
        outcomes,
    })?;
    let publish = ctx.publisher.basic_publish(
        "".into(),
        reply_to.into(),
        BasicPublishOptions::default(),
        &body,
        BasicProperties::default().with_content_type("application/json".into()),
    );
    tokio::time::timeout(AMQP_TIMEOUT, publish).await??;
    Ok(())
}

async fn ack(delivery: &Delivery) -> anyhow::Result<()> {
    settle(delivery.acker.ack(BasicAckOptions::default())).await
}

async fn settle(action: impl Future<Output = lapin::Result<bool>>) -> anyhow::Result<()> {
    tokio::time::timeout(AMQP_TIMEOUT, action).await??;
    Ok(())
}
