//! Test support: [`TestStack`] starts the api and the sync-worker in-process, exactly as their
//! `main`s do, on port 0 with a fresh database and a fresh topology prefix, against the real
//! Postgres and RabbitMQ of [`services`]. Its HTTP methods delegate to an [`ApiClient`] (one
//! method per endpoint), which also serves an [`ExtraApi`]. It removes its database, queues and
//! exchanges on drop, and every start sweeps what killed test runs left ([`cleanup`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod api_client;
pub mod cleanup;
pub mod events;
pub mod faults;
pub mod load;
pub mod op_log;
pub mod ops;
pub mod processes;
pub mod proxy;
pub mod rabbit_cluster;
pub mod rabbit_node;
pub mod services;
pub mod sync_client;
pub mod tokens;

pub use api_client::{ApiClient, Reply};

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use reqwest::Method;
use serde_json::Value;
use sync_worker::faults::{FaultInjector, NoFaults};
use tasksync_shared::{Settings, config::QueueType, db, topology::Topology};
use tokio::{sync::oneshot, task::JoinHandle};
use uuid::Uuid;

/// How long helpers wait for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running process-in-a-task (api or worker) and the switch that stops it.
#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("service did not stop in time")
            .expect("service task panicked")
            .expect("service returned an error");
    }
}

/// An api started by [`TestStack::spawn_api`].
#[derive(Debug)]
pub struct ExtraApi {
    pub base: String,
    /// A client of this api.
    pub api: ApiClient,
    running: Running,
}

impl ExtraApi {
    /// Stops it gracefully; fails the test if it does not stop cleanly.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// One api and one worker on a private database and topology prefix.
#[derive(Debug)]
pub struct TestStack {
    pub settings: Settings,
    pub base: String,
    pub http: reqwest::Client,
    pub db: Pool,
    /// When set, the worker reaches Postgres through this URL instead (e.g. through a proxy).
    pub worker_database_url: Option<String>,
    /// The running worker's own listener (`/health`, `/ready`, `/metrics`), e.g.
    /// `http://127.0.0.1:PORT`; empty while no worker runs.
    pub worker_base: String,
    api: Option<Running>,
    worker: Option<Running>,
    faults: Arc<dyn FaultInjector>,
}

impl TestStack {
    /// Api and worker, with settings suited to tests (short waits, small prefetch).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestStack::start`], after `configure` adjusted the settings.
    pub async fn start_with(configure: impl FnOnce(&mut Settings)) -> Self {
        Self::start_with_faults(configure, Arc::new(NoFaults)).await
    }

    /// Like [`TestStack::start_with`], with a worker whose applies consult `faults`.
    pub async fn start_with_faults(
        configure: impl FnOnce(&mut Settings),
        faults: Arc<dyn FaultInjector>,
    ) -> Self {
        let services = services::get().await;
        cleanup::sweep_leftovers(services).await;
        let names = cleanup::StackNames::new(cleanup::now());
        let mut settings = Settings {
            database_url: services.database_url(&names.database).into(),
            amqp_url: services.amqp_url.as_str().into(),
            host: "127.0.0.1".into(),
            port: 0,
            worker_http_port: 0,
            amqp_prefix: names.amqp_prefix,
            queue_type: QueueType::Quorum,
            write_wait: Duration::from_secs(5),
            retry_delays: [50, 100, 150].map(Duration::from_millis).to_vec(),
            ..Settings::default()
        };
        configure(&mut settings);
        // Migrate before starting anything, so that tests see a ready schema.
        db::migrate(&settings.database_url)
            .await
            .expect("migrate test database");
        let pool = db::pool(&settings.database_url, 4).expect("pool");
        let mut stack = Self {
            base: String::new(),
            http: reqwest::Client::new(),
            db: pool,
            worker_database_url: None,
            worker_base: String::new(),
            api: None,
            worker: None,
            faults,
            settings,
        };
        stack.start_worker().await;
        stack.start_api().await;
        stack
    }

    /// Starts the api and waits until it is ready (database and broker).
    pub async fn start_api(&mut self) {
        assert!(self.api.is_none(), "api already running");
        let (base, running) = launch_api(self.settings.clone()).await;
        self.base = base;
        self.api = Some(running);
        self.eventually("the api is ready", || async {
            self.get("/ready").await.status == 200
        })
        .await;
    }

