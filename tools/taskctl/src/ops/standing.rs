//! Where one operation stands, decided from its log entry and its failure record, and when a
//! retrying operation's next attempt is due. Pure, so every case is unit-tested.
//!
//! A failed attempt `n` sends the operation to delay queue `n`, whose TTL is the `n`-th of
//! `RETRY_DELAYS_MS` (see [`tasksync_shared::topology`]); the worker records the failure just
//! before it publishes that copy, so the next attempt comes around the recorded time plus that
//! delay (later if the work queue is backed up).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tasksync_shared::failure::RecordState;

use crate::records::{Failure, LogEntry};

/// The next attempt of a retrying operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NextAttempt {
    /// Its number (the first attempt is 1).
    pub number: u32,
    /// Attempts in all before the operation is parked.
    pub of: u32,
    /// When its delay ends; `None` when `RETRY_DELAYS_MS` has no delay for the failed attempt
    /// (taskctl configured unlike the worker).
    pub at: Option<DateTime<Utc>>,
    /// The delay has ended: the copy is back in the work queue, or about to be.
    pub due: bool,
}

/// Where a parked operation's message is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Parking {
    /// In the parking queue.
    Waiting,
    /// Sent back to the work queue by `dlq replay`, not decided again yet.
    Replayed,
    /// Deleted from the parking queue by `dlq purge`: it will never apply.
    Purged,
}

/// Where one operation stands.
#[derive(Debug)]
pub enum Standing {
    /// In the operation log with its outcome; `failure` holds its failed attempts, if any.
    Decided {
        log: LogEntry,
        failure: Option<Failure>,
    },
    /// An attempt failed; the operation waits in a delay queue (its log entry is an earlier
    /// `error` when a replay failed again).
    Retrying {
        failure: Failure,
        next: NextAttempt,
        log: Option<LogEntry>,
    },
    /// Every attempt failed, or the message could not be read. `replays` counts the earlier
    /// replays that failed again.
    Parked {
        failure: Failure,
        parking: Parking,
        replays: u32,
        log: Option<LogEntry>,
    },
    /// Neither the log nor a failure record knows it.
    Unknown,
}

impl Standing {
    /// The state's name in JSON: `decided`, `retrying`, `parked` or `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Decided { .. } => "decided",
            Self::Retrying { .. } => "retrying",
            Self::Parked { .. } => "parked",
            Self::Unknown => "unknown",
        }
    }
}

/// What the log entry and the failure record (with the attempt numbers of its history) say
/// together. The record's state wins over the log: a replayed operation keeps its old `error`
/// entry until it is decided again, and then its record becomes `resolved`.
pub fn standing(
    log: Option<LogEntry>,
    failure: Option<(Failure, Vec<u32>)>,
    retry_delays: &[Duration],
    now: DateTime<Utc>,
) -> Standing {
    let Some((failure, history)) = failure else {
        return log.map_or(Standing::Unknown, |log| Standing::Decided {
            log,
            failure: None,
        });
    };
    let parking = match failure.state {
        RecordState::Retrying => {
            let next = next_attempt(&failure, retry_delays, now);
            return Standing::Retrying { failure, next, log };
        }
        RecordState::Resolved => {
            return match log {
                Some(log) => Standing::Decided {
                    log,
                    failure: Some(failure),
                },
                // Resolved in the transaction that logged it: a log without it was emptied.
                None => Standing::Unknown,
            };
        }
        RecordState::Parked => Parking::Waiting,
        RecordState::Replayed => Parking::Replayed,
        RecordState::Purged => Parking::Purged,
    };
    Standing::Parked {
        replays: replays(&history),
        parking,
        failure,
        log,
    }
}

