//! What becomes of a delivery: one [`Fate`] per delivery, decided by pure functions of what the
//! delivery says ([`Facts`]), what applying it gave, and whether its failure could be recorded.
//! [`super::settle`] carries the fates out.
//!
//! The rules, in order:
//! 1. (classic queues only) a redelivered message is counted in a header of ours and published
//!    again; past [`CRASH_LIMIT`] redeliveries it is parked as a likely crash loop. This comes
//!    first, for unreadable messages too: nothing that keeps failing may loop unbounded.
//!    (Quorum queues count deliveries themselves and dead-letter past their limit.)
//! 2. an undecodable message or an unknown schema version is parked at once;
//! 3. otherwise it is applied: decided (acked and reported), or, when the database cannot be
//!    reached, held without spending an attempt; when its own statement failed, retried through
//!    the delay queue of its attempt, or parked after the last one;
//! 4. a parking is recorded before its copy is published: when the database cannot be reached
//!    the delivery is held (no copy yet), so one message gives exactly one parked copy whatever
//!    the database does; when the database refuses the record, it is parked anyway (the copy's
//!    headers carry the facts).

use tasksync_shared::{OutcomeReport, config::QueueType, topology::Topology};

use crate::{apply::ApplyError, storage::failures::RecordError};

/// Redeliveries after which a classic work queue's message is parked as a likely crash loop.
pub const CRASH_LIMIT: u32 = 5;

/// What becomes of one delivery.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// Decided and committed: ack, then report to the api that published it.
    Applied(OutcomeReport),
    /// Attempt `attempt` failed: republish to the delay queue `queue`, then ack.
    Retry {
        attempt: u32,
        queue: String,
        error: String,
    },
    /// Never to be applied: recorded, a copy goes to the parking queue, then ack.
    Park { attempt: u32, reason: String },
    /// (classic queues) Redelivered: republish with the redelivery count `seen`, then ack.
    CountRedelivery { seen: u32 },
    /// The database cannot be reached: keep the delivery unacked, decide it again later.
    HoldForDatabase,
    /// Shutting down while held: hand it back to the queue.
    Requeue,
}

/// What a fate is decided from, read off one delivery.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// Why the body cannot be read as an operation, if it cannot.
    pub unreadable: Option<&'a str>,
    pub attempt: u32,
    pub redelivered: bool,
    /// Redeliveries counted so far by the classic crash guard.
    pub redeliveries: u32,
    pub queue_type: QueueType,
}

/// Before applying: `None` means "apply it".
pub fn triage(facts: &Facts<'_>) -> Option<Fate> {
    if facts.queue_type == QueueType::Classic && facts.redelivered {
        let seen = facts.redeliveries.saturating_add(1);
        if seen > CRASH_LIMIT {
            let reason = format!("redelivered {seen} times: it may be crashing the worker");
            return Some(park(facts.attempt, reason));
        }
        return Some(Fate::CountRedelivery { seen });
    }
    facts
        .unreadable
        .map(|reason| park(facts.attempt, reason.to_string()))
}

/// After applying one operation of work partition `partition` on attempt `attempt` (alone, or
/// in a batch that committed). A retry waits in that partition's delay queue, which returns it
/// to the same partition.
pub fn after_apply(
    attempt: u32,
    partition: u16,
    applied: Result<OutcomeReport, ApplyError>,
    topology: &Topology,
) -> Fate {
    match applied {
        Ok(report) => Fate::Applied(report),
        Err(ApplyError::Unavailable(_)) => Fate::HoldForDatabase,
        Err(ApplyError::Failed(error)) => {
            let queue = usize::try_from(attempt)
                .ok()
                .and_then(|n| topology.retry_queue_of(n, partition));
            match queue {
                Some(queue) => Fate::Retry {
                    attempt,
                    queue,
                    error,
                },
                None => park(
                    attempt,
                    format!("failed {attempt} attempts; last error: {error}"),
                ),
            }
        }
    }
}

/// After recording the failure of a delivery whose fate is `fate`. A retry goes ahead whatever
/// the record did (the copy's headers carry the same facts); a parking waits for a database that
/// cannot be reached, and goes ahead when the database refused the record.
pub fn after_record(fate: Fate, recorded: &Result<(), RecordError>) -> Fate {
    match (fate, recorded) {
        (Fate::Park { .. }, Err(RecordError::Unavailable(_))) => Fate::HoldForDatabase,
        (fate, _) => fate,
    }
}

