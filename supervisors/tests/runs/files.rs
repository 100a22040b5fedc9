//! Artifacts, caches and schedules through the actors: the `FakeProvider`'s workspaces are
//! maps of files (`touch`, `expect`), the file store a real directory, the timer on an
//! injected clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix::Supervisor;
use hodei_actors::contain::ActorKind;
use hodei_actors::fault::{Faults, Hits, Point};
use hodei_actors::supervise::Restarts;
use hodei_actors::timer::{Timer, TimerSettings};
use hodei_adapters::clock::SystemClock;
use hodei_domain::ids::Timestamp;
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{Clock, FileStore, RunFilter, RunSummary, Store, TickStore};
use hodei_domain::restart::RestartPolicy;
use hodei_domain::state::{JobState, RunState};

use super::common::{Harness, Options, harness, harness_with, state_of};

#[actix_rt::test]
async fn artifacts_of_a_job_reach_the_jobs_that_need_it_and_are_listed() {
    let h = harness("artifacts", 2, vec![]).await;
    let run = h
        .submit(
            "name: p\njobs:\n  build:\n    steps: ['touch dist/app.js; touch dist/css/a.css; touch notes.txt']\n    artifacts: [dist]\n  test:\n    needs: [build]\n    steps: ['expect dist/app.js; expect dist/css/a.css']\n  lone:\n    steps: ['expect dist/app.js']\n",
            RunInputs::default(),
        )
        .await;
    let record = h.finished(run).await;
    assert_eq!(*state_of(&record, "build"), JobState::Succeeded);
    assert_eq!(
        *state_of(&record, "test"),
        JobState::Succeeded,
        "{}",
        h.log(&record, "test").await
    );
    // A job that does not need `build` gets nothing.
    assert!(matches!(state_of(&record, "lone"), JobState::Failed { .. }));
    let listed = h.files.artifacts(run).await.unwrap();
    let paths: Vec<&str> = listed.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(paths, ["dist/app.js", "dist/css/a.css"]);
    assert!(listed.iter().all(|a| a.job_name == "build"));
    assert!(
        h.log(&record, "build")
            .await
            .contains("[hodei] kept 2 artifact file(s)")
    );
    assert!(
        h.log(&record, "test")
            .await
            .contains("[hodei] restored 2 artifact file(s)")
    );
}

#[actix_rt::test]
async fn a_failed_job_keeps_no_artifacts() {
    let h = harness("artifacts-failed", 2, vec![]).await;
    let run = h
        .submit(
            "name: p\njobs:\n  build:\n    steps: ['touch dist/app.js; exit 1']\n    artifacts: [dist]\n",
            RunInputs::default(),
        )
        .await;
    assert_eq!(h.finished(run).await.state, RunState::Failed);
    assert!(h.files.artifacts(run).await.unwrap().is_empty());
}

const CACHED: &str = "name: p\njobs:\n  build:\n    steps: ['{STEP}']\n    cache: { key: \"deps-{{ hash('lock') }}\", fallback: [deps-], paths: [target] }\n";

fn on_branch(branch: &str) -> RunInputs {
    RunInputs {
        branch: branch.into(),
        ..RunInputs::default()
    }
}

#[actix_rt::test]
async fn a_cache_misses_first_then_hits_on_the_branch_and_on_the_default_branch() {
    let h = harness("caches", 2, vec![]).await;
    // First run: nothing saved yet; the step makes `target/`, which is saved.
    let first = h
        .submit(
            &CACHED.replace("{STEP}", "touch target/out"),
            on_branch("main"),
        )
        .await;
    let record = h.finished(first).await;
    assert_eq!(record.state, RunState::Succeeded);
    let log = h.log(&record, "build").await;
    assert!(log.contains("[hodei] cache `deps-missing` missed"), "{log}");
    assert!(log.contains("[hodei] cache `deps-missing` saved"), "{log}");
    // Second run on the same branch: restored before the step, which needs it.
    let second = h
        .submit(
            &CACHED.replace("{STEP}", "expect target/out"),
            on_branch("main"),
        )
        .await;
    let record = h.finished(second).await;
    assert_eq!(
        record.state,
        RunState::Succeeded,
        "{}",
        h.log(&record, "build").await
    );
    assert!(
        h.log(&record, "build")
            .await
            .contains("[hodei] cache `deps-missing` restored, ")
    );
    // A feature branch falls back to the default branch's entry.
    let third = h
        .submit(
            &CACHED.replace("{STEP}", "expect target/out"),
            on_branch("feature"),
        )
        .await;
    let record = h.finished(third).await;
    assert_eq!(record.state, RunState::Succeeded);
    let log = h.log(&record, "build").await;
    assert!(log.contains("(saved on branch `main`)"), "{log}");
}

/// A clock `offset` ms ahead of the system's, moved by the test.
struct Shifted(AtomicI64);

impl Clock for Shifted {
    fn now(&self) -> Timestamp {
        Timestamp(SystemClock.now().0 + self.0.load(Ordering::SeqCst))
    }
}

