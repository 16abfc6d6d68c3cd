//! Exchange and queue names under the configured prefix, and their declaration.
//!
//! ```text
//! api ──▶ {p}.ops (topic) ──op.#──▶ {p}.ops.work ──▶ sync-worker
//!                                        │ rejected / dead-lettered
//!                                        ▼
//!                                   {p}.dead (fanout) ──▶ {p}.ops.parked
//! ```
//!
//! Declaration is idempotent: both services declare at every (re)connect, so either may start
//! first. Replies go through the default exchange to each api instance's own exclusive queue.

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::config::QueueType;

/// Routing key of operation messages (`op.create`, `op.update`, `op.delete`).
pub fn routing_key(kind: crate::OpKind) -> String {
    format!("op.{}", kind.as_str())
}

/// The names of one stack's exchanges and queues.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
}

impl Topology {
    pub fn new(prefix: &str, queue_type: QueueType) -> Self {
        Self {
            prefix: prefix.to_string(),
            queue_type,
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

    /// Dead-letter exchange of the work queue.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Where messages that can never be applied are parked for ops to inspect.
    pub fn parking_queue(&self) -> String {
        format!("{}.ops.parked", self.prefix)
    }

    /// Every durable queue, for ops tooling and cleanup.
    pub fn queues(&self) -> Vec<String> {
        vec![self.work_queue(), self.parking_queue()]
    }

    /// Every exchange, for ops tooling and cleanup.
    pub fn exchanges(&self) -> Vec<String> {
        vec![self.ops_exchange(), self.dead_exchange()]
    }

    fn durable_queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), long_string("quorum"));
        }
        args
    }

    /// Declares every exchange, queue and binding. Safe to call from any number of processes.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.ops_exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_exchange().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;

        let queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut work_args = self.durable_queue_args();
        work_args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.dead_exchange()),
        );
        channel
            .queue_declare(self.work_queue().into(), queue, work_args)
            .await?;
        channel
            .queue_declare(
                self.parking_queue().into(),
                queue,
                self.durable_queue_args(),
            )
            .await?;

        let bind = |q: String, x: String, key: &str| {
            let (q, x, key): (ShortString, ShortString, ShortString) =
                (q.into(), x.into(), key.into());
            channel.queue_bind(
                q,
                x,
                key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
        };
        bind(self.work_queue(), self.ops_exchange(), "op.#").await?;
        bind(self.parking_queue(), self.dead_exchange(), "").await?;
        Ok(())
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}
