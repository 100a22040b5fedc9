//! The job machine: one per planned job (a matrix instance is a job), across all its attempts.

use serde::{Deserialize, Serialize};

use super::{
    Attempt, DomainEvent, IllegalTransition, JobFailure, JobSkipReason, MaxAttempts, Rejection,
    StepFailure, Subject,
};
use crate::ids::{JobId, RunId, Timestamp, WorkerId};

/// Whether a job waits for a person before it is queued (`approval:` in the pipeline; who may
/// approve is the API's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Queued as soon as its needs are met.
    Open,
    /// Waits in `waiting_approval` until someone approves it.
    Approval,
}

/// What the plan fixes for the whole life of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobPolicy {
    /// Attempts in total, the first included: `MaxAttempts::from_retries(retry.max)`.
    pub max_attempts: MaxAttempts,
    /// The manual gate.
    pub gate: Gate,
    /// A failure of this job does not fail the run (see [`verdict`](super::verdict)).
    pub continue_on_error: bool,
}

impl Default for JobPolicy {
    /// One attempt, no gate, failures fail the run.
    fn default() -> JobPolicy {
        JobPolicy {
            max_attempts: MaxAttempts::ONE,
            gate: Gate::Open,
            continue_on_error: false,
        }
    }
}

/// The state of a job (of its current attempt).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for the jobs it needs.
    Pending,
    /// Its needs are met; waiting for a person to approve it.
    WaitingApproval,
    /// Waiting for the scheduler to place it (also after a retry or a lost placement).
    Queued,
    /// The scheduler chose a worker; the worker is being set up.
    Placed {
        /// The chosen worker.
        worker: WorkerId,
    },
    /// Its steps are running on the worker.
    Running {
        /// The worker.
        worker: WorkerId,
    },
    /// All its steps succeeded (or failed with `continue_on_error`).
    Succeeded,
    /// Failed, all attempts spent.
    Failed {
        /// Why the last attempt failed.
        reason: JobFailure,
    },
    /// Ran out of time, all attempts spent.
    TimedOut,
    /// Cancelled, before or while running.
    Cancelled,
    /// Did not run.
    Skipped {
        /// Why.
        reason: JobSkipReason,
    },
}

impl JobState {
    /// The name of every state, in the order a job goes through them.
    pub const NAMES: [&'static str; 10] = [
        "pending",
        "waiting_approval",
        "queued",
        "placed",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "skipped",
    ];

    /// The names of the states in which a job is over.
    pub const TERMINAL: [&'static str; 5] =
        ["succeeded", "failed", "timed_out", "cancelled", "skipped"];

    /// Whether the state named `name` (as [`JobState::name`] gives it) is one in which a job is
    /// over.
    pub fn is_terminal_name(name: &str) -> bool {
        JobState::TERMINAL.contains(&name)
    }

    /// The state's name as the API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::WaitingApproval => "waiting_approval",
            JobState::Queued => "queued",
            JobState::Placed { .. } => "placed",
            JobState::Running { .. } => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed { .. } => "failed",
            JobState::TimedOut => "timed_out",
            JobState::Cancelled => "cancelled",
            JobState::Skipped { .. } => "skipped",
        }
    }

    /// Whether the job is done: nothing moves it any more.
    pub fn is_terminal(&self) -> bool {
        JobState::is_terminal_name(self.name())
    }

    /// The worker holding the job, while placed or running.
    pub fn worker(&self) -> Option<&WorkerId> {
        match self {
            JobState::Placed { worker } | JobState::Running { worker } => Some(worker),
            _ => None,
        }
    }
}

