//! The worker's step over one batch of deliveries: read each delivery, decide its fate, apply
//! those to be applied (splitting a failed batch to find the operation at fault), and record
//! failures. Every database round is bounded by `DB_TIMEOUT_MS`; the broker is left to
//! [`super::settle`].

use lapin::message::Delivery;
use tasksync_shared::{
    Operation, OutcomeReport,
    telemetry::{export, traceparent::TraceParent},
};
use tracing::{Instrument, Span, field};

use super::{
    Ctx, facts,
    fate::{self, Facts, Fate},
};
use crate::{
    apply::{ApplyError, Attempt, LockTurn, apply_batch},
    storage::failures::{Failure, FailureRecords, RecordError},
};

/// A delivery and what was read off it.
#[derive(Debug)]
pub(super) struct Item {
    pub delivery: Delivery,
    pub attempt: Attempt,
    /// The key of its failure record (the op id for an operation).
    pub message_id: String,
    /// The delivery's span: op id, task, user, attempt and trace id.
    pub span: Span,
}

/// A delivery with its fate.
#[derive(Debug)]
pub(super) struct Verdict {
    pub item: Item,
    /// The operation, when the body could be read.
    pub op: Option<Operation>,
    pub fate: Fate,
}

/// Decides the fate of every delivery of `batch`, taking its locks in `turn`.
#[tracing::instrument(skip_all, fields(deliveries = batch.len()))]
pub(super) async fn step(ctx: &Ctx<'_>, batch: Vec<Delivery>, turn: LockTurn) -> Vec<Verdict> {
    let mut verdicts = Vec::with_capacity(batch.len());
    let mut to_apply = Vec::with_capacity(batch.len());
    for delivery in batch {
        match read(ctx, delivery) {
            Read::Apply(item, op) => to_apply.push((item, op)),
            Read::Decided(verdict) => verdicts.push(verdict),
        }
    }
    if !to_apply.is_empty() {
        verdicts.extend(apply_or_split(ctx, to_apply, turn).await);
    }
    record(ctx, verdicts).await
}

/// A delivery read: an operation to apply, or a fate decided without applying.
enum Read {
    Apply(Item, Operation),
    Decided(Verdict),
}

fn read(ctx: &Ctx<'_>, delivery: Delivery) -> Read {
    let decoded = Operation::decode(&delivery.data);
    let attempt = facts::attempt_of(&delivery.properties);
    let message_id = facts::message_id(decoded.as_ref().ok(), &delivery.properties, &delivery.data);
    let trace = TraceParent::from_amqp_headers(delivery.properties.headers().as_ref());
    let span = delivery_span(decoded.as_ref().ok(), attempt, &message_id, trace.as_ref());
    let unreadable = decoded.as_ref().err().map(ToString::to_string);
    let triaged = fate::triage(&Facts {
        unreadable: unreadable.as_deref(),
        attempt: attempt.number,
        redelivered: delivery.redelivered,
        redeliveries: facts::redeliveries_of(&delivery.properties),
        queue_type: ctx.settings.queue_type,
    });
    let item = Item {
        delivery,
        attempt,
        message_id,
        span,
    };
    match (triaged, decoded) {
        (None, Ok(op)) => Read::Apply(item, op),
        (Some(fate), decoded) => Read::Decided(Verdict {
            item,
            op: decoded.ok(),
            fate,
        }),
        // Not reached: triage parks whatever cannot be read.
        (None, Err(error)) => Read::Decided(Verdict {
            fate: Fate::Park {
                attempt: item.attempt.number,
                reason: error.to_string(),
            },
            item,
            op: None,
        }),
    }
}

