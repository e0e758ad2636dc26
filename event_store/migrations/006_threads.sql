-- Threads: a comment's depth (0 at the top level, the parent's + 1 for a reply), kept with the
-- write-side state so a reply's depth is decided from its parent's row.
ALTER TABLE comments ADD COLUMN depth integer NOT NULL DEFAULT 0;
