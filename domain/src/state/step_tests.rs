//! The step machine, table-tested: every legal transition, representative illegal ones, and
//! how exits, timeouts and losses become failures or retries.

use super::*;
use crate::ids::{JobId, RunId, Timestamp};

fn key() -> StepKey {
    StepKey {
        run: RunId(1),
        job: JobId(2),
        job_attempt: Attempt::FIRST,
        index: 3,
    }
}

fn step(state: StepState, attempt: u32, max: u32) -> StepMachine {
    let (Some(attempt), Some(max)) = (Attempt::new(attempt), MaxAttempts::new(max)) else {
        unreachable!("test attempts start at 1");
    };
    StepMachine::restore(key(), max, attempt, state, Timestamp(0))
}

fn pending(attempt: u32, max: u32) -> StepMachine {
    step(StepState::Pending, attempt, max)
}

fn running(attempt: u32, max: u32) -> StepMachine {
    step(StepState::Running, attempt, max)
}

fn exited(code: i32) -> StepEvent {
    StepEvent::Exited(StepExit::code(code))
}

fn provider() -> StepEvent {
    StepEvent::ProviderError {
        message: "image not found".into(),
    }
}

fn skip() -> StepEvent {
    StepEvent::Skip {
        reason: StepSkipReason::EarlierStepFailed,
    }
}

#[test]
fn every_legal_transition() {
    use StepEvent as E;
    let killed = E::Exited(StepExit::signal(9));
    // (machine, event, state after, event kind, attempt after)
    let table: Vec<(StepMachine, StepEvent, &str, &str, u32)> = vec![
        (
            pending(1, 1),
            E::Start {
                log_offset: Some(0),
            },
            "running",
            "step_started",
            1,
        ),
        (pending(1, 1), skip(), "skipped", "step_skipped", 1),
        (pending(1, 1), E::Cancel, "cancelled", "step_cancelled", 1),
        (pending(1, 1), provider(), "failed", "step_failed", 1),
        (pending(1, 2), provider(), "pending", "step_retrying", 2),
        (running(1, 1), E::Cancel, "cancelled", "step_cancelled", 1),
        (running(1, 1), exited(0), "succeeded", "step_succeeded", 1),
        (running(1, 1), exited(2), "failed", "step_failed", 1),
        (running(1, 2), exited(2), "pending", "step_retrying", 2),
        (running(2, 3), killed, "pending", "step_retrying", 3),
        (running(1, 1), E::TimeOut, "timed_out", "step_timed_out", 1),
        (running(1, 2), E::TimeOut, "pending", "step_retrying", 2),
        (running(1, 1), E::Lost, "failed", "step_failed", 1),
        (running(1, 2), E::Lost, "pending", "step_retrying", 2),
        (running(1, 1), provider(), "failed", "step_failed", 1),
        (running(1, 2), provider(), "pending", "step_retrying", 2),
    ];
    for (machine, event, state, kind, attempt) in table {
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
    use Rejection::{Finished, OutOfOrder, Stale};
    use StepEvent as E;
    let table = [
        (pending(1, 1), exited(0), OutOfOrder),
        (pending(1, 1), E::Lost, OutOfOrder),
        (pending(1, 1), E::TimeOut, OutOfOrder),
        (
            running(1, 1),
            E::Start {
                log_offset: Some(0),
            },
            Stale,
        ),
        (running(1, 1), skip(), OutOfOrder),
        (step(StepState::Succeeded, 1, 1), E::Cancel, Finished),
        (
            step(StepState::Cancelled, 1, 3),
            E::Start {
                log_offset: Some(0),
            },
            Finished,
        ),
        (step(StepState::TimedOut, 1, 1), E::TimeOut, Finished),
    ];
    for (machine, event, rejection) in table {
        let before = machine.clone();
        let mut after = machine;
        let err = after.apply(event, Timestamp(9));
        assert_eq!(err.map_err(|e| e.rejection), Err(rejection));
        assert_eq!(after, before, "an illegal move leaves the step unchanged");
    }
}

#[test]
fn retry_carries_the_cause_and_the_next_attempt() {
    let Ok((next, emitted)) = running(1, 2).on(StepEvent::Lost, Timestamp(7)) else {
        panic!("lost with budget left is retried");
    };
    assert_eq!(
        emitted,
        DomainEvent::StepRetrying {
            run: RunId(1),
            job: JobId(2),
            job_attempt: Attempt::FIRST,
            step: 3,
            attempt: Attempt::FIRST,
            cause: StepFailure::Lost,
            next_attempt: next.attempt(),
            at: Timestamp(7),
        }
    );
    assert_eq!(next.state(), &StepState::Pending);
}

#[test]
fn oom_killed_step_fails_even_with_exit_code_zero() {
    let exit = StepExit {
        code: Some(0),
        signal: None,
        oom_killed: true,
    };
    let mut machine = running(1, 1);
    let emitted = machine.apply(StepEvent::Exited(exit), Timestamp(1));
    assert_eq!(emitted.map(|e| e.kind()), Ok("step_failed"));
    assert_eq!(
        machine.state(),
        &StepState::Failed {
            failure: StepFailure::Exit(exit)
        }
    );
}

#[test]
fn a_final_timeout_is_its_own_state_not_a_failure() {
    let mut machine = running(2, 2);
    let emitted = machine.apply(StepEvent::TimeOut, Timestamp(1));
    assert_eq!(emitted.map(|e| e.kind()), Ok("step_timed_out"));
    assert_eq!(machine.state(), &StepState::TimedOut);
}
