-- Secrets that Hodei keeps for runs, managed through the API. Only sealed values are stored:
-- XChaCha20-Poly1305 with the key file of the data directory (never in the database), a random
-- nonce per value, and the scope and name as associated data, so that a sealed value moved to
-- another row no longer opens.
CREATE TABLE secrets (
    scope   TEXT    NOT NULL CHECK (scope IN ('pipeline', 'repository')),
    owner   TEXT    NOT NULL, -- the pipeline's or the repository's name
    name    TEXT    NOT NULL,
    nonce   BLOB    NOT NULL,
    sealed  BLOB    NOT NULL, -- the value's ciphertext and tag
    created INTEGER NOT NULL, -- ms since the Unix epoch
    updated INTEGER NOT NULL, -- ms since the Unix epoch
    PRIMARY KEY (scope, owner, name)
) WITHOUT ROWID;
