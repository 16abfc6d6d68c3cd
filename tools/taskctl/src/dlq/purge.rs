//! `taskctl dlq purge`: deletes every parked message, after a confirmation.
//!
//! The prompt goes to stderr, so stdout holds only the result. The answer is read from stdin
//! (`echo yes | taskctl dlq purge` works). With `--json` the caller is a script: without
//! `--yes` the command refuses (usage error, exit 2) instead of waiting on a prompt.

use std::io::Write;

use chrono::Utc;
use lapin::options::QueuePurgeOptions;
use serde_json::json;
use tasksync_shared::{Settings, topology::Topology};

use crate::{
    CtlError, Io,
    broker::{self, Broker},
    emit, emit_json,
    records::Records,
};

pub async fn purge(settings: &Settings, yes: bool, json: bool, io: Io<'_>) -> Result<(), CtlError> {
    if json && !yes {
        return Err(CtlError::Usage(
            "dlq purge --json needs --yes: a script cannot answer the confirmation".into(),
        ));
    }
    let queue = Topology::from_settings(settings).parking_queue();
    let records = Records::new(settings)?;
    let mut broker = Broker::connect(settings).await?;
    let result = async {
        let depth = broker.inspect(&queue).await?.message_count();
        if !yes {
            confirm(&queue, depth, &mut *io.err, &mut *io.input)?;
        }
        let started = Utc::now();
        let purged = broker
            .channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .map_err(|e| broker::failed(&format!("purging {queue}"), &e))?;
        records.mark_purged(started).await?;
        Ok::<_, CtlError>(purged)
    }
    .await;
    broker.close().await;
    let purged = result?;
    if json {
        emit_json(io.out, &json!({ "purged": purged }))
    } else {
        emit(io.out, &format!("purged {purged} message(s)"))
    }
}

fn confirm(
    queue: &str,
    depth: u32,
    err: &mut dyn Write,
    input: &mut dyn std::io::BufRead,
) -> Result<(), CtlError> {
    let prompt = format!("Delete {depth} parked message(s) from {queue}? Type 'yes' to confirm: ");
    err.write_all(prompt.as_bytes())
        .and_then(|()| err.flush())
        .map_err(|e| CtlError::failed(format!("writing the prompt: {e}")))?;
    let mut answer = String::new();
    input
        .read_line(&mut answer)
        .map_err(|e| CtlError::failed(format!("reading the answer: {e}")))?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(CtlError::Aborted)
    }
}
