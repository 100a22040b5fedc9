-- The ticks of `on.schedule` entries that fired: one row per pipeline, entry (its text) and
-- tick, so that a tick is claimed once, also by several replicas of Hodei on one database.
CREATE TABLE schedule_ticks (
    pipeline TEXT    NOT NULL,
    entry    TEXT    NOT NULL,
    tick     INTEGER NOT NULL, -- ms since the Unix epoch: the tick's time
    claimed  INTEGER NOT NULL, -- ms since the Unix epoch: when it was claimed
    PRIMARY KEY (pipeline, entry, tick)
) WITHOUT ROWID;
