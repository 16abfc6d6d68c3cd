//! The Task Sync api: an axum service that validates task operations, publishes each one to
//! RabbitMQ with publisher confirms, waits briefly for the sync-worker's outcome, and reads
//! tasks from Postgres. It never writes a task row itself.
//!
//! Layout:
//! - [`Application`]: builds the service from [`Settings`], exposes its bound port, runs until
//!   a shutdown future resolves (tests start it exactly as `main` does);
//! - [`edge`]: CORS and security headers on every answer; [`throttle`]: per-user rate limit
//!   and work-queue high water (429);
//! - [`server`]: the HTTP/1.1 connection loop (header timeout, connection cap, graceful
//!   shutdown); [`limits`]: per-request limits (early 413, request deadline);
//! - [`routes`]: one file per concern (tasks, offline sync push, changes feed, live events,
//!   operation status, conflict history, devices, status, health);
//! - [`events`]: live event streams: the `LISTEN` session, the hub of subscribers, the reader
//!   behind each stream;
//! - [`batch`]: reading the items of an offline push one by one;
//! - [`cursor`]: the opaque cursors of the changes feed, the task list and conflict history;
//! - [`device`]: the `Device-Id` header (checked on every route) and what is recorded of
//!   devices' pushes and pulls;
//! - [`client_error`]: the words a client may read of an operation's recorded error;
//! - [`broker`]: publishing with confirms, receiving outcomes, sampling queue depths;
//! - [`storage`]: all SQL (reads only);
//! - [`auth`]: bearer-token authentication (or development mode), the layer that says which
//!   user a request acts for;
//! - [`error`] and [`extract`]: one error type rendered as the SPEC body, and extractors whose
//!   rejections use it; [`json`]: strict JSON reading (repeated keys) and client-worded errors;
//! - [`metrics`]: the Prometheus metrics and `GET /metrics` (outside `/api`);
//! - [`openapi`]: the OpenAPI document generated from the handlers and types, and its page;
//! - [`trace`]: the request's trace (`traceparent`), request id and access log line.

pub mod auth;
pub mod batch;
pub mod broker;
pub mod client_error;
pub mod cursor;
pub mod device;
pub mod edge;
pub mod error;
pub mod events;
pub mod extract;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod state;
pub mod storage;
pub mod throttle;
pub mod trace;

use std::{future::Future, sync::Arc};

use tasksync_shared::{Settings, amqp::Backoff, config::SecretUrl, db, shutdown::stopped};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use axum::middleware::{from_fn, from_fn_with_state};

use crate::{
    auth::Authenticator, broker::Broker, edge::Edge, server::ConnectionLimits, state::AppState,
};

/// A built, bound, not yet serving api.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
    edge: Edge,
    port: u16,
}

impl Application {
    /// Binds `HOST:PORT` (port 0 picks a free one) and prepares the pools. Connections to
    /// Postgres and RabbitMQ are made in the background, so the api starts whatever is down.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.http_request_timeout <= settings.write_wait + settings.publish_timeout {
            tracing::warn!(
                "HTTP_REQUEST_TIMEOUT_MS is not above WRITE_WAIT_MS + PUBLISH_TIMEOUT_MS: a write \
                 the broker accepted may be answered 503 when its wait is cut short"
            );
        }
        let edge = Edge::new(&settings.edge.cors_allowed_origins)?;
        let listener = TcpListener::bind((settings.host.as_str(), settings.port)).await?;
        let port = listener.local_addr()?.port();
        let db = db::pool_for(&settings)?;
        let broker = Broker::new(&settings);
        let auth = Authenticator::from_settings(&settings.jwt)?;
        let limits = events::Limits {
            max_streams: settings.events.max_subscribers,
            max_per_user: settings.events.max_per_user,
        };
        let events = events::Hub::new(limits, broker.metrics().clone());
        Ok(Self {
            listener,
            state: AppState {
                settings: Arc::new(settings),
                db,
                broker,
                auth,
                events,
            },
            edge,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the api serves, with every layer, as [`Application::run_until_stopped`]
    /// serves it (tests read its routes).
    pub fn router(&self) -> axum::Router {
        // Authentication wraps the router (whose per-user limits run inside it, so a 401 costs
        // no rate token) and answers its own refusals; CORS and the response headers wrap it
        // in turn, so preflights pass and browsers can read a 401 or a 429.
        // The access log wraps everything, so that every answer has its line and its trace.
        //
        // `/metrics` sits outside all of that (public, never throttled, like a probe), and the
        // request metrics wrap everything, so refusals are counted too.
        let auth = self.state.auth.clone();
        let served = self.edge.clone().wrap(
            routes::router(self.state.clone())
                .layer(from_fn(trace::user))
                .layer(from_fn_with_state(auth, auth::authenticate)),
        );
        let scrape = axum::routing::get(metrics::render).with_state(self.state.clone());
        served
            .route("/metrics", scrape)
            .layer(from_fn_with_state(
                self.state.broker.metrics().clone(),
                metrics::track,
            ))
            .layer(from_fn(trace::access))
    }

    /// Serves until `shutdown` resolves, then ends the event streams, stops accepting, finishes
    /// the requests in flight (they may still be waiting for outcomes; at most
    /// `HTTP_HEADER_TIMEOUT_MS` + `HTTP_REQUEST_TIMEOUT_MS`, see [`server`]), and closes the
    /// broker connection and the `LISTEN` session.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop) = watch::channel(false);
        let broker: JoinHandle<()> = tokio::spawn(self.state.broker.clone().maintain(stop.clone()));
        let database = self.state.settings.database_url.clone();
        tokio::spawn(wait_for_schema(
            self.state.db.clone(),
            database,
            stop.clone(),
        ));
        let hub = self.state.events.clone();
        let listener = tokio::spawn(events::listen::run(
            hub.clone(),
            self.state.settings.database_url.clone(),
            stop.clone(),
        ));
        tokio::spawn(self.state.auth.clone().run(stop));
        tracing::info!(port = self.port, "api listening");
        let settings = &self.state.settings;
        let limits = ConnectionLimits {
            header_timeout: settings.http_header_timeout,
            max_connections: settings.http_max_connections,
            drain_timeout: settings.http_header_timeout + settings.http_request_timeout,
        };
        let app = self.router();
        // Event streams never end by themselves: they are ended as soon as shutdown begins, so
        // that the drain below only waits for ordinary requests.
        let shutdown = async move {
            shutdown.await;
            hub.close();
        };
        server::serve(self.listener, app, limits, shutdown).await;
        let _ = stop_tx.send(true);
        let _ = listener.await;
        let _ = broker.await;
        tracing::info!("api stopped");
        Ok(())
    }
}

/// Logs, with the reason, until the worker has created the schema; reads answer 503 until then.
async fn wait_for_schema(
    pool: deadpool_postgres::Pool,
    database: SecretUrl,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    while let Err(reason) = db::database_ready(&pool).await {
        let delay = backoff.next_delay();
        tracing::info!(
            database = %database.redacted(),
            %reason,
            ?delay,
            "waiting for the database schema (the sync-worker creates it)"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return,
        }
    }
    tracing::info!("database schema ready");
}
