//! Talking to the broker about one delivery: copies published with confirms (retry, parked,
//! counted redelivery) and the properties and headers they carry, acks and nacks, and
//! best-effort replies.

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

/// The properties of a copy (retry, parked, counted redelivery): persistent, with `headers`,
/// and those of the original that say what the message is and where its answer goes (message
/// and correlation ids, reply-to, content type and encoding, type, app id, timestamp,
/// priority). Not carried, because they belong to the original publish:
/// - `expiration`: the copy would expire from the delay or parking queue; the parking queue
///   has no dead-letter target, so a parked operation would be dropped silently;
/// - `user_id`: the broker refuses a publish whose `user_id` is not the publishing login, and
///   the worker may log in as another user than the publisher;
/// - `cluster_id`: reserved by AMQP 0-9-1.
pub(super) fn copy_properties(original: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let copy = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    let copy = carry(
        copy,
        original.message_id(),
        BasicProperties::with_message_id,
    );
    let copy = carry(
        copy,
        original.correlation_id(),
        BasicProperties::with_correlation_id,
    );
    let copy = carry(copy, original.reply_to(), BasicProperties::with_reply_to);
    let copy = carry(
        copy,
        original.content_type(),
        BasicProperties::with_content_type,
    );
    let copy = carry(
        copy,
        original.content_encoding(),
        BasicProperties::with_content_encoding,
    );
    let copy = carry(copy, original.kind(), BasicProperties::with_type);
    let copy = carry(copy, original.app_id(), BasicProperties::with_app_id);
    let copy = carry(copy, original.timestamp(), BasicProperties::with_timestamp);
    carry(copy, original.priority(), BasicProperties::with_priority)
}

/// `copy` with `value` set through `with`, when the original had one.
fn carry<T: Clone>(
    copy: BasicProperties,
    value: &Option<T>,
    with: fn(BasicProperties, T) -> BasicProperties,
) -> BasicProperties {
    match value {
        Some(value) => with(copy, value.clone()),
        None => copy,
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

/// Acks `delivery` and every outstanding delivery of its channel with a lower tag.
pub(super) async fn ack_up_to(delivery: &Delivery) -> anyhow::Result<()> {
    bounded(delivery.acker.ack(BasicAckOptions { multiple: true })).await
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

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, ShortString};

    use super::*;

    fn headers(name: &str) -> FieldTable {
        let mut headers = FieldTable::default();
        headers.insert(name.into(), AMQPValue::Boolean(true));
        headers
    }

    #[test]
    fn a_copy_keeps_what_identifies_the_message_and_drops_what_belongs_to_its_publish() {
        let original = BasicProperties::default()
            .with_delivery_mode(1)
            .with_headers(headers("x-original"))
            .with_message_id("m-1".into())
            .with_correlation_id("c-1".into())
            .with_reply_to("amq.gen-reply".into())
            .with_content_type("application/json".into())
            .with_content_encoding("identity".into())
            .with_type("operation".into())
            .with_app_id("api".into())
            .with_timestamp(1_700_000_000)
            .with_priority(3)
            .with_expiration("300".into())
            .with_user_id("publisher".into())
            .with_cluster_id("c".into());
        let copy = copy_properties(&original, headers("x-copy"));
        let expected = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers("x-copy"))
            .with_message_id("m-1".into())
            .with_correlation_id("c-1".into())
            .with_reply_to("amq.gen-reply".into())
            .with_content_type("application/json".into())
            .with_content_encoding("identity".into())
            .with_type("operation".into())
            .with_app_id("api".into())
            .with_timestamp(1_700_000_000)
            .with_priority(3);
        assert_eq!(copy, expected);
        assert_eq!(copy.expiration(), &None::<ShortString>);
        assert_eq!(copy.user_id(), &None::<ShortString>);
    }

    #[test]
    fn a_copy_of_a_bare_message_is_persistent_with_its_headers_only() {
        let copy = copy_properties(&BasicProperties::default(), headers("x-copy"));
        let expected = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers("x-copy"));
        assert_eq!(copy, expected);
    }
}
