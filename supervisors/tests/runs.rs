//! The actor core end to end, in-process: the supervision tree on a SQLite store with the
//! scripted `FakeProvider`. Each test submits a pipeline and checks what the store recorded.

#[path = "runs/agents.rs"]
mod agents;
mod common;
#[path = "runs/files.rs"]
mod files;
#[path = "runs/pools.rs"]
mod pools;

use std::sync::Arc;

use common::{Options, harness, harness_with, state_of};
use hodei_actors::contain::ActorKind;
use hodei_actors::messages::CancelRun;
use hodei_adapters::sqlite::SqliteStore;
use hodei_domain::ids::RunId;
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{RunRecord, Store};
use hodei_domain::state::{DomainEvent, JobState, RunState};

#[actix_rt::test]
async fn jobs_run_in_dag_order_and_the_run_succeeds() {
    let h = harness("dag", 4, vec![]).await;
    let run = h
        .submit(
            "name: p\njobs:\n  c: {needs: [b], steps: [emit 1]}\n  a: {steps: [emit 2]}\n  b: {needs: [a], steps: [emit 1, 'sleep 20']}\n",
            RunInputs::default(),
        )
        .await;
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Succeeded);
    let started: Vec<String> = h
        .events(run)
        .await
        .iter()
        .filter_map(|e| match e {
            DomainEvent::JobStarted { job, .. } => Some(
                record
                    .jobs
                    .iter()
                    .find(|j| j.id == *job)
                    .unwrap()
                    .name
                    .clone(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["a", "b", "c"]);
    assert_eq!(h.log(&record, "a").await, "line 1\nline 2\n");
}

#[actix_rt::test]
async fn a_failed_job_skips_its_dependents_and_fails_the_run() {
    let h = harness("fail", 4, vec![]).await;
    let run = h
        .submit(
            "name: p\njobs:\n  a: {steps: ['exit 3', emit 1]}\n  b: {needs: [a], steps: [emit 1]}\n  ok: {steps: [emit 1]}\n  lenient: {continue_on_error: true, steps: ['exit 1']}\n  after: {needs: [lenient], steps: [emit 1]}\n",
            RunInputs::default(),
        )
        .await;
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Failed);
    assert!(matches!(state_of(&record, "a"), JobState::Failed { .. }));
    assert!(matches!(state_of(&record, "b"), JobState::Skipped { .. }));
    assert_eq!(state_of(&record, "ok"), &JobState::Succeeded);
    assert!(matches!(
        state_of(&record, "lenient"),
        JobState::Failed { .. }
    ));
    assert_eq!(
        state_of(&record, "after"),
        &JobState::Succeeded,
        "continue_on_error lets dependents run"
    );
    assert!(
        h.log(&record, "a").await.contains("[hodei]"),
        "Hodei says why in the log"
    );
}

#[actix_rt::test]
async fn retries_are_recorded_with_their_attempt_numbers() {
    let h = harness("retry", 2, vec![]).await;
    let run = h
        .submit(
            "name: p\njobs:\n  flaky: {retry: 2, steps: [{run: 'exit 1', retry: 1}]}\n",
            RunInputs::default(),
        )
        .await;
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Failed);
    let job = &record.jobs[0];
    assert_eq!(job.attempt.get(), 3, "three job attempts");
    let step_attempts: Vec<(u32, u32)> = job
        .steps
        .iter()
        .map(|s| (s.job_attempt.get(), s.attempt.get()))
        .collect();
    assert_eq!(
        step_attempts,
        [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]
    );
}

