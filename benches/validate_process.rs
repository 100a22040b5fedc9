//! The whole `hodei validate FILE` process, as a user or a CI job runs it: `fork`/`exec` of the
//! release binary, dynamic linking, argument parsing, reading the file, load, plan, the summary
//! line, and exit. On generated pipelines of 100 and 1,000 jobs.
//!
//! Run with `cargo bench --bench validate_process` (the bench profile builds the binary with
//! release settings). The inputs are written once to `<target>/tmp/validate_process/` and left
//! there for cross-checks. The figures and the target are in `docs/performance.md`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use common::{SEED, generate};

const SIZES: [usize; 2] = [100, 1_000];

const HODEI: &str = env!("CARGO_BIN_EXE_hodei");

/// Where the generated files go: kept after the run (and overwritten by the next) so that the
/// figure can be cross-checked outside criterion, e.g. with hyperfine on the same file.
fn input_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("validate_process");
    std::fs::create_dir_all(&dir).expect("create the bench's input directory");
    dir
}

/// Runs `hodei validate FILE` once with its output captured and checks, outside the measurement,
/// that it succeeds and reports the planned jobs: the benchmark must time the success path.
fn check(file: &Path, jobs: usize, edges: usize) {
    let output = Command::new(HODEI)
        .arg("validate")
        .arg(file)
        .output()
        .expect("run hodei");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "hodei validate failed: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "hodei validate printed diagnostics: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("{jobs} jobs, {edges} edges")),
        "unexpected summary: {stdout}"
    );
}

fn benches(c: &mut Criterion) {
    let dir = input_dir();
    let mut group = c.benchmark_group("validate_process");
    group
        .sample_size(100)
        .measurement_time(Duration::from_secs(15));
    for jobs in SIZES {
        let generated = generate(jobs, SEED);
        let file = dir.join(format!("pipeline-{jobs}.yml"));
        std::fs::write(&file, &generated.yaml).expect("write the generated pipeline");
        check(&file, generated.planned_jobs, generated.edges);

        group.throughput(Throughput::Elements(jobs as u64));
        group.bench_with_input(BenchmarkId::from_parameter(jobs), &file, |b, file| {
            b.iter(|| {
                // Output to /dev/null as in a script that only looks at the exit code; a pipe
                // would add a reader thread to the measurement.
                let status = Command::new(HODEI)
                    .arg("validate")
                    .arg(file)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("run hodei");
                assert!(status.success(), "hodei validate failed: {status}");
            })
        });
    }
    group.finish();
}

criterion_group!(validate_process, benches);
criterion_main!(validate_process);
