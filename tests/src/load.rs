//! The load driver of the fault tests: several devices write their own tasks through the REST
//! api while a fault happens, record every answer, retry what was not accepted, and afterwards
//! check that everything acknowledged was applied exactly once.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use serde_json::json;
use uuid::Uuid;

/// What the driver knows about one task.
#[derive(Debug, Default)]
struct Plan {
    /// The title of the last acknowledged write: the task's expected final title.
    expected_title: String,
    /// Writes acknowledged (2xx/202), by op id.
    acknowledged: Vec<Uuid>,
    /// Requests that got no answer or a 5xx: each may or may not have been published.
    unanswered: u32,
}

/// Every answer the driver got.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Distinct writes made (each retried until acknowledged).
    pub writes: u64,
    pub requests: u64,
    pub refused: u64,
    pub no_answer: u64,
    plans: HashMap<Uuid, Plan>,
}

/// The figures a fault test reports.
#[derive(Debug, PartialEq, Eq)]
pub struct Figures {
    /// Distinct writes the driver meant to make.
    pub sent: u64,
    /// Writes the api acknowledged (2xx or 202).
    pub acknowledged: u64,
    /// Acknowledged writes found in the operation log.
    pub applied: u64,
    /// Acknowledged writes missing from the log.
    pub lost: u64,
    /// Log entries beyond what the driver's requests can explain, plus tasks whose final state
    /// is not the expected one.
    pub duplicated: u64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, acknowledged {}, applied {}, lost {}, duplicated {}",
            self.sent, self.acknowledged, self.applied, self.lost, self.duplicated
        )
    }
}

/// What the devices write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each device creates two tasks and then updates them in turn.
    CreateAndUpdate,
    /// Every write creates a new task (needs no worker to make progress).
    CreateOnly,
}

/// Writes `writes_per_device` times from each of `devices` devices, each on its own tasks,
/// spreading requests over `bases` (api base URLs ending in `/api`). A write is retried until
/// acknowledged (bounded), as an offline client would.
pub async fn drive(
    bases: &[String],
    devices: usize,
    writes_per_device: usize,
    mode: Mode,
) -> Ledger {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let runs =
        (0..devices).map(|d| device(http.clone(), bases.to_vec(), d, writes_per_device, mode));
    let mut ledger = Ledger::default();
    for part in futures_util::future::join_all(runs).await {
        ledger.writes += part.writes;
        ledger.requests += part.requests;
        ledger.refused += part.refused;
        ledger.no_answer += part.no_answer;
        ledger.plans.extend(part.plans);
    }
    ledger
}

async fn device(
    http: reqwest::Client,
    bases: Vec<String>,
    d: usize,
    writes: usize,
    mode: Mode,
) -> Ledger {
    let mut ledger = Ledger::default();
    let mut tasks = [Uuid::new_v4(), Uuid::new_v4()];
    let mut created = [false, false];
    for w in 0..writes {
        let t = w % 2;
        if mode == Mode::CreateOnly {
            tasks[t] = Uuid::new_v4();
            created[t] = false;
        }
        let task = tasks[t];
        ledger.writes += 1;
        let title = format!("device {d} task {t} write {w}");
        let plan = ledger.plans.entry(task).or_default();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempt = 0usize;
        loop {
            assert!(
                Instant::now() < deadline,
                "write {w} of device {d} never accepted"
            );
            let base = &bases[(d + attempt) % bases.len()];
            attempt += 1;
            ledger.requests += 1;
            let request = if created[t] {
                http.put(format!("{base}/tasks/{task}"))
                    .json(&json!({ "title": title }))
            } else {
                http.post(format!("{base}/tasks"))
                    .json(&json!({ "id": task, "title": title }))
            };
            let response = request.header("Prefer", "respond-async").send().await;
            let pause = Duration::from_millis(50);
            match response {
                Ok(r) if r.status().is_success() => {
                    let op: Uuid = r.headers()["operation-id"]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    plan.acknowledged.push(op);
                    plan.expected_title.clone_from(&title);
                    created[t] = true;
                    break;
                }
                // An earlier create that got no answer was applied after all: go on updating.
                Ok(r) if r.status() == 409 && !created[t] => {
                    created[t] = true;
                }
                // The create was accepted and is not applied yet.
                Ok(r) if r.status() == 404 && created[t] => tokio::time::sleep(pause).await,
                Ok(r) if r.status().is_server_error() => {
                    ledger.refused += 1;
                    plan.unanswered += 1;
                    tokio::time::sleep(pause).await;
                }
                Ok(r) => panic!(
                    "unexpected answer {} to write {w} of device {d}",
                    r.status()
                ),
                Err(_) => {
                    ledger.no_answer += 1;
                    plan.unanswered += 1;
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
    ledger
}

impl Ledger {
    fn acknowledged(&self) -> Vec<Uuid> {
        self.plans
            .values()
            .flat_map(|p| p.acknowledged.iter().copied())
            .collect()
    }

    /// Waits (bounded) until every acknowledged write is in the operation log, then counts.
    pub async fn check(&self, db: &Pool) -> Figures {
        let acknowledged = self.acknowledged();
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = db.get().await.unwrap();
        loop {
            let found: i64 = client
                .query_one(
                    "SELECT count(*) FROM operations WHERE op_id = ANY($1)",
                    &[&acknowledged],
                )
                .await
                .unwrap()
                .get(0);
            if found as usize == acknowledged.len() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let decided: HashMap<Uuid, String> = client
            .query(
                "SELECT op_id, outcome FROM operations WHERE op_id = ANY($1)",
                &[&acknowledged],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let applied = acknowledged
            .iter()
            .filter(|op| decided.get(op).is_some_and(|o| o == "success"))
            .count() as u64;
        let tasks: Vec<Uuid> = self.plans.keys().copied().collect();
        let per_task: HashMap<Uuid, (i64, Option<String>)> = client
            .query(
                "SELECT t.id, (SELECT count(*) FROM operations o WHERE o.task_id = t.id), t.title \
                 FROM tasks t WHERE t.id = ANY($1)",
                &[&tasks],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let mut duplicated = 0;
        for (task, plan) in &self.plans {
            let (logged, title) = per_task.get(task).cloned().unwrap_or((0, None));
            let explained = plan.acknowledged.len() as i64 + i64::from(plan.unanswered);
            duplicated += (logged - explained).max(0) as u64;
            if title.as_deref() != Some(plan.expected_title.as_str()) {
                duplicated += 1;
            }
        }
        let sent = self
            .plans
            .values()
            .map(|p| p.acknowledged.len() as u64)
            .sum();
        Figures {
            sent,
            acknowledged: acknowledged.len() as u64,
            applied,
            lost: acknowledged.len() as u64 - applied,
            duplicated,
        }
    }
}
