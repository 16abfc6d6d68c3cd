-- Failure records: what is kept about an operation that failed, while it is retried and once it
-- is parked. Written by the worker outside the failed transaction; read by `taskctl dlq` and
-- `/api/sync/operations/{op_id}`.
CREATE TABLE operation_failures (
    -- The op id, or for a message that could not be decoded, an id the worker gave it (also set
    -- as the `tasksync-message-id` header of the parked copy).
    message_id       text        PRIMARY KEY,
    op_id            uuid,
    task_id          uuid,
    user_id          text,
    kind             text,
    routing_key      text        NOT NULL,
    attempts         integer     NOT NULL,
    first_failed_at  timestamptz NOT NULL,
    last_failed_at   timestamptz NOT NULL,
    last_error       text        NOT NULL,
    -- [{"attempt": n, "at": timestamp, "error": text}], oldest first.
    history          jsonb       NOT NULL DEFAULT '[]',
    state            text        NOT NULL
                     CHECK (state IN ('retrying', 'parked', 'replayed', 'purged', 'resolved')),
    body             bytea       NOT NULL
);

CREATE INDEX operation_failures_by_state ON operation_failures (state, last_failed_at);
CREATE INDEX operation_failures_by_op ON operation_failures (op_id);

ALTER TABLE operations
    ADD COLUMN first_failed_at timestamptz,
    ADD COLUMN last_failed_at  timestamptz;
