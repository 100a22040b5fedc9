//! The projections, both ways, as pure functions: [`Projection`] turns a batch of
//! [`DomainEvent`]s into the rows of `runs`, `jobs` and `steps` they leave behind (one row per
//! subject, the last event wins), and the `*_state` functions turn stored columns back into the
//! domain's states.
//!
//! Each event fully determines the mutable columns of its subject's row, so applying a batch row
//! by row or writing only the last row of each subject gives the same table; the exceptions —
//! a job's `worker` (the last worker it was placed on), the times things started (the first
//! start wins) and ended (the last end wins), a step's log offset — are carried over by
//! [`Projection::apply`] and by `coalesce` in the SQL. A run's start is its first job's start:
//! [`Projection::run_starts`] are written to rows that have none yet.
//!
//! The rows are serialized to JSON arrays and written by one statement per table
//! (`json_each`, see `queries.rs`): the field names here are the keys the SQL reads.

use std::collections::HashMap;

use hodei_domain::ids::{JobId, RunId, WorkerId};
use hodei_domain::state::{
    Attempt, DomainEvent, JobFailure, JobSkipReason, JobState, RunState, StepExit, StepFailure,
    StepSkipReason, StepState,
};
use serde::Serialize;

/// The new state of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RunRow {
    pub id: RunId,
    pub state: &'static str,
    pub since: i64,
    /// Set by the run's final event; the stored time is kept otherwise.
    pub finished: Option<i64>,
}

/// The start of a run: the start of its first job, written only to a run that has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RunStart {
    pub id: RunId,
    pub started: i64,
}

/// The data a job or step state carries, stored as JSON in the `reason` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum Reason<'a> {
    JobFailure(&'a JobFailure),
    JobSkip(&'a JobSkipReason),
    StepFailure(&'a StepFailure),
    StepSkip(&'a StepSkipReason),
}

/// The new state of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct JobRow<'a> {
    pub id: JobId,
    pub state: &'static str,
    /// The worker the event names, if any; the stored worker is kept otherwise.
    pub worker: Option<&'a WorkerId>,
    pub reason: Option<Reason<'a>>,
    pub attempt: Attempt,
    pub since: i64,
    /// Set by `JobStarted`; the stored time is kept if there is one (the first start wins).
    pub started: Option<i64>,
    /// Set by the job's final event; the stored time is kept otherwise.
    pub finished: Option<i64>,
}

/// The new state of a step attempt (inserted on its first event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct StepRow<'a> {
    pub job: JobId,
    pub job_attempt: Attempt,
    pub index: u32,
    pub attempt: Attempt,
    pub state: &'static str,
    pub reason: Option<Reason<'a>>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// `None` when the process has not ended: the three exit columns are then NULL.
    pub oom: Option<bool>,
    pub since: i64,
    /// Set by `StepStarted` only; the stored offset is kept otherwise.
    pub log_offset: Option<u64>,
    /// Set by `StepStarted` only; the stored time is kept otherwise.
    pub started: Option<i64>,
}

type StepKey = (JobId, Attempt, u32, Attempt);

/// The rows a batch of events leaves behind, one per subject, in order of first appearance.
#[derive(Debug, Default)]
pub(crate) struct Projection<'a> {
    pub runs: Vec<RunRow>,
    pub run_starts: Vec<RunStart>,
    pub jobs: Vec<JobRow<'a>>,
    pub steps: Vec<StepRow<'a>>,
    run_index: HashMap<RunId, usize>,
    job_index: HashMap<JobId, usize>,
    step_index: HashMap<StepKey, usize>,
}