fn park(attempt: u32, reason: String) -> Fate {
    Fate::Park { attempt, reason }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tasksync_shared::{Settings, operation::ItemStatus};
    use uuid::Uuid;

    use super::*;

    fn facts(queue_type: QueueType) -> Facts<'static> {
        Facts {
            unreadable: None,
            attempt: 1,
            redelivered: false,
            redeliveries: 0,
            queue_type,
        }
    }

    fn topology() -> Topology {
        Topology::from_settings(&Settings {
            retry_delays: [10, 20, 30].map(Duration::from_millis).to_vec(),
            ..Settings::default()
        })
    }

    fn report() -> OutcomeReport {
        OutcomeReport {
            op_id: Uuid::nil(),
            task_id: Uuid::nil(),
            status: ItemStatus::Success,
            error: None,
            rejection: None,
            task: None,
            repeat: false,
        }
    }

    #[test]
    fn a_readable_first_delivery_is_applied_on_either_queue_type() {
        assert_eq!(triage(&facts(QueueType::Quorum)), None);
        assert_eq!(triage(&facts(QueueType::Classic)), None);
        let redelivered = Facts {
            redelivered: true,
            redeliveries: 40,
            ..facts(QueueType::Quorum)
        };
        assert_eq!(triage(&redelivered), None, "quorum queues count for us");
    }

    #[test]
    fn an_unreadable_message_is_parked_at_once_with_its_reason() {
        let unreadable = Facts {
            unreadable: Some("malformed message body: x"),
            ..facts(QueueType::Quorum)
        };
        assert_eq!(
            triage(&unreadable),
            Some(park(1, "malformed message body: x".into()))
        );
    }

    #[test]
    fn the_classic_crash_guard_counts_redeliveries_before_reading_the_body() {
        let unreadable_again = Facts {
            unreadable: Some("malformed"),
            redelivered: true,
            redeliveries: 2,
            ..facts(QueueType::Classic)
        };
        assert_eq!(
            triage(&unreadable_again),
            Some(Fate::CountRedelivery { seen: 3 })
        );
        let past_the_limit = Facts {
            redeliveries: CRASH_LIMIT,
            attempt: 2,
            ..unreadable_again
        };
        let Some(Fate::Park { attempt, reason }) = triage(&past_the_limit) else {
            panic!("parked past the limit");
        };
        assert_eq!(attempt, 2);
        assert!(reason.contains("redelivered 6 times"), "{reason}");
    }

    #[test]
    fn a_failed_attempt_is_retried_until_the_last_then_parked() {
        let t = topology();
        let failed = || Err(ApplyError::Failed("boom".into()));
        for attempt in 1..=3 {
            assert_eq!(
                after_apply(attempt, 0, failed(), &t),
                Fate::Retry {
                    attempt,
                    queue: t.retry_queue(attempt as usize).unwrap(),
                    error: "boom".into()
                }
            );
        }
        assert_eq!(
            after_apply(4, 0, failed(), &t),
            park(4, "failed 4 attempts; last error: boom".into())
        );
    }

    #[test]
    fn a_retry_waits_in_its_own_partitions_delay_queue() {
        let t = Topology::from_settings(&Settings {
            work_partitions: 3,
            ..Settings::default()
        });
        for partition in 0..3 {
            let failed = Err(ApplyError::Failed("boom".into()));
            let Fate::Retry { queue, .. } = after_apply(2, partition, failed, &t) else {
                panic!("retried");
            };
            assert_eq!(Some(queue), t.retry_queue_of(2, partition));
        }
        assert_ne!(t.retry_queue_of(2, 1), t.retry_queue_of(2, 0));
    }

    #[test]
    fn a_database_out_of_reach_holds_and_a_decision_is_applied() {
        let t = topology();
        let unavailable = Err(ApplyError::Unavailable("gone".into()));
        assert_eq!(after_apply(4, 0, unavailable, &t), Fate::HoldForDatabase);
        assert_eq!(after_apply(1, 0, Ok(report()), &t), Fate::Applied(report()));
    }

    #[test]
    fn a_parking_waits_for_its_record_unless_the_database_refused_it() {
        let parking = park(4, "failed".into());
        let unavailable = Err(RecordError::Unavailable("gone".into()));
        let refused = Err(RecordError::Refused("bad".into()));
        assert_eq!(
            after_record(parking.clone(), &unavailable),
            Fate::HoldForDatabase
        );
        assert_eq!(after_record(parking.clone(), &refused), parking);
        assert_eq!(after_record(parking.clone(), &Ok(())), parking);
        let retry = Fate::Retry {
            attempt: 1,
            queue: "q".into(),
            error: "e".into(),
        };
        assert_eq!(after_record(retry.clone(), &unavailable), retry);
    }
}