#[actix_rt::test]
async fn cancelling_stops_running_steps_and_runs_the_cancel_hooks() {
    let h = harness("cancel", 2, vec![]).await;
    let run = h
        .submit(
            "name: p\njobs:\n  long:\n    steps: [hang]\n    post: {cancelled: [emit 1], always: [emit 2], success: ['exit 9']}\n  later: {needs: [long], steps: [emit 1]}\n",
            RunInputs::default(),
        )
        .await;
    h.until(run, "the long job running", |r| {
        matches!(state_of(r, "long"), JobState::Running { .. })
    })
    .await;
    h.tree.orchestrator.do_send(CancelRun {
        run,
        by: "test".into(),
    });
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Cancelled);
    assert_eq!(state_of(&record, "long"), &JobState::Cancelled);
    assert!(matches!(
        state_of(&record, "later"),
        JobState::Skipped { .. }
    ));
    assert_eq!(
        h.log(&record, "long").await,
        "[hodei] the job was cancelled\nline 1\nline 1\nline 2\n"
    );
}

#[actix_rt::test]
async fn step_and_job_timeouts_stop_the_step() {
    let h = harness("timeout", 2, vec![]).await;
    let run = h
        .submit("name: p\njobs:\n  step: {steps: [{run: hang, timeout: 1s}]}\n  job: {timeout: 1s, steps: [hang]}\n", RunInputs::default())
        .await;
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Failed);
    assert!(matches!(state_of(&record, "step"), JobState::Failed { .. }));
    assert_eq!(state_of(&record, "job"), &JobState::TimedOut);
}

#[actix_rt::test]
async fn secrets_never_reach_the_stored_log() {
    let h = harness("secret", 1, vec![("TOKEN".into(), "line 2".into())]).await;
    let inputs = RunInputs {
        secrets: vec!["TOKEN".into()],
        ..RunInputs::default()
    };
    let run = h
        .submit("name: p\njobs:\n  a: {steps: [emit 3]}\n", inputs)
        .await;
    let record = h.finished(run).await;
    assert_eq!(h.log(&record, "a").await, "line 1\n***\nline 3\n");
}

#[actix_rt::test]
async fn a_panicking_provider_call_is_contained_and_the_run_finishes() {
    let h = harness("panic", 1, vec![]).await;
    let run = h
        .submit(
            "name: p\njobs:\n  a: {steps: [panic]}\n  b: {steps: [emit 1]}\n",
            RunInputs::default(),
        )
        .await;
    let record = h.finished(run).await;
    assert_eq!(
        state_of(&record, "b"),
        &JobState::Succeeded,
        "other jobs are not disturbed"
    );
    assert!(
        matches!(state_of(&record, "a"), JobState::Failed { .. }),
        "{:?}",
        state_of(&record, "a")
    );
    assert_eq!(record.state, RunState::Failed);
}

#[actix_rt::test]
async fn jobs_in_parallel_never_exceed_the_slots() {
    let h = harness("slots", 2, vec![]).await;
    let jobs: String = (0..6)
        .map(|i| format!("  j{i}: {{steps: ['sleep 30']}}\n"))
        .collect();
    let run = h
        .submit(&format!("name: p\njobs:\n{jobs}"), RunInputs::default())
        .await;
    let _ = h.finished(run).await;
    // A slot is taken from the placement to the end of the job's last process.
    let mut running = 0i32;
    let mut peak = 0;
    for event in h.events(run).await {
        match event {
            DomainEvent::JobPlaced { .. } => running += 1,
            DomainEvent::StepSucceeded { .. } => running -= 1,
            _ => {}
        }
        peak = peak.max(running);
    }
    assert_eq!(peak, 2);
}

#[actix_rt::test]
async fn pipeline_post_hooks_run_by_the_verdict() {
    let h = harness("post", 2, vec![]).await;
    let run = h
        .submit("name: p\njobs:\n  a: {steps: ['exit 1']}\npost: {failure: [emit 1], success: ['exit 5'], always: [emit 2]}\n", RunInputs::default())
        .await;
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Failed);
    assert_eq!(state_of(&record, "(post)"), &JobState::Succeeded);
    assert_eq!(h.log(&record, "(post)").await, "line 1\nline 1\nline 2\n");
}

