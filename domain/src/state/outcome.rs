//! How things end: why attempts fail and why jobs and steps do not run (the payloads of failed,
//! retried and skipped states and events, tagged by `"kind"` in JSON and part of the event
//! contract), and the [`verdict`] that turns the outcomes of a run's jobs into the run's own.

use serde::{Deserialize, Serialize};

use super::{JobMachine, JobState};
use crate::ids::{JobId, WorkerId};

/// How a step's process ended: the exit code is data, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepExit {
    /// The exit code, if the process exited by itself.
    pub code: Option<i32>,
    /// The signal that ended the process, if one did.
    pub signal: Option<i32>,
    /// The kernel or the container engine killed it for lack of memory.
    pub oom_killed: bool,
}

impl StepExit {
    /// The process exited with `code`.
    pub fn code(code: i32) -> StepExit {
        StepExit {
            code: Some(code),
            signal: None,
            oom_killed: false,
        }
    }

    /// The process was ended by `signal`.
    pub fn signal(signal: i32) -> StepExit {
        StepExit {
            code: None,
            signal: Some(signal),
            oom_killed: false,
        }
    }

    /// Success is exit code 0, no signal and no OOM kill; anything else, unknown included, fails.
    pub fn is_success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none() && !self.oom_killed
    }
}

/// Why a step attempt did not succeed. A step that ends in `failed` carries `exit`, `lost` or
/// `provider`; `timed_out` appears only as the cause of a retry or of a job failure, since a
/// final timeout is the state [`StepState::TimedOut`](super::StepState::TimedOut).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepFailure {
    /// The process exited unsuccessfully.
    Exit(StepExit),
    /// The step ran longer than its timeout.
    TimedOut,
    /// The process died with Hodei or its worker and could not be re-attached.
    Lost,
    /// The provider could not start or follow the step.
    Provider {
        /// The provider's message.
        message: String,
    },
}

/// A failure in a few words, as logs, the CLI and the API word it: `exit code 2`, `killed by
/// signal 9`, `killed for lack of memory`, `timed out`, `lost`, or the provider's message.
impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepFailure::Exit(exit) => match (exit.code, exit.signal) {
                _ if exit.oom_killed => f.write_str("killed for lack of memory"),
                (Some(code), _) => write!(f, "exit code {code}"),
                (None, Some(signal)) => write!(f, "killed by signal {signal}"),
                (None, None) => f.write_str("no exit status"),
            },
            StepFailure::TimedOut => f.write_str("timed out"),
            StepFailure::Lost => f.write_str("lost"),
            StepFailure::Provider { message } => f.write_str(message),
        }
    }
}

/// Why a step did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepSkipReason {
    /// Its `when` condition was false.
    WhenFalse,
    /// An earlier step of the job failed, and this step does not run `always`.
    EarlierStepFailed,
}

/// Why a job attempt failed. A job that ends in `failed` carries `step`, `lost` or `provider`;
/// `timed_out` appears only as the cause of a retry, since a final timeout is the state
/// [`JobState::TimedOut`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobFailure {
    /// A step failed (and does not `continue_on_error`).
    Step {
        /// The step's position in the job, from 0.
        step: u32,
        /// Why its last attempt failed.
        failure: StepFailure,
    },
    /// The job ran longer than its timeout.
    TimedOut,
    /// The job's worker was lost while running it.
    Lost {
        /// The lost worker.
        worker: WorkerId,
    },
    /// The provider could not set up or run the job (image pull, pod scheduling, ...).
    Provider {
        /// The provider's message.
        message: String,
    },
}

/// A job failure in a few words: `step 2 exit code 1`, `timed out`, `lost with worker w1`, or
/// the provider's message.
impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobFailure::Step { step, failure } => write!(f, "step {} {failure}", step + 1),
            JobFailure::TimedOut => f.write_str("timed out"),
            JobFailure::Lost { worker } => write!(f, "lost with worker {worker}"),
            JobFailure::Provider { message } => f.write_str(message),
        }
    }
}

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSkipReason {
    /// Its `when` condition was false.
    WhenFalse,
    /// A job it needs failed, timed out or was cancelled.
    NeedFailed {
        /// The needed job.
        job: JobId,
    },
    /// A job it needs was skipped.
    NeedSkipped {
        /// The needed job.
        job: JobId,
    },
    /// The run was cancelled before the job was ready.
    RunCancelled,
}

