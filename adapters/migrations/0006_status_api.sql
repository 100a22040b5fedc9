-- Where a repository's commit statuses go: the forge's API base URL (NULL: derived from the
-- clone URL).
ALTER TABLE repositories ADD COLUMN status_api TEXT;
