//! `taskctl queues`: what each queue of the stack holds.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use tasksync_shared::{Settings, topology::Topology};

use crate::{CtlError, broker::Broker, emit, emit_json, table};

#[derive(Debug, Serialize)]
pub struct QueueInfo {
    pub name: String,
    /// `work`, `retry` or `parking`.
    pub role: &'static str,
    pub exists: bool,
    pub ready: Option<u64>,
    /// Delivered and not yet acknowledged; only from the management API.
    pub unacked: Option<u64>,
    pub consumers: Option<u64>,
    /// Messages per second, from the management API when it has them.
    pub publish_rate: Option<f64>,
    pub deliver_rate: Option<f64>,
    pub ack_rate: Option<f64>,
}

pub async fn show(
    settings: &Settings,
    management_url: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let topology = Topology::from_settings(settings);
    let mut infos = amqp_depths(settings, &topology).await?;
    if let Some(url) = management_url {
        add_management_stats(url, &settings.amqp_url, &mut infos)
            .await
            .context("reading the RabbitMQ management API")?;
    }
    if json {
        emit_json(out, &infos)?;
    } else {
        print_table(&infos, management_url.is_some(), out)?;
    }
    if infos.iter().any(|q| q.exists) {
        Ok(())
    } else {
        Err(CtlError::NotFound(format!(
            "no queue of the stack exists under the prefix {} (check AMQP_PREFIX)",
            topology.prefix()
        )))
    }
}

fn print_table(infos: &[QueueInfo], rates: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let show = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let rate = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}/s"));
    let rows: Vec<Vec<String>> = infos
        .iter()
        .map(|q| {
            vec![
                q.name.clone(),
                q.role.to_string(),
                if q.exists {
                    show(q.ready)
                } else {
                    "missing".into()
                },
                show(q.unacked),
                show(q.consumers),
                rate(q.publish_rate),
                rate(q.deliver_rate),
                rate(q.ack_rate),
            ]
        })
        .collect();
    let headers = [
        "QUEUE",
        "ROLE",
        "READY",
        "UNACKED",
        "CONSUMERS",
        "IN",
        "OUT",
        "ACKED",
    ];
    emit(out, &table::render(&headers, &rows))?;
    if !rates {
        emit(out, "(unacked counts and rates need --management-url)")?;
    }
    Ok(())
}

/// Ready messages and consumers of every queue, by passive declares.
async fn amqp_depths(settings: &Settings, topology: &Topology) -> Result<Vec<QueueInfo>, CtlError> {
    let mut broker = Broker::connect(settings).await?;
    let mut infos = Vec::new();
    let retry_queues = topology.retry_queues();
    let work_queues = topology.work_queues();
    for name in topology.queues() {
        let role = if work_queues.contains(&name) {
            "work"
        } else if retry_queues.contains(&name) {
            "retry"
        } else {
            "parking"
        };
        let info = match broker.inspect(&name).await {
            Ok(q) => QueueInfo {
                exists: true,
                ready: Some(q.message_count().into()),
                consumers: Some(q.consumer_count().into()),
                ..QueueInfo::empty(name, role)
            },
            Err(CtlError::NotFound(_)) => QueueInfo::empty(name, role),
            Err(e) => {
                broker.close().await;
                return Err(e);
            }
        };
        infos.push(info);
    }
    broker.close().await;
    Ok(infos)
}

impl QueueInfo {
    fn empty(name: String, role: &'static str) -> Self {
        Self {
            name,
            role,
            exists: false,
            ready: None,
            unacked: None,
            consumers: None,
            publish_rate: None,
            deliver_rate: None,
            ack_rate: None,
        }
    }
}

/// Unacknowledged counts and rates from `GET /api/queues/{vhost}/{name}`.
async fn add_management_stats(
    base: &str,
    amqp_url: &str,
    infos: &mut [QueueInfo],
) -> anyhow::Result<()> {
    let base = reqwest::Url::parse(base).context("--management-url is not a URL")?;
    let vhost: lapin::uri::AMQPUri = amqp_url
        .parse()
        .map_err(|e| anyhow::anyhow!("AMQP_URL: {e}"))?;
    let vhost = vhost.vhost.replace('/', "%2F");
    let user = base.username().to_string();
    let password = base.password().map(str::to_string);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    for info in infos.iter_mut().filter(|q| q.exists) {
        let mut url = base.clone();
        url.set_path(&format!("/api/queues/{vhost}/{}", info.name));
        let queue: Value = client
            .get(url)
            .basic_auth(&user, password.as_deref())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        info.ready = queue["messages_ready"].as_u64().or(info.ready);
        info.unacked = queue["messages_unacknowledged"].as_u64();
        info.consumers = queue["consumers"].as_u64().or(info.consumers);
        let stats = &queue["message_stats"];
        info.publish_rate = stats["publish_details"]["rate"].as_f64();
        info.deliver_rate = stats["deliver_get_details"]["rate"].as_f64();
        info.ack_rate = stats["ack_details"]["rate"].as_f64();
    }
    Ok(())
}