/// What happens to a job, as the run actor, the scheduler and the job actor tell it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobEvent {
    /// Every job it needs has succeeded (or failed with `continue_on_error`), and `when` held.
    NeedsMet,
    /// Someone approved a gated job.
    Approve {
        /// Who approved it.
        by: String,
    },
    /// The job will not run.
    Skip {
        /// Why.
        reason: JobSkipReason,
    },
    /// The scheduler chose a worker.
    Place {
        /// The chosen worker.
        worker: WorkerId,
    },
    /// The worker is set up and the first step is starting.
    Start,
    /// Every step succeeded or was allowed to fail.
    Succeed,
    /// A step failed, all its own attempts spent, and does not `continue_on_error`.
    StepFailed {
        /// The step's position in the job, from 0.
        step: u32,
        /// Why its last attempt failed.
        failure: StepFailure,
    },
    /// The provider could not set up or run the job.
    ProviderError {
        /// The provider's message.
        message: String,
    },
    /// The job's timeout elapsed; the caller stops it.
    TimeOut,
    /// A worker was lost (its agent gone, or Hodei restarted and its process is dead). Ignored
    /// as stale unless the job is on that worker.
    WorkerLost {
        /// The lost worker.
        worker: WorkerId,
    },
    /// Cancel the job, whatever it is doing.
    Cancel,
    /// The job succeeded in an earlier run that this run retries: it is not run again.
    CarryOver,
}

impl JobEvent {
    /// The event's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::NeedsMet => "needs_met",
            JobEvent::Approve { .. } => "approve",
            JobEvent::Skip { .. } => "skip",
            JobEvent::Place { .. } => "place",
            JobEvent::Start => "start",
            JobEvent::Succeed => "succeed",
            JobEvent::StepFailed { .. } => "step_failed",
            JobEvent::ProviderError { .. } => "provider_error",
            JobEvent::TimeOut => "time_out",
            JobEvent::WorkerLost { .. } => "worker_lost",
            JobEvent::Cancel => "cancel",
            JobEvent::CarryOver => "carry_over",
        }
    }
}

/// A job with its policy and current attempt. Start with [`JobMachine::new`]; move it with
/// [`JobMachine::apply`] (or [`JobMachine::on`]).
///
/// - A failure (step failure, provider error, timeout, worker lost while running) with budget
///   left re-queues the job with the next attempt number (`job_retrying`); without, it ends in
///   `failed` or `timed_out`. The retry delay is the caller's: place a retried job no earlier
///   than [`since`](JobMachine::since) plus the delay.
/// - A worker lost while the job is only `placed` re-queues it at the same attempt
///   (`job_requeued`): nothing of it ran, so no attempt is spent.
/// - `cancel` is accepted in every non-terminal state and is never retried. A running job stays
///   `running` while its actor stops the current step and runs the job's `post.always` and
///   `post.cancelled` steps; `cancel` is applied once they are done (the worker is still busy
///   until then). The run's `cancelling` state is the durable intent that lets a restarted actor
///   finish the job: a job of a cancelling run that is retried or re-queued is cancelled next.
/// - `skip` is accepted while `pending` or `waiting_approval`. When a run is cancelled, the run
///   actor skips those jobs (`run_cancelled`) and cancels the queued, placed and running ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMachine {
    run: RunId,
    id: JobId,
    policy: JobPolicy,
    attempt: Attempt,
    state: JobState,
    since: Timestamp,
}

impl JobMachine {
    /// A job waiting for its needs, at its first attempt.
    pub fn new(run: RunId, id: JobId, policy: JobPolicy, at: Timestamp) -> JobMachine {
        JobMachine::restore(run, id, policy, Attempt::FIRST, JobState::Pending, at)
    }

    /// A job as the store last recorded it.
    pub fn restore(
        run: RunId,
        id: JobId,
        policy: JobPolicy,
        attempt: Attempt,
        state: JobState,
        since: Timestamp,
    ) -> JobMachine {
        JobMachine {
            run,
            id,
            policy,
            attempt,
            state,
            since,
        }
    }

    /// The run the job belongs to.
    pub fn run(&self) -> RunId {
        self.run
    }

    /// The job.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The policy fixed by the plan.
    pub fn policy(&self) -> JobPolicy {
        self.policy
    }

    /// The current attempt.
    pub fn attempt(&self) -> Attempt {
        self.attempt
    }

    /// The current state.
    pub fn state(&self) -> &JobState {
        &self.state
    }

    /// When the job entered its current state.
    pub fn since(&self) -> Timestamp {
        self.since
    }

    /// Whether nothing moves the job any more.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// The subject of this machine's events and errors.
    pub fn subject(&self) -> Subject {
        Subject::Job {
            run: self.run,
            job: self.id,
            attempt: self.attempt,
        }
    }

