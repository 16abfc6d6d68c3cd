//! Talking to the broker about one delivery: copies published with confirms (retry, parked,
//! counted redelivery) and the headers they carry, acks and nacks, and best-effort replies.

use chrono::Utc;
use lapin::{
    BasicProperties, Confirmation,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions},
    types::FieldTable,
};
use tasksync_shared::{
    Operation, OutcomeReport,
    failure::{self, header},
    operation::{ReplyBatch, SCHEMA_VERSION},
};

use super::{AMQP_TIMEOUT, Ctx, facts};

/// Publishes a copy of `delivery` with `headers` and waits for the broker's confirm.
pub(super) async fn publish_copy(
    ctx: &Ctx<'_>,
    exchange: &str,
    routing_key: &str,
    delivery: &Delivery,
    headers: FieldTable,
) -> anyhow::Result<()> {
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
            delivery
                .properties
                .clone()
                .with_delivery_mode(2)
                .with_headers(headers),
        )
        .await?;
    match tokio::time::timeout(AMQP_TIMEOUT, confirm).await?? {
        Confirmation::Ack(None) => Ok(()),
        other => {
            anyhow::bail!("broker did not take the copy for {exchange}/{routing_key}: {other:?}")
        }
    }
}

/// The headers of a retry or parked copy: the original's plus what happened to it.
pub(super) fn failure_headers(
    delivery: &Delivery,
    op: Option<&Operation>,
    attempt: u32,
    error: &str,
    message_id: &str,
) -> FieldTable {
    let properties = &delivery.properties;
    let now = Utc::now();
    let mut headers = facts::headers_of(properties);
    let first = failure::header_time(properties, header::FIRST_FAILED_AT).unwrap_or(now);
    let routing_key = facts::original_routing_key(properties, delivery.routing_key.as_str());
    failure::set_u32(&mut headers, header::ATTEMPTS, attempt);
    failure::set_time(&mut headers, header::FIRST_FAILED_AT, first);
    failure::set_time(&mut headers, header::LAST_FAILED_AT, now);
    failure::set_str(&mut headers, header::LAST_ERROR, error);
    failure::set_str(&mut headers, header::ORIGINAL_ROUTING_KEY, &routing_key);
    failure::set_str(&mut headers, header::MESSAGE_ID, message_id);
    if let Some(op) = op {
        failure::set_str(&mut headers, header::OP_ID, &op.op_id.to_string());
        failure::set_str(&mut headers, header::TASK_ID, &op.task_id.to_string());
        failure::set_str(&mut headers, header::USER_ID, &op.user_id);
    }
    headers
}

/// Best effort: a reply that cannot be sent is logged and nothing else happens (the api that
/// waited answers 202, and the outcome is in the operation log). Never blocks an ack.
pub(super) async fn reply(ctx: &Ctx<'_>, reply_to: &str, outcomes: Vec<OutcomeReport>) {
    let count = outcomes.len();
    let sent = async {
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
        Ok::<_, anyhow::Error>(())
    };
    if let Err(error) = sent.await {
        tracing::warn!(error = %format!("{error:#}"), reply_to, outcomes = count, "could not send a reply");
    }
}

pub(super) async fn ack(delivery: &Delivery) -> anyhow::Result<()> {
    bounded(delivery.acker.ack(BasicAckOptions::default())).await
}

/// Hands a delivery back to its queue.
pub(super) async fn requeue(delivery: &Delivery) -> anyhow::Result<()> {
    let options = BasicNackOptions {
        requeue: true,
        multiple: false,
    };
    bounded(delivery.acker.nack(options)).await
}

async fn bounded(action: impl Future<Output = lapin::Result<bool>>) -> anyhow::Result<()> {
    tokio::time::timeout(AMQP_TIMEOUT, action).await??;
    Ok(())
}
