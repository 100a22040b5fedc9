//! The record: pipelines, runs, events and their projections, transactions, concurrent
//! writers, and what a reopened database still holds. Moved here from the SQLite store's own
//! tests, so that every store passes them.

use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{NewRun, Opening, RunRecord, StoreError};
use hodei_domain::state::{
    Attempt, DomainEvent, JobFailure, JobSkipReason, JobState, RunState, StepExit, StepFailure,
    StepState,
};

use super::{Backend, WEB, a, conformance, inputs, lifecycle, new_run, reload, within, worker};

conformance!(
    pipelines_get_a_new_version_only_when_their_text_changes,
    create_run_gives_ids_to_the_run_and_its_jobs_in_plan_order,
    a_run_is_created_with_its_opening_in_one_transaction,
    a_run_of_an_unknown_pipeline_version_is_not_found,
    a_job_lifecycle_is_projected_onto_the_run_its_jobs_and_steps,
    a_step_keeps_where_its_output_began_when_its_end_comes_in_the_same_batch,
    runs_jobs_and_steps_keep_when_they_started_and_ended,
    placed_and_running_jobs_name_their_worker,
    retries_are_recorded_with_their_attempt_numbers,
    failed_and_skipped_jobs_keep_their_reasons,
    events_round_trip_and_page_by_number,
    an_event_about_an_unknown_job_fails_its_caller_alone,
    a_failed_append_leaves_neither_its_events_nor_its_projections,
    concurrent_appends_are_all_committed_and_numbered_in_each_callers_order,
    concurrent_creates_and_appends_of_many_runs_all_commit,
    unfinished_runs_survive_a_crash_oldest_first,
    instance_ids_tell_databases_apart_and_are_kept,
    a_schedule_tick_is_claimed_once_by_two_stores_on_one_database,
);

async fn pipelines_get_a_new_version_only_when_their_text_changes(backend: Backend) {
    let store = backend.store().await;
    assert_eq!(within(store.pipeline("web")).await.unwrap(), None);
    let v1 = within(store.put_pipeline("web", WEB, Timestamp(1)))
        .await
        .unwrap();
    assert_eq!((v1.version, v1.created), (1, Timestamp(1)));
    let same = within(store.put_pipeline("web", WEB, Timestamp(2)))
        .await
        .unwrap();
    assert_eq!(same, v1, "the same text is the same version");
    let changed = format!("{WEB}# tweak\n");
    let v2 = within(store.put_pipeline("web", &changed, Timestamp(3)))
        .await
        .unwrap();
    assert_eq!((v2.version, v2.source.as_str()), (2, changed.as_str()));
    assert_eq!(within(store.pipeline("web")).await.unwrap(), Some(v2));
    let other = within(store.put_pipeline("api", WEB, Timestamp(4)))
        .await
        .unwrap();
    assert_eq!(other.version, 1, "versions count per pipeline");
}

async fn create_run_gives_ids_to_the_run_and_its_jobs_in_plan_order(backend: Backend) {
    let store = backend.store().await;
    let created = new_run(&*store, &["build", "lint", "deploy"], 10).await;
    let names: Vec<_> = created.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["build", "lint", "deploy"]);
    assert!(
        created
            .jobs
            .iter()
            .all(|j| j.state == JobState::Pending && j.attempt == Attempt::FIRST)
    );
    let mut ids: Vec<_> = created.jobs.iter().map(|j| j.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every job has its own id");
    assert_eq!(
        (created.state, created.since, created.source.as_str()),
        (RunState::Pending, Timestamp(10), WEB)
    );
    assert_eq!(reload(&*store, created.id).await, created);
    assert_eq!(within(store.run(RunId(9_999))).await.unwrap(), None);
}

/// An opening that starts the run, queues its first job and skips its second; or names a job
/// of no run, which the store refuses.
#[derive(Debug)]
struct Opens {
    stray: bool,
}

