//! # State machines of runs, jobs and steps
//!
//! Every status Hodei shows or stores is the state of one of three machines, and every change of
//! status is a transition that yields exactly one [`DomainEvent`]: the store appends it to the
//! audit log in the same transaction as the new state, the event bus streams it to the API.
//! User-facing description: `docs/states.md`.
//!
//! Where to start reading: [`JobMachine::on`] in `job.rs` (the richest machine), then
//! [`DomainEvent`] in `event.rs` (what leaves the domain), then [`verdict`] in `outcome.rs` (how
//! the outcomes of a run's jobs become the run's). `run.rs` and `step.rs` hold the other two
//! machines; `job_tests.rs`, `step_tests.rs` and `props.rs` their table and property tests.
//!
//! ## Shape
//!
//! Each machine is a small struct that carries its identity, its policy (retry budget, approval
//! gate) and its state enum, and is consumed by value:
//!
//! ```text
//! fn on(self, event: XEvent, at: Timestamp) -> Result<(Self, DomainEvent), IllegalTransition>
//! ```
//!
//! An actor keeps its machine in a field and calls `apply(&mut self, event, at)`, which runs `on`
//! on a copy and leaves the machine untouched when the move is illegal. The store rebuilds a
//! machine with `restore(..)` from its row. The domain never reads a clock: `at` is the caller's
//! instant; it becomes the event's `at` and the machine's [`since`](JobMachine::since).
//!
//! **Guarantees**: an accepted transition yields exactly one event, whose
//! [`state_after`](DomainEvent::state_after) is the new state's name; terminal states accept
//! nothing; attempt numbers only grow, by one per retry, never beyond the budget.
//! **Errors**: an illegal move is an [`IllegalTransition`] naming the subject, the state, the event
//! and a [`Rejection`] that tells a harmless repeat ([`Rejection::Stale`]) from a late message
//! ([`Rejection::Finished`]) and from an ordering bug ([`Rejection::OutOfOrder`]).
//! **Assumptions**: events about a job attempt come from the actor of that attempt; only
//! [`JobEvent::WorkerLost`], which the worker registry fans out, names its worker and is checked.
//!
//! ## Run
//!
//! ```text
//!            start            finish(verdict)
//!  pending ───────► running ──────────────────► succeeded | failed | cancelled
//!     │                │
//!     │ cancel         │ cancel      (the run actor stops the jobs, post hooks run)
//!     └──────────► cancelling ──finish(any verdict)──► cancelled
//!
//!  cancel while cancelling: rejected as Stale, no second event (idempotent)
//! ```
//!
//! ## Job (one machine per planned job, across its attempts, numbered from 1)
//!
//! ```text
//!  pending ──needs_met────────────────────────────► queued ◄────────────────────────┐
//!   │  │                                             ▲  │                           │
//!   │  └─needs_met, gated─► waiting_approval ─approve┘  │ place(w)                  │
//!   │                             │                     ▼                           │
//!   │ skip(reason)   skip(reason) │                 placed(w) ──worker_lost(w)──────┤ requeued,
//!   └──────────► skipped ◄────────┘                     │                           │ same attempt
//!                                                       │ start                     │
//!                                                       ▼                           │
//!                                                  running(w) ─succeed─► succeeded  │
//!                                                                                   │
//!  a failure while placed or running: provider_error, time_out,                     │
//!  and while running: step_failed, worker_lost(w)                                   │
//!      budget left: job_retrying, attempt + 1 ──────────────────────────────────────┘
//!      no budget:   failed(reason), or timed_out for time_out
//!
//!  every non-terminal state ──cancel──► cancelled
//! ```
//!
//! ## Step (one machine per step of a job attempt, with its own attempts, numbered from 1)
//!
//! ```text
//!  pending ──start──► running ──exited(success)──► succeeded
//!   │ │ ▲                │
//!   │ │ │                │ exited(failure) | time_out | lost | provider_error
//!   │ │ └────────────────┤   budget left: step_retrying, attempt + 1
//!   │ │                  └── no budget:   failed(failure), or timed_out for time_out
//!   │ └──skip(reason)──► skipped          (provider_error is also accepted while pending)
//!   └──cancel──► cancelled                (cancel is also accepted while running)
//! ```

use std::fmt;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, RunId};

mod event;
mod job;
#[cfg(test)]
mod job_tests;
mod outcome;
#[cfg(test)]
mod props;
mod run;
mod step;
#[cfg(test)]
mod step_tests;

pub use event::DomainEvent;
pub use job::{Gate, JobEvent, JobMachine, JobPolicy, JobState, NotFollowed};
pub use outcome::{
    JobFailure, JobSkipReason, StepExit, StepFailure, StepSkipReason, Verdict, verdict,
};
pub use run::{RunEvent, RunMachine, RunState};
pub use step::{StepEvent, StepKey, StepMachine, StepState};

/// An attempt number: 1 for the first try, one more for each retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attempt(NonZeroU32);

impl Attempt {
    /// The first attempt.
    pub const FIRST: Attempt = Attempt(NonZeroU32::MIN);

    /// Attempt `n`, or `None` for 0 (attempts are numbered from 1).
    pub fn new(n: u32) -> Option<Attempt> {
        NonZeroU32::new(n).map(Attempt)
    }

