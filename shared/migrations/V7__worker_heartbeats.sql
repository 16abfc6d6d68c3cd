-- Each sync-worker's work in flight, written every second by the worker itself, so that
-- `/api/status` can show the operations received and not yet decided, and the age of the oldest,
-- over every worker (the broker tells only ready messages, not unacknowledged ones). Unlogged:
-- a live figure; a crash of the server loses it, and the next beat writes it again.
CREATE UNLOGGED TABLE worker_heartbeats (
    worker_id uuid PRIMARY KEY,
    deliveries_in_flight integer NOT NULL,
    oldest_in_flight_at timestamptz,
    beat_at timestamptz NOT NULL
);
