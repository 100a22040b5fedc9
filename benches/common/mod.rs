//! Generated pipelines for the benchmarks (and any test that wants a large valid file).
//!
//! [`generate`] writes the YAML of a pipeline that plans to exactly the number of jobs asked for,
//! from a seed, with no dependency on `rand`: the same `(jobs, seed)` gives the same bytes on every
//! machine, so a figure in `docs/performance.md` is always about the same input.
//!
//! The shape aims at a large real pipeline rather than a stress test of one feature:
//! - every job has 1 to 3 steps with `run`, some with a `name`, an `env` or a `timeout`;
//! - about 1 job in 4 has its own `env`, 1 in 3 a `timeout`, 1 in 12 a `when` condition;
//! - about 1 job in 50 has a small matrix (2 to 4 instances);
//! - each job `needs` 0 to 3 distinct earlier jobs, so the `needs` graph is a DAG (no cycle
//!   by construction), with edges both to recent jobs and far back.
//!
//! Guarantees: the file loads without any diagnostic (no error, no warning) and plans to exactly
//! `jobs` jobs; `jobs` must be from 1 to 10,000 (`hodei_domain::validate::MAX_JOBS`).

// Each bench and test that includes this module uses a different part of it.
#![allow(dead_code)]

use std::fmt::Write as _;

/// The seed every benchmark uses, so that figures are comparable between runs and machines.
pub const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// A generated pipeline file and what it must plan to.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The YAML text.
    pub yaml: String,
    /// Jobs written in the file (matrix jobs count once).
    pub written_jobs: usize,
    /// Jobs once matrices are expanded: what `plan(..).jobs.len()` returns.
    pub planned_jobs: usize,
    /// `needs` edges between the expanded jobs: what `plan(..).edges` returns.
    pub edges: usize,
}

