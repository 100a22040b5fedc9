-- The digest of the job token given with each claim: an attempt's own calls present it
-- (as the SQLite store's migration 0009).
ALTER TABLE leases ADD COLUMN token BYTEA;
