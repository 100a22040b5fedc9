//! The run machine.

use serde::{Deserialize, Serialize};

use super::{DomainEvent, IllegalTransition, Rejection, Subject, Verdict};
use crate::ids::{RunId, Timestamp};

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    /// Accepted, not started yet.
    Pending,
    /// Its jobs are being walked.
    Running,
    /// Cancel requested: no new job starts, running jobs are stopped, `post` hooks run.
    Cancelling,
    /// Done, no job failed.
    Succeeded,
    /// Done, some job failed.
    Failed,
    /// Done, cancelled.
    Cancelled,
}

impl RunState {
    /// Every state, in the order a run goes through them.
    pub const ALL: [RunState; 6] = [
        RunState::Pending,
        RunState::Running,
        RunState::Cancelling,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// The state named `name` (as [`RunState::name`] gives it).
    pub fn from_name(name: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|state| state.name() == name)
    }

    /// The state's name as the API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Cancelling => "cancelling",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Whether the run is done: nothing moves it any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to a run, as the orchestrator and the run actor tell it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunEvent {
    /// The run actor starts walking the jobs.
    Start,
    /// Someone (or something: a concurrency group, a shutdown) asks to cancel the run.
    Cancel {
        /// Who asked: a user name, or `hodei` for the system.
        by: String,
    },
    /// Every job is terminal; their [`verdict`](super::verdict).
    Finish(Verdict),
}

impl RunEvent {
    /// The event's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            RunEvent::Start => "start",
            RunEvent::Cancel { .. } => "cancel",
            RunEvent::Finish(_) => "finish",
        }
    }
}

/// A run. Start with [`RunMachine::new`]; move it with [`RunMachine::apply`] (or
/// [`RunMachine::on`]).
///
/// `cancel` is accepted while `pending` or `running` and moves to `cancelling`, whatever the
/// jobs are doing; the run actor then skips or cancels them, runs the `post` hooks, and sends
/// `finish`, which from `cancelling` always ends in `cancelled`. A second `cancel` is rejected
/// as [`Rejection::Stale`]: it yields no second event, and the API answers it as accepted
/// (idempotent). A `cancel` of a finished run is rejected as [`Rejection::Finished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMachine {
    id: RunId,
    state: RunState,
    since: Timestamp,
}

impl RunMachine {
    /// A run accepted at `at`, not started yet.
    pub fn new(id: RunId, at: Timestamp) -> RunMachine {
        RunMachine::restore(id, RunState::Pending, at)
    }

    /// A run as the store last recorded it.
    pub fn restore(id: RunId, state: RunState, since: Timestamp) -> RunMachine {
        RunMachine { id, state, since }
    }

    /// The run.
    pub fn id(&self) -> RunId {
        self.id
    }

    /// The current state.
    pub fn state(&self) -> RunState {
        self.state
    }

    /// When the run entered its current state.
    pub fn since(&self) -> Timestamp {
        self.since
    }