/// xorshift64* (Vigna 2016): small, fast and plenty random for shaping test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`; a zero seed (a fixed point of xorshift) is replaced.
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { SEED } else { seed })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`); the modulo bias is irrelevant for test data.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True about once in `n` draws.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One item of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const KINDS: [&str; 8] = [
    "build", "test", "lint", "package", "scan", "docs", "bench", "deploy",
];
const SERVICES: [&str; 6] = ["api", "worker", "web", "billing", "search", "auth"];
const COMMANDS: [&str; 8] = [
    "cargo build --release --locked",
    "cargo test --workspace -- --nocapture",
    "./ci/lint.sh",
    "make -C services/$SERVICE package",
    "./ci/scan.sh --fail-on high",
    "npm ci && npm run build",
    "docker build -t \"$REGISTRY/$SERVICE:$HODEI_RUN\" .",
    "./ci/upload.sh dist/ \"s3://artifacts/$HODEI_PIPELINE\"",
];
const WHENS: [&str; 4] = [
    "branch == 'main'",
    "starts_with(branch, 'release/') || tag != ''",
    "params.TARGET == 'production' && event != 'pull_request'",
    "event == 'push' && !contains(branch, 'wip')",
];
/// Job timeouts, each at least as long as every step timeout below (a longer step timeout is a
/// warning, and the generated files must load clean).
const JOB_TIMEOUTS: [&str; 3] = ["30m", "45m", "1h"];
const STEP_TIMEOUTS: [&str; 3] = ["5m", "10m", "20m"];
/// Matrices and how many instances each expands to.
const MATRICES: [(&str, usize); 3] = [
    ("      os: [bookworm, alpine]\n", 2),
    (
        "      os: [bookworm, alpine]\n      rust: [stable, beta]\n      exclude:\n        - { os: alpine, rust: beta }\n",
        3,
    ),
    (
        "      target: [x86_64, aarch64]\n      profile: [dev, release]\n",
        4,
    ),
];

/// A pipeline that plans to exactly `jobs` jobs, generated from `seed`.
///
/// # Panics
/// When `jobs` is 0 or over 10,000.
pub fn generate(jobs: usize, seed: u64) -> Generated {
    assert!(
        (1..=10_000).contains(&jobs),
        "generate: {jobs} jobs is outside 1..=10000"
    );
    let mut rng = Rng::new(seed);
    let mut yaml = String::with_capacity(jobs * 300);
    yaml.push_str(HEADER);
    // Per written job: its name and how many instances it expands to.
    let mut written: Vec<(String, usize)> = Vec::new();
    let mut planned = 0;
    let mut edges = 0;
    while planned < jobs {
        let index = written.len();
        let name = format!("{}-{}-{index:05}", rng.pick(&KINDS), rng.pick(&SERVICES));
        let _ = writeln!(yaml, "  {name}:");

        // Never over the total: a matrix only where its instances still fit.
        let matrix = if index > 0 && rng.one_in(50) {
            Some(*rng.pick(&MATRICES)).filter(|(_, n)| planned + n <= jobs)
        } else {
            None
        };
        let instances = matrix.map_or(1, |(_, n)| n);

        // 0 to 3 distinct earlier jobs: half near this one, half anywhere before it.
        let wanted = rng.below(4).min(index);
        let mut needs: Vec<usize> = Vec::with_capacity(wanted);
        while needs.len() < wanted {
            let back = if rng.one_in(2) {
                1 + rng.below(index.min(20))
            } else {
                1 + rng.below(index)
            };
            let need = index - back;
            if !needs.contains(&need) {
                needs.push(need);
            }
        }
        if !needs.is_empty() {
            let names: Vec<&str> = needs.iter().map(|&n| written[n].0.as_str()).collect();
            let _ = writeln!(yaml, "    needs: [{}]", names.join(", "));
            edges += instances * needs.iter().map(|&n| written[n].1).sum::<usize>();
        }

        let job_timeout = rng.one_in(3).then(|| *rng.pick(&JOB_TIMEOUTS));
        if let Some(timeout) = job_timeout {
            let _ = writeln!(yaml, "    timeout: {timeout}");
        }
        if rng.one_in(12) {
            let _ = writeln!(yaml, "    when: \"{}\"", rng.pick(&WHENS));
        }
        if rng.one_in(4) {
            let _ = writeln!(
                yaml,
                "    env:\n      SERVICE: {}\n      LEVEL: \"{}\"",
                rng.pick(&SERVICES),
                rng.below(5)
            );
        }
        if let Some((matrix, _)) = matrix {
            let _ = write!(yaml, "    matrix:\n{matrix}");
        }
        yaml.push_str("    steps:\n");
        for step in 0..1 + rng.below(3) {
            let command = rng.pick(&COMMANDS);
            if rng.one_in(3) {
                let _ = writeln!(yaml, "      - name: step {step}\n        run: {command:?}");
            } else {
                let _ = writeln!(yaml, "      - run: {command:?}");
            }
            if rng.one_in(5) {
                let _ = writeln!(
                    yaml,
                    "        env: {{ RUST_BACKTRACE: \"1\", STEP: \"{step}\" }}"
                );
            }
            // A step timeout only under a job timeout it cannot exceed, or with none.
            if rng.one_in(6) {
                let _ = writeln!(yaml, "        timeout: {}", rng.pick(&STEP_TIMEOUTS));
            }
        }
        written.push((name, instances));
        planned += instances;
    }
    Generated {
        yaml,
        written_jobs: written.len(),
        planned_jobs: planned,
        edges,
    }
}

const HEADER: &str = r#"# Generated by benches/common/mod.rs: a large pipeline for benchmarks.
name: generated
description: A large generated pipeline with a random DAG of needs.

on:
  push: { branches: [main, "release/*"] }
  pull_request: {}
  manual: {}

parameters:
  TARGET: { default: staging, choices: [staging, production] }

env:
  REGISTRY: registry.internal:5000
  RUST_LOG: info

defaults:
  image: "debian:bookworm"
  runs_on: [linux]
  timeout: 1h
  retry: { max: 1, delay: 30s }
  shell: bash

jobs:
"#;
