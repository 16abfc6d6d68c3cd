-- The message id the publisher gave a failing message (the AMQP `message_id` property), so that
-- `taskctl dlq show` finds a record by the id its publisher knows. For operations published by
-- the api it is the op id; for messages published by other clients it may be anything.
ALTER TABLE operation_failures ADD COLUMN publisher_message_id text;
CREATE INDEX operation_failures_by_publisher_id ON operation_failures (publisher_message_id)
    WHERE publisher_message_id IS NOT NULL;