impl<'a> Projection<'a> {
    /// The rows left behind by `events`, applied in order.
    pub fn of(events: impl IntoIterator<Item = &'a DomainEvent>) -> Projection<'a> {
        let mut projection = Projection::default();
        for event in events {
            projection.apply(event);
        }
        projection
    }

    /// Applies one event: its subject's row becomes the state after it.
    pub fn apply(&mut self, event: &'a DomainEvent) {
        use DomainEvent as E;
        let state = event.state_after();
        let since = event.at().0;
        match event {
            E::RunStarted { run, .. }
            | E::RunCancelRequested { run, .. }
            | E::RunStartOverridden { run, .. } => self.run(RunRow {
                id: *run,
                state,
                since,
                finished: None,
            }),
            E::RunSucceeded { run, .. }
            | E::RunFailed { run, .. }
            | E::RunCancelled { run, .. } => self.run(RunRow {
                id: *run,
                state,
                since,
                finished: Some(since),
            }),

            E::JobAwaitingApproval { job, attempt, .. }
            | E::JobApproved { job, attempt, .. }
            | E::JobQueued { job, attempt, .. } => self.job(job_row(*job, state, *attempt, since)),
            E::JobSucceeded { job, attempt, .. }
            | E::JobTimedOut { job, attempt, .. }
            | E::JobCancelled { job, attempt, .. } => self.job(JobRow {
                finished: Some(since),
                ..job_row(*job, state, *attempt, since)
            }),
            E::JobPlaced {
                job,
                attempt,
                worker,
                ..
            }
            | E::JobRequeued {
                job,
                attempt,
                worker,
                ..
            } => self.job(JobRow {
                worker: Some(worker),
                ..job_row(*job, state, *attempt, since)
            }),
            E::JobStarted {
                run,
                job,
                attempt,
                worker,
                ..
            } => {
                self.run_start(*run, since);
                self.job(JobRow {
                    worker: Some(worker),
                    started: Some(since),
                    ..job_row(*job, state, *attempt, since)
                })
            }
            E::JobRetrying {
                job, next_attempt, ..
            } => self.job(job_row(*job, state, *next_attempt, since)),
            E::JobFailed {
                job,
                attempt,
                reason,
                ..
            } => self.job(JobRow {
                reason: Some(Reason::JobFailure(reason)),
                finished: Some(since),
                ..job_row(*job, state, *attempt, since)
            }),
            E::JobSkipped {
                job,
                attempt,
                reason,
                ..
            } => self.job(JobRow {
                reason: Some(Reason::JobSkip(reason)),
                finished: Some(since),
                ..job_row(*job, state, *attempt, since)
            }),

            E::StepStarted {
                job,
                job_attempt,
                step,
                attempt,
                log_offset,
                ..
            } => self.step(StepRow {
                log_offset: *log_offset,
                started: Some(since),
                ..step_row(*job, *job_attempt, *step, *attempt, state, since)
            }),
            E::StepTimedOut {
                job,
                job_attempt,
                step,
                attempt,
                ..
            }
            | E::StepCancelled {
                job,
                job_attempt,
                step,
                attempt,
                ..
            } => self.step(step_row(*job, *job_attempt, *step, *attempt, state, since)),
            E::StepSucceeded {
                job,
                job_attempt,
                step,
                attempt,
                ..
            } => self.step(
                step_row(*job, *job_attempt, *step, *attempt, state, since)
                    .with_exit(StepExit::code(0)),
            ),
            E::StepFailed {
                job,
                job_attempt,
                step,
                attempt,
                failure,
                ..
            } => self.step(failed_step(
                step_row(*job, *job_attempt, *step, *attempt, state, since),
                failure,
            )),
            E::StepSkipped {
                job,
                job_attempt,
                step,
                attempt,
                reason,
                ..
            } => self.step(StepRow {
                reason: Some(Reason::StepSkip(reason)),
                ..step_row(*job, *job_attempt, *step, *attempt, state, since)
            }),
            E::StepRetrying {
                job,
                job_attempt,
                step,
                attempt,
                cause,
                next_attempt,
                ..
            } => {
                // The attempt that failed keeps what happened to it; the next one is pending.
                let ended = match cause {
                    StepFailure::TimedOut => "timed_out",
                    _ => "failed",
                };
                let row = step_row(*job, *job_attempt, *step, *attempt, ended, since);
                self.step(failed_step(row, cause));
                self.step(step_row(
                    *job,
                    *job_attempt,
                    *step,
                    *next_attempt,
                    state,
                    since,
                ));
            }
        }
    }

    fn run(&mut self, row: RunRow) {
        match self.run_index.get(&row.id) {
            Some(&i) => self.runs[i] = row,
            None => {
                self.run_index.insert(row.id, self.runs.len());
                self.runs.push(row);
            }
        }
    }

    fn run_start(&mut self, id: RunId, started: i64) {
        if !self.run_starts.iter().any(|start| start.id == id) {
            self.run_starts.push(RunStart { id, started });
        }
    }

    fn job(&mut self, mut row: JobRow<'a>) {
        match self.job_index.get(&row.id) {
            Some(&i) => {
                let earlier = &self.jobs[i];
                row.worker = row.worker.or(earlier.worker);
                row.started = earlier.started.or(row.started);
                row.finished = row.finished.or(earlier.finished);
                self.jobs[i] = row;
            }
            None => {
                self.job_index.insert(row.id, self.jobs.len());
                self.jobs.push(row);
            }
        }
    }

    fn step(&mut self, row: StepRow<'a>) {
        let key = (row.job, row.job_attempt, row.index, row.attempt);
        match self.step_index.get(&key) {
            Some(&i) => {
                // A later event of the same step in one batch keeps where its output began,
                // and when.
                let log_offset = row.log_offset.or(self.steps[i].log_offset);
                let started = row.started.or(self.steps[i].started);
                self.steps[i] = StepRow {
                    log_offset,
                    started,
                    ..row
                };
            }
            None => {
                self.step_index.insert(key, self.steps.len());
                self.steps.push(row);
            }
        }
    }
}

fn job_row<'a>(id: JobId, state: &'static str, attempt: Attempt, since: i64) -> JobRow<'a> {
    JobRow {
        id,
        state,
        worker: None,
        reason: None,
        attempt,
        since,
        started: None,
        finished: None,
    }
}

