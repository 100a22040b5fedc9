-- When runs, jobs and step attempts started and ended, kept in their rows by the projections
-- (until now they were read off each run's events at every request). A run's start is its
-- first job's start. Rows written before this migration get their times from their events
-- (looked up by run, through the events' index).
ALTER TABLE runs ADD COLUMN started BIGINT, ADD COLUMN finished BIGINT;
ALTER TABLE jobs ADD COLUMN started BIGINT, ADD COLUMN finished BIGINT;
ALTER TABLE steps ADD COLUMN started BIGINT;

UPDATE jobs SET
    started = (SELECT min(e.at) FROM events e
        WHERE e.run_id = jobs.run_id AND e.job_id = jobs.id AND e.kind = 'job_started'),
    finished = (SELECT max(e.at) FROM events e
        WHERE e.run_id = jobs.run_id AND e.job_id = jobs.id
        AND e.kind IN ('job_succeeded', 'job_failed', 'job_timed_out', 'job_cancelled',
            'job_skipped'));

UPDATE runs SET
    started = (SELECT min(j.started) FROM jobs j WHERE j.run_id = runs.id),
    finished = (SELECT max(e.at) FROM events e
        WHERE e.run_id = runs.id AND e.kind IN ('run_succeeded', 'run_failed', 'run_cancelled'));

UPDATE steps SET started = (
    SELECT max(e.at) FROM events e
    WHERE e.run_id = (SELECT j.run_id FROM jobs j WHERE j.id = steps.job_id)
        AND e.job_id = steps.job_id AND e.kind = 'step_started'
        AND (e.body::jsonb ->> 'job_attempt')::bigint = steps.job_attempt
        AND (e.body::jsonb ->> 'step')::bigint = steps.idx
        AND (e.body::jsonb ->> 'attempt')::bigint = steps.attempt
);
