//! The benchmark generator (`benches/common`) keeps its promise: every size the benchmarks use
//! loads without a diagnostic and plans to the jobs and edges it reports. Without this, a change
//! to the loader's rules would surface only as a panic in the next `cargo bench`.

#[path = "../benches/common/mod.rs"]
mod common;

use hodei_domain::load::load;
use hodei_domain::plan::plan;

#[test]
fn generated_pipelines_load_clean_and_plan_to_the_promised_jobs() {
    for jobs in [1, 10, 100, 1_000, 10_000] {
        let generated = common::generate(jobs, common::SEED);
        let loaded = load(&generated.yaml);
        assert!(
            loaded.diagnostics.is_empty(),
            "{jobs} jobs: {:#?}",
            loaded.diagnostics
        );
        let pipeline = loaded.pipeline.expect("no diagnostic, so a pipeline");
        assert_eq!(pipeline.jobs.len(), generated.written_jobs, "{jobs} jobs");
        let planned = plan(&pipeline);
        assert_eq!(planned.jobs.len(), jobs);
        assert_eq!(planned.edges, generated.edges, "{jobs} jobs");
        assert_eq!(
            planned.order.len(),
            jobs,
            "{jobs} jobs: every job is ordered"
        );
    }
}

#[test]
fn generated_pipelines_are_deterministic_and_depend_on_the_seed() {
    assert_eq!(common::generate(200, 7).yaml, common::generate(200, 7).yaml);
    assert_ne!(common::generate(200, 7).yaml, common::generate(200, 8).yaml);
}

#[test]
fn generated_needs_only_point_backwards() {
    let generated = common::generate(500, common::SEED);
    let pipeline = load(&generated.yaml).pipeline.expect("valid");
    let position = |name: &str| pipeline.jobs.iter().position(|j| j.name.as_str() == name);
    for (i, job) in pipeline.jobs.iter().enumerate() {
        assert!(
            job.needs.len() <= 3,
            "{} needs {} jobs",
            job.name,
            job.needs.len()
        );
        for need in &job.needs {
            assert!(
                position(need.as_str()).is_some_and(|p| p < i),
                "{} needs {need}, not an earlier job",
                job.name
            );
        }
    }
}