fn step_row<'a>(
    job: JobId,
    job_attempt: Attempt,
    index: u32,
    attempt: Attempt,
    state: &'static str,
    since: i64,
) -> StepRow<'a> {
    StepRow {
        job,
        job_attempt,
        index,
        attempt,
        state,
        reason: None,
        code: None,
        signal: None,
        oom: None,
        since,
        log_offset: None,
        started: None,
    }
}

fn failed_step<'a>(row: StepRow<'a>, failure: &'a StepFailure) -> StepRow<'a> {
    let row = match failure {
        StepFailure::Exit(exit) => row.with_exit(*exit),
        _ => row,
    };
    match failure {
        // A final timeout is a state of its own, without data.
        StepFailure::TimedOut => row,
        _ => StepRow {
            reason: Some(Reason::StepFailure(failure)),
            ..row
        },
    }
}

impl StepRow<'_> {
    fn with_exit(self, exit: StepExit) -> Self {
        StepRow {
            code: exit.code,
            signal: exit.signal,
            oom: Some(exit.oom_killed),
            ..self
        }
    }
}

/// A run state from its stored name.
pub(crate) fn run_state(name: &str) -> Result<RunState, String> {
    Ok(match name {
        "pending" => RunState::Pending,
        "running" => RunState::Running,
        "cancelling" => RunState::Cancelling,
        "succeeded" => RunState::Succeeded,
        "failed" => RunState::Failed,
        "cancelled" => RunState::Cancelled,
        other => return Err(format!("unknown run state `{other}`")),
    })
}

/// A job state from its stored name, worker and reason.
pub(crate) fn job_state(
    name: &str,
    worker: Option<String>,
    reason: Option<&str>,
) -> Result<JobState, String> {
    let worker = || {
        worker
            .clone()
            .map(WorkerId)
            .ok_or_else(|| format!("job state `{name}` without a worker"))
    };
    Ok(match name {
        "pending" => JobState::Pending,
        "waiting_approval" => JobState::WaitingApproval,
        "queued" => JobState::Queued,
        "placed" => JobState::Placed { worker: worker()? },
        "running" => JobState::Running { worker: worker()? },
        "succeeded" => JobState::Succeeded,
        "failed" => JobState::Failed {
            reason: from_json(name, reason)?,
        },
        "timed_out" => JobState::TimedOut,
        "cancelled" => JobState::Cancelled,
        "skipped" => JobState::Skipped {
            reason: from_json(name, reason)?,
        },
        other => return Err(format!("unknown job state `{other}`")),
    })
}

