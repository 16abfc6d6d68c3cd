//! The load driver of the fault tests: several devices write their own tasks through the REST
//! api while a fault happens, record every write they issue and every answer, retry what was
//! not accepted, and afterwards check, against the operation log, that every write issued was
//! acknowledged and every acknowledged write applied exactly once.
//!
//! The three counts come from three independent places, so that each check can fail: `sent`
//! from the driver (a write is counted when first issued, whatever answer it gets),
//! `acknowledged` from the api's answers, `applied` from the operation log.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use serde_json::json;
use tasksync_shared::OutcomeStatus;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{TestStack, op_log::OpLog};

mod figures;

pub use figures::{Figures, LogView};

/// How long one write is retried before the device gives up (and the check fails).
const WRITE_PATIENCE: Duration = Duration::from_secs(60);

/// One distinct write a device issued (its retries are the same write).
#[derive(Clone, Debug)]
struct Write {
    task: Uuid,
    title: String,
    /// The op id the api answered with, once acknowledged (2xx or 202).
    acknowledged: Option<Uuid>,
    /// Requests of this write that got no answer or a 5xx: each may have been published.
    unanswered: u32,
}

/// What the driver did and heard.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Writes the driver meant to issue.
    pub planned: u64,
    pub requests: u64,
    pub refused: u64,
    pub no_answer: u64,
    /// Every write issued, in issue order per device.
    writes: Vec<Write>,
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
/// acknowledged, as an offline client would; a device that cannot get a write acknowledged
/// within [`WRITE_PATIENCE`] stops, and the figures then show it.
pub async fn drive(
    bases: &[String],
    devices: usize,
    writes_per_device: usize,
    mode: Mode,
) -> Ledger {
    let spec = Spec {
        devices,
        writes_per_device,
        mode,
    };
    drive_counting(bases, spec, Arc::default()).await
}

/// [`drive`], counting acknowledged writes in `progress` as they come.
async fn drive_counting(bases: &[String], spec: Spec, progress: Arc<AtomicU64>) -> Ledger {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let runs = (0..spec.devices).map(|d| {
        let device = Device {
            http: http.clone(),
            bases: bases.to_vec(),
            number: d,
            progress: progress.clone(),
        };
        device.run(spec.writes_per_device, spec.mode)
    });
    let mut ledger = Ledger::default();
    for part in futures_util::future::join_all(runs).await {
        ledger.planned += part.planned;
        ledger.requests += part.requests;
        ledger.refused += part.refused;
        ledger.no_answer += part.no_answer;
        ledger.writes.extend(part.writes);
    }
    ledger
}

/// What one request of a write came to.
enum Answer {
    Acknowledged(Uuid),
    /// The create was already applied (an earlier unanswered try): go on as an update.
    AlreadyCreated,
    /// No answer or a 5xx: try again.
    Unanswered {
        refused: bool,
    },
    /// The task is not there yet (its create is queued): try again.
    NotYet,
    /// An answer the driver does not expect: the device stops.
    Unexpected(String),
}

/// One device: the load's HTTP client, the apis it may reach, its number.
struct Device {
    http: reqwest::Client,
    bases: Vec<String>,
    number: usize,
    /// Acknowledged writes of every device of the load.
    progress: Arc<AtomicU64>,
}

impl Device {
    async fn run(self, writes: usize, mode: Mode) -> Ledger {
        let mut ledger = Ledger {
            planned: writes as u64,
            ..Ledger::default()
        };
        let mut tasks = [Uuid::new_v4(), Uuid::new_v4()];
        let mut created = [false, false];
        for w in 0..writes {
            let t = w % 2;
            if mode == Mode::CreateOnly {
                tasks[t] = Uuid::new_v4();
                created[t] = false;
            }
            // Counted as sent now, before any answer.
            ledger.writes.push(Write {
                task: tasks[t],
                title: format!("device {} task {t} write {w}", self.number),
                acknowledged: None,
                unanswered: 0,
            });
            let write = ledger.writes.len() - 1;
            if !self.write(&mut ledger, write, &mut created[t]).await {
                break;
            }
        }
        ledger
    }

