-- `/api/status` with authentication on counts the caller's own parked operations: one partial
-- index lookup whatever the size of the failure history.
CREATE INDEX operation_failures_parked_by_user ON operation_failures (user_id)
    WHERE state = 'parked';
