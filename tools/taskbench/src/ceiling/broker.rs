//! The ceiling's broker side: a private durable queue, publishers with confirms, and one
//! consumer that gathers a batch, upserts it in one statement and acks it with `multiple`.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, PublisherConfirm,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use tasksync_shared::operation::{OpKind, Operation, OperationFields};
use uuid::Uuid;

use super::scratch;
use crate::drive::Budget;

/// Unconfirmed messages one publisher keeps in flight.
const WINDOW: usize = 512;

/// What the publishers and the consumer share.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages the broker took (publish returned), counted before their confirm.
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub applied: AtomicU64,
    pub batches: AtomicU64,
    pub publishing_done: AtomicBool,
}

pub async fn declare(connection: &Connection, queue: &str, quorum: bool) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    let mut args = FieldTable::default();
    if quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(queue.into(), options, args).await?;
    channel.close(200, "declared".into()).await
}

/// Publishes operations (encoded as the api encodes them) to `queue` while `budget` allows.
pub async fn publish(
    connection: Arc<Connection>,
    queue: String,
    budget: Arc<Budget>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut inflight = VecDeque::with_capacity(WINDOW);
    while budget.take() {
        if inflight.len() >= WINDOW {
            settle(inflight.pop_front(), &counters).await?;
        }
        let body = operation().encode()?;
        let properties = BasicProperties::default().with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?;
        counters.published.fetch_add(1, Ordering::Relaxed);
        inflight.push_back(confirm);
    }
    while !inflight.is_empty() {
        settle(inflight.pop_front(), &counters).await?;
    }
    Ok(())
}

async fn settle(confirm: Option<PublisherConfirm>, counters: &Counters) -> anyhow::Result<()> {
    let Some(confirm) = confirm else {
        return Ok(());
    };
    match confirm.await? {
        Confirmation::Ack(None) => counters.confirmed.fetch_add(1, Ordering::Relaxed),
        _ => counters.nacked.fetch_add(1, Ordering::Relaxed),
    };
    Ok(())
}

fn operation() -> Operation {
    let now = Utc::now();
    Operation {
        op_id: Uuid::new_v4(),
        task_id: Uuid::new_v4(),
        user_id: "taskbench".into(),
        kind: OpKind::Create,
        fields: OperationFields {
            title: Some("ceiling".into()),
            description: Some(Some("taskbench".into())),
            completed: Some(false),
        },
        stamped_at: now,
        received_at: now,
        if_absent: false,
        if_match: None,
        device_id: None,
    }
}

/// Consumes until everything confirmed is applied after publishing stopped, or `drain_until`.
pub async fn consume(
    channel: Channel,
    queue: String,
    batch: usize,
    pool: Pool,
    counters: Arc<Counters>,
    drain: Duration,
) -> anyhow::Result<Instant> {
    let prefetch = u16::try_from(batch.saturating_mul(2)).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "taskbench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut last_commit = Instant::now();
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let done = counters.publishing_done.load(Ordering::Relaxed);
        if done {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
            let settled = counters.confirmed.load(Ordering::Relaxed)
                + counters.nacked.load(Ordering::Relaxed);
            if counters.applied.load(Ordering::Relaxed) >= settled || Instant::now() >= deadline {
                return Ok(last_commit);
            }
        }
        let mut deliveries = Vec::with_capacity(batch);
        while deliveries.len() < batch {
            // Wait a while for the first delivery, then only briefly for the rest of the batch.
            let wait = Duration::from_millis(if deliveries.is_empty() { 100 } else { 2 });
            match tokio::time::timeout(wait, consumer.next()).await {
                Ok(Some(delivery)) => deliveries.push(delivery?),
                Ok(None) => anyhow::bail!("the ceiling consumer was cancelled"),
                Err(_) => break,
            }
        }
        let Some(last) = deliveries.last() else {
            continue;
        };
        let ops = deliveries
            .iter()
            .map(|d| Operation::decode(&d.data))
            .collect::<Result<Vec<_>, _>>()?;
        scratch::upsert(&pool, &ops).await?;
        last.acker.ack(BasicAckOptions { multiple: true }).await?;
        last_commit = Instant::now();
        counters
            .applied
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
    }
}
