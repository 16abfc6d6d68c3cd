//! Acknowledging a settled batch with as few frames as the broker's rules allow.
//!
//! `basic.ack` with `multiple` acknowledges every outstanding delivery of the channel up to a
//! tag. Batches settle in delivery order (the loop in [`super`] passes a baton), so when a batch
//! settles, every earlier delivery of the channel is already acked or handed back, and every
//! later one belongs to a batch that has not settled. One `multiple` ack may then cover the
//! batch up to, not including, its first delivery held for the database; what was carried out
//! above that one is acked one by one.

/// Which acks to send for a batch.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AckPlan {
    /// One ack with `multiple` at this tag.
    pub multiple_up_to: Option<u64>,
    /// Acks of one delivery each, in ascending order.
    pub singles: Vec<u64>,
}

/// The acks for a batch whose deliveries `done` were carried out (applied, or their copy
/// confirmed) and whose deliveries `held` stay unacknowledged. Requeued deliveries are in
/// neither: the broker already took them back.
pub(super) fn plan(done: &[u64], held: &[u64]) -> AckPlan {
    let first_held = held.iter().copied().min().unwrap_or(u64::MAX);
    let below = done.iter().copied().filter(|tag| *tag < first_held).max();
    let mut singles: Vec<u64> = done
        .iter()
        .copied()
        .filter(|tag| *tag > first_held)
        .collect();
    singles.sort_unstable();
    AckPlan {
        multiple_up_to: below,
        singles,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_with_nothing_held_takes_one_ack() {
        assert_eq!(
            plan(&[7, 5, 6, 8], &[]),
            AckPlan {
                multiple_up_to: Some(8),
                singles: vec![]
            }
        );
    }

    #[test]
    fn a_held_delivery_is_never_covered_by_the_multiple_ack() {
        assert_eq!(
            plan(&[5, 6, 9, 8], &[7]),
            AckPlan {
                multiple_up_to: Some(6),
                singles: vec![8, 9]
            }
        );
        assert_eq!(
            plan(&[9, 8], &[7, 5]),
            AckPlan {
                multiple_up_to: None,
                singles: vec![8, 9]
            }
        );
    }

    #[test]
    fn nothing_done_sends_nothing() {
        assert_eq!(
            plan(&[], &[3, 4]),
            AckPlan {
                multiple_up_to: None,
                singles: vec![]
            }
        );
    }
}
