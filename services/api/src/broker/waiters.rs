//! The requests waiting for operation outcomes, by op id.
//!
//! Several requests may wait for the same op id at once (a client re-pushing a batch whose
//! answer it lost while the first push still waits); each of them gets the outcome.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tasksync_shared::OutcomeReport;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Per op id, the requests waiting for its outcome, each under the token of its registration.
type Registry = HashMap<Uuid, Vec<(u64, oneshot::Sender<OutcomeReport>)>>;

#[derive(Default)]
pub(super) struct Waiters {
    registry: Mutex<Registry>,
    next_token: AtomicU64,
}

/// Removes a request's waiters when it stops waiting, however it stops, leaving those of other
/// requests for the same op ids in place.
pub(super) struct WaitGuard<'a> {
    waiters: &'a Waiters,
    token: u64,
    op_ids: Vec<Uuid>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Ok(mut registry) = self.waiters.registry.lock() else {
            return;
        };
        for op_id in &self.op_ids {
            if let Some(list) = registry.get_mut(op_id) {
                list.retain(|(token, _)| *token != self.token);
                if list.is_empty() {
                    registry.remove(op_id);
                }
            }
        }
    }
}

impl Waiters {
    /// Registers a waiter for each of `op_ids`; the guard unregisters them all.
    pub(super) fn register(
        &self,
        op_ids: &[Uuid],
    ) -> (Vec<oneshot::Receiver<OutcomeReport>>, WaitGuard<'_>) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut receivers = Vec::with_capacity(op_ids.len());
        if let Ok(mut registry) = self.registry.lock() {
            for op_id in op_ids {
                let (tx, rx) = oneshot::channel();
                registry.entry(*op_id).or_default().push((token, tx));
                receivers.push(rx);
            }
        }
        let guard = WaitGuard {
            waiters: self,
            token,
            op_ids: op_ids.to_vec(),
        };
        (receivers, guard)
    }

    /// Hands each outcome to every request waiting for its op id.
    pub(super) fn deliver(&self, outcomes: Vec<OutcomeReport>) {
        let Ok(mut registry) = self.registry.lock() else {
            return;
        };
        for outcome in outcomes {
            let Some(mut waiting) = registry.remove(&outcome.op_id) else {
                continue;
            };
            // Almost always one request waits: it gets the outcome itself, not a copy.
            let last = waiting.pop();
            for (_, waiter) in waiting {
                let _ = waiter.send(outcome.clone());
            }
            if let Some((_, waiter)) = last {
                let _ = waiter.send(outcome);
            }
        }
    }
}
