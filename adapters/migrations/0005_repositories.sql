-- Repositories registered for webhooks, and the deliveries they received (a delivery sent
-- twice starts one run: its id is unique per repository).
CREATE TABLE repositories (
    name           TEXT    PRIMARY KEY,
    forge          TEXT    NOT NULL CHECK (forge IN ('github', 'gitlab', 'gitea')),
    clone_url      TEXT    NOT NULL,
    pipeline_path  TEXT    NOT NULL,
    credentials    TEXT,              -- the name of a stored secret, never a value
    webhook_secret TEXT    NOT NULL,  -- likewise
    status_token   TEXT,              -- likewise
    created        INTEGER NOT NULL   -- ms since the Unix epoch
) WITHOUT ROWID;

CREATE TABLE deliveries (
    repository TEXT    NOT NULL REFERENCES repositories (name) ON DELETE CASCADE,
    id         TEXT    NOT NULL,
    received   INTEGER NOT NULL, -- ms since the Unix epoch
    run_id     INTEGER,          -- the run it started, if any
    PRIMARY KEY (repository, id)
) WITHOUT ROWID;
