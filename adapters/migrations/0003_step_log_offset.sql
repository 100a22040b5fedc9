-- Where each step attempt's output begins in its job's log: the log's length when the step
-- started (`StepStarted.log_offset`). A step re-attached after a crash of Hodei finds there
-- what of its output the log already holds. NULL for steps that never started, and for steps
-- recorded before this column existed.
ALTER TABLE steps ADD COLUMN log_offset INTEGER;