    /// Applies `event` at `at` and returns the event it yields.
    ///
    /// # Errors
    ///
    /// [`IllegalTransition`] if the current state does not accept `event`; the machine is then
    /// left unchanged.
    pub fn apply(
        &mut self,
        event: JobEvent,
        at: Timestamp,
    ) -> Result<DomainEvent, IllegalTransition> {
        let (next, emitted) = self.clone().on(event, at)?;
        *self = next;
        Ok(emitted)
    }

    /// The transition function: the next machine and the one event the move yields. See the
    /// diagram in [`crate::state`].
    ///
    /// # Errors
    ///
    /// [`IllegalTransition`] if the current state does not accept `event`: from a terminal
    /// state always ([`Rejection::Finished`]), otherwise [`Rejection::Stale`] or
    /// [`Rejection::OutOfOrder`] as the type's documentation describes.
    pub fn on(
        self,
        event: JobEvent,
        at: Timestamp,
    ) -> Result<(JobMachine, DomainEvent), IllegalTransition> {
        use JobEvent as E;
        use JobState as S;
        let subject = self.subject();
        let illegal = |from: &S, event: &E, rejection| IllegalTransition {
            subject,
            from: from.name(),
            event: event.name(),
            rejection,
        };
        let JobMachine {
            run,
            id,
            policy,
            attempt,
            state,
            since: _,
        } = self;
        if state.is_terminal() {
            return Err(illegal(&state, &event, Rejection::Finished));
        }
        macro_rules! emit {
            ($variant:ident { $($field:ident $(: $value:expr)?),* $(,)? }) => {
                DomainEvent::$variant { run, job: id, attempt, $($field $(: $value)?,)* at }
            };
        }
        let end = |cause: JobFailure| match policy.max_attempts.after(attempt) {
            Some(next) => (
                next,
                S::Queued,
                emit!(JobRetrying {
                    cause,
                    next_attempt: next
                }),
            ),
            None => match cause {
                JobFailure::TimedOut => (attempt, S::TimedOut, emit!(JobTimedOut {})),
                reason => (
                    attempt,
                    S::Failed {
                        reason: reason.clone(),
                    },
                    emit!(JobFailed { reason }),
                ),
            },
        };
        let (attempt, state, emitted) = match (state, event) {
            (S::Pending, E::NeedsMet) => match policy.gate {
                Gate::Open => (attempt, S::Queued, emit!(JobQueued {})),
                Gate::Approval => (attempt, S::WaitingApproval, emit!(JobAwaitingApproval {})),
            },
            (S::WaitingApproval, E::Approve { by }) => {
                (attempt, S::Queued, emit!(JobApproved { by }))
            }
            (S::Pending, E::CarryOver) => (attempt, S::Succeeded, emit!(JobSucceeded {})),
            (S::Pending | S::WaitingApproval, E::Skip { reason }) => {
                (attempt, S::Skipped { reason }, emit!(JobSkipped { reason }))
            }
            (S::Queued, E::Place { worker }) => (
                attempt,
                S::Placed {
                    worker: worker.clone(),
                },
                emit!(JobPlaced { worker }),
            ),
            (S::Placed { worker }, E::Start) => (
                attempt,
                S::Running {
                    worker: worker.clone(),
                },
                emit!(JobStarted { worker }),
            ),
            (S::Placed { worker }, E::WorkerLost { worker: lost }) if worker == lost => {
                (attempt, S::Queued, emit!(JobRequeued { worker: lost }))
            }
            (S::Running { worker }, E::WorkerLost { worker: lost }) if worker == lost => {
                end(JobFailure::Lost { worker: lost })
            }
            (S::Running { .. }, E::Succeed) => (attempt, S::Succeeded, emit!(JobSucceeded {})),
            (S::Running { .. }, E::StepFailed { step, failure }) => {
                end(JobFailure::Step { step, failure })
            }
            (S::Placed { .. } | S::Running { .. }, E::ProviderError { message }) => {
                end(JobFailure::Provider { message })
            }
            (S::Placed { .. } | S::Running { .. }, E::TimeOut) => end(JobFailure::TimedOut),
            (_, E::Cancel) => (attempt, S::Cancelled, emit!(JobCancelled {})),
            (state, event) => {
                let rejection = if is_stale(&state, &event, policy) {
                    Rejection::Stale
                } else {
                    Rejection::OutOfOrder
                };
                return Err(illegal(&state, &event, rejection));
            }
        };
        let next = JobMachine::restore(run, id, policy, attempt, state, at);
        Ok((next, emitted))
    }
}

