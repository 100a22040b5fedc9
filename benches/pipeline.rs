//! Pipeline loading benchmarks: `load` (YAML parse, decode, validate) alone, and `load` followed
//! by `plan` (matrix expansion and the `needs` DAG), on generated pipelines of 10 to 10,000 jobs.
//!
//! Run with `cargo bench --bench pipeline`; the figures and the targets are in
//! `docs/performance.md`. The inputs come from [`common::generate`] with a fixed seed, so every run
//! measures the same bytes. Throughput is in planned jobs (after matrix expansion) for both
//! groups, so their figures compare directly.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hodei_domain::load::load;
use hodei_domain::plan::plan;

use common::{Generated, SEED, generate};

/// Sizes in planned jobs. 10,000 is the most a pipeline may expand to.
const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

/// Generates the pipeline of `jobs` jobs and checks, outside the measurement, that it loads
/// without any diagnostic and plans to what the generator promised: a benchmark of the error
/// path, or of a different pipeline than documented, would be worthless.
fn input(jobs: usize) -> Generated {
    let generated = generate(jobs, SEED);
    let loaded = load(&generated.yaml);
    assert!(
        loaded.diagnostics.is_empty(),
        "generated pipeline of {jobs} jobs has diagnostics: {:#?}",
        loaded.diagnostics
    );
    let pipeline = loaded
        .pipeline
        .expect("a pipeline without diagnostics loads");
    assert_eq!(pipeline.jobs.len(), generated.written_jobs);
    let planned = plan(&pipeline);
    assert_eq!(planned.jobs.len(), generated.planned_jobs);
    assert_eq!(planned.jobs.len(), jobs);
    assert_eq!(planned.edges, generated.edges);
    generated
}

/// Fewer samples for the large inputs so one run of the suite stays within a few minutes; the
/// interval stays narrow because each sample still runs for tens of milliseconds.
fn configure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    jobs: usize,
) {
    group.throughput(Throughput::Elements(jobs as u64));
    if jobs >= 10_000 {
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(10));
    } else {
        group
            .sample_size(100)
            .measurement_time(Duration::from_secs(8));
    }
}

fn benches(c: &mut Criterion) {
    let inputs: Vec<Generated> = SIZES.iter().map(|&jobs| input(jobs)).collect();

    let mut group = c.benchmark_group("load");
    for (&jobs, generated) in SIZES.iter().zip(&inputs) {
        configure(&mut group, jobs);
        group.bench_with_input(
            BenchmarkId::from_parameter(jobs),
            generated.yaml.as_str(),
            |b, yaml| b.iter(|| load(black_box(yaml))),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("load_plan");
    for (&jobs, generated) in SIZES.iter().zip(&inputs) {
        configure(&mut group, jobs);
        group.bench_with_input(
            BenchmarkId::from_parameter(jobs),
            generated.yaml.as_str(),
            |b, yaml| {
                b.iter(|| {
                    let loaded = load(black_box(yaml));
                    // `input` proved the pipeline valid; `Option::map` keeps a panic out of the loop.
                    loaded.pipeline.as_ref().map(plan)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
