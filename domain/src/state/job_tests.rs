//! The job machine, table-tested: every legal transition, representative illegal ones, and
//! the behaviours a CI user relies on (retries, lost workers, cancellation).

use super::*;
use crate::ids::{JobId, RunId, Timestamp, WorkerId};
use crate::state::StepExit;

fn worker(name: &str) -> WorkerId {
    WorkerId(name.into())
}

fn job(state: JobState, attempt: u32, max: u32, gate: Gate) -> JobMachine {
    let (Some(attempt), Some(max_attempts)) = (Attempt::new(attempt), MaxAttempts::new(max)) else {
        unreachable!("test attempts start at 1");
    };
    let policy = JobPolicy {
        max_attempts,
        gate,
        continue_on_error: false,
    };
    JobMachine::restore(RunId(1), JobId(2), policy, attempt, state, Timestamp(0))
}

/// A job at its first attempt, with no retry.
fn once(state: JobState) -> JobMachine {
    job(state, 1, 1, Gate::Open)
}

/// A job at its first attempt, with one retry left.
fn twice(state: JobState) -> JobMachine {
    job(state, 1, 2, Gate::Open)
}

fn placed() -> JobState {
    JobState::Placed {
        worker: worker("w1"),
    }
}

fn running() -> JobState {
    JobState::Running {
        worker: worker("w1"),
    }
}

fn step_failed() -> JobEvent {
    JobEvent::StepFailed {
        step: 1,
        failure: StepFailure::Exit(StepExit::code(1)),
    }
}

fn provider() -> JobEvent {
    JobEvent::ProviderError {
        message: "pull failed".into(),
    }
}

fn lost(name: &str) -> JobEvent {
    JobEvent::WorkerLost {
        worker: worker(name),
    }
}

#[test]
fn every_legal_transition() {
    use JobEvent as E;
    use JobState as S;
    let skip = || E::Skip {
        reason: JobSkipReason::WhenFalse,
    };
    let approve = E::Approve { by: "ana".into() };
    let place = E::Place {
        worker: worker("w1"),
    };
    let gated = job(S::Pending, 1, 1, Gate::Approval);
    let waiting = job(S::WaitingApproval, 1, 1, Gate::Approval);
    // (machine, event, state after, event kind, attempt after)
    let table: Vec<(JobMachine, JobEvent, &str, &str, u32)> = vec![
        (once(S::Pending), E::NeedsMet, "queued", "job_queued", 1),
        (
            gated,
            E::NeedsMet,
            "waiting_approval",
            "job_awaiting_approval",
            1,
        ),
        (once(S::Pending), skip(), "skipped", "job_skipped", 1),
        (waiting.clone(), approve, "queued", "job_approved", 1),
        (waiting, skip(), "skipped", "job_skipped", 1),
        (once(S::Queued), place, "placed", "job_placed", 1),
        (once(placed()), E::Start, "running", "job_started", 1),
        (once(placed()), lost("w1"), "queued", "job_requeued", 1),
        (once(placed()), provider(), "failed", "job_failed", 1),
        (twice(placed()), provider(), "queued", "job_retrying", 2),
        (once(placed()), E::TimeOut, "timed_out", "job_timed_out", 1),
        (twice(placed()), E::TimeOut, "queued", "job_retrying", 2),
        (once(running()), E::Succeed, "succeeded", "job_succeeded", 1),
        (once(running()), step_failed(), "failed", "job_failed", 1),
        (twice(running()), step_failed(), "queued", "job_retrying", 2),
        (once(running()), provider(), "failed", "job_failed", 1),
        (twice(running()), provider(), "queued", "job_retrying", 2),
        (once(running()), E::TimeOut, "timed_out", "job_timed_out", 1),
        (twice(running()), E::TimeOut, "queued", "job_retrying", 2),
        (once(running()), lost("w1"), "failed", "job_failed", 1),
        (twice(running()), lost("w1"), "queued", "job_retrying", 2),
    ];
    let cancellable = [
        S::Pending,
        S::WaitingApproval,
        S::Queued,
        placed(),
        running(),
    ];
    let cancels = cancellable
        .into_iter()
        .map(|s| (twice(s), E::Cancel, "cancelled", "job_cancelled", 1));
    for (machine, event, state, kind, attempt) in table.into_iter().chain(cancels) {
        let from = machine.state().name();
        let name = event.name();
        let Ok((next, emitted)) = machine.on(event, Timestamp(5)) else {
            panic!("{name} from {from} should be legal");
        };
        assert_eq!(
            (next.state().name(), emitted.kind(), next.attempt().get()),
            (state, kind, attempt),
            "{name} from {from}"
        );
        assert_eq!(next.since(), Timestamp(5));
    }
}