    /// The attempt number.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The attempt after this one, `None` only at `u32::MAX`.
    pub fn next(self) -> Option<Attempt> {
        self.0.checked_add(1).map(Attempt)
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The retry budget: how many attempts a job or a step may have in total, the first included.
/// `retry: 2` in a pipeline is `MaxAttempts::from_retries(2)`, three attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MaxAttempts(NonZeroU32);

impl MaxAttempts {
    /// One attempt: no retry.
    pub const ONE: MaxAttempts = MaxAttempts(NonZeroU32::MIN);

    /// `retries` retries after the first attempt (saturating at `u32::MAX` attempts).
    pub fn from_retries(retries: u32) -> MaxAttempts {
        MaxAttempts(NonZeroU32::MIN.saturating_add(retries))
    }

    /// `n` attempts in total, or `None` for 0.
    pub fn new(n: u32) -> Option<MaxAttempts> {
        NonZeroU32::new(n).map(MaxAttempts)
    }

    /// The number of attempts in total.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The attempt that may follow `current`, if the budget has one left.
    pub fn after(self, current: Attempt) -> Option<Attempt> {
        current.next().filter(|next| next.get() <= self.get())
    }
}

/// What a transition was about: the machine and its ids, for error messages and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A run.
    Run {
        /// The run.
        run: RunId,
    },
    /// An attempt of a job.
    Job {
        /// The run the job belongs to.
        run: RunId,
        /// The job.
        job: JobId,
        /// The job's current attempt.
        attempt: Attempt,
    },
    /// An attempt of a step of a job attempt.
    Step {
        /// Which step of which job attempt.
        key: StepKey,
        /// The step's current attempt.
        attempt: Attempt,
    },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Run { run } => write!(f, "{run}"),
            Subject::Job { run, job, attempt } => write!(f, "{job} (attempt {attempt}) of {run}"),
            Subject::Step { key, attempt } => write!(
                f,
                "step {} (attempt {attempt}) of {} (attempt {}) of {}",
                key.index, key.job, key.job_attempt, key.run
            ),
        }
    }
}

/// Why a machine rejected an event, so that callers can tell harmless repeats from bugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The machine is in a terminal state: a late message, or a user acting on a finished
    /// subject (the API answers 409).
    Finished,
    /// The event was already applied or no longer concerns the subject: a repeated `cancel`, a
    /// second `start`, a `worker_lost` for a worker the job has left. Dropping it is safe
    /// (the API answers a repeated cancel as accepted).
    Stale,
    /// The event makes no sense in this state: an ordering bug or an unhandled race. Log it.
    OutOfOrder,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejection::Finished => "it has already finished",
            Rejection::Stale => "it was already applied or no longer applies",
            Rejection::OutOfOrder => "it is out of order",
        })
    }
}

/// An event a machine does not accept in its current state. The machine is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject}: event `{event}` is not accepted in state `{from}`: {rejection}")]
pub struct IllegalTransition {
    /// The machine and its ids.
    pub subject: Subject,
    /// The state's name, as [`JobState::name`] and the like give it.
    pub from: &'static str,
    /// The event's name, as [`JobEvent::name`] and the like give it.
    pub event: &'static str,
    /// Why it was rejected.
    pub rejection: Rejection,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_budget_counts_the_first_attempt() {
        let budget = MaxAttempts::from_retries(2);
        assert_eq!(budget.get(), 3);
        let second = budget.after(Attempt::FIRST);
        assert_eq!(second.map(Attempt::get), Some(2));
        let third = second.and_then(|a| budget.after(a));
        assert_eq!(third.map(Attempt::get), Some(3));
        assert_eq!(third.and_then(|a| budget.after(a)), None);
        assert_eq!(MaxAttempts::ONE.after(Attempt::FIRST), None);
    }

    #[test]
    fn budgets_and_attempts_never_overflow() {
        assert_eq!(MaxAttempts::from_retries(u32::MAX).get(), u32::MAX);
        let last = Attempt::new(u32::MAX);
        assert_eq!(last.and_then(Attempt::next), None);
        assert_eq!(
            last.and_then(|a| MaxAttempts::from_retries(u32::MAX).after(a)),
            None
        );
        assert_eq!(Attempt::new(0), None);
        assert_eq!(MaxAttempts::new(0), None);
    }

    #[test]
    fn the_lists_of_state_names_are_every_state_s_name() {
        use crate::ids::WorkerId;
        let worker = || WorkerId("w".into());
        let jobs = [
            JobState::Pending,
            JobState::WaitingApproval,
            JobState::Queued,
            JobState::Placed { worker: worker() },
            JobState::Running { worker: worker() },
            JobState::Succeeded,
            JobState::Failed {
                reason: JobFailure::TimedOut,
            },
            JobState::TimedOut,
            JobState::Cancelled,
            JobState::Skipped {
                reason: JobSkipReason::WhenFalse,
            },
        ];
        let names: Vec<&str> = jobs.iter().map(JobState::name).collect();
        assert_eq!(names, JobState::NAMES);
        // From `succeeded` on, a job is over.
        for (i, state) in jobs.iter().enumerate() {
            assert_eq!(state.is_terminal(), i >= 5, "{state:?}");
        }
        for state in RunState::ALL {
            assert_eq!(RunState::from_name(state.name()), Some(state));
        }
        assert_eq!(RunState::from_name("bogus"), None);
    }

    #[test]
    fn illegal_transition_says_what_where_and_why() {
        let err = IllegalTransition {
            subject: Subject::Job {
                run: RunId(3),
                job: JobId(7),
                attempt: Attempt::FIRST,
            },
            from: "queued",
            event: "start",
            rejection: Rejection::OutOfOrder,
        };
        assert_eq!(
            err.to_string(),
            "job-7 (attempt 1) of run-3: event `start` is not accepted in state `queued`: \
             it is out of order"
        );
    }
}
