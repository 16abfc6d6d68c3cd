//! The loop around the apply step: connect, declare, consume with bounded prefetch, then for
//! each batch gather → [`step`] (read, decide, apply or split, record failures) →
//! [`settle`] (copies, acks, replies), with up to `WORKER_BATCHES_IN_FLIGHT` batches in the
//! pipeline at once and settling in delivery order. Reconnects with backoff when the broker
//! goes away, and holds deliveries instead of failing them while the database is out of reach.
//!
//! Layout:
//! - [`fate`]: what becomes of one delivery ([`fate::Fate`]), decided by pure functions;
//! - [`facts`]: what a delivery says about itself (attempt, redeliveries, record key);
//! - [`step`]: the batch step, every database round bounded by `DB_TIMEOUT_MS`;
//! - [`settle`]: carries the fates out with the broker, acking as [`acks`] plans;
//! - [`copies`]: confirmed copies, their headers, acks, best-effort replies.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use deadpool_postgres::Pool;
use futures_util::{FutureExt, StreamExt, stream::FuturesUnordered};
use lapin::{
    Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use tasksync_shared::{Settings, amqp, amqp::Backoff, shutdown::stopped, topology::Topology};
use tokio::sync::{oneshot, watch};

mod acks;
mod copies;
mod facts;
mod fate;
mod observe;
mod settle;
mod step;

pub use fate::CRASH_LIMIT;
use fate::Fate;
use settle::settle;
use step::{Verdict, step};

use crate::{
    apply::LockTurn,
    faults::FaultInjector,
    metrics::{InFlightBatch, WorkerMetrics},
};

/// Longest wait for an ack, a reject or a publish confirm before the session is given up.
const AMQP_TIMEOUT: Duration = Duration::from_secs(10);

/// What one consuming session needs.
struct Ctx<'a> {
    settings: &'a Settings,
    topology: &'a Topology,
    pool: &'a Pool,
    faults: &'a dyn FaultInjector,
    metrics: &'a WorkerMetrics,
    /// Channel in confirm mode for retry and parked copies, and replies.
    publisher: Channel,
}

