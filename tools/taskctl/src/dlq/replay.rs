//! `taskctl dlq replay`: parked operations back to the work queue, with a fresh attempt count.
//!
//! A replay copy goes through the default exchange straight to the work queue by its name, so
//! it reaches the worker whatever routing key the original had (a message published straight
//! to the work queue has none the operations exchange would route). The copy keeps the original
//! routing key in a header for the failure records, drops our failure headers (its attempts
//! start afresh), is marked as a replay, and has no `reply_to`: nobody waits for its answer.
//! The parked original is acked only after the broker confirmed the copy; the messages walked
//! past are kept as [`parking`] describes. A dry run reads the failure records and the queue's
//! depth, and takes nothing.

use std::{collections::HashSet, io::Write, time::Duration};

use serde::Serialize;
use tasksync_shared::{
    Settings,
    failure::{self, RecordState, header},
    topology::Topology,
};

use super::parking::{self, Taken};
use crate::{CtlError, broker::Broker, emit, emit_json, records::Records};

/// What a replay asks for.
#[derive(Debug)]
pub struct Request {
    /// The ids to replay (record keys, op ids or publishers' message ids); `None` for all.
    pub selection: Option<Vec<String>>,
    pub dry_run: bool,
    /// Replays per second at most.
    pub rate: f64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    replayed: Vec<String>,
    dry_run: bool,
    not_found: Vec<String>,
    queue_depth: u32,
}

pub async fn replay(
    settings: &Settings,
    request: Request,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let topology = Topology::from_settings(settings);
    let records = Records::new(settings)?;
    let mut broker = Broker::connect(settings).await?;
    let report = match broker.inspect(&topology.parking_queue()).await {
        Ok(queue) if request.dry_run => dry_run(&records, &request, queue.message_count()).await,
        Ok(queue) => {
            let depth = queue.message_count();
            match broker.inspect(&topology.work_queue()).await {
                Ok(_) => walk(&broker, &records, &topology, &request, depth).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    broker.close().await;
    let report = report?;
    print(&report, json, out)?;
    if report.not_found.is_empty() {
        Ok(())
    } else {
        Err(CtlError::NotFound(format!(
            "not in the parking queue: {}",
            report.not_found.join(", ")
        )))
    }
}

/// What a replay would take, from the failure records alone.
async fn dry_run(records: &Records, request: &Request, depth: u32) -> Result<Report, CtlError> {
    let keys = records.parked_keys(request.selection.as_deref()).await?;
    let named = |id: &String| {
        keys.iter()
            .any(|(key, op)| key == id || op.is_some_and(|op| op.to_string() == *id))
    };
    Ok(Report {
        replayed: keys.iter().map(|(key, _)| key.clone()).collect(),
        dry_run: true,
        not_found: request
            .selection
            .iter()
            .flatten()
            .filter(|id| !named(id))
            .cloned()
            .collect(),
        queue_depth: depth,
    })
}

/// Takes the parked messages from the head, replaying the selected ones and keeping the others,
/// until every selected id was found or the messages parked at the start were all seen.
async fn walk(
    broker: &Broker,
    records: &Records,
    topology: &Topology,
    request: &Request,
    depth: u32,
) -> Result<Report, CtlError> {
    let parking_queue = topology.parking_queue();
    let pause = Duration::from_secs_f64(1.0 / request.rate.clamp(0.1, 10_000.0));
    let mut found = HashSet::new();
    let mut report = Report {
        queue_depth: depth,
        ..Report::default()
    };
    for _ in 0..depth {
        if let Some(ids) = &request.selection
            && ids.iter().all(|id| found.contains(id))
        {
            break;
        }
        let Some(taken) = parking::take(broker, &parking_queue).await? else {
            break;
        };
        let wanted: Vec<&String> = match &request.selection {
            None => Vec::new(),
            Some(ids) => ids.iter().filter(|id| taken.answers_to(id)).collect(),
        };
        if request.selection.is_some() && wanted.is_empty() {
            parking::keep(broker, &parking_queue, taken).await?;
            continue;
        }
        found.extend(wanted.into_iter().cloned());
        report.replayed.push(taken.key());
        send_back(broker, records, topology, taken).await?;
        tokio::time::sleep(pause).await;
    }
    report.not_found = request
        .selection
        .iter()
        .flatten()
        .filter(|id| !found.contains(*id))
        .cloned()
        .collect();
    Ok(report)
}

/// Publishes a replay copy to the work queue, then acks the parked original.
async fn send_back(
    broker: &Broker,
    records: &Records,
    topology: &Topology,
    taken: Taken,
) -> Result<(), CtlError> {
    let key = taken.key();
    let mut headers = failure::without_our_headers(taken.properties());
    failure::set_u32(&mut headers, header::REPLAY, 1);
    if let Some(routing_key) = taken.original_routing_key() {
        failure::set_str(&mut headers, header::ORIGINAL_ROUTING_KEY, &routing_key);
    }
    let properties = parking::copy_properties(taken.properties(), headers, false);
    // Mark the record first: the worker may apply the copy (and resolve the record) before
    // this loop gets further.
    records
        .set_state(&key, RecordState::Parked, RecordState::Replayed)
        .await;
    // Back to the work queue of the partition it was published to.
    let partition = taken
        .original_routing_key()
        .map_or(0, |key| topology.partition_of_key(&key));
    let work_queue = topology.work_queue_of(partition);
    if let Err(e) = broker
        .publish("", &work_queue, taken.body(), properties)
        .await
    {
        records
            .set_state(&key, RecordState::Replayed, RecordState::Parked)
            .await;
        return Err(e);
    }
    taken.ack().await
}

fn print(report: &Report, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    if json {
        return emit_json(out, report);
    }
    let verb = if report.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    emit(out, &format!("{verb} {} message(s)", report.replayed.len()))?;
    for id in &report.replayed {
        emit(out, &format!("  {id}"))?;
    }
    if report.dry_run {
        emit(
            out,
            &format!(
                "(from the failure records; the parking queue holds {} message(s))",
                report.queue_depth
            ),
        )?;
    }
    Ok(())
}
