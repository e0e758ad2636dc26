-- Relay leadership as a lease: a leader that stops renewing (paused, partitioned, stuck) loses it
-- when it expires, and ``token`` (raised by every new leader) fences an old one: the relay's
-- writes run in a transaction that renews the lease only for the token it holds.
CREATE TABLE relay_lease (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    holder text NOT NULL DEFAULT '',
    token bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO relay_lease DEFAULT VALUES;

-- The partition mapping the relay publishes under. A topic that comes back with another
-- partition count starts a new epoch: every partition's chain restarts at the highest position
-- published before, so a projector heals whatever the new mapping moved.
CREATE TABLE relay_epoch (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch integer NOT NULL DEFAULT 0,
    partitions integer NOT NULL DEFAULT 0
);
INSERT INTO relay_epoch DEFAULT VALUES;

-- The epoch (and its partition count) a projection's ``projection_partitions`` rows belong to.
CREATE TABLE projection_epochs (
    projection text PRIMARY KEY,
    epoch integer NOT NULL,
    partitions integer NOT NULL
);

-- Parked rows are either the event that failed or one held behind it (same comment, later).
ALTER TABLE parked_events ADD COLUMN held boolean NOT NULL DEFAULT false;
UPDATE parked_events SET held = true WHERE error = 'held behind a parked event';

-- One comment's whole history, for the reconciler and for healing a single comment.
CREATE INDEX events_by_comment ON events ((data->>'comment_id'), position);