/// A store that refuses one append holding a given kind of event, then works again; and
/// takes `slow` more for every append.
struct FlakyStore {
    inner: Arc<SqliteStore>,
    refuse: &'static str,
    refused: std::sync::atomic::AtomicBool,
    slow: std::time::Duration,
    /// While set, the store cannot be reached at all.
    outage: Option<&'static std::sync::atomic::AtomicBool>,
}

impl FlakyStore {
    /// A store that refuses nothing, at full speed, always there.
    fn new(inner: Arc<SqliteStore>) -> FlakyStore {
        FlakyStore {
            inner,
            refuse: "",
            refused: Default::default(),
            slow: std::time::Duration::ZERO,
            outage: None,
        }
    }

    fn away(&self) -> Option<hodei_domain::ports::StoreError> {
        self.outage
            .is_some_and(|outage| outage.load(std::sync::atomic::Ordering::SeqCst))
            .then(|| hodei_domain::ports::StoreError::Unavailable {
                reason: "injected: the database restarts".into(),
                cause: None,
            })
    }
}

impl Store for FlakyStore {
    fn put_pipeline<'a>(
        &'a self,
        name: &'a str,
        source: &'a str,
        at: hodei_domain::ids::Timestamp,
    ) -> hodei_domain::ports::BoxFuture<
        'a,
        Result<hodei_domain::ports::PipelineVersion, hodei_domain::ports::StoreError>,
    > {
        self.inner.put_pipeline(name, source, at)
    }

    fn pipeline<'a>(
        &'a self,
        name: &'a str,
    ) -> hodei_domain::ports::BoxFuture<
        'a,
        Result<Option<hodei_domain::ports::PipelineVersion>, hodei_domain::ports::StoreError>,
    > {
        self.inner.pipeline(name)
    }

    fn create_run(
        &self,
        run: hodei_domain::ports::NewRun,
    ) -> hodei_domain::ports::BoxFuture<'_, Result<RunRecord, hodei_domain::ports::StoreError>>
    {
        self.inner.create_run(run)
    }

    fn append(
        &self,
        events: Vec<DomainEvent>,
    ) -> hodei_domain::ports::BoxFuture<'_, Result<(), hodei_domain::ports::StoreError>> {
        if let Some(err) = self.away() {
            return Box::pin(async { Err(err) });
        }
        let hit = events.iter().any(|e| e.kind() == self.refuse);
        if hit && !self.refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(async {
                Err(hodei_domain::ports::StoreError::Unavailable {
                    reason: "injected: the disk is full".into(),
                    cause: None,
                })
            });
        }
        if self.slow.is_zero() {
            return self.inner.append(events);
        }
        Box::pin(async move {
            tokio::time::sleep(self.slow).await;
            self.inner.append(events).await
        })
    }

    fn run(
        &self,
        id: RunId,
    ) -> hodei_domain::ports::BoxFuture<
        '_,
        Result<Option<RunRecord>, hodei_domain::ports::StoreError>,
    > {
        if let Some(err) = self.away() {
            return Box::pin(async { Err(err) });
        }
        self.inner.run(id)
    }

    fn unfinished_runs(
        &self,
    ) -> hodei_domain::ports::BoxFuture<'_, Result<Vec<RunId>, hodei_domain::ports::StoreError>>
    {
        if let Some(err) = self.away() {
            return Box::pin(async { Err(err) });
        }
        self.inner.unfinished_runs()
    }

    fn events(
        &self,
        after: u64,
        limit: u32,
    ) -> hodei_domain::ports::BoxFuture<
        '_,
        Result<Vec<(u64, DomainEvent)>, hodei_domain::ports::StoreError>,
    > {
        self.inner.events(after, limit)
    }

    fn pipelines<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: u32,
    ) -> hodei_domain::ports::BoxFuture<
        'a,
        Result<Vec<hodei_domain::ports::PipelineSummary>, hodei_domain::ports::StoreError>,
    > {
        self.inner.pipelines(after, limit)
    }

    fn pipeline_version<'a>(
        &'a self,
        name: &'a str,
        version: u32,
    ) -> hodei_domain::ports::BoxFuture<
        'a,
        Result<Option<hodei_domain::ports::PipelineVersion>, hodei_domain::ports::StoreError>,
    > {
        self.inner.pipeline_version(name, version)
    }

    fn pipeline_versions<'a>(
        &'a self,
        name: &'a str,
    ) -> hodei_domain::ports::BoxFuture<
        'a,
        Result<Vec<hodei_domain::ports::VersionStamp>, hodei_domain::ports::StoreError>,
    > {
        self.inner.pipeline_versions(name)
    }

    fn runs<'a>(
        &'a self,
        filter: &'a hodei_domain::ports::RunFilter,
        before: Option<RunId>,
        limit: u32,
    ) -> hodei_domain::ports::BoxFuture<
        'a,
        Result<Vec<hodei_domain::ports::RunSummary>, hodei_domain::ports::StoreError>,
    > {
        self.inner.runs(filter, before, limit)
    }

    fn job_run(
        &self,
        job: hodei_domain::ids::JobId,
    ) -> hodei_domain::ports::BoxFuture<'_, Result<Option<RunId>, hodei_domain::ports::StoreError>>
    {
        self.inner.job_run(job)
    }

    fn run_events(
        &self,
        run: RunId,
        after: u64,
        limit: u32,
    ) -> hodei_domain::ports::BoxFuture<
        '_,
        Result<Vec<(u64, DomainEvent)>, hodei_domain::ports::StoreError>,
    > {
        self.inner.run_events(run, after, limit)
    }
}

