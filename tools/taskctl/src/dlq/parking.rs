//! Walking the parking queue without spending its delivery budget.
//!
//! AMQP cannot fetch a chosen message, so a replay takes messages from the head, one at a time
//! (`basic.get` with a manual ack). A message it does not replay is never handed back with a
//! requeue: on quorum queues every requeue counts as a delivery, RabbitMQ 4.x gives quorum
//! queues a delivery limit of 20 by default (an operator policy may set one on any version), and
//! the parking queue has no dead-letter target, so a message past the limit would be dropped.
//! Instead [`keep`] publishes an identical copy to the parking queue (through the default
//! exchange, confirmed) and only then acks the original; the copy starts with a delivery count
//! of 0. The kept messages move to the tail, in their order. At most one message is held at a
//! time, so a crash costs at most one delivery of one message, and a crash between the copy's
//! confirm and the ack leaves a duplicate, never a loss.

use lapin::{
    BasicProperties,
    message::BasicGetMessage,
    options::{BasicAckOptions, BasicGetOptions},
    types::FieldTable,
};
use tasksync_shared::failure::{self, header};

use crate::{
    CtlError,
    broker::{self, Broker},
};

/// Header the broker sets on a quorum-queue message it redelivers; a copy starts afresh.
const DELIVERY_COUNT: &str = "x-delivery-count";

/// A message taken from the parking queue and not yet settled.
#[derive(Debug)]
pub struct Taken {
    message: BasicGetMessage,
}

impl Taken {
    pub fn properties(&self) -> &BasicProperties {
        &self.message.delivery.properties
    }

    pub fn body(&self) -> &[u8] {
        &self.message.delivery.data
    }

    /// The routing key it was first published with, when known.
    pub fn original_routing_key(&self) -> Option<String> {
        failure::header_str(self.properties(), header::ORIGINAL_ROUTING_KEY).or_else(|| {
            let key = self.message.delivery.routing_key.as_str();
            (!key.is_empty()).then(|| key.to_string())
        })
    }

    /// Its failure record's key: the worker's message id, else the op id, else the
    /// publisher's own message id (a message the broker dead-lettered carries only that).
    pub fn key(&self) -> String {
        self.ids()
            .into_iter()
            .next()
            .unwrap_or_else(|| "(no id)".to_string())
    }

    /// Every id it answers to: the record key, the op id and the publisher's message id.
    pub fn ids(&self) -> Vec<String> {
        let props = self.properties();
        [
            failure::header_str(props, header::MESSAGE_ID),
            failure::header_str(props, header::OP_ID),
            props.message_id().as_ref().map(|m| m.as_str().to_string()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    pub fn answers_to(&self, id: &str) -> bool {
        self.ids().iter().any(|mine| mine == id)
    }

    pub async fn ack(self) -> Result<(), CtlError> {
        self.message
            .delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| broker::failed("acknowledging a parked message", &e))
    }
}

/// Takes the message at the head of `queue`, if any.
pub async fn take(broker: &Broker, queue: &str) -> Result<Option<Taken>, CtlError> {
    let message = broker
        .channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(|e| broker::failed(&format!("taking a message from {queue}"), &e))?;
    Ok(message.map(|message| Taken { message }))
}

/// Puts a taken message back at the tail of `queue` without spending a delivery: a confirmed
/// copy first, then the original is acked.
pub async fn keep(broker: &Broker, queue: &str, taken: Taken) -> Result<(), CtlError> {
    let mut headers = FieldTable::default();
    for (name, value) in taken.properties().headers().iter().flat_map(|h| h.inner()) {
        if name.as_str() != DELIVERY_COUNT {
            headers.insert(name.clone(), value.clone());
        }
    }
    let properties = copy_properties(taken.properties(), headers, true);
    broker.publish("", queue, taken.body(), properties).await?;
    taken.ack().await
}

/// The properties of `from` with other headers, made persistent. `user_id` is left out: the
/// broker checks it against the user who publishes, and taskctl may connect as another one.
pub fn copy_properties(
    from: &BasicProperties,
    headers: FieldTable,
    with_reply_to: bool,
) -> BasicProperties {
    let mut to = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(v) = from.content_type() {
        to = to.with_content_type(v.clone());
    }
    if let Some(v) = from.content_encoding() {
        to = to.with_content_encoding(v.clone());
    }
    if let Some(v) = from.priority() {
        to = to.with_priority(*v);
    }
    if let Some(v) = from.correlation_id() {
        to = to.with_correlation_id(v.clone());
    }
    if let Some(v) = from.reply_to().as_ref().filter(|_| with_reply_to) {
        to = to.with_reply_to(v.clone());
    }
    if let Some(v) = from.expiration() {
        to = to.with_expiration(v.clone());
    }
    if let Some(v) = from.message_id() {
        to = to.with_message_id(v.clone());
    }
    if let Some(v) = from.timestamp() {
        to = to.with_timestamp(*v);
    }
    if let Some(v) = from.kind() {
        to = to.with_type(v.clone());
    }
    if let Some(v) = from.app_id() {
        to = to.with_app_id(v.clone());
    }
    to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_what_identifies_the_message_but_not_the_publishing_user() {
        let original = BasicProperties::default()
            .with_message_id("theirs".into())
            .with_correlation_id("corr".into())
            .with_content_type("application/json".into())
            .with_reply_to("api-reply".into())
            .with_user_id("guest".into())
            .with_timestamp(7);
        let kept = copy_properties(&original, FieldTable::default(), true);
        assert_eq!(
            kept.message_id().as_ref().map(|m| m.as_str()),
            Some("theirs")
        );
        assert_eq!(
            kept.correlation_id().as_ref().map(|m| m.as_str()),
            Some("corr")
        );
        assert_eq!(
            kept.reply_to().as_ref().map(|m| m.as_str()),
            Some("api-reply")
        );
        assert_eq!(*kept.timestamp(), Some(7));
        assert_eq!(*kept.delivery_mode(), Some(2));
        assert_eq!(*kept.user_id(), None);
        let replayed = copy_properties(&original, FieldTable::default(), false);
        assert_eq!(*replayed.reply_to(), None);
    }
}