/// A step state from its stored name and reason.
pub(crate) fn step_state(name: &str, reason: Option<&str>) -> Result<StepState, String> {
    Ok(match name {
        "pending" => StepState::Pending,
        "running" => StepState::Running,
        "succeeded" => StepState::Succeeded,
        "failed" => StepState::Failed {
            failure: from_json(name, reason)?,
        },
        "timed_out" => StepState::TimedOut,
        "cancelled" => StepState::Cancelled,
        "skipped" => StepState::Skipped {
            reason: from_json(name, reason)?,
        },
        other => return Err(format!("unknown step state `{other}`")),
    })
}

/// A step's exit from its three columns: `oom_killed` is NULL when the process has not ended.
pub(crate) fn step_exit(
    code: Option<i32>,
    signal: Option<i32>,
    oom_killed: Option<bool>,
) -> Option<StepExit> {
    oom_killed.map(|oom_killed| StepExit {
        code,
        signal,
        oom_killed,
    })
}

fn from_json<T: serde::de::DeserializeOwned>(state: &str, json: Option<&str>) -> Result<T, String> {
    let json = json.ok_or_else(|| format!("state `{state}` without its reason"))?;
    serde_json::from_str(json).map_err(|err| format!("reason of state `{state}`: {err}"))
}

#[cfg(test)]
mod tests {
    use hodei_domain::ids::Timestamp;

    use super::*;

    const RUN: RunId = RunId(1);
    const JOB: JobId = JobId(2);

    fn a(n: u32) -> Attempt {
        Attempt::new(n).unwrap()
    }

    fn worker(name: &str) -> WorkerId {
        WorkerId(name.into())
    }

    #[test]
    fn a_job_lifecycle_leaves_one_row_per_subject_with_its_last_state() {
        let w = worker("local");
        let events = [
            DomainEvent::RunStarted {
                run: RUN,
                at: Timestamp(1),
            },
            DomainEvent::JobQueued {
                run: RUN,
                job: JOB,
                attempt: a(1),
                at: Timestamp(2),
            },
            DomainEvent::JobPlaced {
                run: RUN,
                job: JOB,
                attempt: a(1),
                worker: w.clone(),
                at: Timestamp(3),
            },
            DomainEvent::StepStarted {
                run: RUN,
                job: JOB,
                job_attempt: a(1),
                step: 0,
                attempt: a(1),
                log_offset: Some(0),
                at: Timestamp(4),
            },
            DomainEvent::StepSucceeded {
                run: RUN,
                job: JOB,
                job_attempt: a(1),
                step: 0,
                attempt: a(1),
                at: Timestamp(5),
            },
            DomainEvent::JobSucceeded {
                run: RUN,
                job: JOB,
                attempt: a(1),
                at: Timestamp(6),
            },
        ];
        let p = Projection::of(&events);
        assert_eq!(
            p.runs,
            [RunRow {
                id: RUN,
                state: "running",
                since: 1,
                finished: None,
            }]
        );
        assert_eq!(p.jobs.len(), 1);
        assert_eq!(
            (p.jobs[0].state, p.jobs[0].worker, p.jobs[0].since),
            ("succeeded", Some(&w), 6),
            "the worker the job was placed on is kept"
        );
        assert_eq!(p.steps.len(), 1);
        let step = &p.steps[0];
        assert_eq!(
            (step.state, step.code, step.signal, step.oom, step.since),
            ("succeeded", Some(0), None, Some(false), 5)
        );
    }