#[actix_rt::test]
async fn a_store_refusal_mid_attempt_reloads_the_job_and_the_run_still_finishes() {
    let h = harness_with(
        "flaky",
        Options {
            store: |inner| {
                Arc::new(FlakyStore {
                    refuse: "step_succeeded",
                    ..FlakyStore::new(inner)
                })
            },
            ..Options::default()
        },
    )
    .await;
    let run = h.submit("name: p\njobs:\n  a: {retry: 1, steps: [emit 1]}\n  b: {needs: [a], steps: [emit 1]}\n", RunInputs::default()).await;
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.jobs);
    let a = &record.jobs[0];
    assert_eq!(
        a.attempt.get(),
        2,
        "the refused attempt counts as lost, the retry succeeds"
    );
    assert_eq!(state_of(&record, "b"), &JobState::Succeeded);
    assert!(
        h.log(&record, "a").await.contains("was lost"),
        "the log says what happened"
    );
}

static OUTAGE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[actix_rt::test]
async fn a_run_goes_on_after_a_store_outage_longer_than_its_restart_budget() {
    // The database restarts while a job runs: the job's end cannot be written, the run cannot
    // be read again. Its actor stops over and over, far past the restart budget (five within a
    // minute); once the store answers, the run goes on, without waiting for Hodei to restart.
    let h = harness_with(
        "outage",
        Options {
            store: |inner| {
                Arc::new(FlakyStore {
                    outage: Some(&OUTAGE),
                    ..FlakyStore::new(inner)
                })
            },
            ..Options::default()
        },
    )
    .await;
    let run = h
        .submit(
            "name: p\njobs:\n  a: {retry: 1, steps: [sleep 300]}\n  b: {needs: [a], steps: [emit 1]}\n",
            RunInputs::default(),
        )
        .await;
    h.until(run, "job a running", |r| {
        matches!(state_of(r, "a"), JobState::Running { .. })
    })
    .await;
    let before = h.tree.restarts.get(ActorKind::Run);
    OUTAGE.store(true, std::sync::atomic::Ordering::SeqCst);
    // The step ends 300 ms in; the harness's backoff is at most 20 ms.
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    OUTAGE.store(false, std::sync::atomic::Ordering::SeqCst);
    let record = h.finished(run).await;
    assert!(
        h.tree.restarts.get(ActorKind::Run) > before + 10,
        "the actor was started again well past the budget"
    );
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.jobs);
    assert_eq!(state_of(&record, "b"), &JobState::Succeeded);
}