    /// Issues write `index` until acknowledged; false when the device gives up.
    async fn write(&self, ledger: &mut Ledger, index: usize, created: &mut bool) -> bool {
        let deadline = Instant::now() + WRITE_PATIENCE;
        let pause = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            if Instant::now() > deadline {
                eprintln!(
                    "device {} gave up a write after {WRITE_PATIENCE:?}",
                    self.number
                );
                return false;
            }
            ledger.requests += 1;
            let base = &self.bases[(self.number + attempt) % self.bases.len()];
            attempt += 1;
            let write = &mut ledger.writes[index];
            match self.request(base, write, *created).await {
                Answer::Acknowledged(op) => {
                    write.acknowledged = Some(op);
                    self.progress.fetch_add(1, Ordering::Relaxed);
                    *created = true;
                    return true;
                }
                Answer::AlreadyCreated => *created = true,
                Answer::NotYet => tokio::time::sleep(pause).await,
                Answer::Unanswered { refused } => {
                    write.unanswered += 1;
                    if refused {
                        ledger.refused += 1;
                    } else {
                        ledger.no_answer += 1;
                    }
                    tokio::time::sleep(pause).await;
                }
                Answer::Unexpected(what) => {
                    eprintln!("device {} stops: {what}", self.number);
                    return false;
                }
            }
        }
    }

    async fn request(&self, base: &str, write: &Write, created: bool) -> Answer {
        let (task, title) = (write.task, &write.title);
        let request = if created {
            self.http
                .put(format!("{base}/tasks/{task}"))
                .json(&json!({ "title": title }))
        } else {
            self.http
                .post(format!("{base}/tasks"))
                .json(&json!({ "id": task, "title": title }))
        };
        let response = match request.header("Prefer", "respond-async").send().await {
            Ok(response) => response,
            Err(_) => return Answer::Unanswered { refused: false },
        };
        let status = response.status();
        let op_id = response
            .headers()
            .get("operation-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match (status.as_u16(), op_id) {
            (200..=299, Some(op)) => Answer::Acknowledged(op),
            (409, _) if !created => Answer::AlreadyCreated,
            (404, _) if created => Answer::NotYet,
            (500..=599, _) => Answer::Unanswered { refused: true },
            _ => Answer::Unexpected(format!("{status} to {title:?} of task {task}")),
        }
    }
}

/// The shape of a load: how many devices write how many times, and what.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub devices: usize,
    pub writes_per_device: usize,
    pub mode: Mode,
}

/// A load running in the background while a test injects a fault.
#[derive(Debug)]
pub struct Load {
    writers: JoinHandle<Ledger>,
}

impl Load {
    /// Starts `spec` on the stack's api and returns once `flowing` of its writes were
    /// acknowledged, so that the fault hits a load in full flow.
    pub async fn start(stack: &TestStack, spec: Spec, flowing: u64) -> Self {
        Self::start_on(stack, std::slice::from_ref(&stack.base), spec, flowing).await
    }

    /// [`Load::start`] on the apis at `bases`.
    pub async fn start_on(stack: &TestStack, bases: &[String], spec: Spec, flowing: u64) -> Self {
        let bases = bases.to_vec();
        let progress = Arc::new(AtomicU64::new(0));
        let writers = tokio::spawn({
            let progress = progress.clone();
            async move { drive_counting(&bases, spec, progress).await }
        });
        stack
            .eventually("writes are flowing", || async {
                progress.load(Ordering::Relaxed) >= flowing
            })
            .await;
        Self { writers }
    }

    /// Whether some device is still writing: a fault injected while this holds hit the load.
    pub fn is_running(&self) -> bool {
        !self.writers.is_finished()
    }

    /// Waits until every device has finished.
    pub async fn finish(self) -> Ledger {
        self.writers.await.expect("the load driver panicked")
    }
}

impl Ledger {
    /// Distinct writes issued.
    pub fn sent(&self) -> u64 {
        self.writes.len() as u64
    }

    fn acknowledged(&self) -> Vec<Uuid> {
        self.writes.iter().filter_map(|w| w.acknowledged).collect()
    }

    /// Waits (up to a minute) until every acknowledged write is in the operation log, then
    /// counts.
    pub async fn check(&self, db: &Pool) -> Figures {
        self.check_within(db, Duration::from_secs(60)).await
    }

    /// [`Ledger::check`], waiting at most `patience` for the log.
    pub async fn check_within(&self, db: &Pool, patience: Duration) -> Figures {
        let acknowledged = self.acknowledged();
        let expected = acknowledged.len() as u64;
        let deadline = Instant::now() + patience;
        while OpLog::ops(&acknowledged).count(db).await < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.figures(&self.read_log(db).await)
    }

    /// [`Ledger::check`], then prints the figures and fails the test on any problem.
    pub async fn verify(&self, db: &Pool, name: &str) -> Figures {
        let figures = self.check(db).await;
        eprintln!(
            "REQUESTS {name}: {} for {} writes ({} refused with a 5xx, {} unanswered)",
            self.requests,
            self.sent(),
            self.refused,
            self.no_answer
        );
        figures.assert_clean(name);
        figures
    }

    async fn read_log(&self, db: &Pool) -> LogView {
        let client = db.get().await.unwrap();
        let outcomes = client
            .query(
                "SELECT op_id, outcome FROM operations WHERE op_id = ANY($1)",
                &[&self.acknowledged()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), OutcomeStatus::from_db(r.get(1))))
            .collect();
        let tasks: Vec<Uuid> = self.writes.iter().map(|w| w.task).collect();
        let applied_titles = client
            .query(
                "SELECT task_id, fields->>'title' FROM operations \
                 WHERE task_id = ANY($1) AND outcome = $2 AND fields->>'title' IS NOT NULL",
                &[&tasks, &OutcomeStatus::Success.as_str()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let tasks = client
            .query(
                "SELECT t.id, (SELECT count(*) FROM operations o WHERE o.task_id = t.id), t.title \
                 FROM tasks t WHERE t.id = ANY($1)",
                &[&tasks],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), (r.get::<_, i64>(1).unsigned_abs(), r.get(2))))
            .collect();
        LogView {
            outcomes,
            tasks,
            applied_titles,
        }
    }
}