/// A root span, entered wherever the delivery is worked on (step and settle), so that one
/// operation can be followed through the logs by its op id, and by the trace id of the request
/// that published it (`traceparent` header; retry and parked copies keep it). Exported spans
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`) continue that trace too.
fn delivery_span(
    op: Option<&Operation>,
    attempt: Attempt,
    message_id: &str,
    trace: Option<&TraceParent>,
) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "delivery",
        op_id = field::Empty,
        task_id = field::Empty,
        user = field::Empty,
        attempt = attempt.number,
        message_id = field::Empty,
        trace_id = attempt.trace_id.map(field::display),
    );
    if let Some(trace) = trace {
        // Without an exporter there is nothing to continue: the log fields carry the trace.
        let _ = export::continue_trace(&span, Some(trace));
    }
    match op {
        Some(op) => {
            span.record("op_id", field::display(op.op_id));
            span.record("task_id", field::display(op.task_id));
            span.record("user", op.user_id.as_str());
        }
        None => {
            span.record("message_id", message_id);
        }
    }
    span
}

/// Applies a batch in one transaction; when a statement fails, applies its operations one by
/// one to find the one at fault (outside the lock order: by then the batches behind it have
/// gone ahead).
async fn apply_or_split(
    ctx: &Ctx<'_>,
    batch: Vec<(Item, Operation)>,
    turn: LockTurn,
) -> Vec<Verdict> {
    let ops: Vec<Operation> = batch.iter().map(|(_, op)| op.clone()).collect();
    let attempts: Vec<Attempt> = batch.iter().map(|(item, _)| item.attempt).collect();
    let results: Vec<Result<OutcomeReport, ApplyError>> =
        match apply_bounded(ctx, &ops, &attempts, turn).await {
            Ok(reports) => reports.into_iter().map(Ok).collect(),
            Err(ApplyError::Failed(error)) if batch.len() > 1 => {
                tracing::warn!(%error, size = batch.len(), "batch failed; applying one by one");
                return one_by_one(ctx, batch).await;
            }
            Err(ApplyError::Unavailable(error)) => {
                tracing::warn!(%error, held = batch.len(), "database unavailable");
                let unavailable = || Err(ApplyError::Unavailable(error.clone()));
                std::iter::repeat_with(unavailable)
                    .take(batch.len())
                    .collect()
            }
            Err(rejected) => vec![Err(rejected)],
        };
    // One report per operation, in order; a missing one would be a bug in the step: hold it
    // rather than lose the delivery.
    let missing = || {
        Err(ApplyError::Unavailable(
            "no report for the operation".into(),
        ))
    };
    let results = results.into_iter().chain(std::iter::repeat_with(missing));
    batch
        .into_iter()
        .zip(results)
        .map(|((item, op), applied)| {
            let partition = facts::partition_of(ctx.topology, &item.delivery);
            let fate = fate::after_apply(item.attempt.number, partition, applied, ctx.topology);
            Verdict {
                item,
                op: Some(op),
                fate,
            }
        })
        .collect()
}

/// Applies each operation alone. Once the database is out of reach, the rest are held without
/// trying (each try could cost a whole `DB_TIMEOUT_MS`).
async fn one_by_one(ctx: &Ctx<'_>, batch: Vec<(Item, Operation)>) -> Vec<Verdict> {
    let mut verdicts = Vec::with_capacity(batch.len());
    let mut reachable = true;
    for (item, op) in batch {
        if !reachable {
            verdicts.push(Verdict {
                item,
                op: Some(op),
                fate: Fate::HoldForDatabase,
            });
            continue;
        }
        let span = item.span.clone();
        let alone = Box::pin(apply_or_split(ctx, vec![(item, op)], LockTurn::default()))
            .instrument(span)
            .await;
        reachable = !alone.iter().any(|v| v.fate == Fate::HoldForDatabase);
        verdicts.extend(alone);
    }
    verdicts
}

/// The apply step, bounded: a database that stops answering (frozen, or a silent network path)
/// counts as unavailable past `DB_TIMEOUT_MS`, like a refused connection.
async fn apply_bounded(
    ctx: &Ctx<'_>,
    ops: &[Operation],
    attempts: &[Attempt],
    turn: LockTurn,
) -> Result<Vec<OutcomeReport>, ApplyError> {
    let timeout = ctx.settings.db_timeout;
    let applying = apply_batch(ctx.pool, ops, attempts, ctx.faults, turn);
    tokio::time::timeout(timeout, applying)
        .await
        .unwrap_or_else(|_| {
            Err(ApplyError::Unavailable(format!(
                "no answer within {timeout:?}"
            )))
        })
}

/// Records the failures among `verdicts` (retries and parkings) and settles their fates on the
/// result. Once the database is known to be out of reach, nothing more is tried: parkings are
/// held, retries go ahead unrecorded.
async fn record(ctx: &Ctx<'_>, verdicts: Vec<Verdict>) -> Vec<Verdict> {
    let records = FailureRecords::new(ctx.pool, ctx.settings.db_timeout);
    let mut reachable = !verdicts.iter().any(|v| v.fate == Fate::HoldForDatabase);
    let mut recorded = Vec::with_capacity(verdicts.len());
    for mut verdict in verdicts {
        let result = match &verdict.fate {
            Fate::Retry { .. } | Fate::Park { .. } if reachable => {
                let span = verdict.item.span.clone();
                record_one(&records, &verdict).instrument(span).await
            }
            Fate::Retry { .. } | Fate::Park { .. } => Err(RecordError::Unavailable(
                "the database is out of reach".into(),
            )),
            _ => Ok(()),
        };
        if matches!(result, Err(RecordError::Unavailable(_))) {
            reachable = false;
        }
        verdict.fate = fate::after_record(verdict.fate, &result);
        recorded.push(verdict);
    }
    recorded
}

async fn record_one(records: &FailureRecords<'_>, verdict: &Verdict) -> Result<(), RecordError> {
    let delivery = &verdict.item.delivery;
    let routing_key =
        facts::original_routing_key(&delivery.properties, delivery.routing_key.as_str());
    let (attempt, error, parking) = match &verdict.fate {
        Fate::Retry { attempt, error, .. } => (*attempt, error.as_str(), false),
        Fate::Park { attempt, reason } => (*attempt, reason.as_str(), true),
        _ => return Ok(()),
    };
    let failure = Failure {
        message_id: &verdict.item.message_id,
        publisher_message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
        op: verdict.op.as_ref(),
        routing_key: &routing_key,
        attempt,
        at: chrono::Utc::now(),
        error,
        body: &delivery.data,
    };
    let result = if parking {
        records.parked(&failure).await
    } else {
        records.retrying(&failure).await
    };
    match &result {
        Ok(()) => {}
        // Held: recorded on the next round, the copy published only then.
        Err(e @ RecordError::Unavailable(_)) if parking => {
            tracing::warn!(error = %e, "cannot record the parking yet; holding the message");
        }
        // The copy's headers carry the same facts; the record is for ops tooling.
        Err(e) => tracing::error!(error = %e, "could not record the failure; going ahead"),
    }
    result
}