impl Opening for Opens {
    fn open(&self, record: &mut RunRecord) -> Vec<DomainEvent> {
        let (run, at) = (record.id, Timestamp(11));
        record.state = RunState::Running;
        record.since = at;
        record.jobs[0].state = JobState::Queued;
        record.jobs[0].since = at;
        let skipped = JobState::Skipped {
            reason: JobSkipReason::WhenFalse,
        };
        record.jobs[1].state = skipped;
        record.jobs[1].since = at;
        record.jobs[1].finished = Some(at);
        let second = match self.stray {
            true => JobId(999_999),
            false => record.jobs[1].id,
        };
        vec![
            DomainEvent::RunStarted { run, at },
            DomainEvent::JobQueued {
                run,
                job: record.jobs[0].id,
                attempt: Attempt::FIRST,
                at,
            },
            DomainEvent::JobSkipped {
                run,
                job: second,
                attempt: Attempt::FIRST,
                reason: JobSkipReason::WhenFalse,
                at,
            },
        ]
    }
}

async fn a_run_is_created_with_its_opening_in_one_transaction(backend: Backend) {
    let store = backend.store().await;
    within(store.put_pipeline("web", WEB, Timestamp(1)))
        .await
        .unwrap();
    let new = |stray| NewRun {
        pipeline: "web".into(),
        version: 1,
        inputs: inputs(),
        jobs: vec!["build".into(), "deploy".into(), "notify".into()],
        at: Timestamp(10),
        opening: Some(std::sync::Arc::new(Opens { stray })),
    };
    let created = within(store.create_run(new(false))).await.unwrap();
    assert_eq!(created.state, RunState::Running);
    let states: Vec<_> = created.jobs.iter().map(|j| j.state.clone()).collect();
    assert_eq!(
        states,
        [
            JobState::Queued,
            JobState::Skipped {
                reason: JobSkipReason::WhenFalse
            },
            JobState::Pending
        ]
    );
    assert_eq!(
        reload(&*store, created.id).await,
        created,
        "what the store returns is what it wrote"
    );
    let events = within(store.events(0, 100)).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|(_, e)| e.kind()).collect();
    assert_eq!(kinds, ["run_started", "job_queued", "job_skipped"]);
    // An opening the store refuses leaves no run behind, and fails its caller alone.
    let err = within(store.create_run(new(true))).await.unwrap_err();
    assert!(matches!(&err, StoreError::NotFound { .. }), "{err:?}");
    let unfinished = within(store.unfinished_runs()).await.unwrap();
    assert_eq!(unfinished, [created.id]);
    assert_eq!(within(store.events(0, 100)).await.unwrap().len(), 3);
}

async fn a_run_of_an_unknown_pipeline_version_is_not_found(backend: Backend) {
    let store = backend.store().await;
    let err = within(store.create_run(NewRun {
        pipeline: "ghost".into(),
        version: 1,
        inputs: RunInputs::default(),
        jobs: vec!["build".into()],
        at: Timestamp(0),
        opening: None,
    }))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what } if what == "pipeline `ghost` version 1"),
        "{err:?}"
    );
}

async fn a_job_lifecycle_is_projected_onto_the_run_its_jobs_and_steps(backend: Backend) {
    let store = backend.store().await;
    let run = new_run(&*store, &["build"], 0).await;
    let job = run.jobs[0].id;
    let mut events = vec![DomainEvent::RunStarted {
        run: run.id,
        at: Timestamp(1),
    }];
    events.extend(lifecycle(run.id, job, a(1), 10));
    // One event per call, as the actors append them.
    for event in events {
        within(store.append(vec![event])).await.unwrap();
    }
    let record = reload(&*store, run.id).await;
    assert_eq!(
        (record.state, record.since),
        (RunState::Running, Timestamp(1))
    );
    let job = &record.jobs[0];
    assert_eq!(
        (&job.state, job.attempt, job.since),
        (&JobState::Succeeded, a(1), Timestamp(15))
    );
    assert_eq!(job.steps.len(), 1);
    let step = &job.steps[0];
    assert_eq!(
        (step.job_attempt, step.index, step.attempt, &step.state),
        (a(1), 0, a(1), &StepState::Succeeded)
    );
    assert_eq!(
        (step.exit, step.since),
        (Some(StepExit::code(0)), Timestamp(14))
    );
    // Where the step's output began in the log outlives the step's later events.
    assert_eq!(step.log_offset, Some(7));
}

