//! What one connection counted: every request it issued, each answer class apart, latencies,
//! and the operations the api accepted (with the moment the request carrying them was sent).

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use uuid::Uuid;

/// Microsecond histogram from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug)]
pub struct Tally {
    /// Requests issued, counted before each is sent: never derived from answers.
    pub sent: u64,
    /// 2xx answers other than 202.
    pub ok: u64,
    /// 202 answers (accepted, not yet applied).
    pub accepted_202: u64,
    /// 429 answers (after which the connection waited `Retry-After`).
    pub throttled: u64,
    /// Other 4xx answers.
    pub client_errors: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Requests that got no answer (connect, timeout, reset).
    pub transport_errors: u64,
    /// Latency of every answered request other than 429, µs.
    pub latency: Histogram<u64>,
    /// Operations the api accepted, with the send time of their request.
    pub accepted: Vec<(Uuid, DateTime<Utc>)>,
    /// Batch items the api answered `error`.
    pub refused_items: u64,
    /// The first unexpected answer, for the report.
    pub first_error: Option<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            sent: 0,
            ok: 0,
            accepted_202: 0,
            throttled: 0,
            client_errors: 0,
            server_errors: 0,
            transport_errors: 0,
            latency: histogram(),
            accepted: Vec::new(),
            refused_items: 0,
            first_error: None,
        }
    }
}

impl Tally {
    /// Answers received, whatever their status.
    pub fn answered(&self) -> u64 {
        self.ok + self.accepted_202 + self.throttled + self.client_errors + self.server_errors
    }

    pub fn note_error(&mut self, what: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.accepted_202 += other.accepted_202;
        self.throttled += other.throttled;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.transport_errors += other.transport_errors;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.accepted.extend(other.accepted);
        self.refused_items += other.refused_items;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}
