//! What happens to an operation whose attempt failed: a delayed retry, or parking for good.

use chrono::Utc;
use lapin::{message::Delivery, options::BasicNackOptions, types::FieldTable};
use tasksync_shared::{
    Operation, OutcomeReport,
    failure::{self, header},
    operation::Rejection,
};
use uuid::Uuid;

use super::{
    Ctx, Incoming,
    settle::{ack, publish, reply, settle},
};
use crate::{
    apply::Attempt,
    failures::{self, Failure},
};

pub(super) fn attempt_of(delivery: &Delivery) -> Attempt {
    Attempt {
        number: failure::header_u32(&delivery.properties, header::ATTEMPTS).unwrap_or(0) + 1,
        replay: failure::header_u32(&delivery.properties, header::REPLAY).is_some(),
    }
}

pub(super) fn original_routing_key(delivery: &Delivery) -> String {
    failure::header_str(&delivery.properties, header::ORIGINAL_ROUTING_KEY)
        .unwrap_or_else(|| delivery.routing_key.as_str().to_string())
}

pub(super) fn headers_of(delivery: &Delivery) -> FieldTable {
    delivery.properties.headers().clone().unwrap_or_default()
}

/// An attempt of an operation failed: schedule its retry, or park it after the last one.
pub(super) async fn fail_attempt(ctx: &Ctx<'_>, item: Incoming, error: &str) -> anyhow::Result<()> {
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
pub(super) async fn park(
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
            status: tasksync_shared::operation::ItemStatus::Error,
            error: Some(reason.to_string()),
            rejection: Some(Rejection::Failed),
            task: None,
        };
        reply(ctx, reply_to.as_str(), vec![report]).await?;
    }
    ack(delivery).await
}