#[test]
fn representative_illegal_transitions() {
    use JobEvent as E;
    use JobState as S;
    use Rejection::{Finished, OutOfOrder, Stale};
    let place = |name: &str| E::Place {
        worker: worker(name),
    };
    let approve = E::Approve { by: "ana".into() };
    let skip = E::Skip {
        reason: JobSkipReason::RunCancelled,
    };
    let gated_running = job(running(), 1, 1, Gate::Approval);
    let table = [
        (once(S::Pending), E::Start, OutOfOrder),
        (once(S::Pending), place("w1"), OutOfOrder),
        (once(S::Pending), approve.clone(), OutOfOrder),
        (once(S::Queued), approve.clone(), OutOfOrder),
        (gated_running, approve, Stale),
        (once(S::Queued), E::NeedsMet, Stale),
        (once(S::Queued), E::Succeed, OutOfOrder),
        (once(S::Queued), lost("w1"), Stale),
        (once(S::Queued), skip.clone(), OutOfOrder),
        (once(placed()), place("w1"), Stale),
        (once(placed()), place("w2"), OutOfOrder),
        (once(placed()), lost("w2"), Stale),
        (once(placed()), E::Succeed, OutOfOrder),
        (once(placed()), step_failed(), OutOfOrder),
        (once(running()), E::Start, Stale),
        (once(running()), lost("w2"), Stale),
        (once(running()), skip, OutOfOrder),
        (once(S::Succeeded), E::Cancel, Finished),
        (once(S::Cancelled), E::Cancel, Finished),
        (once(S::TimedOut), E::NeedsMet, Finished),
    ];
    for (machine, event, rejection) in table {
        let before = machine.clone();
        let name = event.name();
        let mut after = machine;
        let err = after.apply(event, Timestamp(9));
        assert_eq!(
            err.map_err(|e| e.rejection),
            Err(rejection),
            "{name} from {}",
            before.state().name()
        );
        assert_eq!(after, before, "an illegal move leaves the job unchanged");
    }
}

#[test]
fn a_retried_job_runs_again_at_the_next_attempt_until_the_budget_is_spent() {
    let mut machine = JobMachine::new(
        RunId(1),
        JobId(2),
        JobPolicy {
            max_attempts: MaxAttempts::from_retries(1),
            ..JobPolicy::default()
        },
        Timestamp(0),
    );
    let mut kinds = Vec::new();
    for event in [
        JobEvent::NeedsMet,
        JobEvent::Place {
            worker: worker("w1"),
        },
        JobEvent::Start,
        lost("w1"),
        JobEvent::Place {
            worker: worker("w2"),
        },
        JobEvent::Start,
        step_failed(),
    ] {
        kinds.push(machine.apply(event, Timestamp(1)).map(|e| e.kind()));
    }
    assert_eq!(
        kinds,
        [
            "job_queued",
            "job_placed",
            "job_started",
            "job_retrying",
            "job_placed",
            "job_started",
            "job_failed"
        ]
        .map(Ok)
    );
    assert_eq!(machine.attempt().get(), 2);
    assert_eq!(
        machine.state(),
        &JobState::Failed {
            reason: JobFailure::Step {
                step: 1,
                failure: StepFailure::Exit(StepExit::code(1))
            }
        }
    );
}

#[test]
fn a_worker_lost_before_the_job_started_costs_no_attempt() {
    let mut machine = once(placed());
    let emitted = machine.apply(lost("w1"), Timestamp(3));
    assert_eq!(
        emitted,
        Ok(DomainEvent::JobRequeued {
            run: RunId(1),
            job: JobId(2),
            attempt: Attempt::FIRST,
            worker: worker("w1"),
            at: Timestamp(3),
        })
    );
    assert_eq!(machine.state(), &JobState::Queued);
}