/// Whether a rejected `event` was already applied or no longer concerns the job in `state`
/// (a non-terminal state in which `event` is not legal).
fn is_stale(state: &JobState, event: &JobEvent, policy: JobPolicy) -> bool {
    use JobEvent as E;
    use JobState as S;
    match event {
        E::NeedsMet => !matches!(state, S::Pending),
        E::Approve { .. } => {
            policy.gate == Gate::Approval
                && matches!(state, S::Queued | S::Placed { .. } | S::Running { .. })
        }
        E::Place { worker } => state.worker() == Some(worker),
        E::Start => matches!(state, S::Running { .. }),
        E::WorkerLost { worker } => state.worker() != Some(worker),
        _ => false,
    }
}

/// Why a transition recorded elsewhere (by an agent) was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFollowed {
    #[error("the event `{kind}` is not about {subject}")]
    OtherSubject {
        kind: &'static str,
        subject: Subject,
    },
    #[error("the event `{kind}` is not one a worker records")]
    NotAWorkers { kind: &'static str },
    #[error("a step event while the job is not running")]
    NotRunning,
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("the event `{kind}` does not match the transition it claims")]
    Mismatch { kind: &'static str },
}

impl JobMachine {
    /// Takes a transition that a worker elsewhere made and recorded (an agent runs the attempt
    /// and reports its events): the machine moves as if it had made the move itself, and an
    /// event that is not a legal move of this machine, with exactly these fields, is refused.
    /// Step events are taken while the job runs, for its current attempt.
    ///
    /// # Errors
    ///
    /// [`NotFollowed`] says why; the machine is then left unchanged.
    pub fn follow(&mut self, event: &DomainEvent) -> Result<(), NotFollowed> {
        use DomainEvent as D;
        let kind = event.kind();
        let (run, job, at) = event.header();
        if run != self.run || job != Some(self.id) {
            return Err(NotFollowed::OtherSubject {
                kind,
                subject: self.subject(),
            });
        }
        let of_failure = |failure: &JobFailure| match failure.clone() {
            JobFailure::Step { step, failure } => JobEvent::StepFailed { step, failure },
            JobFailure::TimedOut => JobEvent::TimeOut,
            JobFailure::Lost { worker } => JobEvent::WorkerLost { worker },
            JobFailure::Provider { message } => JobEvent::ProviderError { message },
        };
        let job_event = match event {
            D::JobPlaced { worker, .. } => JobEvent::Place {
                worker: worker.clone(),
            },
            D::JobStarted { .. } => JobEvent::Start,
            D::JobSucceeded { .. } => JobEvent::Succeed,
            D::JobFailed { reason, .. } => of_failure(reason),
            D::JobRetrying { cause, .. } => of_failure(cause),
            D::JobTimedOut { .. } => JobEvent::TimeOut,
            D::JobCancelled { .. } => JobEvent::Cancel,
            D::StepStarted { job_attempt, .. }
            | D::StepSucceeded { job_attempt, .. }
            | D::StepFailed { job_attempt, .. }
            | D::StepTimedOut { job_attempt, .. }
            | D::StepCancelled { job_attempt, .. }
            | D::StepSkipped { job_attempt, .. }
            | D::StepRetrying { job_attempt, .. } => {
                if *job_attempt != self.attempt {
                    return Err(NotFollowed::OtherSubject {
                        kind,
                        subject: self.subject(),
                    });
                }
                return match self.state {
                    JobState::Running { .. } => Ok(()),
                    _ => Err(NotFollowed::NotRunning),
                };
            }
            _ => return Err(NotFollowed::NotAWorkers { kind }),
        };
        let (next, emitted) = self.clone().on(job_event, at)?;
        if &emitted != event {
            return Err(NotFollowed::Mismatch { kind });
        }
        *self = next;
        Ok(())
    }
}