async fn a_step_keeps_where_its_output_began_when_its_end_comes_in_the_same_batch(
    backend: Backend,
) {
    let store = backend.store().await;
    let run = new_run(&*store, &["build"], 0).await;
    let mut events = vec![DomainEvent::RunStarted {
        run: run.id,
        at: Timestamp(1),
    }];
    events.extend(lifecycle(run.id, run.jobs[0].id, a(1), 10));
    within(store.append(events)).await.unwrap();
    let record = reload(&*store, run.id).await;
    assert_eq!(record.jobs[0].steps[0].log_offset, Some(7));
}

async fn runs_jobs_and_steps_keep_when_they_started_and_ended(backend: Backend) {
    let store = backend.store().await;
    // Two runs: one appended event by event, one in a single batch; the same times either way.
    for one_by_one in [true, false] {
        let run = new_run(&*store, &["build", "test"], 0).await;
        let (build, test) = (run.jobs[0].id, run.jobs[1].id);
        let mut events = vec![DomainEvent::RunStarted {
            run: run.id,
            at: Timestamp(1),
        }];
        // `build` fails its first attempt and succeeds its second: its start stays the first.
        let first = lifecycle(run.id, build, a(1), 10);
        events.extend(first[..4].iter().cloned());
        events.push(DomainEvent::JobRetrying {
            run: run.id,
            job: build,
            attempt: a(1),
            cause: JobFailure::TimedOut,
            next_attempt: a(2),
            at: Timestamp(20),
        });
        events.extend(lifecycle(run.id, build, a(2), 30));
        events.extend(lifecycle(run.id, test, a(1), 40));
        events.push(DomainEvent::RunSucceeded {
            run: run.id,
            at: Timestamp(50),
        });
        if one_by_one {
            for event in events {
                within(store.append(vec![event])).await.unwrap();
            }
        } else {
            within(store.append(events)).await.unwrap();
        }
        let record = reload(&*store, run.id).await;
        assert_eq!(
            (record.started, record.finished),
            (Some(Timestamp(12)), Some(Timestamp(50))),
            "the run starts with its first job"
        );
        let build = &record.jobs[0];
        assert_eq!(
            (build.started, build.finished),
            (Some(Timestamp(12)), Some(Timestamp(35)))
        );
        let starts: Vec<_> = build
            .steps
            .iter()
            .map(|s| (s.job_attempt, s.started))
            .collect();
        assert_eq!(
            starts,
            [(a(1), Some(Timestamp(13))), (a(2), Some(Timestamp(33)))]
        );
        let test = &record.jobs[1];
        assert_eq!(
            (test.started, test.finished, test.worker.clone()),
            (
                Some(Timestamp(42)),
                Some(Timestamp(45)),
                Some(worker("local"))
            ),
            "an ended job keeps the worker it ran on"
        );
    }
    let run = new_run(&*store, &["build"], 0).await;
    let record = reload(&*store, run.id).await;
    assert_eq!((record.started, record.finished), (None, None));
    assert_eq!(
        (record.jobs[0].started, record.jobs[0].worker.clone()),
        (None, None)
    );
}

async fn placed_and_running_jobs_name_their_worker(backend: Backend) {
    let store = backend.store().await;
    let run = new_run(&*store, &["build"], 0).await;
    let events = lifecycle(run.id, run.jobs[0].id, a(1), 0);
    within(store.append(events[..2].to_vec())).await.unwrap();
    let placed = reload(&*store, run.id).await;
    assert_eq!(
        placed.jobs[0].state,
        JobState::Placed {
            worker: worker("local")
        }
    );
    within(store.append(events[2..3].to_vec())).await.unwrap();
    let running = reload(&*store, run.id).await;
    assert_eq!(
        running.jobs[0].state,
        JobState::Running {
            worker: worker("local")
        }
    );
}

