//! The step machine: one per step of a job attempt, across the step's own attempts.

use serde::{Deserialize, Serialize};

use super::{
    Attempt, DomainEvent, IllegalTransition, MaxAttempts, Rejection, StepExit, StepFailure,
    StepSkipReason, Subject,
};
use crate::ids::{JobId, RunId, Timestamp};

/// Which step of which job attempt a step machine is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepKey {
    /// The run.
    pub run: RunId,
    /// The job.
    pub job: JobId,
    /// The job attempt the step runs in; a new job attempt runs new step machines.
    pub job_attempt: Attempt,
    /// The step's position in the job's `steps`, from 0.
    pub index: u32,
}

/// The state of a step attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepState {
    /// Not started yet (also after a retry, with the next attempt number).
    Pending,
    /// Its process is running.
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Failed, all attempts spent.
    Failed {
        /// Why the last attempt failed.
        failure: StepFailure,
    },
    /// Ran out of time, all attempts spent.
    TimedOut,
    /// Stopped or never started because its job was cancelled.
    Cancelled,
    /// Did not run.
    Skipped {
        /// Why.
        reason: StepSkipReason,
    },
}

impl StepState {
    /// The state's name as the API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed { .. } => "failed",
            StepState::TimedOut => "timed_out",
            StepState::Cancelled => "cancelled",
            StepState::Skipped { .. } => "skipped",
        }
    }

    /// Whether the step is done for this job attempt: nothing moves it any more.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, StepState::Pending | StepState::Running)
    }
}

/// What happens to a step, as the job actor tells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StepEvent {
    /// The provider started the step's process.
    Start {
        /// The length of the job's log when the step started: its output begins there. A
        /// step re-attached after a crash of Hodei finds what of it the log already holds.
        /// `None` when the step's output is masked together with bytes the previous step left
        /// pending (the start of what may be a secret): it cannot be taken back.
        log_offset: Option<u64>,
    },
    /// The process ended (successfully or not: see [`StepExit::is_success`]).
    Exited(StepExit),
    /// The step's timeout elapsed; the caller stops the process.
    TimeOut,
    /// The process died with Hodei or its worker and cannot be re-attached.
    Lost,
    /// The provider could not start or follow the step.
    ProviderError {
        /// The provider's message.
        message: String,
    },
    /// The job is cancelled: stop the step, or do not start it.
    Cancel,
    /// The step does not run.
    Skip {
        /// Why.
        reason: StepSkipReason,
    },
}

impl StepEvent {
    /// The event's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            StepEvent::Start { .. } => "start",
            StepEvent::Exited(_) => "exited",
            StepEvent::TimeOut => "time_out",
            StepEvent::Lost => "lost",
            StepEvent::ProviderError { .. } => "provider_error",
            StepEvent::Cancel => "cancel",
            StepEvent::Skip { .. } => "skip",
        }
    }
}

/// A step of a job attempt, with its retry budget and current attempt. Start with
/// [`StepMachine::new`]; move it with [`StepMachine::apply`] (or [`StepMachine::on`]).
///
/// A failure (non-zero exit, timeout, loss, provider error) with budget left moves the step back
/// to `pending` with the next attempt number (`step_retrying`); the caller starts it again.
/// Cancellation is never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepMachine {
    key: StepKey,
    max_attempts: MaxAttempts,
    attempt: Attempt,
    state: StepState,
    since: Timestamp,
}

impl StepMachine {
    /// A step not started yet, at its first attempt.
    pub fn new(key: StepKey, max_attempts: MaxAttempts, at: Timestamp) -> StepMachine {
        StepMachine::restore(key, max_attempts, Attempt::FIRST, StepState::Pending, at)
    }

    /// A step as the store last recorded it.
    pub fn restore(
        key: StepKey,
        max_attempts: MaxAttempts,
        attempt: Attempt,
        state: StepState,
        since: Timestamp,
    ) -> StepMachine {
        StepMachine {
            key,
            max_attempts,
            attempt,
            state,
            since,
        }
    }

    /// Which step of which job attempt.
    pub fn key(&self) -> StepKey {
        self.key
    }

    /// The retry budget.
    pub fn max_attempts(&self) -> MaxAttempts {
        self.max_attempts
    }

    /// The current attempt.
    pub fn attempt(&self) -> Attempt {
        self.attempt
    }

    /// The current state.
    pub fn state(&self) -> &StepState {
        &self.state
    }

    /// When the step entered its current state.
    pub fn since(&self) -> Timestamp {
        self.since
    }

    /// Whether nothing moves the step any more.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// The subject of this machine's events and errors.
    pub fn subject(&self) -> Subject {
        Subject::Step {
            key: self.key,
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
        event: StepEvent,
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
        event: StepEvent,
        at: Timestamp,
    ) -> Result<(StepMachine, DomainEvent), IllegalTransition> {
        use StepEvent as E;
        use StepState as S;
        let subject = self.subject();
        let illegal = |from: &S, event: &E, rejection| IllegalTransition {
            subject,
            from: from.name(),
            event: event.name(),
            rejection,
        };
        let StepMachine {
            key,
            max_attempts,
            attempt,
            state,
            since: _,
        } = self;
        if state.is_terminal() {
            return Err(illegal(&state, &event, Rejection::Finished));
        }
        macro_rules! emit {
            ($variant:ident { $($field:ident $(: $value:expr)?),* $(,)? }) => {
                DomainEvent::$variant {
                    run: key.run,
                    job: key.job,
                    job_attempt: key.job_attempt,
                    step: key.index,
                    attempt,
                    $($field $(: $value)?,)*
                    at,
                }
            };
        }
        let end = |cause: StepFailure| match max_attempts.after(attempt) {
            Some(next) => (
                next,
                S::Pending,
                emit!(StepRetrying {
                    cause,
                    next_attempt: next
                }),
            ),
            None => match cause {
                StepFailure::TimedOut => (attempt, S::TimedOut, emit!(StepTimedOut {})),
                failure => (
                    attempt,
                    S::Failed {
                        failure: failure.clone(),
                    },
                    emit!(StepFailed { failure }),
                ),
            },
        };
        let (attempt, state, emitted) = match (state, event) {
            (S::Pending, E::Start { log_offset }) => {
                (attempt, S::Running, emit!(StepStarted { log_offset }))
            }
            (S::Pending, E::Skip { reason }) => (
                attempt,
                S::Skipped { reason },
                emit!(StepSkipped { reason }),
            ),
            (S::Running, E::Exited(exit)) if exit.is_success() => {
                (attempt, S::Succeeded, emit!(StepSucceeded {}))
            }
            (S::Running, E::Exited(exit)) => end(StepFailure::Exit(exit)),
            (S::Running, E::TimeOut) => end(StepFailure::TimedOut),
            (S::Running, E::Lost) => end(StepFailure::Lost),
            (S::Pending | S::Running, E::ProviderError { message }) => {
                end(StepFailure::Provider { message })
            }
            (S::Pending | S::Running, E::Cancel) => {
                (attempt, S::Cancelled, emit!(StepCancelled {}))
            }
            (state, event) => {
                let rejection = if matches!((&state, &event), (S::Running, E::Start { .. })) {
                    Rejection::Stale
                } else {
                    Rejection::OutOfOrder
                };
                return Err(illegal(&state, &event, rejection));
            }
        };
        let next = StepMachine::restore(key, max_attempts, attempt, state, at);
        Ok((next, emitted))
    }
}
