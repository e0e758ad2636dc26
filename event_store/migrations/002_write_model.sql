-- Write-side state, kept in the transaction that appends the events, so deciders load one row
-- instead of folding a stream. Rows are locked while a command decides; ``position`` is that of
-- the stream's latest event, so a command that changes nothing can still answer with it.
CREATE TABLE comments (
    comment_id uuid PRIMARY KEY,
    commentable_id text NOT NULL,
    author_id text NOT NULL,
    parent_id uuid,
    content text NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    version integer NOT NULL,
    position bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE votes (
    comment_id uuid NOT NULL,
    user_id text NOT NULL,
    value smallint NOT NULL DEFAULT 0 CHECK (value BETWEEN -1 AND 1),
    version integer NOT NULL DEFAULT 0,
    position bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (comment_id, user_id)
);

-- Stored in the same statement as the events of the request it answers. ``response`` is the
-- reply with its position left out; ``position`` is filled in from the log head.
CREATE TABLE idempotency_keys (
    user_id text NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    status smallint NOT NULL,
    response jsonb NOT NULL,
    position bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