impl Shifted {
    /// A clock that reads `at` now.
    fn at(at: Timestamp) -> Arc<Shifted> {
        Arc::new(Shifted(AtomicI64::new(at.0 - SystemClock.now().0)))
    }
}

/// 2026-03-02T02:59:59.700Z: 300 ms before a tick of `0 3 * * *`.
const BEFORE_THREE: Timestamp = Timestamp(1_772_420_400_000 - 300);

async fn timer_harness(name: &str, clock: Arc<Shifted>, faults: Faults) -> Harness {
    harness_with(
        name,
        Options {
            clock,
            faults,
            schedules: true,
            config: Box::new(|config| config.timer.rescan = Duration::from_millis(50)),
            ..Options::default()
        },
    )
    .await
}

/// The runs of pipeline `p`, once there are `n` of them; fails after 10 s.
async fn runs_of(h: &Harness, n: usize) -> Vec<RunSummary> {
    let filter = RunFilter {
        pipeline: Some("sched".into()),
        ..RunFilter::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let runs = h.store.runs(&filter, None, 100).await.unwrap();
        if runs.len() >= n {
            return runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} scheduled run(s) never came, {} did: likely deadlocked",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SCHEDULED: &str =
    "name: sched\non: { schedule: ['0 3 * * *'] }\njobs:\n  a: { steps: [emit 1] }\n";

/// Stores the scheduled pipeline a minute before the tick; answers its runs once the tick made
/// one, checked to be a scheduled run.
async fn scheduled_once(h: &Harness) -> Vec<RunSummary> {
    h.store
        .put_pipeline("sched", SCHEDULED, Timestamp(BEFORE_THREE.0 - 60_000))
        .await
        .unwrap();
    let runs = runs_of(h, 1).await;
    assert_eq!(runs[0].inputs.event, "schedule");
    runs
}

#[actix_rt::test]
async fn a_schedule_fires_on_its_tick_once_with_the_event_schedule() {
    let clock = Shifted::at(BEFORE_THREE);
    let h = timer_harness("timer-tick", clock.clone(), Faults::none()).await;
    let runs = scheduled_once(&h).await;
    assert_eq!(h.finished(runs[0].id).await.state, RunState::Succeeded);
    // Later passes, on this timer and on another replica's, find the tick claimed.
    let other = h.store.clone();
    assert!(
        !other
            .claim_tick(
                "sched",
                "0 3 * * *",
                Timestamp(1_772_420_400_000),
                clock.now()
            )
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs_of(&h, 1).await.len(), 1, "the tick fired twice");
}

#[actix_rt::test]
async fn ticks_missed_while_down_fire_once_at_start_up() {
    // The pipeline was stored three days before this start, and no timer ran since.
    let h = harness("timer-missed", 1, vec![]).await;
    h.store
        .put_pipeline("sched", SCHEDULED, Timestamp(1_772_420_400_000 - 60_000))
        .await
        .unwrap();
    // Hodei starts again (its timer, on the same database): the latest tick fires, once.
    let now = Timestamp(1_772_420_400_000 + 3 * 86_400_000 + 3_600_000);
    let start = |clock: Arc<Shifted>| {
        let (store, ticks) = (
            h.store.clone() as Arc<dyn Store>,
            h.store.clone() as Arc<dyn TickStore>,
        );
        let orchestrator = h.tree.orchestrator.clone();
        let restarts = Restarts::new(
            ActorKind::Timer,
            RestartPolicy::default(),
            clock.clone(),
            Arc::new(|escalated| panic!("unexpected escalation: {escalated:?}")),
            h.tree.restarts.clone(),
        );
        let settings = TimerSettings {
            rescan: Duration::from_millis(50),
        };
        let own = (Faults::none(), store, clock as Arc<dyn Clock>);
        Supervisor::start(move |_| Timer::new(own, (ticks, None), orchestrator, settings, restarts))
    };
    let _first = start(Shifted::at(now));
    let runs = runs_of(&h, 1).await;
    assert_eq!(runs[0].inputs.event, "schedule");
    // A second replica on the same database, at the same time, finds the tick claimed.
    let _second = start(Shifted::at(now));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        runs_of(&h, 1).await.len(),
        1,
        "a missed tick fired more than once"
    );
    let last = h.store.last_tick("sched", "0 3 * * *").await.unwrap();
    assert_eq!(last, Some(Timestamp(1_772_420_400_000 + 3 * 86_400_000)));
    assert_eq!(h.finished(runs[0].id).await.state, RunState::Succeeded);
}

#[actix_rt::test]
async fn a_timer_that_panics_is_restarted_and_fires_the_tick_all_the_same() {
    super::common::quiet_injected_panics();
    let clock = Shifted::at(BEFORE_THREE);
    let faults = Faults::panic_at(Point::TimerPass, Hits::UpTo(2));
    let h = timer_harness("timer-panic", clock, faults).await;
    scheduled_once(&h).await;
    assert!(
        h.tree.restarts.get(ActorKind::Timer) >= 2,
        "the timer was restarted"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs_of(&h, 1).await.len(), 1, "the tick fired twice");
}
