//! Limits and back-pressure (SPEC §8): a client told to slow down gets 429 with `Retry-After`
//! (whole seconds, at least 1) and the usual error body, before its request reaches a handler,
//! so nothing of it is published.
//!
//! - Per user (`RATE_LIMIT_RPS`, `RATE_LIMIT_BURST`): a token bucket per user id, taken from
//!   the [`CurrentUser`] the authentication layer put in the request (the default user when
//!   there is none), so one user's burst never limits another. Every `/api` request takes a
//!   token except the public ones (the probes `/api/health`, `/api/ready`, and the api's
//!   description `/api/openapi.json`, `/api/docs`); this layer sits inside
//!   authentication, so a request refused for its credentials (401) costs nobody a rate
//!   token. The buckets of users whose bucket
//!   is full again are dropped every [`PRUNE_EVERY`]: memory follows the users active lately,
//!   not every user ever seen.
//! - High water (`QUEUE_HIGH_WATER`): task writes (`POST`, `PUT`, `DELETE` under `/api/tasks`,
//!   `/api/batch`, `/api/sync`) are refused while the work queue holds more ready messages than
//!   that; reads go on. The depth comes from the broker's shared sampler (one channel, one
//!   sample a second for every caller, so a write may be let through for up to a second after
//!   the queue went over). An unknown depth (broker down) refuses nothing: the publish answers
//!   503 by itself. While a sampling is under way a write waits for it, at most the sampler's
//!   own 2 s when the broker does not answer.

use std::{
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{OriginalUri, Request, State},
    http::Method,
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use tasksync_shared::config::{DEFAULT_USER, EdgeSettings, RateLimit};

use crate::{
    auth::middleware::is_protected, broker::Broker, error::ApiError, extract::CurrentUser,
};

/// How often buckets that are full again are forgotten.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// `Retry-After` of a write refused for high water: the depth is sampled once a second.
const HIGH_WATER_RETRY_AFTER: u64 = 1;

/// The state of [`guard`]: cheap to clone, all clones share the buckets.
#[derive(Clone, Debug)]
pub struct Throttle {
    per_user: Option<Arc<PerUser>>,
    high_water: Option<NonZeroU32>,
    broker: Broker,
}

impl Throttle {
    pub fn new(edge: &EdgeSettings, broker: Broker) -> Self {
        Self {
            per_user: edge
                .rate_limit
                .map(|limit| Arc::new(PerUser::new(limit, PRUNE_EVERY))),
            high_water: edge.queue_high_water,
            broker,
        }
    }
}

/// One token bucket per user id.
struct PerUser {
    limiter: DefaultKeyedRateLimiter<String>,
    limit: RateLimit,
    /// [`PRUNE_EVERY`], shorter in tests.
    prune_every: Duration,
    pruned: Mutex<Instant>,
}

impl std::fmt::Debug for PerUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerUser")
            .field("limit", &self.limit)
            .field("users", &self.limiter.len())
            .finish()
    }
}

impl PerUser {
    fn new(limit: RateLimit, prune_every: Duration) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            limit,
            prune_every,
            pruned: Mutex::new(Instant::now()),
        }
    }

    /// Takes a token from `user`'s bucket, or tells how long until there is one.
    fn take(&self, user: &String) -> Result<(), Duration> {
        let taken = self
            .limiter
            .check_key(user)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()));
        self.prune_now_and_then();
        taken
    }

    /// Forgets the buckets that are full again (indistinguishable from a new one), at most
    /// once per [`PRUNE_EVERY`], on whichever request comes first; never waits for another.
    fn prune_now_and_then(&self) {
        let Ok(mut pruned) = self.pruned.try_lock() else {
            return;
        };
        if pruned.elapsed() >= self.prune_every {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            *pruned = Instant::now();
        }
    }

    /// Users with a bucket in memory.
    #[cfg(test)]
    fn users(&self) -> usize {
        self.limiter.len()
    }
}

/// The middleware: per-user rate, then high water for writes.
pub async fn guard(State(throttle): State<Throttle>, request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path(), |uri| uri.path())
        .to_string();
    if !is_protected(&path) {
        return next.run(request).await;
    }
    if let Some(per_user) = &throttle.per_user {
        let user = request.extensions().get::<CurrentUser>().map_or_else(
            || DEFAULT_USER.to_string(),
            |CurrentUser(user)| user.clone(),
        );
        if let Err(wait) = per_user.take(&user) {
            let RateLimit { per_second, burst } = per_user.limit;
            let seconds = whole_seconds(wait);
            tracing::debug!(%user, seconds, "request over the rate limit");
            return ApiError::TooManyRequests(
                format!(
                    "too many requests: at most {per_second} per second (bursts of {burst}); \
                     retry in {seconds} s"
                ),
                seconds,
            )
            .into_response();
        }
    }
    if let Some(high_water) = throttle.high_water {
        if is_write(request.method(), &path) {
            if let Some(depth) = throttle.broker.work_queue_depth().await {
                if depth > high_water.get() {
                    tracing::debug!(
                        depth,
                        high_water,
                        "write refused: work queue over high water"
                    );
                    return ApiError::TooManyRequests(
                        "too many operations are waiting to be applied; retry later".into(),
                        HIGH_WATER_RETRY_AFTER,
                    )
                    .into_response();
                }
            }
        }
    }
    next.run(request).await
}

/// A task write: what publishes an operation.
fn is_write(method: &Method, path: &str) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::DELETE)
        && (path == "/api/tasks"
            || path.starts_with("/api/tasks/")
            || path == "/api/batch"
            || path == "/api/sync")
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
fn whole_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;