    /// Starts a worker and waits until it consumes the work queue.
    pub async fn start_worker(&mut self) {
        assert!(self.worker.is_none(), "worker already running");
        let (stop, stopped) = oneshot::channel::<()>();
        let mut settings = self.settings.clone();
        if let Some(url) = &self.worker_database_url {
            settings.database_url = url.as_str().into();
        }
        let worker = sync_worker::Worker::build(settings, self.faults.clone())
            .await
            .expect("build the worker");
        self.worker_base = format!("http://127.0.0.1:{}", worker.port());
        let task = tokio::spawn(worker.run_until_stopped(async {
            let _ = stopped.await;
        }));
        self.worker = Some(Running { stop, task });
        let topology = self.topology();
        let partitions = match &self.settings.worker_partitions {
            Some(chosen) => chosen.clone(),
            None => (0..topology.partitions()).collect(),
        };
        self.eventually("the worker consumes", || async {
            for partition in &partitions {
                if self
                    .queue_consumers(&topology.work_queue_of(*partition))
                    .await
                    == 0
                {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// Starts one more api, configured by `settings`, next to the stack's own; for replicas or
    /// for an api whose dependencies are missing. Returns its base URL and its stop switch.
    pub async fn spawn_api(&self, settings: Settings) -> ExtraApi {
        let (base, running) = launch_api(settings).await;
        ExtraApi {
            api: ApiClient::new(self.http.clone(), base.clone()),
            base,
            running,
        }
    }

    /// Stops the worker gracefully and waits until it has let go of the queue.
    pub async fn stop_worker(&mut self) {
        self.worker.take().expect("worker not running").stop().await;
    }

    /// Stops the api gracefully.
    pub async fn stop_api(&mut self) {
        self.api.take().expect("api not running").stop().await;
    }

    pub fn topology(&self) -> Topology {
        Topology::from_settings(&self.settings)
    }

    /// Polls `check` until it holds, failing the test after [`PATIENCE`].
    pub async fn eventually<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + PATIENCE;
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ---- HTTP: every method delegates to the stack's [`ApiClient`] ---------------------

    /// A client of the stack's api.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.http.clone(), self.base.clone())
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.client().request(method, path, body, headers).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.client().get(path).await
    }

    pub async fn create_task(&self, body: Value) -> Reply {
        self.client().create_task(body).await
    }

    pub async fn list_tasks(&self) -> Reply {
        self.client().list_tasks().await
    }

    pub async fn get_task(&self, id: &str) -> Reply {
        self.client().get_task(id).await
    }

    pub async fn update_task(&self, id: &str, body: Value) -> Reply {
        self.client().update_task(id, body).await
    }

    pub async fn delete_task(&self, id: &str) -> Reply {
        self.client().delete_task(id).await
    }

    pub async fn status(&self) -> Reply {
        self.client().status().await
    }

    // ---- Direct looks at the database and the broker -------------------------------------

    /// (sync_status, last_synced_at is set, is_deleted, title) of a stored task.
    pub async fn stored(&self, id: Uuid) -> Option<(String, bool, bool, Option<String>)> {
        let client = self.db.get().await.unwrap();
        client
            .query_opt(
                "SELECT sync_status, last_synced_at IS NOT NULL, is_deleted, title FROM tasks WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    }

    /// Failure records the worker kept (attempts spent, messages parked).
    pub async fn failure_records(&self) -> i64 {
        let client = self.db.get().await.unwrap();
        client
            .query_one("SELECT count(*) FROM operation_failures", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Rows of the operation log for `task_id`: (op_id, outcome).
    pub async fn operations_of(&self, task_id: Uuid) -> Vec<(Uuid, String)> {
        let client = self.db.get().await.unwrap();
        client
            .query(
                "SELECT op_id, outcome FROM operations WHERE task_id = $1 ORDER BY decided_at",
                &[&task_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    async fn queue_info(&self, queue: &str) -> Option<(u32, u32)> {
        let connection = tasksync_shared::amqp::connect(&self.settings.amqp_url, "tasksync-test")
            .await
            .ok()?;
        let channel = connection.create_channel().await.ok()?;
        let queue = tasksync_shared::amqp::inspect_queue(&channel, queue)
            .await
            .ok();
        let _ = connection.close(200, "done".into()).await;
        queue.map(|q| (q.message_count(), q.consumer_count()))
    }

    /// Consumers of a queue (0 when it does not exist).
    pub async fn queue_consumers(&self, queue: &str) -> u32 {
        self.queue_info(queue).await.map_or(0, |(_, c)| c)
    }

    /// Whether a queue exists.
    pub async fn queue_exists(&self, queue: &str) -> bool {
        self.queue_info(queue).await.is_some()
    }

    /// Ready messages in a queue (0 when it does not exist).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        self.queue_info(queue).await.map_or(0, |(m, _)| m)
    }

    /// Publishes raw bodies to the operations exchange with confirms, as a misbehaving or
    /// duplicating publisher would.
    pub async fn publish_raw(&self, routing_key: &str, bodies: &[Vec<u8>]) {
        self.publish_raw_with(routing_key, bodies, lapin::types::FieldTable::default())
            .await;
    }

    /// [`TestStack::publish_raw`] with message headers.
    pub async fn publish_raw_with(
        &self,
        routing_key: &str,
        bodies: &[Vec<u8>],
        headers: lapin::types::FieldTable,
    ) {
        let properties = BasicProperties::default().with_headers(headers);
        self.publish(
            &self.topology().ops_exchange(),
            routing_key,
            bodies,
            properties,
        )
        .await;
    }

    /// Publishes raw bodies, persistent and mandatory, to any exchange (`""`: the default one,
    /// which routes to the queue named by `routing_key`) with confirms; every one must be
    /// routed and acknowledged.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        bodies: &[Vec<u8>],
        properties: BasicProperties,
    ) {
        let connection = tasksync_shared::amqp::connect(&self.settings.amqp_url, "tasksync-test")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for body in bodies {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    properties.clone().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(
                matches!(confirm, lapin::Confirmation::Ack(None)),
                "{confirm:?}"
            );
        }
        let _ = connection.close(200, "done".into()).await;
    }
}

/// Builds an api and runs it in a task on port 0; returns its base URL and its stop switch.
async fn launch_api(settings: Settings) -> (String, Running) {
    let app = api::Application::build(settings).await.expect("build api");
    let base = format!("http://127.0.0.1:{}/api", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    (base, Running { stop, task })
}

impl Drop for TestStack {
    /// Stops the services and removes the database, queues and exchanges, also when the test
    /// failed. Runs on its own thread and runtime, since `Drop` cannot await.
    fn drop(&mut self) {
        let api = self.api.take();
        let worker = self.worker.take();
        for running in [api, worker].into_iter().flatten() {
            let _ = running.stop.send(());
            running.task.abort();
        }
        let settings = self.settings.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(cleanup::remove_stack(&settings));
        })
        .join();
    }
}
