//! Runs `connections` loops side by side until the time is up or the request budget is spent,
//! with a progress bar, and merges what they counted.

use std::{
    future::Future,
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

use crate::tally::Tally;

/// When the load stops: a deadline, or a number of requests shared by every connection.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    requests: Option<u64>,
    taken: AtomicU64,
}

impl Budget {
    /// `requests` wins over `time`; a request budget still stops after an hour.
    pub fn new(time: Duration, requests: Option<u64>) -> Self {
        let time = if requests.is_some() {
            Duration::from_secs(3_600)
        } else {
            time
        };
        Self {
            deadline: Instant::now() + time,
            requests,
            taken: AtomicU64::new(0),
        }
    }

    /// Whether one more request may be sent (and, if so, it is counted against the budget).
    pub fn take(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        let n = self.taken.fetch_add(1, Ordering::Relaxed);
        self.requests.is_none_or(|limit| n < limit)
    }

    fn progress(&self, started: Instant) -> (u64, u64) {
        match self.requests {
            Some(limit) => (self.taken.load(Ordering::Relaxed).min(limit), limit),
            None => {
                let total = self.deadline.saturating_duration_since(started).as_millis();
                let done = started.elapsed().as_millis().min(total);
                (done as u64, total as u64)
            }
        }
    }
}

/// A progress bar on stderr, or a hidden one when `quiet` or stderr is not a terminal.
pub fn bar(quiet: bool, label: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(1);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {percent}%")
    {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_string());
    bar
}

/// Moves `bar` with the budget every 200 ms, until aborted.
pub async fn tick(budget: Arc<Budget>, bar: ProgressBar, started: Instant) {
    loop {
        let (done, total) = budget.progress(started);
        bar.set_length(total.max(1));
        bar.set_position(done);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `one(i)` for every connection `i`, returns the merged tally and the wall time.
pub async fn connections<F, Fut>(
    count: usize,
    budget: Arc<Budget>,
    bar: ProgressBar,
    one: F,
) -> (Tally, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..count.max(1)).map(|i| tokio::spawn(one(i))).collect();
    let ticker = tokio::spawn(tick(budget, bar.clone(), started));
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.note_error(|| format!("a connection's loop failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    (tally, elapsed)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Budget;

    #[test]
    fn a_request_budget_is_spent_exactly() {
        let budget = Budget::new(Duration::from_millis(1), Some(3));
        std::thread::sleep(Duration::from_millis(5));
        // The time is ignored when a request count is given.
        assert_eq!((0..10).filter(|_| budget.take()).count(), 3);
    }

    #[test]
    fn a_time_budget_ends() {
        let budget = Budget::new(Duration::from_millis(20), None);
        assert!(budget.take());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!budget.take());
    }
}
