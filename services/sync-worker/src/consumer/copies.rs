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

/// Prefix of RabbitMQ's direct reply-to pseudo queue: only the channel that consumes it may
/// name it as `reply_to`, so a copy that carried it would be refused (and the channel closed).
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

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
            copy_properties(&delivery.properties, headers),
        )
        .await?;
    match tokio::time::timeout(AMQP_TIMEOUT, confirm).await?? {
        Confirmation::Ack(None) => Ok(()),
        other => {
            anyhow::bail!("broker did not take the copy for {exchange}/{routing_key}: {other:?}")
        }
    }
}

/// The properties of a copy: the original's, persistent, with `headers`; without what the
/// broker would refuse from the worker (another `user_id`, a direct reply-to) and without an
/// `expiration`, which could drop a parked copy.
fn copy_properties(original: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut copy = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(v) = original.content_type() {
        copy = copy.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        copy = copy.with_content_encoding(v.clone());
    }
    if let Some(v) = original.priority() {
        copy = copy.with_priority(*v);
    }
    if let Some(v) = original.correlation_id() {
        copy = copy.with_correlation_id(v.clone());
    }
    if let Some(v) = original
        .reply_to()
        .as_ref()
        .filter(|r| !r.as_str().starts_with(DIRECT_REPLY_TO))
    {
        copy = copy.with_reply_to(v.clone());
    }
    if let Some(v) = original.message_id() {
        copy = copy.with_message_id(v.clone());
    }
    if let Some(v) = original.timestamp() {
        copy = copy.with_timestamp(*v);
    }
    if let Some(v) = original.kind() {
        copy = copy.with_type(v.clone());
    }
    if let Some(v) = original.app_id() {
        copy = copy.with_app_id(v.clone());
    }
    copy
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
