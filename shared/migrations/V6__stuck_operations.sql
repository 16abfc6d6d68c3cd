-- `taskctl ops list --state retrying|parked [--user U] [--task T]`: one user's or one task's
-- stuck operations, newest failure first, whatever the size of the failure history. Partial:
-- resolved, replayed and purged records (most of the table over time) are never listed.
CREATE INDEX operation_failures_stuck_by_user ON operation_failures (user_id, state, last_failed_at)
    WHERE state IN ('retrying', 'parked');
CREATE INDEX operation_failures_stuck_by_task ON operation_failures (task_id, state, last_failed_at)
    WHERE state IN ('retrying', 'parked');
