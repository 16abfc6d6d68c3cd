-- Indexes behind `/api/status`, so that its figures cost the same whatever the caller's number
-- of tasks (without them, each call read every one of the caller's rows twice).
--
-- The latest sync of a user: one step down this index (max() becomes a backward index scan).
CREATE INDEX tasks_by_last_sync ON tasks (user_id, last_synced_at);
-- The user's tasks in error: a partial index holds only those, so counting them visits no
-- other row.
CREATE INDEX tasks_in_error ON tasks (user_id) WHERE sync_status = 'error';
