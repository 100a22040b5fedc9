-- The digest of the job token given with each claim: an attempt's own calls present it.
ALTER TABLE leases ADD COLUMN token BLOB;
