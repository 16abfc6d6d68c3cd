-- Decisions in the changes feed, and the retention horizon (docs/sync-beyond.md).
--
-- `decided_xid`: the id of the transaction that wrote the log row (decided the operation, or
-- parked it), so that a decision has a feed position `(decided_xid, task_id)` like a task change
-- `(change_xid, id)`: a decision and the change it caused share one. Rows logged before this
-- migration get position 0 (below every cursor handed out so far: clients that already pulled
-- are not sent them again; a pull from an empty cursor is), with no table rewrite: the volatile
-- default applies to rows written from now on.
ALTER TABLE operations ADD COLUMN decided_xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE operations ALTER COLUMN decided_xid SET DEFAULT pg_current_xact_id();

-- The caller's decisions in feed order; `op_id` last, so that the decisions sharing a position
-- (several operations on one task in one transaction) come in one stable order too.
CREATE INDEX operations_feed ON operations (user_id, decided_xid, task_id, op_id);

-- Retention: tombstones not changed since the horizon, found without reading live tasks.
CREATE INDEX tasks_tombstones ON tasks (last_synced_at) WHERE is_deleted;

-- One row: the highest feed position a retention sweep removed, and how many times feed rows
-- were removed (`generation`, carried in the cursors handed out). A pull from a cursor below
-- that position, handed out before the latest removal, may have missed a removed row and
-- answers 410 (`cursor_expired`).
CREATE TABLE feed_retention (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_xid  xid8        NOT NULL DEFAULT '0',
    pruned_task uuid        NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    generation  bigint      NOT NULL DEFAULT 0,
    -- The time horizon of the last sweep that removed something, and when it ran.
    horizon     timestamptz,
    swept_at    timestamptz
);
INSERT INTO feed_retention DEFAULT VALUES;
