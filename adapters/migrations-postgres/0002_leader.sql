-- The leadership of a replicated deployment: one row, the lease of the replica that runs the
-- scheduler and the singleton duties. `epoch` is bumped at every change of leader; every write
-- of the leader reads it (FOR KEY SHARE) in its own transaction and fails when it changed, so
-- that a deposed leader's writes fail (fencing). A takeover locks the row FOR UPDATE, which
-- waits for the leader's writes in flight.
CREATE TABLE leader (
    id         SMALLINT    PRIMARY KEY CHECK (id = 1),
    epoch      BIGINT      NOT NULL,
    holder     TEXT        NOT NULL,
    address    TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
INSERT INTO leader (id, epoch, holder, address, expires_at) VALUES (1, 0, '', '', to_timestamp(0));
