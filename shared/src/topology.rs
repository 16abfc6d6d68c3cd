//! Exchange and queue names under the configured prefix, and their declaration.
//!
//! ```text
//! api ──▶ {p}.ops (topic) ──op.#──▶ {p}.ops.work ──▶ sync-worker
//!            ▲                          │ rejected, or over the delivery limit (dead-letter)
//!            │ TTL expired              ▼
//!            │ (dead-letter)       {p}.dead (fanout) ──▶ {p}.ops.parked ◀── worker: parked
//!            │                                                              after 3 retries
//!   {p}.ops.retry.1.<d1>ms ◀─┐
//!   {p}.ops.retry.2.<d2>ms ◀─┼── {p}.retry (direct) ◀── worker: a failed attempt
//!   {p}.ops.retry.3.<d3>ms ◀─┘
//! ```
//!
//! A failed operation is republished by the worker, with its attempt count in a header of our
//! own, to the delay queue of its attempt. Delay queues have no consumers: their per-queue TTL
//! expires the messages in order, and they dead-letter back to the operations exchange. Each
//! delay queue's name carries its delay, so changing `RETRY_DELAYS_MS` declares new queues
//! instead of clashing with the old ones' arguments (the old ones drain and can be deleted).
//!
//! Declaration is idempotent: every service declares at every (re)connect, so any may start
//! first. Replies go through the default exchange to each api instance's own exclusive queue.
//!
//! **Partitions** (`WORK_PARTITIONS=K`, default 1). With K > 1 the work queue is K queues, and
//! each has its own delay queues; the api routes an operation by a hash of its task id
//! ([`Topology::partition_of`]), so one task's operations always share one queue, and the
//! queues' leaders are spread over the cluster's nodes (`x-queue-leader-locator: balanced`).
//!
//! ```text
//! partition 0: {p}.ops.work      ◀── op.*.0 and op.* (two-word keys: K = 1 publishers, op.retry)
//!              {p}.ops.retry.{n}.{d}ms            ──dead-letter op.retry──▶ {p}.ops
//! partition i: {p}.ops.work.{i}  ◀── op.*.{i}
//!              {p}.ops.retry.{n}.{d}ms.{i}        ──dead-letter op.retry.{i}──▶ {p}.ops
//! ```
//!
//! With K = 1 the names, keys and bindings are the single-queue ones (`op.#` binds the work
//! queue), so K = 1 is exactly the topology of a deployment without partitions. Partition 0
//! keeps the single queue's names, and takes over its two-word keys when K grows, so that
//! apis still publishing with K = 1 during a rolling change, and retries already waiting in
//! the old delay queues, land in a consumed queue; the `op.#` binding is removed then, so
//! nothing is routed twice. Parking is shared: every partition dead-letters to one
//! parking queue.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use uuid::Uuid;

use crate::{Settings, config::QueueType};

/// Deliveries of one message after which a quorum work queue dead-letters it to the parking
/// queue: the guard against a message that crashes the worker over and over.
pub const DELIVERY_LIMIT: i64 = 10;

/// Most work partitions a stack may have (`WORK_PARTITIONS`).
pub const MAX_PARTITIONS: u16 = 64;

/// Routing key of operation messages with one partition (`op.create`, `op.update`,
/// `op.delete`); [`Topology::publish_key`] gives the key of a stack's partition.
pub fn routing_key(kind: crate::OpKind) -> String {
    format!("op.{}", kind.as_str())
}

/// Routing key of operations coming back from a delay queue of partition 0.
pub const RETRY_ROUTING_KEY: &str = "op.retry";

/// The names of one stack's exchanges and queues.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
    retry_delays: Vec<Duration>,
    partitions: u16,
}

impl Topology {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            prefix: settings.amqp_prefix.clone(),
            queue_type: settings.queue_type,
            retry_delays: settings.retry_delays.clone(),
            partitions: settings.work_partitions.clamp(1, MAX_PARTITIONS),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// K: how many work queues the stack has.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The partition of a task: a stable hash of its id (FNV-1a of its 16 bytes; the same in
    /// every build and on every platform, so that every api routes a task alike) modulo K.
    pub fn partition_of(&self, task_id: Uuid) -> u16 {
        if self.partitions == 1 {
            return 0;
        }
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let hash = task_id
            .as_bytes()
            .iter()
            .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
        u16::try_from(hash % u64::from(self.partitions)).unwrap_or(0)
    }

