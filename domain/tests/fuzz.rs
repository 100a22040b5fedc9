//! Fuzzing the loader: arbitrary bytes and generated pipeline-shaped YAML never panic, never hang,
//! and every problem found in a file points at a line and column.
//!
//! Each property runs for a time budget, `HODEI_FUZZ_SECONDS` (default 5 s each), so CI can
//! fuzz for longer without changing code: `HODEI_FUZZ_SECONDS=60 cargo test -p hodei-domain --test fuzz`.

use std::time::{Duration, Instant};

use hodei_domain::load::load_bytes;
use hodei_domain::plan::plan;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn budget() -> Duration {
    let seconds = std::env::var("HODEI_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(seconds)
}

/// Runs `test` on values of `strategy` until the time budget is spent; fails on the first failure
/// with the shrunk input.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let deadline = Instant::now() + budget();
    let mut cases = 0u32;
    let mut round = 0u32;
    while Instant::now() < deadline {
        let config = Config {
            cases: 64,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(u64::from(round)),
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        if let Err(err) = runner.run(&strategy, &test) {
            panic!("{name}: {err}");
        }
        cases += 64;
        round += 1;
    }
    eprintln!("{name}: {cases} cases");
}

/// Checks what must hold for any input.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let loaded = load_bytes(bytes);
    prop_assert!(
        started.elapsed() < Duration::from_secs(5),
        "loading took {:?}: likely a hang",
        started.elapsed()
    );
    match &loaded.pipeline {
        Some(pipeline) => {
            prop_assert!(!loaded.diagnostics.iter().any(|d| d.is_error()));
            let plan = plan(pipeline);
            prop_assert!(!plan.jobs.is_empty());
            prop_assert_eq!(plan.order.len(), plan.jobs.len());
        }
        None => prop_assert!(
            loaded.diagnostics.iter().any(|d| d.is_error()),
            "rejected without an error"
        ),
    }
    for diagnostic in &loaded.diagnostics {
        prop_assert!(diagnostic.span.is_some(), "no position: {:?}", diagnostic);
        prop_assert!(!diagnostic.message.is_empty());
    }
    Ok(())
}

#[test]
fn arbitrary_bytes_never_panic() {
    fuzz(
        "bytes",
        proptest::collection::vec(any::<u8>(), 0..2048),
        |bytes| check(&bytes),
    );
}

#[test]
fn arbitrary_text_never_panics() {
    fuzz("text", "\\PC{0,512}", |text| check(text.as_bytes()));
}

const KEYS: &[&str] = &[
    "name",
    "on",
    "parameters",
    "env",
    "defaults",
    "jobs",
    "post",
    "steps",
    "needs",
    "runs_on",
    "image",
    "services",
    "resources",
    "timeout",
    "retry",
    "when",
    "matrix",
    "concurrency",
    "approval",
    "artifacts",
    "cache",
    "continue_on_error",
    "priority",
    "run",
    "shell",
    "working_dir",
    "cpu",
    "memory",
    "max",
    "delay",
    "default",
    "choices",
    "push",
    "branches",
    "schedule",
    "manual",
    "include",
    "exclude",
    "key",
    "paths",
    "role",
    "always",
    "failure",
    "a",
    "b",
    "build",
    "<<",
    "nmae",
];
const SCALARS: &[&str] = &[
    "x",
    "build",
    "a",
    "b",
    "10m",
    "1h30m",
    "0",
    "2",
    "500m",
    "2Gi",
    "true",
    "false",
    "null",
    "~",
    "''",
    "\"branch == 'main'\"",
    "\"params.X == 1\"",
    "'0 3 * * *'",
    "[]",
    "{}",
    "-1",
    "1e9",
    "&a x",
    "*a",
    "\"a: b\"",
    "|\n  multi\n  line",
    "!!str 5",
    "!custom x",
    "\"\\u0000\"",
    "999999999999999999999",
];

/// YAML shaped like a pipeline: known keys, near-miss keys, every kind of value, anchors.
fn yaml_value(depth: u32) -> BoxedStrategy<String> {
    let scalar = proptest::sample::select(SCALARS).prop_map(str::to_owned);
    if depth == 0 {
        return scalar.boxed();
    }
    let inner = yaml_value(depth - 1);
    prop_oneof![
        3 => scalar,
        2 => proptest::collection::vec((proptest::sample::select(KEYS), inner.clone()), 0..5).prop_map(|entries| {
            let body: Vec<String> = entries.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{{{}}}", body.join(", "))
        }),
        1 => proptest::collection::vec(inner, 0..5).prop_map(|items| format!("[{}]", items.join(", "))),
    ]
    .boxed()
}

fn pipeline_yaml() -> impl Strategy<Value = String> {
    let job = (
        proptest::sample::select(KEYS),
        proptest::collection::vec((proptest::sample::select(KEYS), yaml_value(3)), 0..6),
    );
    (
        proptest::option::of(proptest::sample::select(SCALARS)),
        proptest::collection::vec(job, 0..6),
        proptest::collection::vec((proptest::sample::select(KEYS), yaml_value(3)), 0..3),
    )
        .prop_map(|(name, jobs, extra)| {
            let mut out = String::new();
            if let Some(name) = name {
                out.push_str(&format!("name: {name}\n"));
            }
            for (key, value) in extra {
                out.push_str(&format!("{key}: {value}\n"));
            }
            out.push_str("jobs:\n");
            for (job, entries) in jobs {
                out.push_str(&format!("  {job}:\n"));
                for (key, value) in entries {
                    out.push_str(&format!("    {key}: {value}\n"));
                }
            }
            out
        })
}

#[test]
fn pipeline_shaped_yaml_never_panics_and_is_always_located() {
    fuzz("pipeline-yaml", pipeline_yaml(), |text| {
        check(text.as_bytes())
    });
}
