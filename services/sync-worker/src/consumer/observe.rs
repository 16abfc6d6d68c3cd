//! What the step decided, counted in the worker's metrics: one place that reads the fates, so
//! that the pipeline itself only calls [`observe`].

use tasksync_shared::config::QueueType;

use super::{Ctx, facts, fate::Fate, step::Verdict};
use crate::metrics::ParkReason;

/// Counts the decided fates of `verdicts` (held deliveries are counted when decided again).
pub(super) fn observe(ctx: &Ctx<'_>, verdicts: &[Verdict]) {
    for verdict in verdicts {
        match &verdict.fate {
            // Decided before (committed, then the session broke before the ack; or sent
            // again): counted once already, by its outcome.
            Fate::Applied(report) if report.repeat => ctx.metrics.repeated(redelivered(verdict)),
            Fate::Applied(report) => ctx.metrics.decided(report.status.as_str()),
            Fate::Retry { attempt, .. } => ctx.metrics.retried(*attempt),
            Fate::Park { .. } => ctx.metrics.parked(park_reason(ctx, verdict)),
            Fate::CountRedelivery { .. } | Fate::HoldForDatabase | Fate::Requeue => {}
        }
    }
}

/// Whether the broker gave the delivery before: flagged redelivered, or (classic queues) a copy
/// that counts redeliveries.
fn redelivered(verdict: &Verdict) -> bool {
    let delivery = &verdict.item.delivery;
    delivery.redelivered || facts::redeliveries_of(&delivery.properties) > 0
}

/// The class of a parking, from the facts the fate was decided on (see [`super::fate::triage`]):
/// a classic-queue redelivery parked only past the crash limit; an unreadable body has no
/// operation; anything else failed its attempts.
fn park_reason(ctx: &Ctx<'_>, verdict: &Verdict) -> ParkReason {
    if ctx.settings.queue_type == QueueType::Classic && verdict.item.delivery.redelivered {
        ParkReason::CrashLoop
    } else if verdict.op.is_none() {
        ParkReason::Unreadable
    } else {
        ParkReason::AttemptsExhausted
    }
}
