//! Property tests of the three machines: random event sequences never panic, never leave a
//! terminal state, yield exactly one event per accepted transition whose kind matches the new
//! state, and attempt numbers only grow, by one per retry, within the budget.

use proptest::prelude::*;

use super::*;
use crate::ids::{JobId, RunId, Timestamp, WorkerId};

fn worker() -> impl Strategy<Value = WorkerId> {
    prop_oneof![Just("w1"), Just("w2")].prop_map(|w| WorkerId(w.to_owned()))
}

fn exit() -> impl Strategy<Value = StepExit> {
    (
        prop::option::of(-1..3i32),
        prop::option::of(9..10i32),
        any::<bool>(),
    )
        .prop_map(|(code, signal, oom_killed)| StepExit {
            code,
            signal,
            oom_killed,
        })
}

fn step_failure() -> impl Strategy<Value = StepFailure> {
    prop_oneof![
        exit().prop_map(StepFailure::Exit),
        Just(StepFailure::TimedOut),
        Just(StepFailure::Lost),
        Just(StepFailure::Provider {
            message: "boom".into()
        }),
    ]
}

fn job_event() -> impl Strategy<Value = JobEvent> {
    // Weighted towards progress, so that sequences reach running jobs and their retries.
    prop_oneof![
        3 => Just(JobEvent::NeedsMet),
        3 => Just(JobEvent::Approve { by: "ana".into() }),
        1 => prop_oneof![
            Just(JobSkipReason::WhenFalse),
            Just(JobSkipReason::NeedFailed { job: JobId(9) }),
            Just(JobSkipReason::RunCancelled),
        ]
        .prop_map(|reason| JobEvent::Skip { reason }),
        4 => worker().prop_map(|worker| JobEvent::Place { worker }),
        4 => Just(JobEvent::Start),
        1 => Just(JobEvent::Succeed),
        2 => (0..3u32, step_failure())
            .prop_map(|(step, failure)| JobEvent::StepFailed { step, failure }),
        1 => Just(JobEvent::ProviderError {
            message: "no pod".into()
        }),
        1 => Just(JobEvent::TimeOut),
        2 => worker().prop_map(|worker| JobEvent::WorkerLost { worker }),
        1 => Just(JobEvent::Cancel),
    ]
}

fn step_event() -> impl Strategy<Value = StepEvent> {
    prop_oneof![
        4 => any::<Option<u64>>().prop_map(|log_offset| StepEvent::Start { log_offset }),
        2 => exit().prop_map(StepEvent::Exited),
        1 => Just(StepEvent::Exited(StepExit::code(0))),
        1 => Just(StepEvent::TimeOut),
        1 => Just(StepEvent::Lost),
        1 => Just(StepEvent::ProviderError {
            message: "gone".into()
        }),
        1 => Just(StepEvent::Cancel),
        1 => Just(StepEvent::Skip {
            reason: StepSkipReason::EarlierStepFailed
        }),
    ]
}

fn run_event() -> impl Strategy<Value = RunEvent> {
    prop_oneof![
        3 => Just(RunEvent::Start),
        1 => Just(RunEvent::Cancel { by: "ana".into() }),
        1 => Just(RunEvent::Finish(Verdict::Succeeded)),
        1 => Just(RunEvent::Finish(Verdict::Failed {
            failed_jobs: vec![JobId(1)]
        })),
        1 => Just(RunEvent::Finish(Verdict::Cancelled)),
    ]
}

/// Events with increasing instants.
fn timed<E: std::fmt::Debug>(
    events: impl Strategy<Value = E>,
) -> impl Strategy<Value = Vec<(E, Timestamp)>> {
    prop::collection::vec((events, 0..1_000i64), 0..40).prop_map(|events| {
        let mut now = 0;
        events
            .into_iter()
            .map(|(event, step)| {
                now += step;
                (event, Timestamp(now))
            })
            .collect()
    })
}

