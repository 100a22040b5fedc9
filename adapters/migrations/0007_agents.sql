-- Remote agents: the tokens they register with, the agents, and the leases of the job attempts
-- they hold.

-- Registration tokens. Only the SHA-256 digest of a token's secret is stored. A token registers
-- agents until it expires or is revoked; revoking it leaves registered agents working.
CREATE TABLE agent_tokens (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT    NOT NULL,
    digest  BLOB    NOT NULL UNIQUE CHECK (length(digest) = 32),
    labels  TEXT,             -- JSON array fixed for its agents, NULL: the agents choose
    created INTEGER NOT NULL, -- ms since the Unix epoch
    expires INTEGER,          -- ms since the Unix epoch, NULL: never
    revoked INTEGER           -- ms since the Unix epoch, NULL while valid
);

-- Registered agents, each with the digest of its own credential. A deleted agent is gone: its
-- credential authenticates no one.
CREATE TABLE agents (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    digest       BLOB    NOT NULL UNIQUE CHECK (length(digest) = 32),
    labels       TEXT    NOT NULL, -- JSON array
    fixed_labels INTEGER NOT NULL CHECK (fixed_labels IN (0, 1)),
    token        INTEGER NOT NULL REFERENCES agent_tokens (id),
    registered   INTEGER NOT NULL  -- ms since the Unix epoch
);

-- The lease of a job's attempt held by an agent. The row outlives the lease (`ended`), so that
-- a job's epochs only grow.
CREATE TABLE leases (
    job      INTEGER PRIMARY KEY REFERENCES jobs (id),
    run      INTEGER NOT NULL REFERENCES runs (id),
    attempt  INTEGER NOT NULL,
    agent    TEXT    NOT NULL,
    epoch    INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    log_base INTEGER NOT NULL,
    ended    INTEGER NOT NULL CHECK (ended IN (0, 1))
);
