//! Supervision, proven by injected panics: each long-lived actor, a run actor and a job attempt
//! fail at their worst moment; each is restarted (counted), reloads what it needs, and the runs
//! end as they would have without the failure.

mod common;

use std::sync::{Arc, Mutex};

use common::{Options, harness_with, quiet_injected_panics, state_of};
use hodei_actors::contain::ActorKind;
use hodei_actors::fault::{Faults, Hits, Point};
use hodei_actors::messages::{CancelRun, Definition, SubmitRun};
use hodei_adapters::fake::Call;
use hodei_domain::plan::RunInputs;
use hodei_domain::state::{JobState, RunState};

const PIPELINE: &str = "name: p\njobs:\n  a: {steps: [emit 3]}\n  b: {needs: [a], steps: [emit 2]}\n  c: {steps: [emit 1]}\n";

/// Runs [`PIPELINE`] with a panic planned at `point`, and checks that `kind` restarted and the
/// run succeeded with complete logs.
async fn survives(name: &str, point: Point, hits: Hits, kind: ActorKind) {
    survives_with(PIPELINE, name, point, hits, kind).await;
}

async fn survives_with(pipeline: &str, name: &str, point: Point, hits: Hits, kind: ActorKind) {
    let h = harness_with(
        name,
        Options {
            faults: Faults::panic_at(point, hits),
            ..Options::default()
        },
    )
    .await;
    quiet_injected_panics();
    let run = h.submit(pipeline, RunInputs::default()).await;
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.jobs);
    assert!(
        h.tree.restarts.get(kind) > 0,
        "the {} actor was restarted",
        kind.name()
    );
    for (job, lines) in [("a", 3), ("b", 2), ("c", 1)] {
        let log = h.log(&record, job).await;
        // A try that was lost may have printed part of its output before the retry's.
        let output: Vec<&str> = log.lines().filter(|l| l.starts_with("line")).collect();
        let expected: Vec<String> = (1..=lines).map(|i| format!("line {i}")).collect();
        assert!(
            output.ends_with(&expected.iter().map(String::as_str).collect::<Vec<_>>()),
            "the log of {job} ends with its complete output: {log}"
        );
    }
}

#[actix_rt::test]
async fn the_event_bus_is_restarted_after_a_panic() {
    survives("bus", Point::Publish, Hits::Nth(2), ActorKind::EventBus).await;
}

#[actix_rt::test]
async fn the_log_hub_is_restarted_after_a_panic_mid_write_and_keeps_the_log() {
    // The output is complete; where it may not have been, the log says so.
    survives("hub", Point::MidLogWrite, Hits::Nth(2), ActorKind::LogHub).await;
}

#[actix_rt::test]
async fn the_scheduler_is_restarted_after_a_panic_and_places_what_waited() {
    survives("sched", Point::Place, Hits::Nth(2), ActorKind::Scheduler).await;
}

#[actix_rt::test]
async fn a_run_actor_is_restarted_after_a_panic_in_its_reconcile() {
    // A step that runs when its run actor fails is stopped and lost, as in a crash of Hodei;
    // with a retry left, the next run actor tries it again in the job's workspace.
    let pipeline = "name: p\njobs:\n  a: {steps: [{run: emit 3, retry: 1}]}\n  b: {needs: [a], steps: [{run: emit 2, retry: 1}]}\n  c: {steps: [{run: emit 1, retry: 1}]}\n";
    survives_with(
        pipeline,
        "reconcile",
        Point::Reconcile,
        Hits::Nth(3),
        ActorKind::Run,
    )
    .await;
}

#[actix_rt::test]
async fn the_worker_registry_finishes_a_registration_a_panic_interrupted() {
    // The local worker's registration itself fails: without the restart, no job could run.
    survives(
        "registry",
        Point::RegisterWorker,
        Hits::Nth(1),
        ActorKind::WorkerRegistry,
    )
    .await;
}

#[actix_rt::test]
async fn the_orchestrator_answers_a_failed_submission_and_accepts_the_next() {
    let h = harness_with(
        "orchestrator",
        Options {
            faults: Faults::panic_at(Point::SubmitRun, Hits::Nth(1)),
            ..Options::default()
        },
    )
    .await;
    quiet_injected_panics();
    let first = h
        .tree
        .orchestrator
        .send(SubmitRun {
            definition: Definition::Text(PIPELINE.into()),
            inputs: RunInputs::default(),
            limit: None,
        })
        .await
        .expect("the orchestrator answers");
    let err = first.expect_err("the first submission fails");
    assert!(err.to_string().contains("internal error"), "{err}");
    let run = h.submit(PIPELINE, RunInputs::default()).await;
    assert_eq!(h.finished(run).await.state, RunState::Succeeded);
    assert_eq!(h.tree.restarts.get(ActorKind::Orchestrator), 1);
}