    /// The routing key the api publishes an operation with: `op.<kind>`, and with K > 1
    /// `op.<kind>.<partition of its task>`.
    pub fn publish_key(&self, kind: crate::OpKind, task_id: Uuid) -> String {
        if self.partitions == 1 {
            return routing_key(kind);
        }
        format!("op.{}.{}", kind.as_str(), self.partition_of(task_id))
    }

    /// The partition a message routed with `key` belongs to: the last word of a three-word
    /// key (`op.create.2`, `op.retry.2`) when it names one of this stack's partitions, else 0
    /// (two-word keys, and keys of a stack that had more partitions).
    pub fn partition_of_key(&self, key: &str) -> u16 {
        let mut words = key.split('.');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("op"), Some(_), Some(p), None) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p < self.partitions)
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Where the api publishes operations.
    pub fn ops_exchange(&self) -> String {
        format!("{}.ops", self.prefix)
    }

    /// The work queue of partition 0, the only one with K = 1.
    pub fn work_queue(&self) -> String {
        self.work_queue_of(0)
    }

    /// The work queue of `partition`: `{p}.ops.work`, and `{p}.ops.work.{i}` for i > 0.
    pub fn work_queue_of(&self, partition: u16) -> String {
        match partition {
            0 => format!("{}.ops.work", self.prefix),
            p => format!("{}.ops.work.{p}", self.prefix),
        }
    }

    /// Every work queue, partition 0 first.
    pub fn work_queues(&self) -> Vec<String> {
        (0..self.partitions)
            .map(|p| self.work_queue_of(p))
            .collect()
    }

    /// Where the worker sends a failed operation for a delayed retry.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// Number of retries after the first attempt.
    pub fn retries(&self) -> usize {
        self.retry_delays.len()
    }

    /// The delay queue of retry `n` (1-based) of partition 0, also its routing key on the
    /// retry exchange.
    pub fn retry_queue(&self, n: usize) -> Option<String> {
        self.retry_queue_of(n, 0)
    }

    /// The delay queue of retry `n` (1-based) of `partition`, also its routing key on the
    /// retry exchange.
    pub fn retry_queue_of(&self, n: usize, partition: u16) -> Option<String> {
        let delay = self.retry_delays.get(n.checked_sub(1)?)?.as_millis();
        Some(match partition {
            0 => format!("{}.ops.retry.{n}.{delay}ms", self.prefix),
            p => format!("{}.ops.retry.{n}.{delay}ms.{p}", self.prefix),
        })
    }

    /// The routing key a delay queue of `partition` dead-letters its messages with.
    fn retry_return_key(partition: u16) -> String {
        match partition {
            0 => RETRY_ROUTING_KEY.to_string(),
            p => format!("{RETRY_ROUTING_KEY}.{p}"),
        }
    }

    /// Dead-letter exchange of the work queues, and where the worker parks operations.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Where operations that can never be applied wait for ops to inspect them (one for every
    /// partition).
    pub fn parking_queue(&self) -> String {
        format!("{}.ops.parked", self.prefix)
    }

    /// The delay queues of every partition, partition 0 first, retry 1 first.
    pub fn retry_queues(&self) -> Vec<String> {
        (0..self.partitions)
            .flat_map(|p| (1..=self.retries()).filter_map(move |n| self.retry_queue_of(n, p)))
            .collect()
    }

    /// Every durable queue: work queues, delay queues, parking.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = self.work_queues();
        queues.extend(self.retry_queues());
        queues.push(self.parking_queue());
        queues
    }

    /// Every exchange.
    pub fn exchanges(&self) -> Vec<String> {
        vec![
            self.ops_exchange(),
            self.retry_exchange(),
            self.dead_exchange(),
        ]
    }

    fn queue_args(&self, dead_letter_to: Option<(&str, Option<&str>)>) -> FieldTable {
        let mut args = FieldTable::default();
        let quorum = self.queue_type == QueueType::Quorum;
        if quorum {
            args.insert("x-queue-type".into(), long_string("quorum"));
        }
        if let Some((exchange, routing_key)) = dead_letter_to {
            args.insert("x-dead-letter-exchange".into(), long_string(exchange));
            if let Some(key) = routing_key {
                args.insert("x-dead-letter-routing-key".into(), long_string(key));
            }
            if quorum {
                // Dead-letter at least once: the message stays until the target confirms it.
                // RabbitMQ requires reject-publish overflow for that.
                args.insert(
                    "x-dead-letter-strategy".into(),
                    long_string("at-least-once"),
                );
                args.insert("x-overflow".into(), long_string("reject-publish"));
            }
        }
        args
    }

    /// Arguments of the queues of a partition beyond the first: their leaders are spread over
    /// the cluster's nodes rather than all placed on the node the declaring client is on
    /// (RabbitMQ 3.x's default; 4.x balances by default).
    fn spread(&self, partition: u16, mut args: FieldTable) -> FieldTable {
        if partition > 0 && self.queue_type == QueueType::Quorum {
            args.insert("x-queue-leader-locator".into(), long_string("balanced"));
        }
        args
    }

    /// Declares every exchange, queue and binding. Safe to call from any number of processes.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, kind) in [
            (self.ops_exchange(), ExchangeKind::Topic),
            (self.retry_exchange(), ExchangeKind::Direct),
            (self.dead_exchange(), ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(name.into(), kind, durable, FieldTable::default())
                .await?;
        }
        // Every work queue before any delay queue: with the leaders of a fresh cluster placed
        // by least leaders, the work queues then each get their own node.
        for partition in 0..self.partitions {
            self.declare_work_queue(channel, partition).await?;
        }
        for partition in 0..self.partitions {
            self.declare_delay_queues(channel, partition).await?;
        }
        let queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(self.parking_queue().into(), queue, self.queue_args(None))
            .await?;
        bind(channel, self.parking_queue(), self.dead_exchange(), "").await?;
        Ok(())
    }

    /// One partition's work queue with its bindings.
    async fn declare_work_queue(&self, channel: &Channel, partition: u16) -> lapin::Result<()> {
        let queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let dead = self.dead_exchange();
        let mut work_args = self.queue_args(Some((&dead, None)));
        if self.queue_type == QueueType::Quorum {
            work_args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
        }
        let work = self.work_queue_of(partition);
        channel
            .queue_declare(
                work.clone().into(),
                queue,
                self.spread(partition, work_args),
            )
            .await?;
        let ops = self.ops_exchange();
        match (self.partitions, partition) {
            (1, _) => bind(channel, work, ops, "op.#").await?,
            (_, 0) => {
                bind(channel, work.clone(), ops.clone(), "op.*.0").await?;
                bind(channel, work.clone(), ops.clone(), "op.*").await?;
                // The single queue's catch-all would take every partition's messages too.
                channel
                    .queue_unbind(
                        work.into(),
                        ops.into(),
                        "op.#".into(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            (_, p) => bind(channel, work, ops, &format!("op.*.{p}")).await?,
        }

        Ok(())
    }

    /// One partition's delay queues.
    async fn declare_delay_queues(&self, channel: &Channel, partition: u16) -> lapin::Result<()> {
        let queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let back = Self::retry_return_key(partition);
        for n in 1..=self.retries() {
            let (Some(queue_name), Some(delay)) = (
                self.retry_queue_of(n, partition),
                self.retry_delays.get(n - 1),
            ) else {
                continue;
            };
            let mut args = self.queue_args(Some((&self.ops_exchange(), Some(&back))));
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            channel
                .queue_declare(
                    queue_name.clone().into(),
                    queue,
                    self.spread(partition, args),
                )
                .await?;
            let key = queue_name.clone();
            bind(channel, queue_name, self.retry_exchange(), &key).await?;
        }
        Ok(())
    }
}

async fn bind(channel: &Channel, queue: String, exchange: String, key: &str) -> lapin::Result<()> {
    let (queue, exchange, key): (ShortString, ShortString, ShortString) =
        (queue.into(), exchange.into(), key.into());
    channel
        .queue_bind(
            queue,
            exchange,
            key,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_delay_queues_their_delay() {
        let settings = Settings {
            amqp_prefix: "t1".into(),
            retry_delays: [10, 20, 30].map(Duration::from_millis).to_vec(),
            ..Settings::default()
        };
        let t = Topology::from_settings(&settings);
        assert_eq!(t.work_queue(), "t1.ops.work");
        assert_eq!(t.retry_queue(1).as_deref(), Some("t1.ops.retry.1.10ms"));
        assert_eq!(t.retry_queue(3).as_deref(), Some("t1.ops.retry.3.30ms"));
        assert_eq!(t.retry_queue(0), None);
        assert_eq!(t.retry_queue(4), None);
        assert_eq!(t.queues().len(), 5);
        assert!(
            t.queues()
                .iter()
                .chain(&t.exchanges())
                .all(|n| n.starts_with("t1."))
        );
    }

    fn partitioned(k: u16) -> Topology {
        Topology::from_settings(&Settings {
            amqp_prefix: "t1".into(),
            retry_delays: [10, 20, 30].map(Duration::from_millis).to_vec(),
            work_partitions: k,
            ..Settings::default()
        })
    }

    #[test]
    fn one_partition_is_the_single_queue_topology() {
        let t = partitioned(1);
        let task = Uuid::new_v4();
        assert_eq!(t.partition_of(task), 0);
        assert_eq!(t.publish_key(crate::OpKind::Create, task), "op.create");
        assert_eq!(t.work_queues(), ["t1.ops.work"]);
        assert_eq!(t.partition_of_key("op.update"), 0);
        assert_eq!(t.partition_of_key("op.update.2"), 0);
    }

    #[test]
    fn partitions_have_their_own_queues_and_keys() {
        let t = partitioned(3);
        assert_eq!(
            t.work_queues(),
            ["t1.ops.work", "t1.ops.work.1", "t1.ops.work.2"]
        );
        assert_eq!(
            t.retry_queue_of(2, 1).as_deref(),
            Some("t1.ops.retry.2.20ms.1")
        );
        assert_eq!(t.retry_queue_of(2, 0), t.retry_queue(2));
        assert_eq!(Topology::retry_return_key(2), "op.retry.2");
        // 3 work queues, 3 × 3 delay queues, one parking queue; no name twice.
        let mut names = t.queues();
        assert_eq!(names.len(), 13);
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 13);
        for key in ["op.create.2", "op.retry.2"] {
            assert_eq!(t.partition_of_key(key), 2, "{key}");
        }
        for key in [
            "op.create",
            "op.retry",
            "op.create.7",
            "op.create.x",
            "t1.ops.work.2",
        ] {
            assert_eq!(t.partition_of_key(key), 0, "{key}");
        }
    }

    #[test]
    fn a_task_always_lands_in_one_partition_and_tasks_spread_over_all() {
        let t = partitioned(3);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let task = Uuid::new_v4();
            let p = t.partition_of(task);
            assert_eq!(p, t.partition_of(task));
            for kind in [crate::OpKind::Create, crate::OpKind::Delete] {
                assert_eq!(t.partition_of_key(&t.publish_key(kind, task)), p);
            }
            counts[usize::from(p)] += 1;
        }
        // Each partition gets a third, give or take 10%.
        assert!(
            counts.iter().all(|c| (900..=1100).contains(c)),
            "{counts:?}"
        );
        // Stable across builds and platforms (FNV-1a 64 of the bytes, worked out by hand):
        // every api must route a task alike.
        let fixed = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(
            (t.partition_of(fixed), partitioned(5).partition_of(fixed)),
            (1, 1)
        );
        let one = Uuid::from_u128(1);
        assert_eq!(
            (t.partition_of(one), partitioned(5).partition_of(one)),
            (2, 0)
        );
    }
}