/// What a run's jobs add up to once all of them are done. Made by [`verdict`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// No job failed, timed out or was cancelled (skipped jobs and failures allowed by
    /// `continue_on_error` do not count).
    Succeeded,
    /// Some jobs failed or timed out without `continue_on_error`.
    Failed {
        /// Those jobs, in the order given.
        failed_jobs: Vec<JobId>,
    },
    /// No job failed, but some were cancelled.
    Cancelled,
}

/// The verdict of a run's jobs, or `None` while any of them is not terminal.
///
/// A failed or timed-out job fails the run unless its policy has `continue_on_error`; failing
/// wins over cancelled; skipped jobs are neutral, so a run whose jobs were all skipped
/// succeeded. Post-hook jobs are expected to be planned with `continue_on_error`, so that a
/// failing notification does not fail a run.
pub fn verdict<'a>(jobs: impl IntoIterator<Item = &'a JobMachine>) -> Option<Verdict> {
    let mut failed_jobs = Vec::new();
    let mut cancelled = false;
    for job in jobs {
        match job.state() {
            JobState::Failed { .. } | JobState::TimedOut => {
                if !job.policy().continue_on_error {
                    failed_jobs.push(job.id());
                }
            }
            JobState::Cancelled => cancelled = true,
            JobState::Succeeded | JobState::Skipped { .. } => {}
            JobState::Pending
            | JobState::WaitingApproval
            | JobState::Queued
            | JobState::Placed { .. }
            | JobState::Running { .. } => return None,
        }
    }
    Some(if !failed_jobs.is_empty() {
        Verdict::Failed { failed_jobs }
    } else if cancelled {
        Verdict::Cancelled
    } else {
        Verdict::Succeeded
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RunId, Timestamp};
    use crate::state::{Attempt, JobPolicy, MaxAttempts};

    fn job(id: u64, state: JobState, continue_on_error: bool) -> JobMachine {
        let policy = JobPolicy {
            max_attempts: MaxAttempts::ONE,
            continue_on_error,
            ..JobPolicy::default()
        };
        JobMachine::restore(
            RunId(4),
            JobId(id),
            policy,
            Attempt::FIRST,
            state,
            Timestamp(0),
        )
    }

    fn lost() -> JobState {
        JobState::Failed {
            reason: JobFailure::Lost {
                worker: WorkerId("w".into()),
            },
        }
    }

    #[test]
    fn a_step_failure_reads_in_a_few_words() {
        let words = |failure: StepFailure| failure.to_string();
        assert_eq!(words(StepFailure::Exit(StepExit::code(2))), "exit code 2");
        assert_eq!(
            words(StepFailure::Exit(StepExit::signal(9))),
            "killed by signal 9"
        );
        let oom = StepExit {
            oom_killed: true,
            ..StepExit::signal(9)
        };
        assert_eq!(words(StepFailure::Exit(oom)), "killed for lack of memory");
        assert_eq!(words(StepFailure::TimedOut), "timed out");
        assert_eq!(words(StepFailure::Lost), "lost");
        let message = "no such image".to_owned();
        assert_eq!(words(StepFailure::Provider { message }), "no such image");
    }

    #[test]
    fn verdict_waits_for_every_job() {
        let jobs = [
            job(1, JobState::Succeeded, false),
            job(2, JobState::Queued, false),
        ];
        assert_eq!(verdict(&jobs), None);
    }

    #[test]
    fn a_failed_job_with_continue_on_error_does_not_fail_the_run() {
        let jobs = [
            job(1, JobState::Succeeded, false),
            job(2, lost(), true),
            job(3, JobState::TimedOut, true),
        ];
        assert_eq!(verdict(&jobs), Some(Verdict::Succeeded));
    }

    #[test]
    fn failures_win_over_cancellations_and_name_the_failed_jobs() {
        let jobs = [
            job(1, JobState::Cancelled, false),
            job(2, lost(), false),
            job(3, JobState::TimedOut, false),
            job(4, lost(), true),
        ];
        let failed_jobs = vec![JobId(2), JobId(3)];
        assert_eq!(verdict(&jobs), Some(Verdict::Failed { failed_jobs }));
        let cancelled = [
            job(1, JobState::Cancelled, false),
            job(2, JobState::Succeeded, false),
        ];
        assert_eq!(verdict(&cancelled), Some(Verdict::Cancelled));
    }

    #[test]
    fn a_run_of_skipped_jobs_or_of_no_job_succeeds() {
        let skipped = JobState::Skipped {
            reason: crate::state::JobSkipReason::WhenFalse,
        };
        assert_eq!(verdict(&[job(1, skipped, false)]), Some(Verdict::Succeeded));
        assert_eq!(verdict(&[]), Some(Verdict::Succeeded));
    }
}