#[actix_rt::test]
async fn a_crashed_attempt_stops_its_step_before_the_job_is_retried() {
    let h = harness_with(
        "attempt",
        Options {
            faults: Faults::panic_at(Point::AfterStepStart, Hits::Nth(1)),
            ..Options::default()
        },
    )
    .await;
    quiet_injected_panics();
    let run = h
        .submit(
            "name: p\njobs:\n  a: {retry: 1, steps: ['sleep 50']}\n",
            RunInputs::default(),
        )
        .await;
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.jobs);
    assert_eq!(record.jobs[0].attempt.get(), 2, "the retry succeeded");
    let calls = h.provider.calls();
    let first = |call: &Call| {
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("no {call:?} in {calls:?}"))
    };
    let job = record.jobs[0].id;
    let one = hodei_domain::state::Attempt::FIRST;
    let destroyed = first(&Call::DestroyStep {
        job,
        index: 0,
        attempt: one,
    });
    let torn_down = first(&Call::TearDown {
        run,
        job,
        attempt: one,
    });
    let second = calls
        .iter()
        .position(|c| matches!(c, Call::SetUp { attempt, .. } if attempt.get() == 2))
        .expect("a second attempt");
    assert!(
        destroyed < second && torn_down < second,
        "the first attempt's step is stopped before the second starts: {calls:?}"
    );
    assert!(h.log(&record, "a").await.contains("was lost"));
}

#[actix_rt::test]
async fn an_actor_that_keeps_failing_is_escalated_to_the_tree() {
    let escalated = Arc::new(Mutex::new(Vec::new()));
    let seen = escalated.clone();
    let h = harness_with(
        "escalate",
        Options {
            faults: Faults::panic_at(Point::Place, Hits::From(1)),
            config: Box::new(move |config| {
                config.restart_policy.max_restarts = 2;
                config.escalation = Arc::new(move |e| seen.lock().unwrap().push(e));
            }),
            ..Options::default()
        },
    )
    .await;
    quiet_injected_panics();
    let run = h.submit(PIPELINE, RunInputs::default()).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while escalated.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never escalated: likely deadlocked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let first = escalated.lock().unwrap()[0].clone();
    assert_eq!(first.actor, ActorKind::Scheduler);
    assert_eq!(first.restarts, 2);
    assert!(first.reason.contains("fault injection"), "{}", first.reason);
    let record = h.store_run(run).await;
    assert!(
        !record.state.is_terminal(),
        "nothing was placed, nothing was lost: the run waits for the next start"
    );
    assert!(matches!(state_of(&record, "a"), JobState::Queued));
}

#[actix_rt::test]
async fn a_run_whose_actor_gave_up_is_still_cancelled_when_asked() {
    // Its run actor fails three times in a row with a budget of two restarts: the run waits for
    // the next start of Hodei. A cancel then starts a new actor, which cancels the run.
    let h = harness_with(
        "parked-cancel",
        Options {
            faults: Faults::panic_at(Point::Reconcile, Hits::UpTo(3)),
            config: Box::new(|config| {
                config.restart_policy.max_restarts = 2;
                config.escalation = Arc::new(|_| {});
            }),
            ..Options::default()
        },
    )
    .await;
    quiet_injected_panics();
    let pipeline = "name: p\njobs:\n  a: {steps: [sleep 60000]}\n";
    let run = h.submit(pipeline, RunInputs::default()).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while h.tree.ports.faults.count() < 3 || h.tree.restarts.get(ActorKind::Run) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run actor never failed: likely deadlocked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Let the orchestrator see the third failure and give up.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!h.store_run(run).await.state.is_terminal());
    h.tree.orchestrator.do_send(CancelRun {
        run,
        by: "tester".into(),
    });
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Cancelled, "{:?}", record.jobs);
}

/// Pauses the first attempt of a one-step job at `point`, checks what the store says there with
/// `between`, then makes the attempt crash there: the job's retry runs it again, to success.
async fn crash_between_writes(point: Point, between: impl Fn(&hodei_domain::ports::JobRecord)) {
    let (faults, stepper) = Faults::pause_at(point, 1);
    let h = harness_with(
        point.name(),
        Options {
            faults,
            ..Options::default()
        },
    )
    .await;
    quiet_injected_panics();
    let run = h
        .submit(
            "name: p\njobs:\n  a: {retry: 1, steps: [emit 2]}\n",
            RunInputs::default(),
        )
        .await;
    stepper.reached().await;
    between(&h.store_run(run).await.jobs[0]);
    stepper.crash();
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.jobs);
    assert_eq!(record.jobs[0].attempt.get(), 2, "the retry succeeded");
    assert_eq!(h.tree.restarts.get(ActorKind::Job), 1);
    let log = h.log(&record, "a").await;
    assert!(log.ends_with("line 1\nline 2\n"), "{log}");
}

#[actix_rt::test]
async fn a_crash_between_the_start_of_a_job_and_its_first_step_retries_the_job() {
    crash_between_writes(Point::AfterPlace, |job| {
        assert!(matches!(job.state, JobState::Running { .. }), "{job:?}");
        assert!(job.steps.is_empty(), "no step started yet: {job:?}");
    })
    .await;
}

#[actix_rt::test]
async fn a_crash_between_a_step_s_exit_and_its_record_does_not_invent_the_exit() {
    crash_between_writes(Point::AfterStepExit, |job| {
        assert_eq!(job.steps.len(), 1, "{job:?}");
        assert_eq!(
            job.steps[0].state,
            hodei_domain::state::StepState::Running,
            "the exit is not recorded yet"
        );
    })
    .await;
}
