-- Write-side state, kept in the transaction that appends the events, so deciders load one row
-- instead of folding a stream. Rows are locked FOR UPDATE while a command decides.
CREATE TABLE comments (
    comment_id uuid PRIMARY KEY,
    commentable_id text NOT NULL,
    author_id text NOT NULL,
    parent_id uuid,
    content text NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    version integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE votes (
    comment_id uuid NOT NULL,
    user_id text NOT NULL,
    value smallint NOT NULL DEFAULT 0 CHECK (value BETWEEN -1 AND 1),
    version integer NOT NULL DEFAULT 0,
    PRIMARY KEY (comment_id, user_id)
);

-- Stored in the same transaction as the events of the request it answers.
CREATE TABLE idempotency_keys (
    user_id text NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    status smallint NOT NULL,
    response bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