static AWAY_AT_START: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

#[actix_rt::test]
async fn runs_left_unfinished_are_resumed_when_the_store_answers_after_the_start() {
    // Hodei starts while its store cannot be read: the unfinished runs are listed, and
    // resumed, once it answers, not at the next start.
    let h = harness_with(
        "away-at-start",
        Options {
            store: |inner| {
                Arc::new(FlakyStore {
                    outage: Some(&AWAY_AT_START),
                    ..FlakyStore::new(inner)
                })
            },
            ..Options::default()
        },
    )
    .await;
    // A run an earlier Hodei left unfinished (written beside the tree, which cannot read it).
    let version = h
        .store
        .put_pipeline(
            "p",
            "name: p\njobs:\n  a: {steps: [emit 1]}\n",
            hodei_domain::ids::Timestamp(0),
        )
        .await
        .unwrap();
    let run = h
        .store
        .create_run(hodei_domain::ports::NewRun {
            pipeline: version.name,
            version: version.version,
            inputs: RunInputs::default(),
            jobs: vec!["a".into()],
            at: hodei_domain::ids::Timestamp(0),
            opening: None,
        })
        .await
        .unwrap()
        .id;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    AWAY_AT_START.store(false, std::sync::atomic::Ordering::SeqCst);
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.jobs);
}

#[actix_rt::test]
async fn a_run_is_running_with_its_first_jobs_queued_when_its_submission_is_answered() {
    // Appends take long, and no job can be placed: what the store holds when the submission
    // is answered was written with the run.
    let h = harness_with(
        "opening",
        Options {
            slots: 0,
            store: |inner| {
                Arc::new(FlakyStore {
                    slow: std::time::Duration::from_millis(500),
                    ..FlakyStore::new(inner)
                })
            },
            ..Options::default()
        },
    )
    .await;
    let run = h
        .submit(
            "name: p\njobs:\n  a: {steps: [emit 1]}\n  b: {needs: [a], steps: [emit 1]}\n  gate: {approval: {role: admin}, steps: [emit 1]}\n",
            RunInputs::default(),
        )
        .await;
    let record = h.store_run(run).await;
    assert_eq!(record.state, RunState::Running, "{record:?}");
    assert_eq!(state_of(&record, "a"), &JobState::Queued);
    assert_eq!(state_of(&record, "b"), &JobState::Pending);
    // `hodei run` approves at once (the harness's approvals are local).
    assert_eq!(state_of(&record, "gate"), &JobState::Queued);
    h.until(run, "the opening announced", |_| !h.batches(run).is_empty())
        .await;
    let mut opening = h.batches(run).remove(0);
    assert_eq!(opening.remove(0), "run_started");
    opening.sort_unstable();
    assert_eq!(
        opening,
        ["job_approved", "job_awaiting_approval", "job_queued"]
    );
}

#[actix_rt::test]
async fn the_last_steps_end_is_written_with_the_jobs_end_when_the_tear_down_is_quick() {
    for quick in [false, true] {
        let h = harness("quick", 2, vec![]).await;
        h.provider.set_quick_tear_down(quick);
        let failing = h
            .submit(
                "name: p\njobs:\n  a: {steps: [emit 1, 'exit 3', emit 1]}\n",
                RunInputs::default(),
            )
            .await;
        h.finished(failing).await;
        let ok = h
            .submit(
                "name: q\njobs:\n  b: {steps: [emit 1]}\n",
                RunInputs::default(),
            )
            .await;
        h.finished(ok).await;
        for run in [failing, ok] {
            h.until(run, "the run's end announced", |_| {
                h.batches(run)
                    .last()
                    .is_some_and(|b| matches!(b[0], "run_succeeded" | "run_failed"))
            })
            .await;
        }
        // Each batch is one commit. A step's end is recorded before the next step starts,
        // whatever the tear-down; the last one with what follows it.
        let mut failed = vec![
            vec!["run_started", "job_queued"],
            vec!["job_placed", "job_started"],
            vec!["step_started"],
            vec!["step_succeeded"],
            vec!["step_started"],
        ];
        let mut succeeded = failed[..3].to_vec();
        if quick {
            // After the tear-down, in one commit with the job's end.
            failed.push(vec!["step_failed", "step_skipped", "job_failed"]);
            succeeded.push(vec!["step_succeeded", "job_succeeded"]);
        } else {
            // Before a tear-down that may take long.
            failed.extend([vec!["step_failed", "step_skipped"], vec!["job_failed"]]);
            succeeded.extend([vec!["step_succeeded"], vec!["job_succeeded"]]);
        }
        failed.push(vec!["run_failed"]);
        succeeded.push(vec!["run_succeeded"]);
        assert_eq!(h.batches(failing), failed, "quick: {quick}");
        assert_eq!(h.batches(ok), succeeded, "quick: {quick}");
    }
}

