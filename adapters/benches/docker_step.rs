//! Container per step or exec per step? The two designs of the Docker provider, timed on the
//! engine of this machine with the busybox test image (`cargo bench -p hodei-adapters --bench
//! docker_step`). Prints, for each design, the median and the fastest of a few rounds of:
//! a one-step job (set up, one `echo` step, tear down) and one more step in a job already set up.
//!
//! The container-per-step figures go through [`DockerProvider`] itself; the exec design, which
//! the provider does not implement, is timed with the same engine calls it would make: a
//! long-lived `sleep` container with the workspace mounted, then an exec per step.

#[allow(dead_code)]
#[path = "../tests/docker/support.rs"]
mod support;

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use futures_util::StreamExt;
use hodei_domain::ports::Provider;

use support::{Fixture, IMAGE, step};

/// Rounds of each measurement: 15, or 2 in `cargo test --benches` (no `--bench`), which only
/// checks that the benchmark works.
fn rounds() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        15
    } else {
        2
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let fx = Fixture::new("bench").await;
        report("container per step: one-step job", per_step_job(&fx).await);
        report(
            "container per step: one more step",
            per_step_step(&fx).await,
        );
        report("exec per step: one-step job", exec_job(&fx.docker).await);
        report("exec per step: one more step", exec_step(&fx.docker).await);
    });
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{what:<40} median {:>6.1} ms   fastest {:>6.1} ms   ({} rounds)",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times.len()
    );
}

async fn per_step_job(fx: &Fixture) -> Vec<Duration> {
    let mut times = Vec::new();
    for round in 0..rounds() {
        let began = Instant::now();
        let ws = fx.set_up(100 + round as u64, |_| {}).await;
        let (_, output) = fx.run(&ws, &step(0, "echo hello")).await;
        assert_eq!(output, "hello\n");
        fx.provider.tear_down(&ws).await.expect("torn down");
        times.push(began.elapsed());
    }
    times
}

async fn per_step_step(fx: &Fixture) -> Vec<Duration> {
    let ws = fx.set_up(200, |_| {}).await;
    let mut times = Vec::new();
    for round in 0..rounds() {
        let began = Instant::now();
        let (_, output) = fx.run(&ws, &step(round as u32, "echo hello")).await;
        assert_eq!(output, "hello\n");
        times.push(began.elapsed());
    }
    fx.provider.tear_down(&ws).await.expect("torn down");
    times
}

/// The exec design's set-up: a long-lived container holding the job's workspace.
async fn job_container(docker: &Docker, dir: &std::path::Path) -> String {
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["sleep".into(), "3600".into()]),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/workspace", dir.display())]),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .expect("created")
        .id;
    docker.start_container(&id, None).await.expect("started");
    id
}

/// The exec design's step: an exec with its output collected, then its exit code.
async fn exec(docker: &Docker, container: &str) {
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec!["/bin/sh", "-e", "-c", "echo hello"]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                working_dir: Some("/workspace"),
                ..Default::default()
            },
        )
        .await
        .expect("exec created");
    let mut output = Vec::new();
    if let StartExecResults::Attached {
        output: mut stream, ..
    } = docker
        .start_exec(&created.id, None)
        .await
        .expect("exec started")
    {
        while let Some(chunk) = stream.next().await {
            output.extend_from_slice(&chunk.expect("output").into_bytes());
        }
    }
    assert_eq!(output, b"hello\n");
    let code = docker
        .inspect_exec(&created.id)
        .await
        .expect("inspected")
        .exit_code;
    assert_eq!(code, Some(0));
}

async fn exec_job(docker: &Docker) -> Vec<Duration> {
    let base = tempfile::tempdir().expect("a directory");
    let mut times = Vec::new();
    for round in 0..rounds() {
        let began = Instant::now();
        let dir = base.path().join(round.to_string());
        tokio::fs::create_dir_all(&dir).await.expect("workspace");
        let id = job_container(docker, &dir).await;
        exec(docker, &id).await;
        remove(docker, &id).await;
        tokio::fs::remove_dir_all(&dir)
            .await
            .expect("workspace removed");
        times.push(began.elapsed());
    }
    times
}

async fn exec_step(docker: &Docker) -> Vec<Duration> {
    let base = tempfile::tempdir().expect("a directory");
    let id = job_container(docker, base.path()).await;
    let mut times = Vec::new();
    for _ in 0..rounds() {
        let began = Instant::now();
        exec(docker, &id).await;
        times.push(began.elapsed());
    }
    remove(docker, &id).await;
    times
}

async fn remove(docker: &Docker, id: &str) {
    let options = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    docker
        .remove_container(id, Some(options))
        .await
        .expect("removed");
}
