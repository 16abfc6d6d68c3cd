//! The worker's Prometheus metrics and the liveness facts its probes read ([`crate::http`]).
//!
//! Each [`WorkerMetrics`] owns its recorder rather than installing a global one: tests run an
//! api and a worker (or two) in one process, and each must show only its own numbers. Metrics
//! are registered through [`metrics::with_local_recorder`], which points the `metrics` macros
//! at this recorder for one call.
//!
//! Names (all prefixed `tasksync_worker_`): `batches_total`, `batch_size` (histogram),
//! `apply_seconds` (histogram, one batch step), `operations_total{outcome}` (each operation
//! once, when decided), `redelivered_total` and `duplicates_total` (an operation already
//! decided, delivered again: by the broker after a broken session, or sent again),
//! `retries_total{attempt}`, `parked_total{reason}`, `database_pauses_total`,
//! `queue_lag_seconds` (histogram: now − when the api received the operation, from the
//! message's `tasksync-received-ms` header, to the millisecond), `batches_in_flight`, `deliveries_in_flight` (received, not yet acked or handed
//! back), `oldest_in_flight_seconds` (age of the oldest batch in flight, from when this worker
//! gathered it), `consuming`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::{BasicProperties, message::Delivery};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tasksync_shared::failure;

/// Seconds buckets for lag and apply times: 1 ms to 5 min.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Deliveries per batch.
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

/// Why a delivery was parked: a small fixed set, never the error text (unbounded labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParkReason {
    /// The body is not an operation of a known schema version.
    Unreadable,
    /// Redelivered past the crash limit (classic queues).
    CrashLoop,
    /// Its own statement failed on every attempt.
    AttemptsExhausted,
}

impl ParkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::CrashLoop => "crash_loop",
            Self::AttemptsExhausted => "attempts_exhausted",
        }
    }
}

/// The worker's recorder and the state its probes read. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    probe: Arc<Probe>,
}

/// What `/health` and `/ready` are decided from.
#[derive(Debug)]
struct Probe {
    started: Instant,
    /// A consumer is open on the work queue.
    consuming: AtomicBool,
    /// Milliseconds since `started` of the consume loop's last step forward.
    progress_ms: AtomicU64,
    /// Batches in flight by sequence number, with when each was gathered and its deliveries.
    in_flight: Mutex<BTreeMap<u64, (Instant, usize)>>,
    next_batch: AtomicU64,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        // Both only fail for an empty bucket list.
        let builder = builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("tasksync_worker_batch_size".into()),
                    SIZE_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
            probe: Arc::new(Probe {
                started: Instant::now(),
                consuming: AtomicBool::new(false),
                progress_ms: AtomicU64::new(0),
                in_flight: Mutex::new(BTreeMap::new()),
                next_batch: AtomicU64::new(0),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.recorder, f)
    }

