//! Counting entries of the operation log (`operations`: one row per decided operation), the
//! question many tests ask: `stack.op_log_count(OpLog::ops(&ids).outcomes(&[Success]))`.

use deadpool_postgres::Pool;
use tasksync_shared::operation::OutcomeStatus;
use uuid::Uuid;

use crate::TestStack;

/// Which entries of the operation log to count; every condition given must hold.
#[derive(Clone, Debug, Default)]
pub struct OpLog {
    ops: Option<Vec<Uuid>>,
    task: Option<Uuid>,
    outcomes: Option<Vec<String>>,
}

impl OpLog {
    /// Every entry.
    pub fn all() -> Self {
        Self::default()
    }

    /// The entries of these operations.
    pub fn ops(ops: &[Uuid]) -> Self {
        Self {
            ops: Some(ops.to_vec()),
            ..Self::default()
        }
    }

    /// The entries of one task.
    pub fn task(task: Uuid) -> Self {
        Self {
            task: Some(task),
            ..Self::default()
        }
    }

    /// Only entries decided with one of these outcomes.
    pub fn outcomes(mut self, outcomes: &[OutcomeStatus]) -> Self {
        self.outcomes = Some(outcomes.iter().map(|o| o.as_str().to_string()).collect());
        self
    }

    /// How many entries of the log in `db` match.
    pub async fn count(&self, db: &Pool) -> u64 {
        let client = db.get().await.expect("database connection");
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM operations \
                 WHERE ($1::uuid[] IS NULL OR op_id = ANY($1)) \
                   AND ($2::uuid IS NULL OR task_id = $2) \
                   AND ($3::text[] IS NULL OR outcome = ANY($3))",
                &[&self.ops, &self.task, &self.outcomes],
            )
            .await
            .expect("count the operation log")
            .get(0);
        n.unsigned_abs()
    }
}

impl TestStack {
    /// How many entries of the stack's operation log match `which`.
    pub async fn op_log_count(&self, which: OpLog) -> u64 {
        which.count(&self.db).await
    }
}
