//! Peak resident memory of the services, from `/proc/PID/status`: sampled `VmRSS` while the load
//! runs, and the kernel's own high-water mark `VmHWM` (over the process's whole life) at the end.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rss {
    pub pid: u32,
    /// Highest `VmRSS` seen during the run, MiB.
    pub peak_sampled_mb: f64,
    /// `VmHWM` at the end of the run, MiB.
    pub hwm_mb: f64,
}

/// Samples one process every 100 ms until stopped.
#[derive(Debug)]
pub struct Sampler {
    pid: u32,
    peak_kb: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Sampler {
    pub fn start(pid: u32) -> Self {
        let peak_kb = Arc::new(AtomicU64::new(field_kb(pid, "VmRSS:").unwrap_or(0)));
        let peak = peak_kb.clone();
        let task = tokio::spawn(async move {
            while let Some(kb) = field_kb(pid, "VmRSS:") {
                peak.fetch_max(kb, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { pid, peak_kb, task }
    }

    pub fn finish(self) -> Rss {
        self.task.abort();
        let mb = |kb: u64| kb as f64 / 1024.0;
        Rss {
            pid: self.pid,
            peak_sampled_mb: mb(self.peak_kb.load(Ordering::Relaxed)),
            hwm_mb: mb(field_kb(self.pid, "VmHWM:").unwrap_or(0)),
        }
    }
}

fn field_kb(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