    #[test]
    fn a_step_retry_records_the_failed_attempt_and_a_pending_next_one() {
        let exit = StepExit::code(3);
        let events = [
            DomainEvent::StepRetrying {
                run: RUN,
                job: JOB,
                job_attempt: a(2),
                step: 1,
                attempt: a(1),
                cause: StepFailure::Exit(exit),
                next_attempt: a(2),
                at: Timestamp(7),
            },
            DomainEvent::StepRetrying {
                run: RUN,
                job: JOB,
                job_attempt: a(2),
                step: 1,
                attempt: a(2),
                cause: StepFailure::TimedOut,
                next_attempt: a(3),
                at: Timestamp(8),
            },
        ];
        let p = Projection::of(&events);
        let rows: Vec<_> = p
            .steps
            .iter()
            .map(|s| (s.attempt.get(), s.state, s.code, s.reason.is_some()))
            .collect();
        assert_eq!(
            rows,
            [
                (1, "failed", Some(3), true),
                (2, "timed_out", None, false),
                (3, "pending", None, false)
            ]
        );
    }

    #[test]
    fn a_job_retry_moves_the_row_to_the_next_attempt() {
        let events = [DomainEvent::JobRetrying {
            run: RUN,
            job: JOB,
            attempt: a(1),
            cause: JobFailure::TimedOut,
            next_attempt: a(2),
            at: Timestamp(9),
        }];
        let p = Projection::of(&events);
        assert_eq!((p.jobs[0].state, p.jobs[0].attempt), ("queued", a(2)));
    }

    #[test]
    fn rows_serialize_with_the_keys_the_sql_reads() {
        let failure = StepFailure::Exit(StepExit::signal(9));
        let events = [DomainEvent::StepFailed {
            run: RUN,
            job: JOB,
            job_attempt: a(1),
            step: 0,
            attempt: a(1),
            failure: failure.clone(),
            at: Timestamp(3),
        }];
        let p = Projection::of(&events);
        let json = serde_json::to_value(&p.steps).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "job": 2, "job_attempt": 1, "index": 0, "attempt": 1, "state": "failed",
                "reason": {"kind": "exit", "code": null, "signal": 9, "oom_killed": false},
                "code": null, "signal": 9, "oom": false, "since": 3, "log_offset": null,
                "started": null
            }])
        );
    }

    #[test]
    fn stored_states_decode_back_to_the_domain() {
        let failure = JobFailure::Lost {
            worker: worker("w1"),
        };
        let reason = serde_json::to_string(&failure).unwrap();
        let table = [
            ("queued", None, None, Ok(JobState::Queued)),
            (
                "placed",
                Some("w1"),
                None,
                Ok(JobState::Placed {
                    worker: worker("w1"),
                }),
            ),
            ("succeeded", Some("w1"), None, Ok(JobState::Succeeded)),
            (
                "failed",
                None,
                Some(reason.as_str()),
                Ok(JobState::Failed { reason: failure }),
            ),
            (
                "running",
                None,
                None,
                Err("job state `running` without a worker".to_owned()),
            ),
            (
                "skipped",
                None,
                None,
                Err("state `skipped` without its reason".to_owned()),
            ),
            (
                "exploded",
                None,
                None,
                Err("unknown job state `exploded`".to_owned()),
            ),
        ];
        for (name, worker, reason, expected) in table {
            assert_eq!(
                job_state(name, worker.map(str::to_owned), reason),
                expected,
                "{name}"
            );
        }
        for state in [
            RunState::Pending,
            RunState::Running,
            RunState::Cancelling,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
        ] {
            assert_eq!(run_state(state.name()), Ok(state));
        }
        let skip = serde_json::to_string(&StepSkipReason::WhenFalse).unwrap();
        assert_eq!(
            step_state("skipped", Some(&skip)),
            Ok(StepState::Skipped {
                reason: StepSkipReason::WhenFalse
            })
        );
        assert!(step_state("failed", Some("{not json")).is_err());
        assert_eq!(step_exit(Some(1), None, None), None);
        assert_eq!(
            step_exit(Some(1), None, Some(false)),
            Some(StepExit::code(1))
        );
    }
}
