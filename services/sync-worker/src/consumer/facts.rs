//! What a delivery says about itself: its attempt, its redeliveries, its routing key, and the
//! id its failure record is kept under. Read from properties and body only, no I/O.

use lapin::{BasicProperties, message::Delivery, types::FieldTable};
use tasksync_shared::{
    Operation,
    failure::{self, header},
    telemetry::traceparent::TraceParent,
    topology::Topology,
};

use crate::apply::Attempt;

/// Which attempt a delivery is: failed attempts so far (our header) plus one; and its trace.
pub fn attempt_of(properties: &BasicProperties) -> Attempt {
    Attempt {
        number: failure::header_u32(properties, header::ATTEMPTS).unwrap_or(0) + 1,
        replay: failure::header_u32(properties, header::REPLAY).is_some(),
        trace_id: TraceParent::from_amqp_headers(properties.headers().as_ref())
            .map(|trace| trace.trace_id),
    }
}

/// Redeliveries the classic-queue crash guard has counted so far.
pub fn redeliveries_of(properties: &BasicProperties) -> u32 {
    failure::header_u32(properties, header::REDELIVERIES).unwrap_or(0)
}

/// The routing key the api published with (a retry copy arrives with `op.retry`).
pub fn original_routing_key(properties: &BasicProperties, routing_key: &str) -> String {
    failure::header_str(properties, header::ORIGINAL_ROUTING_KEY)
        .unwrap_or_else(|| routing_key.to_string())
}

/// The work partition a delivery belongs to, from the routing key the api published it with.
pub fn partition_of(topology: &Topology, delivery: &Delivery) -> u16 {
    let key = original_routing_key(&delivery.properties, delivery.routing_key.as_str());
    topology.partition_of_key(&key)
}

pub fn headers_of(properties: &BasicProperties) -> FieldTable {
    properties.headers().clone().unwrap_or_default()
}

/// The key of a delivery's failure record, the same on every redelivery so that a retry never
/// makes a second record or parked copy: the op id; for a message that cannot be read, the
/// publisher's AMQP `message_id`, or else a hash of the body.
pub fn message_id(op: Option<&Operation>, properties: &BasicProperties, body: &[u8]) -> String {
    if let Some(op) = op {
        return op.op_id.to_string();
    }
    match properties.message_id() {
        Some(id) if !id.as_str().trim().is_empty() => id.as_str().replace('\0', "\u{FFFD}"),
        _ => format!("body-{:032x}", fnv1a_128(body)),
    }
}

/// FNV-1a, 128 bits: stable across builds and platforms (unlike `std`'s hasher). A key, not a
/// checksum: nothing relies on it resisting crafted collisions.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_message_keeps_one_id_across_deliveries() {
        let plain = BasicProperties::default();
        let first = message_id(None, &plain, b"\x00garbage");
        assert_eq!(first, message_id(None, &plain, b"\x00garbage"));
        assert_ne!(first, message_id(None, &plain, b"\x00garbagf"));
        assert_eq!(first.len(), "body-".len() + 32);
        // Known FNV-1a 128 value of the empty input: the offset basis.
        assert_eq!(
            message_id(None, &plain, b""),
            "body-6c62272e07bb014262b821756295c58d"
        );

        let named = BasicProperties::default().with_message_id("publisher-7".into());
        assert_eq!(message_id(None, &named, b"x"), "publisher-7");
        let blank = BasicProperties::default().with_message_id(" ".into());
        assert!(message_id(None, &blank, b"x").starts_with("body-"));
    }

    #[test]
    fn attempts_and_redeliveries_come_from_our_headers() {
        let mut headers = FieldTable::default();
        failure::set_u32(&mut headers, header::ATTEMPTS, 2);
        failure::set_u32(&mut headers, header::REDELIVERIES, 4);
        let props = BasicProperties::default().with_headers(headers);
        assert_eq!(attempt_of(&props).number, 3);
        assert!(!attempt_of(&props).replay);
        assert_eq!(redeliveries_of(&props), 4);
        assert_eq!(attempt_of(&BasicProperties::default()).number, 1);
        assert_eq!(original_routing_key(&props, "op.retry"), "op.retry");
    }
}
