-- The log. Positions come from event_head, whose single row is locked by every append until
-- commit: appends are serialized, so positions become visible in order and a rollback leaves
-- no hole (the increment rolls back too). Group commit amortizes the lock over many commands.
CREATE TABLE event_head (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    position bigint NOT NULL
);
INSERT INTO event_head (id, position) VALUES (true, 0);

CREATE TABLE events (
    position bigint PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    stream_id text NOT NULL,
    stream_version integer NOT NULL CHECK (stream_version > 0),
    type text NOT NULL,
    schema_version smallint NOT NULL,
    data jsonb NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, stream_version)
);

-- Written in the same transaction as the events; the relay deletes a row once Kafka acked it.
CREATE TABLE outbox (
    position bigint PRIMARY KEY,
    key text NOT NULL
);