/// Consumes until `stop` turns true, reconnecting whenever the broker connection is lost.
/// Connecting and setting up race `stop`: a broker that accepts TCP and never answers, or
/// stops answering mid-handshake, must not hold up a shutdown.
pub async fn consume(
    settings: &Settings,
    pool: &Pool,
    faults: Arc<dyn FaultInjector>,
    metrics: &WorkerMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let topology = Topology::from_settings(settings);
    let mut backoff = Backoff::new();
    loop {
        let opened = tokio::select! {
            opened = open(settings, &topology) => opened,
            () = stopped(&mut stop) => return,
        };
        let result = match opened {
            Ok(open) => {
                backoff.reset();
                metrics.set_consuming(true);
                let ended = session(
                    settings, &topology, pool, &*faults, metrics, open, &mut stop,
                )
                .await;
                metrics.set_consuming(false);
                ended
            }
            Err(error) => Err(error),
        };
        let Err(error) = result else {
            return;
        };
        let delay = backoff.next_delay();
        tracing::warn!(error = %format!("{error:#}"), ?delay, "broker session ended; reconnecting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// A connection set up for consuming: the topology declared, one consumer per work partition
/// consumed, each on its own channel with its share of the prefetch, and a publisher channel
/// in confirm mode.
struct Open {
    connection: Connection,
    consumers: Vec<(Channel, Consumer)>,
    publisher: Channel,
}

/// The partitions this worker consumes: `WORKER_PARTITIONS`, or all of them.
fn consumed_partitions(settings: &Settings, topology: &Topology) -> Vec<u16> {
    match &settings.worker_partitions {
        Some(chosen) => chosen
            .iter()
            .copied()
            .filter(|p| *p < topology.partitions())
            .collect(),
        None => (0..topology.partitions()).collect(),
    }
}

/// Each consumer's prefetch: `AMQP_PREFETCH` shared out, so that the worker as a whole holds
/// at most about that many (quorum queues have no channel-wide prefetch).
fn prefetch_per_consumer(prefetch: u16, consumers: usize) -> u16 {
    let consumers = u16::try_from(consumers.max(1)).unwrap_or(u16::MAX);
    prefetch.div_ceil(consumers).max(1)
}

async fn open(settings: &Settings, topology: &Topology) -> anyhow::Result<Open> {
    let connection = amqp::connect(&settings.amqp_url, "tasksync-sync-worker").await?;
    let publisher = connection.create_channel().await?;
    topology.declare(&publisher).await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let partitions = consumed_partitions(settings, topology);
    let prefetch = prefetch_per_consumer(settings.prefetch, partitions.len());
    let mut consumers = Vec::with_capacity(partitions.len());
    for partition in &partitions {
        // A channel per partition: delivery tags (and so `multiple` acks) are per channel, and
        // each partition's batches settle in their own delivery order.
        let channel = connection.create_channel().await?;
        // Set at every (re)connect: a new channel starts with unlimited prefetch.
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                topology.work_queue_of(*partition).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consumers.push((channel, consumer));
    }
    let queues: Vec<String> = partitions
        .iter()
        .map(|p| topology.work_queue_of(*p))
        .collect();
    tracing::info!(?queues, prefetch, "consuming");
    Ok(Open {
        connection,
        consumers,
        publisher,
    })
}

/// Consumes on an open connection until `stop` (then cancels and closes, bounded) or until the
/// session breaks (an error).
async fn session(
    settings: &Settings,
    topology: &Topology,
    pool: &Pool,
    faults: &dyn FaultInjector,
    metrics: &WorkerMetrics,
    open: Open,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Open {
        connection,
        mut consumers,
        publisher,
    } = open;
    let ctx = Ctx {
        settings,
        topology,
        pool,
        faults,
        metrics,
        publisher,
    };
    // Each partition is its own pipeline, as if it had a worker of its own; when one session
    // breaks, the others are given up with it and the whole connection is opened again.
    let pipelines = consumers.iter_mut().map(|(_, consumer)| {
        let mut stop = stop.clone();
        let ctx = &ctx;
        async move { consume_batches(ctx, consumer, &mut stop).await }
    });
    futures_util::future::try_join_all(pipelines).await?;
    // Cancel, then close: the broker returns whatever was prefetched and not yet acked.
    for (channel, consumer) in &consumers {
        let _ = tokio::time::timeout(
            AMQP_TIMEOUT,
            channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
        )
        .await;
    }
    let _ = tokio::time::timeout(AMQP_TIMEOUT, connection.close(200, "shutdown".into())).await;
    tracing::info!("stopped consuming");
    Ok(())
}

/// Returns `Ok` when stopped; an error when the session broke.
///
/// Pipelined: up to `WORKER_BATCHES_IN_FLIGHT` batches are worked on at once. A batch is
/// gathered from what has already arrived (so it grows with the backlog, up to
/// `WORKER_BATCH_SIZE`, and stays small when the queue is short) and its step starts at once,
/// while earlier batches commit; batches settle in the order they were gathered ([`in_turn`]).
/// Overlapping batches take their advisory locks in the one global order, as separate workers
/// do, so they queue instead of deadlocking.
async fn consume_batches(
    ctx: &Ctx<'_>,
    consumer: &mut Consumer,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Batches in flight holding deliveries for the database: while there are any, nothing new
    // is taken, so that nothing overtakes what they hold.
    let holding = AtomicUsize::new(0);
    let mut in_flight = FuturesUnordered::new();
    // Given when the latest batch has settled: the next batch's turn to settle.
    let mut previous: Option<oneshot::Receiver<()>> = None;
    // Given when the latest batch holds its task locks: the next batch's turn to lock.
    let mut locked: Option<oneshot::Receiver<()>> = None;
    let mut stopping = false;
    loop {
        if stopping && in_flight.is_empty() {
            return Ok(());
        }
        let room = !stopping
            && holding.load(Ordering::Relaxed) == 0
            && in_flight.len() < ctx.settings.batches_in_flight;
        tokio::select! {
            biased;
            () = stopped(stop), if !stopping => stopping = true,
            finished = in_flight.next(), if !in_flight.is_empty() => {
                // `Some`: the guard above; true: stopped while holding.
                if let Some(finished) = finished
                    && finished?
                {
                    stopping = true;
                }
            }
            first = consumer.next(), if room => {
                let batch = gather(ctx, consumer, first)?;
                let ticket = ctx.metrics.batch_gathered(&batch);
                let (settled, turn) = oneshot::channel();
                let after = previous.replace(turn);
                let lock_turn = LockTurn::next(&mut locked);
                let turns = Turns { lock: lock_turn, after, settled, ticket };
                in_flight.push(in_turn(ctx, batch, turns, &holding, stop.clone()));
            }
        }
    }
}

/// A batch: `first`, and whatever has already arrived after it, up to `WORKER_BATCH_SIZE`.
fn gather(
    ctx: &Ctx<'_>,
    consumer: &mut Consumer,
    first: Option<lapin::Result<Delivery>>,
) -> anyhow::Result<Vec<Delivery>> {
    let mut batch = vec![next_delivery(first)?];
    while batch.len() < ctx.settings.batch_size {
        match consumer.next().now_or_never() {
            Some(next) => batch.push(next_delivery(next)?),
            None => break,
        }
    }
    Ok(batch)
}

fn next_delivery(next: Option<lapin::Result<Delivery>>) -> anyhow::Result<Delivery> {
    match next {
        Some(delivery) => Ok(delivery?),
        None => anyhow::bail!("the broker cancelled the consumer"),
    }
}

/// A batch's places in the pipeline's two orders.
struct Turns {
    /// When to take its task locks ([`LockTurn`]).
    lock: LockTurn,
    /// Given when the batch gathered before it has settled.
    after: Option<oneshot::Receiver<()>>,
    /// Given when this batch has settled (also when dropped: a batch that fails never holds up
    /// the next one).
    settled: oneshot::Sender<()>,
    /// Its place among the batches in flight ([`WorkerMetrics::batch_gathered`]).
    ticket: InFlightBatch,
}

/// One batch through the pipeline: its step runs at once (taking its locks in turn), its
/// settling waits for the batch gathered before it to have settled, then passes the turn on.
/// Settling in delivery order is what lets [`acks::plan`] ack with `multiple`.
///
/// While a batch ahead holds deliveries for the database (`holding`), the step waits for the
/// batch before to settle first: what is held is applied before anything behind it.
async fn in_turn(
    ctx: &Ctx<'_>,
    batch: Vec<Delivery>,
    turns: Turns,
    holding: &AtomicUsize,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let Turns {
        lock,
        mut after,
        settled,
        ticket,
    } = turns;
    if holding.load(Ordering::Relaxed) > 0
        && let Some(after) = after.take()
    {
        let _ = after.await;
    }
    let started = std::time::Instant::now();
    let verdicts = step(ctx, batch, lock).await;
    ctx.metrics.stepped(started.elapsed());
    observe::observe(ctx, &verdicts);
    let held = verdicts.iter().any(|v| v.fate == Fate::HoldForDatabase);
    if held {
        holding.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(after) = after {
        let _ = after.await;
    }
    let stopped = process(ctx, verdicts, &mut stop).await;
    if held {
        holding.fetch_sub(1, Ordering::Relaxed);
    }
    let _ = settled.send(());
    drop(ticket);
    stopped
}

/// Settles one batch's verdicts; while the database is out of reach, holds what needs it and
/// decides it again with backoff (the batches behind it wait their turn, so the worker takes
/// no more than its batches in flight meanwhile). Returns true when stopped while holding (the
/// held deliveries were handed back to the broker).
async fn process(
    ctx: &Ctx<'_>,
    verdicts: Vec<Verdict>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut held = settle(ctx, verdicts).await?;
    let mut backoff = Backoff::new();
    while !held.is_empty() {
        // Not the deliveries' fault: spend nothing, wait for the database.
        let delay = backoff.next_delay();
        tracing::warn!(held = held.len(), ?delay, "database unavailable; pausing");
        ctx.metrics.database_paused();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(stop) => {
                let requeue = held.into_iter().map(|v| Verdict { fate: Fate::Requeue, ..v });
                settle(ctx, requeue.collect()).await?;
                return Ok(true);
            }
        }
        let deliveries = held.into_iter().map(|v| v.item.delivery).collect();
        let started = std::time::Instant::now();
        let verdicts = step(ctx, deliveries, LockTurn::default()).await;
        ctx.metrics.stepped(started.elapsed());
        observe::observe(ctx, &verdicts);
        held = settle(ctx, verdicts).await?;
    }
    Ok(false)
}

#[cfg(test)]
mod partition_tests {
    use super::*;

    #[test]
    fn a_worker_consumes_every_partition_or_those_it_is_given() {
        let mut settings = Settings {
            work_partitions: 4,
            ..Settings::default()
        };
        let topology = Topology::from_settings(&settings);
        assert_eq!(consumed_partitions(&settings, &topology), [0, 1, 2, 3]);
        settings.worker_partitions = Some(vec![3, 1]);
        assert_eq!(consumed_partitions(&settings, &topology), [3, 1]);
    }

    #[test]
    fn the_prefetch_is_shared_out_among_the_consumers() {
        assert_eq!(prefetch_per_consumer(1000, 1), 1000);
        assert_eq!(prefetch_per_consumer(1000, 3), 334);
        assert_eq!(prefetch_per_consumer(2, 3), 1);
        assert_eq!(prefetch_per_consumer(1, 0), 1);
    }
}
