-- Hodei's durable record on SQLite. Embedded in the binary by `sqlx::migrate!`; never edit a
-- migration that has shipped: add the next one.
--
-- States are stored as the state's name (`state`, the API's name, indexable) plus the data some
-- states carry in their own columns (`worker`, `reason` as JSON); see
-- adapters/src/sqlite/projections.rs for the mapping both ways.

-- Facts about this database itself: `instance_id`, `created`.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Every version of every pipeline definition; a new version only when the text changes.
CREATE TABLE pipelines (
    name    TEXT    NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    source  TEXT    NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;

-- Projection: the current state of each run.
CREATE TABLE runs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    inputs   TEXT    NOT NULL, -- RunInputs as JSON
    state    TEXT    NOT NULL, -- RunState name
    since    INTEGER NOT NULL, -- ms since the Unix epoch
    created  INTEGER NOT NULL,
    FOREIGN KEY (pipeline, version) REFERENCES pipelines (name, version)
);

-- What a restart resumes, oldest first: only unfinished runs are in it.
CREATE INDEX runs_unfinished ON runs (created, id)
    WHERE state NOT IN ('succeeded', 'failed', 'cancelled');

-- Projection: the current state and attempt of each planned job.
CREATE TABLE jobs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   INTEGER NOT NULL REFERENCES runs (id),
    position INTEGER NOT NULL, -- index in the plan
    name     TEXT    NOT NULL,
    state    TEXT    NOT NULL, -- JobState name
    worker   TEXT,             -- the last worker the job was placed on
    reason   TEXT,             -- JobFailure (failed) or JobSkipReason (skipped) as JSON
    attempt  INTEGER NOT NULL CHECK (attempt >= 1),
    since    INTEGER NOT NULL,
    UNIQUE (run_id, position)
);

-- Projection: every attempt of every step of every job attempt.
CREATE TABLE steps (
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    job_attempt INTEGER NOT NULL CHECK (job_attempt >= 1),
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    attempt     INTEGER NOT NULL CHECK (attempt >= 1),
    state       TEXT    NOT NULL, -- StepState name
    reason      TEXT,             -- StepFailure (failed) or StepSkipReason (skipped) as JSON
    exit_code   INTEGER,          -- the exit, when the process ended: all three NULL otherwise
    exit_signal INTEGER,
    oom_killed  INTEGER,
    since       INTEGER NOT NULL,
    PRIMARY KEY (job_id, job_attempt, idx, attempt)
) WITHOUT ROWID;

-- The append-only audit log: every DomainEvent, numbered in the order it was appended.
CREATE TABLE events (
    seq    INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    job_id INTEGER REFERENCES jobs (id),
    kind   TEXT    NOT NULL, -- DomainEvent::kind()
    at     INTEGER NOT NULL,
    body   TEXT    NOT NULL  -- the event as JSON (its public shape, docs/states.md)
);

-- The events of one run, in order: rebuilding or streaming a run.
CREATE INDEX events_by_run ON events (run_id, seq);

CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

-- Workers known to the registry (agents, the local machine); filled by the worker registry.
CREATE TABLE workers (
    id        TEXT    PRIMARY KEY NOT NULL,
    labels    TEXT    NOT NULL, -- JSON array of strings
    slots     INTEGER NOT NULL CHECK (slots >= 0),
    state     TEXT    NOT NULL,
    last_seen INTEGER NOT NULL
) WITHOUT ROWID;