#[test]
fn a_job_lost_on_its_last_attempt_fails_with_reason_lost() {
    let mut machine = once(running());
    let emitted = machine.apply(lost("w1"), Timestamp(3));
    let reason = JobFailure::Lost {
        worker: worker("w1"),
    };
    assert_eq!(
        emitted.map(|e| e.kind()),
        Ok("job_failed"),
        "no budget left: the job fails"
    );
    assert_eq!(machine.state(), &JobState::Failed { reason });
}

#[test]
fn cancellation_is_never_retried() {
    let mut machine = job(running(), 1, 5, Gate::Open);
    assert_eq!(
        machine
            .apply(JobEvent::Cancel, Timestamp(1))
            .map(|e| e.kind()),
        Ok("job_cancelled")
    );
    assert_eq!(machine.attempt(), Attempt::FIRST);
    assert!(machine.is_terminal());
}

#[test]
fn a_job_carried_over_from_the_run_it_retries_succeeds_without_running() {
    let mut machine = once(JobState::Pending);
    let event = machine.apply(JobEvent::CarryOver, Timestamp(5)).unwrap();
    assert_eq!(machine.state(), &JobState::Succeeded);
    assert_eq!(event.kind(), "job_succeeded");
    // Only a job that has not started can be carried over.
    assert!(
        once(JobState::Queued)
            .on(JobEvent::CarryOver, Timestamp(5))
            .is_err()
    );
    assert!(
        once(running())
            .on(JobEvent::CarryOver, Timestamp(5))
            .is_err()
    );
}

mod follow {
    use super::*;
    use crate::state::{JobFailure, NotFollowed, StepFailure};

    fn queued() -> JobMachine {
        let mut m = JobMachine::new(RunId(1), JobId(2), JobPolicy::default(), Timestamp(0));
        m.apply(JobEvent::NeedsMet, Timestamp(1)).unwrap();
        m
    }

    #[test]
    fn a_worker_recorded_attempt_moves_a_mirror_machine_the_same_way() {
        let mut here = queued();
        let mut there = queued();
        let worker = WorkerId("agent-1".into());
        let mut events = Vec::new();
        for (event, at) in [
            (
                JobEvent::Place {
                    worker: worker.clone(),
                },
                2,
            ),
            (JobEvent::Start, 3),
            (
                JobEvent::StepFailed {
                    step: 0,
                    failure: StepFailure::Exit(StepExit::code(3)),
                },
                4,
            ),
        ] {
            events.push(there.apply(event, Timestamp(at)).unwrap());
        }
        for event in &events {
            here.follow(event).unwrap();
        }
        assert_eq!(here, there);
        assert!(matches!(
            here.state(),
            JobState::Failed {
                reason: JobFailure::Step { step: 0, .. }
            }
        ));
    }

    #[test]
    fn an_illegal_or_foreign_event_is_refused_and_changes_nothing() {
        let mut m = queued();
        let before = m.clone();
        let succeeded = DomainEvent::JobSucceeded {
            run: RunId(1),
            job: JobId(2),
            attempt: Attempt::FIRST,
            at: Timestamp(5),
        };
        assert!(matches!(m.follow(&succeeded), Err(NotFollowed::Illegal(_))));
        let other = DomainEvent::JobStarted {
            run: RunId(1),
            job: JobId(9),
            attempt: Attempt::FIRST,
            worker: WorkerId("a".into()),
            at: Timestamp(5),
        };
        assert!(matches!(
            m.follow(&other),
            Err(NotFollowed::OtherSubject { .. })
        ));
        let queued_again = DomainEvent::JobQueued {
            run: RunId(1),
            job: JobId(2),
            attempt: Attempt::FIRST,
            at: Timestamp(5),
        };
        assert!(matches!(
            m.follow(&queued_again),
            Err(NotFollowed::NotAWorkers { .. })
        ));
        assert_eq!(m, before);
    }
}
