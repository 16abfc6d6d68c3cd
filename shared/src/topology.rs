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

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::{Settings, config::QueueType};

/// Deliveries of one message after which a quorum work queue dead-letters it to the parking
/// queue: the guard against a message that crashes the worker over and over.
pub const DELIVERY_LIMIT: i64 = 10;

/// Routing key of operation messages (`op.create`, `op.update`, `op.delete`).
pub fn routing_key(kind: crate::OpKind) -> String {
    format!("op.{}", kind.as_str())
}

/// Routing key of operations coming back from a delay queue.
pub const RETRY_ROUTING_KEY: &str = "op.retry";

/// The names of one stack's exchanges and queues.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
    retry_delays: Vec<Duration>,
}

impl Topology {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            prefix: settings.amqp_prefix.clone(),
            queue_type: settings.queue_type,
            retry_delays: settings.retry_delays.clone(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where the api publishes operations.
    pub fn ops_exchange(&self) -> String {
        format!("{}.ops", self.prefix)
    }

    /// What the worker consumes.
    pub fn work_queue(&self) -> String {
        format!("{}.ops.work", self.prefix)
    }

    /// Where the worker sends a failed operation for a delayed retry.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// Number of retries after the first attempt.
    pub fn retries(&self) -> usize {
        self.retry_delays.len()
    }

    /// The delay queue of retry `n` (1-based), also its routing key on the retry exchange.
    pub fn retry_queue(&self, n: usize) -> Option<String> {
        let delay = self.retry_delays.get(n.checked_sub(1)?)?;
        Some(format!(
            "{}.ops.retry.{n}.{}ms",
            self.prefix,
            delay.as_millis()
        ))
    }

    /// Dead-letter exchange of the work queue, and where the worker parks operations.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Where operations that can never be applied wait for ops to inspect them.
    pub fn parking_queue(&self) -> String {
        format!("{}.ops.parked", self.prefix)
    }

    /// The delay queues, retry 1 first.
    pub fn retry_queues(&self) -> Vec<String> {
        (1..=self.retries())
            .filter_map(|n| self.retry_queue(n))
            .collect()
    }

    /// Every durable queue: work, delay queues, parking.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.work_queue()];
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
        channel
            .queue_declare(self.work_queue().into(), queue, work_args)
            .await?;
        bind(channel, self.work_queue(), self.ops_exchange(), "op.#").await?;

        let ops = self.ops_exchange();
        for (queue_name, delay) in self.retry_queues().into_iter().zip(&self.retry_delays) {
            let mut args = self.queue_args(Some((&ops, Some(RETRY_ROUTING_KEY))));
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            channel
                .queue_declare(queue_name.clone().into(), queue, args)
                .await?;
            let key = queue_name.clone();
            bind(channel, queue_name, self.retry_exchange(), &key).await?;
        }

        channel
            .queue_declare(self.parking_queue().into(), queue, self.queue_args(None))
            .await?;
        bind(channel, self.parking_queue(), self.dead_exchange(), "").await?;
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
}
