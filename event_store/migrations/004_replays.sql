-- A rebuild in progress, one per projection: where it builds (a Redis generation or an
-- Elasticsearch index) and how far it got, so an interrupted ``tally replay`` resumes.
CREATE TABLE replays (
    projection text PRIMARY KEY,
    target text NOT NULL,
    position bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