/// The checks every machine shares, given the machine before and after an `apply`.
fn check_outcome(
    result: Result<DomainEvent, IllegalTransition>,
    (was_terminal, from, run): (bool, &'static str, RunId),
    (state_now, at): (&'static str, Timestamp),
) -> Result<(), TestCaseError> {
    match result {
        Ok(emitted) => {
            prop_assert!(!was_terminal, "left terminal state {from}");
            prop_assert!(DomainEvent::KINDS.contains(&emitted.kind()));
            prop_assert_eq!(emitted.state_after(), state_now, "{:?}", emitted);
            prop_assert_eq!(emitted.run_id(), run);
            prop_assert_eq!(emitted.at(), at);
        }
        Err(err) => {
            prop_assert_eq!(err.from, from);
            prop_assert_eq!(err.rejection == Rejection::Finished, was_terminal);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn job_machine_survives_any_sequence(
        max in 1..4u32,
        gated in any::<bool>(),
        events in timed(job_event()),
    ) {
        let policy = JobPolicy {
            max_attempts: MaxAttempts::new(max).unwrap_or(MaxAttempts::ONE),
            gate: if gated { Gate::Approval } else { Gate::Open },
            continue_on_error: false,
        };
        let mut job = JobMachine::new(RunId(1), JobId(2), policy, Timestamp(0));
        for (event, at) in events {
            let before = job.clone();
            let result = job.apply(event, at);
            if result.is_err() {
                prop_assert_eq!(&job, &before, "an illegal move changed the job");
            }
            let retried = matches!(result, Ok(DomainEvent::JobRetrying { .. }));
            let attempt_field = match &result {
                Ok(DomainEvent::JobRetrying { attempt, next_attempt, .. }) => {
                    prop_assert_eq!(*next_attempt, job.attempt());
                    Some(*attempt)
                }
                Ok(e) => match e {
                    DomainEvent::JobAwaitingApproval { attempt, .. }
                    | DomainEvent::JobApproved { attempt, .. }
                    | DomainEvent::JobQueued { attempt, .. }
                    | DomainEvent::JobPlaced { attempt, .. }
                    | DomainEvent::JobRequeued { attempt, .. }
                    | DomainEvent::JobStarted { attempt, .. }
                    | DomainEvent::JobSucceeded { attempt, .. }
                    | DomainEvent::JobFailed { attempt, .. }
                    | DomainEvent::JobTimedOut { attempt, .. }
                    | DomainEvent::JobCancelled { attempt, .. }
                    | DomainEvent::JobSkipped { attempt, .. } => Some(*attempt),
                    other => return Err(TestCaseError::fail(format!("not a job event: {other:?}"))),
                },
                Err(_) => None,
            };
            if let Some(attempt) = attempt_field {
                prop_assert_eq!(attempt, before.attempt(), "events carry the attempt they end");
            }
            if let Ok(emitted) = &result {
                prop_assert_eq!(emitted.job_id(), Some(before.id()));
            }
            check_outcome(
                result,
                (before.is_terminal(), before.state().name(), before.run()),
                (job.state().name(), at),
            )?;
            prop_assert!(job.attempt() >= before.attempt(), "attempts never shrink");
            let grew = job.attempt().get() - before.attempt().get();
            prop_assert_eq!(grew, u32::from(retried), "attempts grow by one per retry only");
            prop_assert!(job.attempt().get() <= max);
            let timed_out_failure = matches!(
                job.state(),
                JobState::Failed { reason: JobFailure::TimedOut }
            );
            prop_assert!(!timed_out_failure, "a final timeout is the timed_out state");
        }
    }

    #[test]
    fn step_machine_survives_any_sequence(max in 1..4u32, events in timed(step_event())) {
        let key = StepKey { run: RunId(1), job: JobId(2), job_attempt: Attempt::FIRST, index: 0 };
        let budget = MaxAttempts::new(max).unwrap_or(MaxAttempts::ONE);
        let mut step = StepMachine::new(key, budget, Timestamp(0));
        for (event, at) in events {
            let before = step.clone();
            let result = step.apply(event, at);
            if result.is_err() {
                prop_assert_eq!(&step, &before, "an illegal move changed the step");
            }
            let retried = matches!(result, Ok(DomainEvent::StepRetrying { .. }));
            if let Ok(DomainEvent::StepRetrying { attempt, next_attempt, .. }) = &result {
                prop_assert_eq!((*attempt, *next_attempt), (before.attempt(), step.attempt()));
            }
            if let Ok(emitted) = &result {
                prop_assert_eq!(emitted.job_id(), Some(key.job));
            }
            check_outcome(
                result,
                (before.is_terminal(), before.state().name(), key.run),
                (step.state().name(), at),
            )?;
            prop_assert!(step.attempt() >= before.attempt(), "attempts never shrink");
            let grew = step.attempt().get() - before.attempt().get();
            prop_assert_eq!(grew, u32::from(retried), "attempts grow by one per retry only");
            prop_assert!(step.attempt().get() <= max);
            let timed_out_failure = matches!(
                step.state(),
                StepState::Failed { failure: StepFailure::TimedOut }
            );
            prop_assert!(!timed_out_failure, "a final timeout is the timed_out state");
        }
    }

    #[test]
    fn run_machine_survives_any_sequence(events in timed(run_event())) {
        let mut run = RunMachine::new(RunId(1), Timestamp(0));
        let mut cancel_requests = 0;
        for (event, at) in events {
            let before = run.clone();
            let result = run.apply(event, at);
            if result.is_err() {
                prop_assert_eq!(&run, &before, "an illegal move changed the run");
            }
            if let Ok(emitted) = &result {
                prop_assert_eq!(emitted.job_id(), None);
            }
            if matches!(result, Ok(DomainEvent::RunCancelRequested { .. })) {
                cancel_requests += 1;
            }
            if before.state() == RunState::Cancelling && run.is_terminal() {
                prop_assert_eq!(run.state(), RunState::Cancelled, "a cancelling run ends cancelled");
            }
            check_outcome(
                result,
                (before.is_terminal(), before.state().name(), before.id()),
                (run.state().name(), at),
            )?;
        }
        prop_assert!(cancel_requests <= 1, "cancel is requested at most once");
    }
}
