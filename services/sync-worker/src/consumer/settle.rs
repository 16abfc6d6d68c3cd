//! Carrying out the fates of a batch with the broker: retry and parked copies (confirmed before
//! the original is acked), counted redeliveries, requeues at shutdown, then the acks (after
//! commit, as few as [`acks::plan`] allows), then one best-effort reply per api instance.
//! Deliveries held for the database are handed back to the loop untouched.

use std::collections::HashMap;

use lapin::{message::Delivery, types::ShortString};
use tasksync_shared::{
    Operation, OutcomeReport,
    failure::{self, header},
    operation::{ItemStatus, Rejection},
};
use tracing::Instrument;

use super::{
    Ctx, acks, copies,
    fate::Fate,
    step::{Item, Verdict},
};

/// Settles every verdict of a batch except those held for the database, which are returned.
/// An error means the broker session broke (what was not acked comes back redelivered).
#[tracing::instrument(skip_all, fields(deliveries = verdicts.len()))]
pub(super) async fn settle(ctx: &Ctx<'_>, verdicts: Vec<Verdict>) -> anyhow::Result<Vec<Verdict>> {
    let mut held = Vec::new();
    let mut done = Vec::with_capacity(verdicts.len());
    let mut replies: HashMap<ShortString, Vec<OutcomeReport>> = HashMap::new();
    for verdict in verdicts {
        if verdict.fate == Fate::HoldForDatabase {
            held.push(verdict);
            continue;
        }
        let span = verdict.item.span.clone();
        let reply_to = verdict.item.delivery.properties.reply_to().clone();
        let (report, delivery) = carry_out(ctx, verdict).instrument(span).await?;
        done.extend(delivery);
        if let (Some(reply_to), Some(report)) = (reply_to, report) {
            replies.entry(reply_to).or_default().push(report);
        }
    }
    ack_done(&done, &held).await?;
    // After the acks: a reply is best effort and never holds one up.
    for (reply_to, outcomes) in replies {
        copies::reply(ctx, reply_to.as_str(), outcomes).await;
    }
    Ok(held)
}

/// Acks what was carried out: one `multiple` ack up to the first held delivery, then one by
/// one above it ([`acks::plan`]).
async fn ack_done(done: &[Delivery], held: &[Verdict]) -> anyhow::Result<()> {
    let done_tags: Vec<u64> = done.iter().map(|d| d.delivery_tag).collect();
    let held_tags: Vec<u64> = held.iter().map(|v| v.item.delivery.delivery_tag).collect();
    let plan = acks::plan(&done_tags, &held_tags);
    let by_tag = |tag: u64| done.iter().find(|d| d.delivery_tag == tag);
    if let Some(delivery) = plan.multiple_up_to.and_then(by_tag) {
        copies::ack_up_to(delivery).await?;
    }
    for delivery in plan.singles.into_iter().filter_map(by_tag) {
        copies::ack(delivery).await?;
    }
    Ok(())
}

/// Carries out one fate; returns the report to send to the api, if any, and the delivery when
/// it is to be acked (everything but a requeue and a hold).
async fn carry_out(
    ctx: &Ctx<'_>,
    verdict: Verdict,
) -> anyhow::Result<(Option<OutcomeReport>, Option<Delivery>)> {
    let Verdict { item, op, fate } = verdict;
    let report = match fate {
        Fate::Applied(report) => {
            log_decision(&report);
            Some(report)
        }
        Fate::Retry {
            attempt,
            queue,
            error,
        } => {
            retry(ctx, &item, op.as_ref(), attempt, &queue, &error).await?;
            None
        }
        Fate::Park { attempt, reason } => {
            park(ctx, &item, op.as_ref(), attempt, &reason).await?;
            op.map(|op| parked_report(&op, reason))
        }
        Fate::CountRedelivery { seen } => {
            count_redelivery(ctx, &item, seen).await?;
            None
        }
        Fate::Requeue => {
            tracing::info!("handing the delivery back at shutdown");
            copies::requeue(&item.delivery).await?;
            return Ok((None, None));
        }
        Fate::HoldForDatabase => return Ok((None, None)),
    };
    Ok((report, Some(item.delivery)))
}

/// The apply step logged the decision at info (with op id, task and user); settling it is
/// routine.
fn log_decision(report: &OutcomeReport) {
    tracing::debug!(status = report.status.as_str(), "settled");
}

/// Republishes a failed attempt to the delay queue of its attempt; the original is acked with
/// the batch.
#[tracing::instrument(skip_all, fields(attempt = attempt, queue = queue))]
async fn retry(
    ctx: &Ctx<'_>,
    item: &Item,
    op: Option<&Operation>,
    attempt: u32,
    queue: &str,
    error: &str,
) -> anyhow::Result<()> {
    tracing::warn!(error, "attempt failed; retrying later");
    let headers = copies::failure_headers(&item.delivery, op, attempt, error, &item.message_id);
    let exchange = ctx.topology.retry_exchange();
    copies::publish_copy(ctx, &exchange, queue, &item.delivery, headers).await
}

/// Publishes the parked copy (its failure already recorded, or refused by the database) and
/// waits for the confirm; the original is acked with the batch.
#[tracing::instrument(skip_all, fields(attempt = attempt))]
async fn park(
    ctx: &Ctx<'_>,
    item: &Item,
    op: Option<&Operation>,
    attempt: u32,
    reason: &str,
) -> anyhow::Result<()> {
    tracing::error!(reason, "parking");
    let mut headers =
        copies::failure_headers(&item.delivery, op, attempt, reason, &item.message_id);
    failure::set_str(&mut headers, header::PARKED_REASON, reason);
    let exchange = ctx.topology.dead_exchange();
    copies::publish_copy(ctx, &exchange, "", &item.delivery, headers).await
}

/// (classic queues) Counts a redelivery in a header of ours, since a classic queue keeps no
/// delivery count: republishes the message with the count; the original is acked with the
/// batch.
#[tracing::instrument(skip_all, fields(seen = seen))]
async fn count_redelivery(ctx: &Ctx<'_>, item: &Item, seen: u32) -> anyhow::Result<()> {
    tracing::warn!("redelivered; counting it and publishing it again");
    let delivery = &item.delivery;
    let mut headers = super::facts::headers_of(&delivery.properties);
    failure::set_u32(&mut headers, header::REDELIVERIES, seen);
    let key =
        super::facts::original_routing_key(&delivery.properties, delivery.routing_key.as_str());
    failure::set_str(&mut headers, header::ORIGINAL_ROUTING_KEY, &key);
    // Straight to its partition's work queue by name: a message published directly to the
    // queue has a routing key the operations exchange would not route.
    let queue = ctx
        .topology
        .work_queue_of(ctx.topology.partition_of_key(&key));
    copies::publish_copy(ctx, "", &queue, delivery, headers).await
}

/// What the waiting api is told about a parked operation.
fn parked_report(op: &Operation, reason: String) -> OutcomeReport {
    OutcomeReport {
        op_id: op.op_id,
        task_id: op.task_id,
        status: ItemStatus::Error,
        error: Some(reason),
        rejection: Some(Rejection::Failed),
        task: None,
        repeat: false,
    }
}
