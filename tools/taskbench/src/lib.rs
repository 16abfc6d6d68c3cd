//! `taskbench`: a load generator for Task Sync. Each scenario drives the api over HTTP at a fixed
//! number of connections (or, for `ceiling`, the broker and Postgres directly with the crates the
//! services use) and reports requests/s, accepted and applied operations/s, latencies
//! (hdrhistogram), send→applied latency from the operation log, and the services' peak RSS;
//! `events` holds live event streams open and measures apply→event latency.
//! It counts what it sent apart from what was answered, and never loads a host other than this
//! machine unless told to.

pub mod applied;
pub mod ceiling;
pub mod cli;
pub mod drive;
pub mod http;
pub mod report;
pub mod rss;
pub mod scenario;
pub mod tally;
pub mod target;

use std::sync::Arc;

use anyhow::bail;
use reqwest::Method;

use cli::{Cli, Common, Scenario};
use drive::Budget;
use http::Http;
use report::{Latency, Ops, Report, Requests};
use scenario::Ctx;
use tally::Tally;

/// Runs the scenario `cli` names and returns what it measured. Ctrl-C stops it (the ceiling
/// still removes its queue and scratch database).
pub async fn run(cli: Cli) -> anyhow::Result<Report> {
    if cli.scenario == Scenario::Ceiling {
        return ceiling::run(&cli.common).await;
    }
    if cli.scenario == Scenario::Events {
        return tokio::select! {
            report = scenario::events::run(&cli.common) => report,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        };
    }
    tokio::select! {
        report = http_scenario(cli.scenario, &cli.common) => report,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn http_scenario(scenario: Scenario, common: &Common) -> anyhow::Result<Report> {
    let base = target::checked_base(&common.base_url, common.allow_remote)?;
    let token = target::bearer(common.token.as_deref(), &common.user)?;
    let http = Http::new(base, token, common.connections, common.respond_async)?;
    let (seeds, list) = seed(scenario, &http).await?;
    let budget = Arc::new(Budget::new(common.run_time(), common.requests));
    let ctx = Arc::new(Ctx {
        http,
        budget: budget.clone(),
        items: common.items.max(1),
        seeds,
    });
    let samplers: Vec<_> = [common.api_pid, common.worker_pid]
        .map(|p| p.map(rss::Sampler::start))
        .into();
    let bar = drive::bar(common.json, &format!("{scenario:?}"));
    let (tally, elapsed) = drive::connections(common.connections, budget, bar, |i| {
        let ctx = ctx.clone();
        async move {
            match scenario {
                Scenario::RestWrite => scenario::rest_write::connection(ctx, i).await,
                Scenario::Batch => scenario::batch::connection(ctx, i).await,
                Scenario::ReadOne => scenario::reads::one(ctx, i).await,
                Scenario::ReadList => scenario::reads::list(ctx, i).await,
                Scenario::Mixed | Scenario::Ceiling | Scenario::Events => {
                    scenario::mixed::connection(ctx, i).await
                }
            }
        }
    })
    .await;
    let [api_rss, worker_rss] = {
        let mut it = samplers.into_iter().map(|s| s.map(rss::Sampler::finish));
        [it.next().flatten(), it.next().flatten()]
    };
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let writes = matches!(
        scenario,
        Scenario::RestWrite | Scenario::Batch | Scenario::Mixed
    );
    let ops = if writes {
        Some(ops(common, &tally, seconds).await?)
    } else {
        None
    };
    Ok(Report {
        scenario,
        connections: common.connections,
        seconds,
        requests: Requests::of(&tally),
        requests_per_s: tally.answered() as f64 / seconds,
        latency_ms: Latency::of(&tally.latency),
        ops,
        list_rows: list.map(|(rows, _)| rows),
        list_has_more: list.map(|(_, more)| more),
        api_rss,
        worker_rss,
        ceiling: None,
        events: None,
        first_error: tally.first_error.clone(),
    })
}

/// Accepted operations, and (with a database) how many reached the log, how fast, how late.
async fn ops(common: &Common, tally: &Tally, seconds: f64) -> anyhow::Result<Ops> {
    let accepted = tally.accepted.len() as u64;
    let mut ops = Ops {
        accepted,
        refused_items: tally.refused_items,
        accepted_per_s: accepted as f64 / seconds,
        applied: None,
        applied_not_success: None,
        applied_per_s: None,
        accept_to_applied_ms: None,
    };
    if let Some(url) = &common.database_url {
        let applied = applied::wait(url, &tally.accepted, common.drain_time()).await?;
        ops.applied = Some(applied.found);
        ops.applied_not_success = Some(applied.not_success);
        ops.applied_per_s = Some(applied.found as f64 / applied.span.as_secs_f64().max(1e-3));
        ops.accept_to_applied_ms = Latency::of(&applied.latency);
    }
    Ok(ops)
}

/// The tasks a scenario reads, created beforehand: 200 for `read-one` and `mixed`; for
/// `read-list`, enough for the bench user to own 1,000. For `read-list`, also the rows one list
/// answers and whether the user owns more (then the figure is not "a list of 1,000 rows").
async fn seed(
    scenario: Scenario,
    http: &Http,
) -> anyhow::Result<(Vec<uuid::Uuid>, Option<(usize, bool)>)> {
    match scenario {
        Scenario::ReadOne | Scenario::Mixed => {
            Ok((scenario::seed::tasks(http, 200, 200).await?, None))
        }
        Scenario::ReadList => {
            let (rows, _) = list_page(http).await?;
            scenario::seed::tasks(http, 1_000usize.saturating_sub(rows), 1_000).await?;
            Ok((Vec::new(), Some(list_page(http).await?)))
        }
        _ => Ok((Vec::new(), None)),
    }
}

/// Rows of one `GET /api/tasks` and whether it has a next page (outside the measured load).
async fn list_page(http: &Http) -> anyhow::Result<(usize, bool)> {
    let mut tally = Tally::default();
    match http.send(&mut tally, Method::GET, "/api/tasks", None).await {
        Some(a) if a.status.is_success() => {
            let rows = serde_json::from_slice::<Vec<serde_json::Value>>(&a.body)?.len();
            Ok((rows, a.headers.contains_key("x-next-cursor")))
        }
        _ => bail!(
            "GET /api/tasks failed: {}",
            tally.first_error.unwrap_or_default()
        ),
    }
}