async fn retries_are_recorded_with_their_attempt_numbers(backend: Backend) {
    let store = backend.store().await;
    let run = new_run(&*store, &["test"], 0).await;
    let (r, job) = (run.id, run.jobs[0].id);
    let exit = StepExit::code(2);
    let mut events = lifecycle(r, job, a(1), 0);
    events.truncate(4); // queued, placed, started, step 0 started
    events.extend([
        DomainEvent::StepRetrying {
            run: r,
            job,
            job_attempt: a(1),
            step: 0,
            attempt: a(1),
            cause: StepFailure::Exit(exit),
            next_attempt: a(2),
            at: Timestamp(5),
        },
        DomainEvent::StepStarted {
            run: r,
            job,
            job_attempt: a(1),
            step: 0,
            attempt: a(2),
            log_offset: Some(7),
            at: Timestamp(6),
        },
        DomainEvent::StepFailed {
            run: r,
            job,
            job_attempt: a(1),
            step: 0,
            attempt: a(2),
            failure: StepFailure::Exit(exit),
            at: Timestamp(7),
        },
        DomainEvent::JobRetrying {
            run: r,
            job,
            attempt: a(1),
            cause: JobFailure::Step {
                step: 0,
                failure: StepFailure::Exit(exit),
            },
            next_attempt: a(2),
            at: Timestamp(8),
        },
    ]);
    within(store.append(events)).await.unwrap();
    let retried = reload(&*store, r).await;
    assert_eq!(
        (&retried.jobs[0].state, retried.jobs[0].attempt),
        (&JobState::Queued, a(2))
    );
    within(store.append(lifecycle(r, job, a(2), 20)))
        .await
        .unwrap();
    let record = reload(&*store, r).await;
    let job = &record.jobs[0];
    assert_eq!((&job.state, job.attempt), (&JobState::Succeeded, a(2)));
    let steps: Vec<_> = job
        .steps
        .iter()
        .map(|s| {
            (
                s.job_attempt.get(),
                s.index,
                s.attempt.get(),
                s.state.name(),
                s.exit,
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (1, 0, 1, "failed", Some(exit)),
            (1, 0, 2, "failed", Some(exit)),
            (2, 0, 1, "succeeded", Some(StepExit::code(0))),
        ]
    );
    assert_eq!(
        job.steps[1].state,
        StepState::Failed {
            failure: StepFailure::Exit(exit)
        }
    );
}

async fn failed_and_skipped_jobs_keep_their_reasons(backend: Backend) {
    let store = backend.store().await;
    let run = new_run(&*store, &["build", "deploy"], 0).await;
    let (build, deploy) = (run.jobs[0].id, run.jobs[1].id);
    let reason = JobFailure::Provider {
        message: "image not found".into(),
    };
    let skip = JobSkipReason::NeedFailed { job: build };
    let mut events = lifecycle(run.id, build, a(1), 0);
    events.truncate(2);
    events.extend([
        DomainEvent::JobFailed {
            run: run.id,
            job: build,
            attempt: a(1),
            reason: reason.clone(),
            at: Timestamp(3),
        },
        DomainEvent::JobSkipped {
            run: run.id,
            job: deploy,
            attempt: a(1),
            reason: skip,
            at: Timestamp(4),
        },
    ]);
    within(store.append(events)).await.unwrap();
    let record = reload(&*store, run.id).await;
    assert_eq!(record.jobs[0].state, JobState::Failed { reason });
    assert_eq!(record.jobs[1].state, JobState::Skipped { reason: skip });
}

async fn events_round_trip_and_page_by_number(backend: Backend) {
    let store = backend.store().await;
    let run = new_run(&*store, &["build"], 0).await;
    let mut appended = vec![DomainEvent::RunStarted {
        run: run.id,
        at: Timestamp(1),
    }];
    appended.extend(lifecycle(run.id, run.jobs[0].id, a(1), 2));
    appended.push(DomainEvent::RunFailed {
        run: run.id,
        failed_jobs: vec![run.jobs[0].id],
        at: Timestamp(9),
    });
    within(store.append(appended.clone())).await.unwrap();
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = within(store.events(after, 3)).await.unwrap();
        assert!(page.len() <= 3);
        let Some(&(last, _)) = page.last() else {
            break;
        };
        after = last;
        read.extend(page);
    }
    let numbers: Vec<u64> = read.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=8).collect::<Vec<u64>>());
    let events: Vec<_> = read.into_iter().map(|(_, e)| e).collect();
    assert_eq!(events, appended);
    assert!(within(store.events(u64::MAX, 10)).await.unwrap().is_empty());
}

