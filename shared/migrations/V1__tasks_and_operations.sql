-- Tasks: one row per task, written only by the sync-worker.
--
-- Every mergeable field carries the stamp of the write that set it: the time (`*_at`) and the
-- operation id (`*_op`, the tie-breaker). A row whose title was never written (an update that
-- arrived before its create) exists for merging but is invisible to readers.
CREATE TABLE tasks (
    id              uuid PRIMARY KEY,
    user_id         text        NOT NULL,
    title           text,
    title_at        timestamptz,
    title_op        uuid,
    description     text,
    description_at  timestamptz,
    description_op  uuid,
    completed       boolean     NOT NULL DEFAULT false,
    completed_at    timestamptz,
    completed_op    uuid,
    is_deleted      boolean     NOT NULL DEFAULT false,
    deleted_at      timestamptz,
    deleted_op      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sync_status     text        NOT NULL DEFAULT 'synced'
                    CHECK (sync_status IN ('pending', 'synced', 'error')),
    server_id       text,
    last_synced_at  timestamptz,
    -- Change position for the pull feed: the id of the transaction that last changed the row.
    change_xid      xid8        NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX tasks_by_user ON tasks (user_id, created_at, id) WHERE title IS NOT NULL;
CREATE INDEX tasks_changes ON tasks (user_id, change_xid, id);

-- Operation log: one row per operation the worker has decided, written in the same transaction
-- as the task it changed, so a redelivered operation is recognised and reported, never reapplied.
CREATE TABLE operations (
    op_id        uuid PRIMARY KEY,
    task_id      uuid        NOT NULL,
    user_id      text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('create', 'update', 'delete')),
    fields       jsonb       NOT NULL,
    client_ts    timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('success', 'conflict', 'error')),
    attempts     integer     NOT NULL DEFAULT 1,
    last_error   text,
    decided_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX operations_by_task ON operations (task_id);
CREATE INDEX operations_by_decided ON operations (decided_at);
