//! Settling deliveries with the broker: confirmed copies, acks, and replies to the api.

use std::collections::HashMap;

use lapin::{
    BasicProperties, Confirmation,
    message::Delivery,
    options::{BasicAckOptions, BasicPublishOptions},
    types::{FieldTable, ShortString},
};
use tasksync_shared::{
    OutcomeReport,
    operation::{ReplyBatch, SCHEMA_VERSION},
};

use super::{AMQP_TIMEOUT, Ctx, Incoming};

/// Publishes a copy of `delivery` with `headers` and waits for the broker's confirm.
pub(super) async fn publish(
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
pub(super) async fn finish(
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
pub(super) async fn reply(
    ctx: &Ctx<'_>,
    reply_to: &str,
    outcomes: Vec<OutcomeReport>,
) -> anyhow::Result<()> {
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

pub(super) async fn ack(delivery: &Delivery) -> anyhow::Result<()> {
    settle(delivery.acker.ack(BasicAckOptions::default())).await
}

pub(super) async fn settle(
    action: impl Future<Output = lapin::Result<bool>>,
) -> anyhow::Result<()> {
    tokio::time::timeout(AMQP_TIMEOUT, action).await??;
    Ok(())
}