/// When the attempt after the record's last failed one comes.
pub fn next_attempt(
    failure: &Failure,
    retry_delays: &[Duration],
    now: DateTime<Utc>,
) -> NextAttempt {
    let failed = u32::try_from(failure.record.attempts).unwrap_or_default();
    let at = usize::try_from(failed)
        .ok()
        .and_then(|n| retry_delays.get(n.checked_sub(1)?))
        .and_then(|delay| chrono::Duration::from_std(*delay).ok())
        .map(|delay| failure.record.last_failed_at + delay);
    NextAttempt {
        number: failed.saturating_add(1),
        of: u32::try_from(retry_delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1),
        at,
        due: at.is_some_and(|at| at <= now),
    }
}

/// Replays in a record's history: each starts its attempts afresh, so an attempt number that
/// does not grow marks one.
fn replays(history: &[u32]) -> u32 {
    let restarts = history.windows(2).filter(|w| w[1] <= w[0]).count();
    u32::try_from(restarts).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Parked;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    fn failure(state: RecordState, attempts: i32, last_failed_at: DateTime<Utc>) -> Failure {
        Failure {
            record: Parked {
                message_id: "m".into(),
                op_id: None,
                task_id: None,
                user_id: None,
                kind: None,
                routing_key: "op.update".into(),
                attempts,
                first_failed_at: last_failed_at,
                last_failed_at,
                age_seconds: 0,
                last_error: "boom".into(),
            },
            state,
        }
    }

    fn log(outcome: &str) -> LogEntry {
        LogEntry {
            task_id: uuid::Uuid::nil(),
            user_id: "default".into(),
            kind: "update".into(),
            outcome: outcome.into(),
            attempts: 1,
            last_error: None,
            client_ts: at(0),
            received_at: at(0),
            decided_at: at(1),
        }
    }

    const DELAYS: [Duration; 3] = [
        Duration::from_secs(1),
        Duration::from_secs(5),
        Duration::from_secs(25),
    ];

    #[test]
    fn the_next_attempt_comes_after_the_delay_of_the_failed_one() {
        let second = next_attempt(&failure(RecordState::Retrying, 2, at(0)), &DELAYS, at(4));
        assert_eq!(
            second,
            NextAttempt {
                number: 3,
                of: 4,
                at: Some(at(5)),
                due: false
            }
        );
        let due = next_attempt(&failure(RecordState::Retrying, 2, at(0)), &DELAYS, at(5));
        assert!(due.due);
        let beyond = next_attempt(&failure(RecordState::Retrying, 4, at(0)), &DELAYS, at(9));
        assert_eq!((beyond.at, beyond.due), (None, false));
    }

    #[test]
    fn the_record_state_wins_over_the_log_and_neither_is_unknown() {
        let now = at(10);
        assert!(matches!(
            standing(None, None, &DELAYS, now),
            Standing::Unknown
        ));
        let decided = standing(Some(log("success")), None, &DELAYS, now);
        assert_eq!(decided.name(), "decided");
        let retried = (failure(RecordState::Resolved, 2, at(0)), vec![1, 2]);
        let decided = standing(Some(log("success")), Some(retried), &DELAYS, now);
        assert!(matches!(
            decided,
            Standing::Decided {
                failure: Some(_),
                ..
            }
        ));
        // A replay that failed again: the old `error` entry is still in the log.
        let again = (
            failure(RecordState::Retrying, 1, at(9)),
            vec![1, 2, 3, 4, 1],
        );
        let retrying = standing(Some(log("error")), Some(again), &DELAYS, now);
        assert!(matches!(retrying, Standing::Retrying { next, .. } if next.number == 2));
        for (state, parking) in [
            (RecordState::Parked, Parking::Waiting),
            (RecordState::Replayed, Parking::Replayed),
            (RecordState::Purged, Parking::Purged),
        ] {
            let record = (failure(state, 4, at(0)), vec![1, 2, 3, 4, 1, 2, 3, 4]);
            let parked = standing(Some(log("error")), Some(record), &DELAYS, now);
            assert!(
                matches!(parked, Standing::Parked { parking: p, replays: 1, .. } if p == parking),
                "{state:?}: {parked:?}"
            );
        }
    }
}