#[actix_rt::test]
async fn a_secret_split_across_two_steps_is_masked() {
    use hodei_actors::messages::{BeginStep, FlushLog, OpenLog, Output};
    use hodei_domain::ids::JobId;
    use hodei_domain::ports::LogStore;

    let h = harness("split-secret", 1, Vec::new()).await;
    let hub = &h.tree.hub;
    let secret = "hunter2-pass";
    let job = JobId(20_000);
    hub.do_send(OpenLog {
        job,
        secrets: vec![secret.to_owned()],
    });
    // The first step prints the start of the secret without a newline, the next one the rest.
    hub.do_send(Output {
        job,
        bytes: b"key=hunt".to_vec(),
    });
    let second = hub.send(BeginStep { job }).await.unwrap().unwrap();
    assert_eq!(
        second, None,
        "bytes held back: the step cannot be taken back"
    );
    hub.do_send(Output {
        job,
        bytes: b"er2-pass\n".to_vec(),
    });
    let third = hub.send(BeginStep { job }).await.unwrap().unwrap();
    assert_eq!(
        third,
        Some(8),
        "nothing held back: where the third step's output begins"
    );
    hub.send(FlushLog { job }).await.unwrap().unwrap();
    let log = h.logs.read(job, 0, None).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&log), "key=***\n");
}

#[actix_rt::test]
async fn a_step_taken_back_after_a_crash_is_logged_once_and_masked_as_if_nothing_happened() {
    use hodei_actors::messages::{BeginStep, FlushLog, OpenLog, Output, OutputSkip, SkipOutput};
    use hodei_domain::ids::JobId;
    use hodei_domain::mask::mask_all;
    use hodei_domain::ports::LogStore;

    let h = harness("takeback", 1, Vec::new()).await;
    let hub = &h.tree.hub;
    let secret = "hunter2-pass";
    let raw = format!("line 1\nkey={secret}\nline 3 {secret}{secret}\nend\n").into_bytes();
    let expected_step = mask_all(&[secret.as_bytes()], &raw);
    let chunks = |bytes: &[u8], size: usize| -> Vec<Vec<u8>> {
        bytes.chunks(size).map(<[u8]>::to_vec).collect()
    };
    // Every point where the first life could have died, in several chunkings of each life.
    for cut in 0..=raw.len() {
        for (before, after) in [(1, 5), (3, 2), (7, 64)] {
            let job = JobId(10_000 + (cut * 10 + before) as u64);
            let open = || OpenLog {
                job,
                secrets: vec![secret.to_owned()],
            };
            // The first life: earlier output, then the step starts and prints up to `cut`, then
            // Hodei dies: what the masker held is lost.
            hub.do_send(open());
            hub.do_send(Output {
                job,
                bytes: b"earlier hunt\n".to_vec(),
            });
            let offset = hub
                .send(BeginStep { job })
                .await
                .unwrap()
                .unwrap()
                .expect("nothing held back: the step can be taken back");
            for chunk in chunks(&raw[..cut], before) {
                hub.do_send(Output { job, bytes: chunk });
            }
            // The next life: a fresh masker, the step's output again from its first byte.
            hub.do_send(open());
            hub.do_send(SkipOutput {
                job,
                skip: OutputSkip::StoredSince(offset),
            });
            for chunk in chunks(&raw, after) {
                hub.do_send(Output { job, bytes: chunk });
            }
            hub.send(FlushLog { job }).await.unwrap().unwrap();
            let log = h.logs.read(job, 0, None).await.unwrap();
            let mut expected = b"earlier hunt\n".to_vec();
            expected.extend_from_slice(&expected_step);
            assert_eq!(
                String::from_utf8_lossy(&log),
                String::from_utf8_lossy(&expected),
                "cut at {cut}, chunks of {before} then {after}"
            );
        }
    }
}