    /// The consume loop stepped forward (a batch gathered, stepped, settled, a pause round).
    pub fn progressed(&self) {
        let ms = u64::try_from(self.probe.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.probe.progress_ms.store(ms, Ordering::Relaxed);
    }

    pub fn set_consuming(&self, consuming: bool) {
        self.probe.consuming.store(consuming, Ordering::Relaxed);
        self.progressed();
    }

    pub fn is_consuming(&self) -> bool {
        self.probe.consuming.load(Ordering::Relaxed)
    }

    /// Alive: idle (nothing in flight: waiting for deliveries, or reconnecting), or some step
    /// forward within `limit`. A loop stuck inside a batch for longer fails it.
    pub fn is_alive(&self, limit: Duration) -> bool {
        if self.batches_in_flight() == 0 {
            return true;
        }
        let last = Duration::from_millis(self.probe.progress_ms.load(Ordering::Relaxed));
        self.probe.started.elapsed().saturating_sub(last) <= limit
    }

    fn batches_in_flight(&self) -> usize {
        self.probe.in_flight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// A batch was gathered: counts it, its size and each delivery's lag. Returns its place
    /// among the batches in flight, which it leaves when dropped (settled, handed back, or
    /// dropped with a broken session).
    pub fn batch_gathered(&self, batch: &[Delivery]) -> InFlightBatch {
        let now_us = chrono::Utc::now().timestamp_micros();
        self.with(|| {
            metrics::counter!("tasksync_worker_batches_total").increment(1);
            #[allow(clippy::cast_precision_loss)]
            metrics::histogram!("tasksync_worker_batch_size").record(batch.len() as f64);
            let lag = metrics::histogram!("tasksync_worker_queue_lag_seconds");
            for delivery in batch {
                if let Some(seconds) = queue_lag(&delivery.properties, now_us) {
                    lag.record(seconds);
                }
            }
        });
        let ticket = self.probe.next_batch.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut in_flight) = self.probe.in_flight.lock() {
            in_flight.insert(ticket, (Instant::now(), batch.len()));
        }
        self.progressed();
        InFlightBatch {
            metrics: self.clone(),
            ticket,
        }
    }

    /// One batch step took `took`.
    pub fn stepped(&self, took: Duration) {
        self.with(|| {
            metrics::histogram!("tasksync_worker_apply_seconds").record(took.as_secs_f64())
        });
        self.progressed();
    }

    /// An operation decided and committed with `outcome` (`success`, `conflict`, `error`,
    /// `pending`).
    pub fn decided(&self, outcome: &'static str) {
        self.with(|| {
            metrics::counter!("tasksync_worker_operations_total", "outcome" => outcome).increment(1)
        });
    }

    /// An operation already decided came again (its outcome is repeated, not counted again):
    /// `redelivered` by the broker (the session broke between its commit and its ack), or a
    /// duplicate (a client pushing it again, a copy in the same batch).
    pub fn repeated(&self, redelivered: bool) {
        self.with(|| {
            if redelivered {
                metrics::counter!("tasksync_worker_redelivered_total").increment(1);
            } else {
                metrics::counter!("tasksync_worker_duplicates_total").increment(1);
            }
        });
    }

    /// Attempt `attempt` failed; the operation goes to its delay queue.
    pub fn retried(&self, attempt: u32) {
        self.with(|| {
            metrics::counter!("tasksync_worker_retries_total", "attempt" => attempt.to_string())
                .increment(1);
        });
    }

    pub fn parked(&self, reason: ParkReason) {
        self.with(|| {
            metrics::counter!("tasksync_worker_parked_total", "reason" => reason.as_str())
                .increment(1);
        });
    }

    /// The worker paused for an unreachable database (one backoff round).
    pub fn database_paused(&self) {
        self.with(|| metrics::counter!("tasksync_worker_database_pauses_total").increment(1));
        self.progressed();
    }

    /// Deliveries in flight, and the age of the oldest batch in flight.
    pub fn in_flight(&self) -> (usize, Option<Duration>) {
        match self.probe.in_flight.lock() {
            Ok(m) => (
                m.values().map(|(_, n)| n).sum(),
                m.values().next().map(|(at, _)| at.elapsed()),
            ),
            Err(_) => (0, None),
        }
    }

    /// The Prometheus text, with the gauges read now.
    pub fn render(&self) -> String {
        let in_flight = self.batches_in_flight();
        let (deliveries, oldest) = self.in_flight();
        self.with(|| {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("tasksync_worker_batches_in_flight").set(in_flight as f64);
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("tasksync_worker_deliveries_in_flight").set(deliveries as f64);
            metrics::gauge!("tasksync_worker_oldest_in_flight_seconds")
                .set(oldest.map_or(0.0, |d| d.as_secs_f64()));
            metrics::gauge!("tasksync_worker_consuming").set(if self.is_consuming() {
                1.0
            } else {
                0.0
            });
        });
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// How long ago (seconds, at `now_us` Unix microseconds) the api received the delivery's
/// operation: from its `tasksync-received-ms` header, or, from an api that does not set it, the
/// AMQP `timestamp` (whole seconds). Never negative (clocks of two hosts).
fn queue_lag(properties: &BasicProperties, now_us: i64) -> Option<f64> {
    let received_us = match failure::header_i64(properties, failure::header::RECEIVED_MS) {
        Some(ms) => ms.saturating_mul(1_000),
        None => i64::try_from(*properties.timestamp().as_ref()?)
            .ok()?
            .saturating_mul(1_000_000),
    };
    #[allow(clippy::cast_precision_loss)]
    Some(now_us.saturating_sub(received_us).max(0) as f64 / 1e6)
}

/// A batch's place among those in flight (for the gauges and liveness); left when dropped.
#[derive(Debug)]
pub struct InFlightBatch {
    metrics: WorkerMetrics,
    ticket: u64,
}

impl Drop for InFlightBatch {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.metrics.probe.in_flight.lock() {
            in_flight.remove(&self.ticket);
        }
        self.metrics.progressed();
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldTable;

    use super::*;

    #[test]
    fn the_lag_is_read_to_the_millisecond_and_falls_back_to_whole_seconds() {
        let now_us = 1_700_000_000_250_000;
        let mut headers = FieldTable::default();
        failure::set_i64(
            &mut headers,
            failure::header::RECEIVED_MS,
            1_700_000_000_000,
        );
        let precise = BasicProperties::default()
            .with_headers(headers)
            .with_timestamp(1_699_999_999);
        assert_eq!(queue_lag(&precise, now_us), Some(0.25));
        let seconds = BasicProperties::default().with_timestamp(1_700_000_000);
        assert_eq!(queue_lag(&seconds, now_us), Some(0.25));
        let ahead = BasicProperties::default().with_timestamp(1_700_000_001);
        assert_eq!(queue_lag(&ahead, now_us), Some(0.0));
        assert_eq!(queue_lag(&BasicProperties::default(), now_us), None);
    }
}
