//! The Docker provider against the engine's own speed, measured in the same run
//! (`cargo bench -p hodei-adapters --bench docker_jobs`; figures in `docs/performance.md`):
//!
//! - one one-step job at a time — `set_up`, one `echo hello` step with its output collected,
//!   `tear_down` — against the raw API sequence for the same container: create, start, wait,
//!   remove. Rounds alternate between the two, so that a slower moment of the engine hits both;
//! - many such jobs, `PARALLEL` at a time, against the raw sequence `PARALLEL` at a time: jobs
//!   per second, and the ratio.
//!
//!   The parallel part runs in blocks that alternate between the two (`HODEI_DOCKER_BLOCKS`,
//!   default 5), and reports the median of the blocks' ratios with the lowest and highest.
//!
//! `HODEI_DOCKER_ROUNDS` (default 20) and `HODEI_DOCKER_PARALLEL` (default 8) change the sizes.

#[allow(dead_code)]
#[path = "../tests/docker/support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use hodei_domain::ports::Provider;

use support::{Fixture, IMAGE, step};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a short pass that checks it works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = env_or("HODEI_DOCKER_ROUNDS", if quick { 2 } else { 20 });
    let parallel = env_or("HODEI_DOCKER_PARALLEL", if quick { 2 } else { 8 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let fx = Arc::new(Fixture::new("bench-jobs").await);
        // Warm the engine and the image's layers up.
        job(&fx, 1).await;
        raw(&fx.docker).await;

        let (mut hodei, mut engine) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            hodei.push(timed(job(&fx, 10 + round as u64)).await);
            engine.push(timed(raw(&fx.docker)).await);
        }
        let (h, e) = (median(&mut hodei), median(&mut engine));
        println!(
            "one-step Docker job, one at a time: provider median {:.1} ms, raw create+start+wait+remove median {:.1} ms: {:.3}x ({rounds} rounds each)",
            ms(h),
            ms(e),
            h.as_secs_f64() / e.as_secs_f64()
        );

        // Parallel throughput, in blocks that alternate between the provider and the raw
        // sequence: a slower moment of the machine (another build on the cores) hits the
        // blocks next to each other alike. Each pair of blocks gives a ratio; the median of the
        // ratios is the figure, with the lowest and highest beside it.
        let blocks = env_or("HODEI_DOCKER_BLOCKS", if quick { 1 } else { 5 });
        let jobs = rounds * parallel;
        let (mut hodei_total, mut engine_total) = (Duration::ZERO, Duration::ZERO);
        let mut ratios = Vec::new();
        for block in 0..blocks {
            let base = 1_000 + (block * jobs) as u64;
            let hodei = timed(in_parallel(parallel, jobs, |i| {
                let fx = fx.clone();
                async move { job(&fx, base + i as u64).await }
            }))
            .await;
            let engine = timed(in_parallel(parallel, jobs, |_| {
                let docker = fx.docker.clone();
                async move { raw(&docker).await }
            }))
            .await;
            hodei_total += hodei;
            engine_total += engine;
            ratios.push(engine.as_secs_f64() / hodei.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        let rate = |total: Duration| (jobs * blocks) as f64 / total.as_secs_f64();
        println!(
            "one-step Docker jobs, {parallel} at a time: provider {:.1} jobs/s, raw sequence {:.1} containers/s: median {:.1}% of the engine's throughput (lowest {:.1}%, highest {:.1}%; {blocks} alternating blocks of {jobs} jobs each)",
            rate(hodei_total),
            rate(engine_total),
            ratios[ratios.len() / 2] * 100.0,
            ratios[0] * 100.0,
            ratios[ratios.len() - 1] * 100.0,
        );
    });
}

/// Runs `count` tasks made by `task`, `parallel` at a time, to the end.
async fn in_parallel<F>(parallel: usize, count: usize, task: impl Fn(usize) -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        if set.len() >= parallel {
            set.join_next().await;
        }
        set.spawn(task(i));
    }
    while set.join_next().await.is_some() {}
}

async fn timed(future: impl std::future::Future<Output = ()>) -> Duration {
    let began = Instant::now();
    future.await;
    began.elapsed()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A one-step job through the provider, its output checked.
async fn job(fx: &Fixture, id: u64) {
    let ws = fx.set_up(id, |_| {}).await;
    let (exit, output) = fx.run(&ws, &step(0, "echo hello")).await;
    assert!(
        exit.is_success() && output == "hello\n",
        "{exit:?} {output:?}"
    );
    fx.provider.tear_down(&ws).await.expect("torn down");
}

/// The engine's own sequence for the same container.
async fn raw(docker: &Docker) {
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec![
            "/bin/sh".into(),
            "-e".into(),
            "-c".into(),
            "echo hello".into(),
        ]),
        ..Default::default()
    };
    let id = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .expect("created")
        .id;
    docker.start_container(&id, None).await.expect("started");
    let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
    while let Some(result) = wait.next().await {
        result.expect("exited 0");
    }
    docker
        .remove_container(
            &id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .expect("removed");
}
