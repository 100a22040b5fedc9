//! Throughput of the SQLite store: events/s appended with their projections, as job actors
//! append them (one event per call, each after the previous one committed), with many jobs in
//! flight so that group commit batches them; and jobs/s created by `create_run`.
//!
//! `cargo bench -p hodei-adapters --bench store` (release build). Each job lifecycle is the
//! six events of a successful one-step job (queued, placed, started, step started, step
//! succeeded, succeeded); each run of ten jobs adds run started and run succeeded: 6.2 events
//! per job. The figures are in docs/performance.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hodei_adapters::sqlite::SqliteStore;
use hodei_domain::ids::{JobId, RunId, Timestamp, WorkerId};
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{NewRun, RunRecord, Store};
use hodei_domain::state::{Attempt, DomainEvent};
use tokio::runtime::Runtime;

/// Jobs per run, and runs per measured iteration.
const JOBS_PER_RUN: usize = 10;
const RUNS: usize = 200;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

fn new_run(at: i64) -> NewRun {
    NewRun {
        pipeline: "bench".into(),
        version: 1,
        inputs: RunInputs::default(),
        jobs: (0..JOBS_PER_RUN).map(|i| format!("job-{i}")).collect(),
        at: Timestamp(at),
        opening: None,
    }
}

/// Creates `count` runs, `parallel` creators at a time.
async fn create_runs(store: &Arc<SqliteStore>, count: usize, parallel: usize) -> Vec<RunRecord> {
    let tasks: Vec<_> = (0..parallel)
        .map(|k| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let mut runs = Vec::new();
                for i in (k..count).step_by(parallel) {
                    runs.push(store.create_run(new_run(i as i64)).await.expect("run"));
                }
                runs
            })
        })
        .collect();
    let mut runs = Vec::with_capacity(count);
    for task in tasks {
        runs.extend(task.await.expect("creator"));
    }
    runs
}

fn lifecycle(run: RunId, job: JobId, at: i64) -> Vec<DomainEvent> {
    let (attempt, worker) = (Attempt::FIRST, WorkerId("local".into()));
    vec![
        DomainEvent::JobQueued {
            run,
            job,
            attempt,
            at: Timestamp(at),
        },
        DomainEvent::JobPlaced {
            run,
            job,
            attempt,
            worker: worker.clone(),
            at: Timestamp(at + 1),
        },
        DomainEvent::JobStarted {
            run,
            job,
            attempt,
            worker,
            at: Timestamp(at + 2),
        },
        DomainEvent::StepStarted {
            run,
            job,
            job_attempt: attempt,
            step: 0,
            attempt,
            log_offset: Some(0),
            at: Timestamp(at + 3),
        },
        DomainEvent::StepSucceeded {
            run,
            job,
            job_attempt: attempt,
            step: 0,
            attempt,
            at: Timestamp(at + 4),
        },
        DomainEvent::JobSucceeded {
            run,
            job,
            attempt,
            at: Timestamp(at + 5),
        },
    ]
}

/// Drives every job of `runs` through its lifecycle, `in_flight` jobs at a time, one event per
/// append. Returns the number of events appended.
async fn drive(store: &Arc<SqliteStore>, runs: &[RunRecord], in_flight: usize) -> u64 {
    let jobs: Arc<Vec<(RunId, JobId, usize)>> = Arc::new(
        runs.iter()
            .flat_map(|r| r.jobs.iter().enumerate().map(|(i, j)| (r.id, j.id, i)))
            .collect(),
    );
    let tasks: Vec<_> = (0..in_flight)
        .map(|k| {
            let (store, jobs) = (Arc::clone(store), Arc::clone(&jobs));
            tokio::spawn(async move {
                let mut appended = 0u64;
                for &(run, job, position) in jobs.iter().skip(k).step_by(in_flight) {
                    let mut events = lifecycle(run, job, 0);
                    if position == 0 {
                        events.insert(
                            0,
                            DomainEvent::RunStarted {
                                run,
                                at: Timestamp(0),
                            },
                        );
                    }
                    if position == JOBS_PER_RUN - 1 {
                        events.push(DomainEvent::RunSucceeded {
                            run,
                            at: Timestamp(9),
                        });
                    }
                    for event in events {
                        store.append(vec![event]).await.expect("append");
                        appended += 1;
                    }
                }
                appended
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("job task");
    }
    total
}

fn store(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let events_per_iteration = (RUNS * JOBS_PER_RUN * 6 + RUNS * 2) as u64;
    let mut group = c.benchmark_group("store");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(15));

    for (kind, in_flight) in [("file", 100), ("file", 1_000), ("memory", 1_000)] {
        let store = rt.block_on(async {
            let store = match kind {
                "file" => SqliteStore::open(&dir.path().join(format!("{in_flight}.db"))).await,
                _ => SqliteStore::memory().await,
            };
            let store = Arc::new(store.expect("a store"));
            let source = "name: bench\njobs: { a: { steps: [{ run: 'true' }] } }\n";
            store
                .put_pipeline("bench", source, Timestamp(0))
                .await
                .expect("pipeline");
            store
        });
        group.throughput(Throughput::Elements(events_per_iteration));
        group.bench_function(
            BenchmarkId::new(format!("append_job_lifecycles/{kind}/in_flight"), in_flight),
            |b| {
                b.iter_custom(|iterations| {
                    rt.block_on(async {
                        let mut measured = Duration::ZERO;
                        for _ in 0..iterations {
                            let runs = create_runs(&store, RUNS, 50).await;
                            let start = Instant::now();
                            let appended = drive(&store, &runs, in_flight).await;
                            measured += start.elapsed();
                            assert_eq!(appended, events_per_iteration);
                        }
                        measured
                    })
                })
            },
        );
        if in_flight == 1_000 {
            group.throughput(Throughput::Elements((RUNS * JOBS_PER_RUN) as u64));
            group.bench_function(
                BenchmarkId::new(format!("create_run_jobs/{kind}/in_flight"), 100),
                |b| {
                    b.iter_custom(|iterations| {
                        rt.block_on(async {
                            let start = Instant::now();
                            for _ in 0..iterations {
                                create_runs(&store, RUNS, 100).await;
                            }
                            start.elapsed()
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
