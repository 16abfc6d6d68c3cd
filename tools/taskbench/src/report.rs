//! What a run measured: the JSON shape (`--json`) and the human table.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    ceiling::CeilingFigures, cli::Scenario, rss::Rss, scenario::events::EventsFigures, tally::Tally,
};

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub connections: usize,
    /// Seconds the load ran.
    pub seconds: f64,
    pub requests: Requests,
    pub requests_per_s: f64,
    pub latency_ms: Option<Latency>,
    pub ops: Option<Ops>,
    /// `GET /api/tasks` rows in the first answer (`read-list`).
    pub list_rows: Option<usize>,
    /// Whether the bench user owns more tasks than one list answers (`read-list`).
    pub list_has_more: Option<bool>,
    pub api_rss: Option<Rss>,
    pub worker_rss: Option<Rss>,
    pub ceiling: Option<CeilingFigures>,
    /// `events`: the streams' figures.
    pub events: Option<EventsFigures>,
    pub first_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Requests {
    pub sent: u64,
    pub answered: u64,
    pub ok: u64,
    pub accepted_202: u64,
    pub throttled_429: u64,
    pub client_errors_4xx: u64,
    pub server_errors_5xx: u64,
    pub transport_errors: u64,
}

#[derive(Debug, Serialize)]
pub struct Ops {
    pub accepted: u64,
    pub refused_items: u64,
    pub accepted_per_s: f64,
    /// `None` without `--database-url`.
    pub applied: Option<u64>,
    pub applied_not_success: Option<u64>,
    pub applied_per_s: Option<f64>,
    pub accept_to_applied_ms: Option<Latency>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// From a µs histogram; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        let ms = |v: u64| (v as f64 / 1000.0 * 100.0).round() / 100.0;
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        })
    }
}

impl Requests {
    pub fn of(t: &Tally) -> Self {
        Self {
            sent: t.sent,
            answered: t.answered(),
            ok: t.ok,
            accepted_202: t.accepted_202,
            throttled_429: t.throttled,
            client_errors_4xx: t.client_errors,
            server_errors_5xx: t.server_errors,
            transport_errors: t.transport_errors,
        }
    }
}

fn lat(l: &Option<Latency>) -> String {
    l.map(|l| format!("{} / {} / {} / {}", l.p50, l.p95, l.p99, l.max))
        .unwrap_or_else(|| "-".into())
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

impl Report {
    /// The human table: one figure a line.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let r = &self.requests;
        rows.push((
            "scenario".into(),
            serde_json::to_string(&self.scenario)
                .unwrap_or_default()
                .replace('"', ""),
        ));
        rows.push((
            "connections / seconds".into(),
            format!("{} / {:.1}", self.connections, self.seconds),
        ));
        rows.push((
            "sent / answered".into(),
            format!("{} / {}", r.sent, r.answered),
        ));
        rows.push((
            "2xx / 202 / 429 / 4xx / 5xx / no answer".into(),
            format!(
                "{} / {} / {} / {} / {} / {}",
                r.ok,
                r.accepted_202,
                r.throttled_429,
                r.client_errors_4xx,
                r.server_errors_5xx,
                r.transport_errors
            ),
        ));
        rows.push(("requests/s".into(), format!("{:.0}", self.requests_per_s)));
        rows.push((
            "latency ms p50 / p95 / p99 / max".into(),
            lat(&self.latency_ms),
        ));
        if let Some(o) = &self.ops {
            rows.push((
                "ops accepted / refused".into(),
                format!("{} / {}", o.accepted, o.refused_items),
            ));
            rows.push(("accepted ops/s".into(), format!("{:.0}", o.accepted_per_s)));
            let applied = o
                .applied
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into());
            rows.push((
                "ops applied (not success)".into(),
                format!("{applied} ({})", o.applied_not_success.unwrap_or(0)),
            ));
            rows.push(("applied ops/s".into(), opt(o.applied_per_s)));
            rows.push((
                "send→applied ms p50 / p95 / p99 / max".into(),
                lat(&o.accept_to_applied_ms),
            ));
        }
        if let Some(n) = self.list_rows {
            let more = if self.list_has_more == Some(true) {
                " (the user owns more)"
            } else {
                ""
            };
            rows.push(("rows per list".into(), format!("{n}{more}")));
        }
        for (name, rss) in [("api", &self.api_rss), ("worker", &self.worker_rss)] {
            if let Some(m) = rss {
                rows.push((
                    format!("{name} RSS peak / HWM MiB"),
                    format!("{:.1} / {:.1}", m.peak_sampled_mb, m.hwm_mb),
                ));
            }
        }
        if let Some(c) = &self.ceiling {
            rows.extend(c.rows());
        }
        if let Some(e) = &self.events {
            rows.push((
                "streams ready / users".into(),
                format!("{} of {} / {}", e.streams_ready, e.subscribers, e.users),
            ));
            rows.push((
                "events received / owed (repeated)".into(),
                format!(
                    "{} / {} ({})",
                    e.events_received, e.events_expected, e.events_repeated
                ),
            ));
            rows.push((
                "apply→event ms p50 / p95 / p99 / max".into(),
                lat(&e.apply_to_event_ms),
            ));
            rows.push(("drain s".into(), format!("{:.1}", e.drain_seconds)));
        }
        if let Some(e) = &self.first_error {
            rows.push(("first error".into(), e.clone()));
        }
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}
