//! `taskctl dlq`: list, show, replay and purge parked operations.

use std::{io::BufRead, io::Write, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use lapin::{
    Channel, Confirmation, Connection,
    message::BasicGetMessage,
    options::{
        BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
        ConfirmSelectOptions, QueuePurgeOptions,
    },
};
use serde::Serialize;
use serde_json::{Value, json};
use tasksync_shared::{
    Settings, amqp, db,
    failure::{self, header},
    topology::Topology,
};
use uuid::Uuid;

use crate::{CtlError, emit, table};

/// Filters of `dlq list`.
#[derive(Debug, Default)]
pub struct Filter {
    pub error: Option<String>,
    pub task: Option<Uuid>,
    pub user: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Serialize)]
pub struct Parked {
    pub message_id: String,
    pub op_id: Option<Uuid>,
    pub task_id: Option<Uuid>,
    pub user_id: Option<String>,
    pub kind: Option<String>,
    pub routing_key: String,
    pub attempts: i32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    pub age_seconds: i64,
    pub last_error: String,
}

fn pool(settings: &Settings) -> Result<Pool, CtlError> {
    Ok(db::pool(&settings.database_url, 2).context("DATABASE_URL")?)
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Client, CtlError> {
    Ok(pool
        .get()
        .await
        .context("connecting to Postgres (DATABASE_URL)")?)
}

const COLUMNS: &str = "message_id, op_id, task_id, user_id, kind, routing_key, attempts, \
     first_failed_at, last_failed_at, last_error";

fn parked_from_row(row: &tokio_postgres::Row) -> Result<Parked, tokio_postgres::Error> {
    let last_failed_at: DateTime<Utc> = row.try_get(8)?;
    Ok(Parked {
        message_id: row.try_get(0)?,
        op_id: row.try_get(1)?,
        task_id: row.try_get(2)?,
        user_id: row.try_get(3)?,
        kind: row.try_get(4)?,
        routing_key: row.try_get(5)?,
        attempts: row.try_get(6)?,
        first_failed_at: row.try_get(7)?,
        last_failed_at,
        age_seconds: (Utc::now() - last_failed_at).num_seconds(),
        last_error: row.try_get(9)?,
    })
}

/// Ready messages in the parking queue, or `None` when the broker cannot tell.
async fn parking_depth(settings: &Settings) -> Option<u32> {
    let connection = amqp::connect(&settings.amqp_url, "taskctl").await.ok()?;
    let channel = connection.create_channel().await.ok()?;
    let queue = amqp::inspect_queue(&channel, &Topology::from_settings(settings).parking_queue())
        .await
        .ok();
    let _ = connection.close(200, "done".into()).await;
    queue.map(|q| q.message_count())
}

pub async fn list(
    settings: &Settings,
    filter: &Filter,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let pool = pool(settings)?;
    let client = client(&pool).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM operation_failures \
         WHERE state = 'parked' \
           AND ($1::text IS NULL OR strpos(lower(last_error), lower($1)) > 0) \
           AND ($2::uuid IS NULL OR task_id = $2) \
           AND ($3::text IS NULL OR user_id = $3) \
         ORDER BY last_failed_at DESC LIMIT $4"
    );
    let rows = client
        .query(
            &sql,
            &[&filter.error, &filter.task, &filter.user, &filter.limit],
        )
        .await?;
    let parked = rows
        .iter()
        .map(parked_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let counts: Vec<(String, i64)> = client
        .query(
            "SELECT last_error, count(*) FROM operation_failures WHERE state = 'parked' \
             GROUP BY last_error ORDER BY count(*) DESC, last_error",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    let records: i64 = counts.iter().map(|(_, n)| n).sum();
    let depth = parking_depth(settings).await;

    if json {
        let counts: Vec<Value> = counts
            .iter()
            .map(|(error, count)| json!({ "error": error, "count": count }))
            .collect();
        let body = json!({
            "parked": parked,
            "counts_by_error": counts,
            "records": records,
            "queue_depth": depth,
        });
        emit(
            out,
            &serde_json::to_string_pretty(&body).map_err(anyhow::Error::from)?,
        )?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = parked
        .iter()
        .map(|p| {
            let id = |v: Option<Uuid>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            vec![
                p.message_id.clone(),
                id(p.task_id),
                p.user_id.clone().unwrap_or_else(|| "-".into()),
                p.attempts.to_string(),
                format!("{}s", p.age_seconds),
                p.last_error.clone(),
            ]
        })
        .collect();
    let headers = [
        "OP / MESSAGE ID",
        "TASK",
        "USER",
        "ATTEMPTS",
        "AGE",
        "LAST ERROR",
    ];
    emit(out, &table::render(&headers, &rows))?;
    emit(out, "")?;
    let counts: Vec<Vec<String>> = counts
        .into_iter()
        .map(|(error, n)| vec![n.to_string(), error])
        .collect();
    emit(out, &table::render(&["COUNT", "ERROR"], &counts))?;
    match depth {
        Some(d) if i64::from(d) != records => emit(
            out,
            &format!(
                "\nnote: the parking queue holds {d} message(s) and {records} are recorded; \
                 the difference was dead-lettered by the broker (delivery limit) or is in flight"
            ),
        )?,
        None => emit(
            out,
            "\nnote: the parking queue's depth is unknown (broker unreachable)",
        )?,
        Some(_) => {}
    }
    Ok(())
}

pub async fn show(
    settings: &Settings,
    id: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let pool = pool(settings)?;
    let client = client(&pool).await?;
    let sql = format!(
        "SELECT {COLUMNS}, state, history, body FROM operation_failures WHERE message_id = $1"
    );
    let row = client
        .query_opt(&sql, &[&id])
        .await?
        .ok_or_else(|| CtlError::NotFound(format!("no failure record for {id}")))?;
    let parked = parked_from_row(&row)?;
    let state: String = row.try_get(10)?;
    let history: Value = row.try_get(11)?;
    let body: Vec<u8> = row.try_get(12)?;
    let message = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    if json {
        let body = json!({
            "record": parked,
            "state": state,
            "history": history,
            "message": message,
        });
        emit(
            out,
            &serde_json::to_string_pretty(&body).map_err(anyhow::Error::from)?,
        )?;
        return Ok(());
    }
    let fields = [
        ("message id", parked.message_id.clone()),
        ("state", state),
        (
            "op id",
            parked.op_id.map(|v| v.to_string()).unwrap_or_default(),
        ),
        (
            "task id",
            parked.task_id.map(|v| v.to_string()).unwrap_or_default(),
        ),
        ("user", parked.user_id.clone().unwrap_or_default()),
        ("kind", parked.kind.clone().unwrap_or_default()),
        ("routing key", parked.routing_key.clone()),
        ("attempts", parked.attempts.to_string()),
        ("first failed", parked.first_failed_at.to_rfc3339()),
        ("last failed", parked.last_failed_at.to_rfc3339()),
        ("last error", parked.last_error.clone()),
    ];
    for (name, value) in fields {
        emit(out, &format!("{name:<13} {value}"))?;
    }
    emit(out, "history:")?;
    for event in history.as_array().into_iter().flatten() {
        emit(
            out,
            &format!(
                "  attempt {} at {}: {}",
                event["attempt"],
                event["at"].as_str().unwrap_or("?"),
                event["error"].as_str().unwrap_or("?")
            ),
        )?;
    }
    emit(out, "message:")?;
    emit(
        out,
        &serde_json::to_string_pretty(&message).map_err(anyhow::Error::from)?,
    )?;
    Ok(())
}

/// The failure record key of a parked message.
fn message_id_of(message: &BasicGetMessage) -> Option<String> {
    let props = &message.delivery.properties;
    failure::header_str(props, header::MESSAGE_ID)
        .or_else(|| failure::header_str(props, header::OP_ID))
        .or_else(|| props.message_id().as_ref().map(|m| m.as_str().to_string()))
}

async fn connect_confirming(settings: &Settings) -> Result<(Connection, Channel), CtlError> {
    let connection = amqp::connect(&settings.amqp_url, "taskctl")
        .await
        .context("connecting to RabbitMQ (AMQP_URL)")?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// Replays parked messages: each selected one is re-published to the operations exchange
/// without our failure headers (so its attempts start afresh) and marked as a replay; the parked
/// original is acked only after the broker confirmed the copy. Unselected messages go back to
/// the parking queue untouched.
pub async fn replay(
    settings: &Settings,
    selection: Option<Vec<String>>,
    dry_run: bool,
    rate: f64,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let topology = Topology::from_settings(settings);
    let pool = pool(settings)?;
    let (connection, channel) = connect_confirming(settings).await?;
    let depth = amqp::inspect_queue(&channel, &topology.parking_queue())
        .await?
        .message_count();
    let pause = Duration::from_secs_f64(1.0 / rate.clamp(0.1, 10_000.0));
    let mut held = Vec::new();
    let mut replayed = Vec::new();
    let result = async {
        for _ in 0..depth {
            let Some(message) = channel
                .basic_get(
                    topology.parking_queue().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await?
            else {
                break;
            };
            let id = message_id_of(&message).unwrap_or_default();
            let selected = selection.as_ref().is_none_or(|ids| ids.contains(&id));
            if !selected || dry_run {
                if selected {
                    replayed.push(id);
                }
                held.push(message);
                continue;
            }
            // Mark the record first: the worker may apply the copy (and resolve the record)
            // before this loop gets further.
            set_state(&pool, &id, "parked", "replayed").await;
            if let Err(e) = republish(&channel, &topology, &message).await {
                set_state(&pool, &id, "replayed", "parked").await;
                held.push(message);
                return Err(e);
            }
            message
                .delivery
                .acker
                .ack(BasicAckOptions::default())
                .await?;
            replayed.push(id);
            tokio::time::sleep(pause).await;
        }
        Ok::<_, CtlError>(())
    }
    .await;
    for message in held {
        let _ = message
            .delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
    result?;

    let missing: Vec<String> = selection
        .unwrap_or_default()
        .into_iter()
        .filter(|id| !replayed.contains(id))
        .collect();
    if json {
        let body = json!({ "replayed": replayed, "dry_run": dry_run, "not_found": missing });
        emit(
            out,
            &serde_json::to_string_pretty(&body).map_err(anyhow::Error::from)?,
        )?;
    } else {
        let verb = if dry_run { "would replay" } else { "replayed" };
        emit(out, &format!("{verb} {} message(s)", replayed.len()))?;
        for id in &replayed {
            emit(out, &format!("  {id}"))?;
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CtlError::NotFound(format!(
            "not in the parking queue: {}",
            missing.join(", ")
        )))
    }
}

/// Moves a failure record from one state to another. Best effort: the queue is the truth, and
/// `dlq list` shows when the records disagree with it.
async fn set_state(pool: &Pool, message_id: &str, from: &str, to: &str) {
    if let Ok(client) = pool.get().await {
        let _ = client
            .execute(
                "UPDATE operation_failures SET state = $3 WHERE message_id = $1 AND state = $2",
                &[&message_id, &from, &to],
            )
            .await;
    }
}

async fn republish(
    channel: &Channel,
    topology: &Topology,
    message: &BasicGetMessage,
) -> Result<(), CtlError> {
    let props = &message.delivery.properties;
    let routing_key = failure::header_str(props, header::ORIGINAL_ROUTING_KEY)
        .unwrap_or_else(|| "op.replay".to_string());
    let mut headers = failure::without_our_headers(props);
    failure::set_u32(&mut headers, header::REPLAY, 1);
    let properties = props.clone().with_delivery_mode(2).with_headers(headers);
    let confirm = channel
        .basic_publish(
            topology.ops_exchange().into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &message.delivery.data,
            properties,
        )
        .await?;
    match tokio::time::timeout(Duration::from_secs(10), confirm)
        .await
        .context("waiting for the broker to confirm a replay")??
    {
        Confirmation::Ack(None) => Ok(()),
        other => Err(CtlError::Failed(anyhow::anyhow!(
            "the broker did not take the replayed copy: {other:?}"
        ))),
    }
}

/// Deletes every parked message after asking (unless `yes`), and marks their records purged.
pub async fn purge(
    settings: &Settings,
    yes: bool,
    json: bool,
    out: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result<(), CtlError> {
    let topology = Topology::from_settings(settings);
    let depth = parking_depth(settings)
        .await
        .ok_or_else(|| CtlError::Failed(anyhow::anyhow!("cannot read the parking queue")))?;
    if !yes {
        emit(
            out,
            &format!(
                "Delete {depth} parked message(s) from {}? Type 'yes' to confirm:",
                topology.parking_queue()
            ),
        )?;
        let mut answer = String::new();
        input.read_line(&mut answer).map_err(anyhow::Error::from)?;
        if answer.trim() != "yes" {
            return Err(CtlError::Aborted);
        }
    }
    let started = Utc::now();
    let (connection, channel) = connect_confirming(settings).await?;
    let purged = channel
        .queue_purge(
            topology.parking_queue().into(),
            QueuePurgeOptions::default(),
        )
        .await?;
    let _ = connection.close(200, "done".into()).await;
    let pool = pool(settings)?;
    let client = client(&pool).await?;
    client
        .execute(
            "UPDATE operation_failures SET state = 'purged' \
             WHERE state = 'parked' AND last_failed_at <= $1",
            &[&started],
        )
        .await?;
    if json {
        emit(out, &json!({ "purged": purged }).to_string())?;
    } else {
        emit(out, &format!("purged {purged} message(s)"))?;
    }
    Ok(())
}
