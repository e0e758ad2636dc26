-- The relay's memory of the last position it published to each Kafka partition. Every message
-- carries it as ``prev``, so a projector can tell a gap (lost messages) from a duplicate.
CREATE TABLE relay_partitions (
    partition integer PRIMARY KEY,
    last_position bigint NOT NULL
);

-- Per projection and partition: the last ``prev`` chain position a projector has seen.
CREATE TABLE projection_partitions (
    projection text NOT NULL,
    partition integer NOT NULL,
    last_position bigint NOT NULL,
    PRIMARY KEY (projection, partition)
);

-- Events a projection could not apply (and the later events of the same comment, held back to
-- keep per-comment order). ``tally dlq list|retry`` works from here.
CREATE TABLE parked_events (
    projection text NOT NULL,
    position bigint NOT NULL,
    comment_id text NOT NULL,
    error text NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position)
);
CREATE INDEX parked_events_comment ON parked_events (projection, comment_id);
