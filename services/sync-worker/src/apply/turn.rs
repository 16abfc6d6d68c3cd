//! The order in which one worker's batches in flight take their locks.
//!
//! Two batches of one worker may hold writes to the same task (an update pushed right behind
//! its create). Each takes its task locks only once the batch gathered before it holds its
//! own, so the earlier batch applies first and the later one waits on the shared tasks' locks
//! until it commits: writes to one task are applied in delivery order, as with one batch at a
//! time, while batches over other tasks overlap freely. Applying out of order would still
//! converge (the merge is per-field last-write-wins), but an update could then be answered
//! `pending` for a create pushed before it in the same request.

use tokio::sync::oneshot;

/// A batch's place in the lock order: what it waits for before locking, and the signal it
/// gives once it holds its locks. Dropping it gives the signal too (a batch that fails, or has
/// nothing to lock, never holds up the next one). The default is outside any order.
#[derive(Debug, Default)]
pub struct LockTurn {
    after: Option<oneshot::Receiver<()>>,
    locked: Option<oneshot::Sender<()>>,
}

impl LockTurn {
    /// The turn of the next batch: after the batch whose signal is in `previous`, which then
    /// holds this batch's signal for the batch after it.
    pub fn next(previous: &mut Option<oneshot::Receiver<()>>) -> Self {
        let (locked, signal) = oneshot::channel();
        Self {
            after: previous.replace(signal),
            locked: Some(locked),
        }
    }

    /// Waits until the batch before holds its locks (or has given up).
    pub(super) async fn wait(&mut self) {
        if let Some(after) = self.after.take() {
            let _ = after.await;
        }
    }

    /// Lets the next batch take its locks.
    pub(super) fn pass(&mut self) {
        if let Some(locked) = self.locked.take() {
            let _ = locked.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn each_turn_waits_for_the_one_before_and_a_dropped_turn_lets_the_next_go() {
        let mut previous = None;
        let mut first = LockTurn::next(&mut previous);
        let second = LockTurn::next(&mut previous);
        let mut third = LockTurn::next(&mut previous);
        let mut waiting = Box::pin(third.wait());
        assert!((&mut waiting).now_or_never().is_none());
        first.wait().await;
        first.pass();
        assert!(
            (&mut waiting).now_or_never().is_none(),
            "the second still holds the turn"
        );
        drop(second);
        assert!(
            waiting.now_or_never().is_some(),
            "a dropped turn lets the next go"
        );
    }
}