async fn an_event_about_an_unknown_job_fails_its_caller_alone(backend: Backend) {
    let store = backend.store().await;
    let run = new_run(&*store, &["build"], 0).await;
    let good = lifecycle(run.id, run.jobs[0].id, a(1), 0);
    let bad = lifecycle(run.id, JobId(4_242), a(1), 0);
    // Sent together, so that the writer is likely to put them in one batch.
    let (ok, err) = within(async {
        tokio::join!(
            store.append(good.clone()),
            store.append(vec![bad[0].clone()])
        )
    })
    .await;
    ok.unwrap();
    let err = err.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what } if what == "job-4242"),
        "{err:?}"
    );
    let stored = within(store.events(0, 100)).await.unwrap();
    assert_eq!(stored.len(), good.len(), "nothing of the failed append");
    let err = within(store.append(vec![DomainEvent::RunStarted {
        run: RunId(77),
        at: Timestamp(0),
    }]))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what } if what == "run-77"),
        "{err:?}"
    );
}

async fn concurrent_appends_are_all_committed_and_numbered_in_each_callers_order(backend: Backend) {
    let store = backend.store().await;
    let jobs: Vec<String> = (0..64).map(|i| format!("job{i}")).collect();
    let names: Vec<&str> = jobs.iter().map(String::as_str).collect();
    let run = new_run(&*store, &names, 0).await;
    let mut tasks = Vec::new();
    for job in &run.jobs {
        let (store, run_id, job_id) = (store.clone(), run.id, job.id);
        tasks.push(tokio::spawn(async move {
            // One job actor: its events one by one, each after the previous one committed.
            for event in lifecycle(run_id, job_id, a(1), 0) {
                store.append(vec![event]).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for task in tasks {
        within(task).await.unwrap().unwrap();
    }
    let events = within(store.events(0, 10_000)).await.unwrap();
    assert_eq!(events.len(), 64 * 6);
    let numbers: Vec<u64> = events.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=64 * 6).collect::<Vec<u64>>(), "no gaps");
    for job in &run.jobs {
        let kinds: Vec<_> = events
            .iter()
            .filter(|(_, e)| e.job_id() == Some(job.id))
            .map(|(_, e)| e.kind())
            .collect();
        assert_eq!(
            kinds,
            [
                "job_queued",
                "job_placed",
                "job_started",
                "step_started",
                "step_succeeded",
                "job_succeeded"
            ]
        );
    }
    let record = reload(&*store, run.id).await;
    assert!(record.jobs.iter().all(|j| j.state == JobState::Succeeded));
}

async fn unfinished_runs_survive_a_crash_oldest_first(backend: Backend) {
    let place = backend.place();
    let (first, second, done, instance) = {
        let store = place.open().await;
        let first = new_run(&*store, &["build"], 100).await;
        let second = new_run(&*store, &["build"], 200).await;
        let done = new_run(&*store, &["build"], 50).await;
        let mut events = vec![DomainEvent::RunStarted {
            run: first.id,
            at: Timestamp(101),
        }];
        events.extend(lifecycle(first.id, first.jobs[0].id, a(1), 102));
        events.truncate(4); // stopped while the job is running
        events.extend([
            DomainEvent::RunStarted {
                run: done.id,
                at: Timestamp(51),
            },
            DomainEvent::RunSucceeded {
                run: done.id,
                at: Timestamp(52),
            },
        ]);
        within(store.append(events)).await.unwrap();
        (first, second, done, store.instance_id().to_owned())
        // Dropped here without finishing anything.
    };
    let store = place.open().await;
    assert_eq!(store.instance_id(), instance, "the instance id is kept");
    assert_eq!(
        within(store.unfinished_runs()).await.unwrap(),
        [first.id, second.id]
    );
    let record = reload(&*store, first.id).await;
    assert_eq!(record.state, RunState::Running);
    assert_eq!(
        record.jobs[0].state,
        JobState::Running {
            worker: worker("local")
        }
    );
    assert_eq!(reload(&*store, done.id).await.state, RunState::Succeeded);
    assert_eq!(within(store.events(0, 100)).await.unwrap().len(), 6);
}

async fn a_schedule_tick_is_claimed_once_by_two_stores_on_one_database(backend: Backend) {
    let place = backend.place();
    let one = place.open().await;
    let two = place.open().await;
    let entry = "TZ=Europe/Paris 0 3 * * *";
    let tick = Timestamp(1_772_420_400_000);
    assert_eq!(within(one.last_tick("web", entry)).await.unwrap(), None);
    let (a, b) = within(async {
        tokio::join!(
            one.claim_tick("web", entry, tick, Timestamp(1)),
            two.claim_tick("web", entry, tick, Timestamp(2))
        )
    })
    .await;
    assert_eq!(
        [a.unwrap(), b.unwrap()].iter().filter(|won| **won).count(),
        1,
        "exactly one replica claims the tick"
    );
    assert!(
        !within(one.claim_tick("web", entry, tick, Timestamp(3)))
            .await
            .unwrap()
    );
    // Another entry, or another tick, is another claim.
    assert!(
        within(one.claim_tick("web", "@daily", tick, Timestamp(3)))
            .await
            .unwrap()
    );
    let later = Timestamp(tick.0 + 86_400_000);
    assert!(
        within(two.claim_tick("web", entry, later, Timestamp(4)))
            .await
            .unwrap()
    );
    assert_eq!(
        within(one.last_tick("web", entry)).await.unwrap(),
        Some(later)
    );
}

async fn a_failed_append_leaves_neither_its_events_nor_its_projections(backend: Backend) {
    let store = backend.store().await;
    let run = new_run(&*store, &["build"], 0).await;
    let mut events = vec![DomainEvent::RunStarted {
        run: run.id,
        at: Timestamp(1),
    }];
    events.extend(lifecycle(run.id, run.jobs[0].id, a(1), 2));
    // The last event names a job that does not exist: the whole call is one transaction.
    events.push(lifecycle(run.id, JobId(9_999), a(1), 9).remove(0));
    let err = within(store.append(events)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(within(store.events(0, 100)).await.unwrap().is_empty());
    let record = reload(&*store, run.id).await;
    assert_eq!(
        record.state,
        RunState::Pending,
        "the run's projection is untouched"
    );
    assert_eq!(record.jobs[0].state, JobState::Pending);
    assert!(record.jobs[0].steps.is_empty());
}

async fn concurrent_creates_and_appends_of_many_runs_all_commit(backend: Backend) {
    let store = backend.store().await;
    within(store.put_pipeline("web", WEB, Timestamp(0)))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let run = store
                .create_run(NewRun {
                    pipeline: "web".into(),
                    version: 1,
                    inputs: inputs(),
                    jobs: vec!["a".into(), "b".into()],
                    at: Timestamp(i),
                    opening: None,
                })
                .await?;
            let mut events = vec![DomainEvent::RunStarted {
                run: run.id,
                at: Timestamp(i),
            }];
            for job in &run.jobs {
                events.extend(lifecycle(run.id, job.id, a(1), i));
            }
            store.append(events).await?;
            store
                .append(vec![DomainEvent::RunSucceeded {
                    run: run.id,
                    at: Timestamp(i + 10),
                }])
                .await?;
            Ok::<_, StoreError>(run.id)
        }));
    }
    let mut runs = Vec::new();
    for task in tasks {
        runs.push(within(task).await.unwrap().unwrap());
    }
    runs.sort_unstable();
    runs.dedup();
    assert_eq!(runs.len(), 16, "every run has an id of its own");
    assert!(within(store.unfinished_runs()).await.unwrap().is_empty());
    let events = within(store.events(0, 10_000)).await.unwrap();
    let numbers: Vec<u64> = events.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=16 * 14).collect::<Vec<u64>>(), "no gaps");
    for run in runs {
        let record = reload(&*store, run).await;
        assert_eq!(record.state, RunState::Succeeded);
        assert!(record.jobs.iter().all(|j| j.state == JobState::Succeeded));
    }
}

async fn instance_ids_tell_databases_apart_and_are_kept(backend: Backend) {
    let (one, two) = (backend.place(), backend.place());
    let first = one.open().await.instance_id().to_owned();
    let second = two.open().await.instance_id().to_owned();
    assert!(!first.is_empty() && !second.is_empty());
    assert_ne!(first, second);
    assert_eq!(one.open().await.instance_id(), first, "kept at a reopening");
}
