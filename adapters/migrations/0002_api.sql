-- What the HTTP API needs beyond the actors' record: its tokens, and indexes for listing runs.

-- API tokens. Only the SHA-256 digest of a token's secret is stored; the secret is shown once,
-- when the token is created. A revoked token stays, so that its id is never reused.
CREATE TABLE tokens (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT    NOT NULL,
    role    TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    digest  BLOB    NOT NULL UNIQUE CHECK (length(digest) = 32),
    created INTEGER NOT NULL, -- ms since the Unix epoch
    revoked INTEGER           -- ms since the Unix epoch, NULL while the token is valid
);

-- Runs are listed newest first (by id), optionally of one pipeline or in one state.
CREATE INDEX runs_by_pipeline ON runs (pipeline, id);
CREATE INDEX runs_by_state ON runs (state, id);