#[actix_rt::test]
async fn no_slot_outlives_its_job_when_cancels_race_placements() {
    use hodei_actors::messages::GetQueueStats;
    let h = harness("cancel-race", 2, vec![]).await;
    let pipeline =
        "name: p\njobs:\n  a: {steps: ['sleep 2']}\n  b: {needs: [a], steps: ['sleep 2']}\n";
    // Cancels at every moment of a run's first milliseconds: before `a` is placed, while it is
    // placed, while `b` is being queued, while its placement is on its way.
    for round in 0..80u64 {
        let run = h.submit(pipeline, RunInputs::default()).await;
        let delay = round % 8;
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay / 2)).await;
        }
        h.tree.orchestrator.do_send(CancelRun {
            run,
            by: "test".into(),
        });
        h.finished(run).await;
    }
    // Every run is over: no slot may still be held, however its cancel landed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stats = h.tree.scheduler.send(GetQueueStats).await.unwrap();
        if stats.placed == 0 && stats.queued == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots are still held by finished jobs: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let run = h.submit(pipeline, RunInputs::default()).await;
    assert_eq!(h.finished(run).await.state, RunState::Succeeded);
}

#[actix_rt::test]
async fn a_worker_with_a_provider_of_its_own_runs_its_jobs_there_and_none_while_offline() {
    use hodei_actors::messages::{GetQueue, RegisterWorker, WorkerSpec};
    use hodei_adapters::fake::{Call, FakeProvider};
    use hodei_domain::ids::WorkerId;
    use hodei_domain::ports::Provider;

    let pods = Arc::new(FakeProvider::new());
    let own: Arc<dyn Provider> = pods.clone();
    let h = harness_with(
        "worker-provider",
        Options {
            worker_providers: Arc::new([(WorkerId("pods".into()), own)].into()),
            ..Options::default()
        },
    )
    .await;
    let offer = |offline| RegisterWorker {
        worker: WorkerSpec {
            id: WorkerId("pods".into()),
            labels: vec!["pods".parse().unwrap()],
            slots: 1,
            agent: false,
            offline,
        },
        lease: None,
    };
    h.tree.workers.send(offer(true)).await.unwrap();
    let run = h
        .submit(
            "name: p\njobs:\n  a: {runs_on: [pods], steps: [emit 1]}\n",
            RunInputs::default(),
        )
        .await;
    // Offline: the job waits, and the queue says why.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let queue = h
            .tree
            .scheduler
            .send(GetQueue {
                limit: 10,
                run: Some(run),
            })
            .await
            .unwrap();
        if let Some(waiting) = queue.first()
            && waiting.reason.contains("1 offline")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "likely deadlocked: {queue:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(pods.calls().is_empty(), "{:?}", pods.calls());
    // Online again: the job runs on the worker's own provider, not the default one.
    h.tree.workers.send(offer(false)).await.unwrap();
    let record = h.finished(run).await;
    assert_eq!(record.state, RunState::Succeeded);
    let set_up = |calls: Vec<Call>| calls.iter().any(|c| matches!(c, Call::SetUp { .. }));
    assert!(set_up(pods.calls()), "{:?}", pods.calls());
    assert!(!set_up(h.provider.calls()), "{:?}", h.provider.calls());
}