    /// Whether nothing moves the run any more.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// Applies `event` at `at` and returns the event it yields.
    ///
    /// # Errors
    ///
    /// [`IllegalTransition`] if the current state does not accept `event`; the machine is then
    /// left unchanged.
    pub fn apply(
        &mut self,
        event: RunEvent,
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
        event: RunEvent,
        at: Timestamp,
    ) -> Result<(RunMachine, DomainEvent), IllegalTransition> {
        use RunEvent as E;
        use RunState as S;
        let run = self.id;
        let (state, emitted) = match (self.state, event) {
            (S::Pending, E::Start) => (S::Running, DomainEvent::RunStarted { run, at }),
            (S::Pending | S::Running, E::Cancel { by }) => (
                S::Cancelling,
                DomainEvent::RunCancelRequested { run, by, at },
            ),
            (S::Running, E::Finish(Verdict::Succeeded)) => {
                (S::Succeeded, DomainEvent::RunSucceeded { run, at })
            }
            (S::Running, E::Finish(Verdict::Failed { failed_jobs })) => (
                S::Failed,
                DomainEvent::RunFailed {
                    run,
                    failed_jobs,
                    at,
                },
            ),
            (S::Running, E::Finish(Verdict::Cancelled)) | (S::Cancelling, E::Finish(_)) => {
                (S::Cancelled, DomainEvent::RunCancelled { run, at })
            }
            (state, event) => {
                let rejection = match (state, &event) {
                    _ if state.is_terminal() => Rejection::Finished,
                    (S::Running | S::Cancelling, E::Start) | (S::Cancelling, E::Cancel { .. }) => {
                        Rejection::Stale
                    }
                    _ => Rejection::OutOfOrder,
                };
                return Err(IllegalTransition {
                    subject: Subject::Run { run },
                    from: state.name(),
                    event: event.name(),
                    rejection,
                });
            }
        };
        Ok((RunMachine::restore(run, state, at), emitted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;

    fn run(state: RunState) -> RunMachine {
        RunMachine::restore(RunId(4), state, Timestamp(0))
    }

    fn cancel() -> RunEvent {
        RunEvent::Cancel { by: "ana".into() }
    }

    fn failed() -> Verdict {
        Verdict::Failed {
            failed_jobs: vec![JobId(1)],
        }
    }

    #[test]
    fn every_legal_transition() {
        use RunEvent::{Finish, Start};
        use RunState as S;
        use Verdict::{Cancelled, Succeeded};
        // (state before, event, state after, event kind)
        let table = [
            (S::Pending, Start, "running", "run_started"),
            (S::Pending, cancel(), "cancelling", "run_cancel_requested"),
            (S::Running, cancel(), "cancelling", "run_cancel_requested"),
            (S::Running, Finish(Succeeded), "succeeded", "run_succeeded"),
            (S::Running, Finish(failed()), "failed", "run_failed"),
            (S::Running, Finish(Cancelled), "cancelled", "run_cancelled"),
            (
                S::Cancelling,
                Finish(Succeeded),
                "cancelled",
                "run_cancelled",
            ),
            (
                S::Cancelling,
                Finish(failed()),
                "cancelled",
                "run_cancelled",
            ),
            (
                S::Cancelling,
                Finish(Cancelled),
                "cancelled",
                "run_cancelled",
            ),
        ];
        for (from, event, state, kind) in table {
            let name = event.name();
            let Ok((next, emitted)) = run(from).on(event, Timestamp(5)) else {
                panic!("{name} from {} should be legal", from.name());
            };
            assert_eq!((next.state().name(), emitted.kind()), (state, kind));
            assert_eq!((next.since(), emitted.at()), (Timestamp(5), Timestamp(5)));
        }
    }

    #[test]
    fn representative_illegal_transitions() {
        use Rejection::{Finished, OutOfOrder, Stale};
        use RunEvent::{Finish, Start};
        use RunState as S;
        let table = [
            (S::Pending, Finish(Verdict::Succeeded), OutOfOrder),
            (S::Running, Start, Stale),
            (S::Cancelling, Start, Stale),
            (S::Succeeded, Start, Finished),
            (S::Failed, Finish(failed()), Finished),
            (S::Cancelled, Finish(Verdict::Cancelled), Finished),
        ];
        for (from, event, rejection) in table {
            let mut machine = run(from);
            let err = machine.apply(event, Timestamp(9));
            assert_eq!(err.map_err(|e| e.rejection), Err(rejection));
            assert_eq!(
                machine,
                run(from),
                "an illegal move leaves the run unchanged"
            );
        }
    }

    #[test]
    fn cancel_of_a_cancelling_run_is_a_stale_repeat_with_no_second_event() {
        let mut machine = run(RunState::Running);
        assert!(machine.apply(cancel(), Timestamp(1)).is_ok());
        let again = machine.apply(cancel(), Timestamp(2));
        let Err(err) = again else {
            panic!("a second cancel must not yield a second event");
        };
        assert_eq!(
            (err.from, err.event, err.rejection),
            ("cancelling", "cancel", Rejection::Stale)
        );
        assert_eq!(machine.state(), RunState::Cancelling);
        assert_eq!(machine.since(), Timestamp(1));
    }

    #[test]
    fn cancel_of_a_finished_run_is_illegal() {
        for finished in [RunState::Succeeded, RunState::Failed, RunState::Cancelled] {
            let err = run(finished)
                .on(cancel(), Timestamp(1))
                .map(|(m, _)| m.state());
            assert_eq!(
                err.map_err(|e| (e.from, e.rejection)),
                Err((finished.name(), Rejection::Finished))
            );
        }
    }

    #[test]
    fn a_cancelled_run_stays_cancelled_even_if_every_job_succeeded() {
        let mut machine = run(RunState::Cancelling);
        let emitted = machine.apply(RunEvent::Finish(Verdict::Succeeded), Timestamp(1));
        assert_eq!(
            emitted,
            Ok(DomainEvent::RunCancelled {
                run: RunId(4),
                at: Timestamp(1)
            })
        );
    }
}
