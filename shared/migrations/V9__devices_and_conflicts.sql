-- Devices and conflict history (docs/sync-beyond.md).

-- The device that pushed an operation (the `Device-Id` header or the push's `device_id`); null
-- when the client did not name itself. The conflict history reads devices from here.
ALTER TABLE operations ADD COLUMN device_id text;

-- One row per (user, device): the api counts pushes and records pulls, the worker counts the
-- decisions of the device's operations (first decisions by outcome, and the operations it
-- recognised from the log as pushed again). `pending` is derived: ops_pushed - ops_applied -
-- ops_conflicted - ops_failed - ops_duplicate, never below 0.
CREATE TABLE devices (
    user_id           text        NOT NULL,
    device_id         text        NOT NULL,
    first_seen_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at      timestamptz NOT NULL DEFAULT now(),
    last_push_at      timestamptz,
    ops_pushed        bigint      NOT NULL DEFAULT 0,
    last_pull_at      timestamptz,
    last_pull_cursor  text,
    ops_applied       bigint      NOT NULL DEFAULT 0,
    ops_conflicted    bigint      NOT NULL DEFAULT 0,
    ops_failed        bigint      NOT NULL DEFAULT 0,
    ops_duplicate     bigint      NOT NULL DEFAULT 0,
    last_decided_at   timestamptz,
    PRIMARY KEY (user_id, device_id)
);

-- Conflict history: a field an arriving write lost (its stamp older than the stored one, the
-- values different), recorded by the worker in the transaction that decided the write. `id`
-- orders the history (newest first) and is its paging key.
CREATE TABLE task_conflicts (
    id           bigserial   PRIMARY KEY,
    task_id      uuid        NOT NULL,
    user_id      text        NOT NULL,
    field        text        NOT NULL
                 CHECK (field IN ('title', 'description', 'completed', 'deleted')),
    kept_value   jsonb       NOT NULL,
    kept_at      timestamptz NOT NULL,
    kept_op      uuid        NOT NULL,
    lost_value   jsonb       NOT NULL,
    lost_at      timestamptz NOT NULL,
    lost_op      uuid        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX task_conflicts_by_task ON task_conflicts (task_id, id);
CREATE INDEX task_conflicts_by_user ON task_conflicts (user_id, id);
-- For pruning below the retention horizon.
CREATE INDEX task_conflicts_by_recorded ON task_conflicts (recorded_at);
