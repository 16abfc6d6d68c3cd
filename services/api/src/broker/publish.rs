//! Publishing operations with publisher confirms, and submitting them: publish, then wait
//! briefly for the worker's outcomes.

use std::{collections::HashMap, time::Duration};

use futures_util::{StreamExt, future::join_all, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Channel, Confirmation,
    options::BasicPublishOptions,
    types::{FieldTable, ShortString},
};
use tasksync_shared::{Operation, OutcomeReport, failure};
use tracing::{Span, field::Empty};
use uuid::Uuid;

use super::Broker;

/// Why an operation was not durably accepted. The client may retry.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("message broker unavailable")]
    NotConnected,
    #[error("message broker did not confirm in time")]
    Timeout,
    #[error("message broker refused the operation")]
    Refused,
    #[error("message broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("could not encode the operation: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What became of a submitted operation.
#[derive(Debug)]
pub enum Submitted {
    /// The worker decided it within the wait.
    Decided(OutcomeReport),
    /// The broker confirmed it; the worker has not decided yet.
    Accepted,
}

impl Broker {
    /// Publishes `ops` with publisher confirms, all in flight at once, and returns when the
    /// broker has confirmed every one. Any failure means some may not be durably accepted.
    /// With `reply`, each names this instance's reply queue, so the worker reports its outcome
    /// here; without (nobody waits), the worker sends no reply for it.
    #[tracing::instrument(
        name = "publish",
        skip_all,
        fields(ops = ops.len(), op_id = Empty, task_id = Empty, user = Empty)
    )]
    pub async fn publish(&self, ops: &[&Operation], reply: bool) -> Result<(), PublishError> {
        if let [op] = ops {
            let span = Span::current();
            span.record("op_id", tracing::field::display(op.op_id));
            span.record("task_id", tracing::field::display(op.task_id));
            span.record("user", op.user_id.as_str());
        }
        let (link, channel) = self.publish_channel().ok_or(PublishError::NotConnected)?;
        let reply_to = reply.then_some(&link.reply_queue);
        let confirmed = self.confirmed(reply_to, &channel, ops);
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.inner.publish_timeout, confirmed)
            .await
            .map_err(|_| PublishError::Timeout)
            .and_then(|confirmed| confirmed);
        let label = match &result {
            Ok(()) => "confirmed",
            Err(PublishError::Timeout) => "timeout",
            Err(PublishError::Refused) => "refused",
            Err(_) => "error",
        };
        self.inner
            .metrics
            .publish_confirmed(label, started.elapsed());
        match &result {
            Ok(()) => tracing::debug!("confirmed by the broker"),
            Err(error) => tracing::debug!(%error, "not confirmed by the broker"),
        }
        result
    }

    /// Publishes every op on `channel` before awaiting any confirm: the confirms of one
    /// request, and of the requests sharing the channel, are in flight together.
    async fn confirmed(
        &self,
        reply_to: Option<&ShortString>,
        channel: &Channel,
        ops: &[&Operation],
    ) -> Result<(), PublishError> {
        let exchange: ShortString = self.inner.topology.ops_exchange().into();
        let timestamp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
        let mut confirms = Vec::with_capacity(ops.len());
        for op in ops {
            let id: ShortString = op.op_id.to_string().into();
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(id.clone())
                .with_correlation_id(id)
                .with_timestamp(timestamp);
            let properties = match reply_to {
                Some(queue) => properties.with_reply_to(queue.clone()),
                None => properties,
            };
            // When the api received it, in milliseconds, for the worker's queue lag; and the
            // request's trace, so that the worker's log lines of the operation share it.
            let mut headers = FieldTable::default();
            failure::set_i64(
                &mut headers,
                failure::header::RECEIVED_MS,
                op.received_at.timestamp_millis(),
            );
            if let Some(trace) = crate::trace::current() {
                trace.put_in(&mut headers);
            }
            let properties = properties.with_headers(headers);
            let confirm = channel
                .basic_publish(
                    exchange.clone(),
                    self.inner.topology.publish_key(op.kind, op.task_id).into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &op.encode()?,
                    properties,
                )
                .await?;
            tracing::trace!(op_id = %op.op_id, task_id = %op.task_id, "published");
            confirms.push(confirm);
        }
        for confirmation in join_all(confirms).await {
            match confirmation? {
                Confirmation::Ack(None) => {}
                // Returned (unroutable) or nacked: not stored.
                _ => return Err(PublishError::Refused),
            }
        }
        Ok(())
    }

    /// Publishes one operation and waits up to `wait` for the worker's outcome (no wait when
    /// `None`).
    #[tracing::instrument(
        name = "submit",
        skip_all,
        fields(op_id = %op.op_id, task_id = %op.task_id, user = %op.user_id, kind = ?op.kind)
    )]
    pub async fn submit(
        &self,
        op: &Operation,
        wait: Option<Duration>,
    ) -> Result<Submitted, PublishError> {
        let mut outcomes = self.submit_many(&[op], wait).await?;
        Ok(match outcomes.remove(&op.op_id) {
            Some(report) => {
                tracing::debug!(status = ?report.status, "decided within the wait");
                Submitted::Decided(report)
            }
            None => {
                tracing::debug!("accepted, not decided within the wait");
                Submitted::Accepted
            }
        })
    }

    /// Publishes `ops` (confirms pipelined) and waits up to `wait` (none when `None`) for the
    /// worker's outcomes, returning those that came in time, by op id. An error means none of
    /// them may be assumed accepted.
    #[tracing::instrument(name = "submit_many", skip_all, fields(ops = ops.len()))]
    pub async fn submit_many(
        &self,
        ops: &[&Operation],
        wait: Option<Duration>,
    ) -> Result<HashMap<Uuid, OutcomeReport>, PublishError> {
        let Some(wait) = wait else {
            self.publish(ops, false).await?;
            self.inner.metrics.writes_answered(0, ops.len());
            return Ok(HashMap::new());
        };
        // Register before publishing: a reply may come back before the confirms do.
        let op_ids: Vec<Uuid> = ops.iter().map(|op| op.op_id).collect();
        let (receivers, _guard) = self.inner.waiters.register(&op_ids);
        self.publish(ops, true).await?;
        let mut outcomes = HashMap::with_capacity(ops.len());
        let mut replies: FuturesUnordered<_> = receivers.into_iter().collect();
        let waiting = self.inner.metrics.wait_started();
        let _ = tokio::time::timeout(wait, async {
            while let Some(reply) = replies.next().await {
                if let Ok(report) = reply {
                    outcomes.insert(report.op_id, report);
                }
            }
        })
        .await;
        drop(waiting);
        let applied = outcomes.len();
        self.inner
            .metrics
            .writes_answered(applied, ops.len().saturating_sub(applied));
        Ok(outcomes)
    }
}
