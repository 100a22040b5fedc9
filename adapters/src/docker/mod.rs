//! # The Docker provider: steps in containers on a Docker engine
//!
//! [`DockerProvider`] runs each step of a job that has an `image` in a container of its own,
//! on the engine behind a local unix socket, through its API (bollard; never the `docker`
//! CLI). Where to start reading: [`DockerProvider`] here (configuration, the port's
//! lifecycle), then `convert.rs` (the pure translation of jobs, steps and services into the
//! engine's configuration, and the labels), `jobs.rs` (set-up and tear-down of a job's
//! workspace), `steps.rs` (a step's container, its wait and destroy), `logs.rs` (output),
//! `images.rs` (pull policy), `services.rs` (services and readiness), `reconcile.rs` (orphans
//! and re-attach), `engine.rs` (the engine calls), `error.rs`. The tests run a real engine: `adapters/tests/docker/`.
//!
//! ## Design: a container per step
//! Each step runs in a fresh container of the job's image; the steps of a job share its
//! workspace, a host directory bind-mounted at `/workspace`. The alternative, one long-lived
//! container per job with an exec per step, cannot keep `destroy_step`'s promise: the engine
//! has no call to kill an exec's processes, so a destroyed step would live on until the whole
//! job container goes. Measured here (Docker 20.10, 2 shared cores, busybox image, median of
//! 15, `cargo bench -p hodei-adapters --bench docker_step`): a one-step job takes 250 ms with
//! a container per step and 324 ms with a job container and an exec; each further step costs
//! 269 ms as a container and 44 ms as an exec. A fifth of a second per step is noise for CI
//! steps; a step that cannot be stopped is not. Details in `docs/docker.md`.
//!
//! ## Guarantees (on top of [`Provider`]'s)
//! - A step's container runs `/bin/sh -c 'exec "$@" 2>&1' hodei-step SHELL... SCRIPT`: the
//!   shell and the script as given, with stderr sent into stdout so that one pipe keeps their
//!   order. Its environment is the image's own (`PATH` and the like) with exactly
//!   [`StepSpec::env`] on top, nothing of Hodei's; its user is [`JobSpec::user`]; its limits
//!   are [`JobSpec::resources`] (CPU as `NanoCpus`, memory as a hard limit without extra
//!   swap); `tini` is its pid 1; its working directory is `/workspace` or
//!   [`StepSpec::working_dir`] inside it, which must exist.
//! - Every container and network carries the labels `hodei.instance`, `hodei.run`,
//!   `hodei.job`, `hodei.job-attempt`; step containers add `hodei.step` and
//!   `hodei.step-attempt`, service containers `hodei.service`. Names are
//!   `hodei-<instance>-<run>-<job>-<attempt>[-step<i>-<a> | -svc-<name>]`.
//! - The exit code, an out-of-memory kill (`State.OOMKilled`) and a kill by `destroy_step`
//!   (reported as `SIGKILL`) are data.
//! - `destroy_step` kills the container with `SIGKILL`: every process of the step goes with it.
//! - `tear_down` removes the job's step and service containers (with their anonymous
//!   volumes), its network and its workspace directory; it finds them by label, so it works
//!   after a failed `set_up` and after a restart of Hodei.
//! - Containers outlive the provider (dropping it stops only its readers): a later life can
//!   take a step back ([`Provider::reattach_step`]: the step's container, running or ended,
//!   followed again from its first byte; or [`DockerProvider::live_steps`] and
//!   [`DockerProvider::reattach`] from any byte) or reap them ([`Reconcile::reap_orphans`],
//!   which spares the job attempts it is given).
//!
//! ## Assumptions
//! The engine runs on this machine (the workspace is a host directory it mounts) and speaks
//! API 1.41 or later; images have `/bin/sh`. A job without `image` is refused at `set_up`.
//!
//! ## Errors
//! An engine that cannot be reached is [`ProviderError::Unavailable`] (retryable) in every
//! call. Otherwise [`ProviderError::SetUp`] for a missing image (naming it and the engine's
//! reason), a service that is not ready, a workspace that cannot be made;
//! [`ProviderError::Start`] for a step the engine refuses or a working directory that does not
//! exist; [`ProviderError::Wait`] for an unknown handle or output that cannot be followed to
//! its end; [`ProviderError::Other`] when `destroy_step` or `tear_down` cannot finish.

mod convert;
mod engine;
mod error;
mod images;
mod jobs;
mod logs;
mod reconcile;
mod services;
mod steps;
mod workers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, Docker};
use hodei_domain::ports::{
    BoxFuture, JobAttempt, JobSpec, Orphan, OutputSink, Provider, ProviderError, Reattached,
    Reconcile, StepHandle, StepSpec, Workspace,
};
use hodei_domain::state::{Attempt, StepExit};

pub use convert::{
    INSTANCE_LABEL, JOB_ATTEMPT_LABEL, JOB_LABEL, RUN_LABEL, SERVICE_LABEL, STEP_ATTEMPT_LABEL,
    STEP_LABEL, WORKSPACE_MOUNT,
};
use convert::{JobKey, JobSettings, StepKey};
pub use error::DockerError;
use error::Phase;
pub use reconcile::LiveStep;
use steps::Step;
pub use workers::{DockerPool, PoolLauncher, worker_container};

/// Where the engine is and how the provider uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The engine's socket: `unix:///var/run/docker.sock` by default.
    pub socket: String,
    /// The host directory under which job attempts get their workspaces.
    pub workspaces: PathBuf,
    /// The Hodei store this provider belongs to: give each its own, so that reconciliation
    /// never touches another Hodei's containers on the same engine.
    pub instance: String,
    /// How long `set_up` waits for the job's services to be ready: 60 s by default.
    pub service_ready_timeout: Duration,
    /// How long one engine request may take to answer (a long-running step's wait is not
    /// bounded by it): 120 s by default.
    pub request_timeout: Duration,
    /// Where the repositories' mirrors are, for jobs that check one out.
    pub mirrors: Option<PathBuf>,
}

impl DockerConfig {
    /// The defaults, with workspaces under `workspaces` and the given instance.
    pub fn new(workspaces: PathBuf, instance: String) -> DockerConfig {
        DockerConfig {
            socket: "unix:///var/run/docker.sock".to_owned(),
            workspaces,
            instance,
            service_ready_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
            mirrors: None,
        }
    }
}

/// Runs steps in containers on a Docker engine. See the documentation of this module.
pub struct DockerProvider {
    docker: Docker,
    base: PathBuf,
    instance: String,
    ready_timeout: Duration,
    mirrors: Option<PathBuf>,
    /// The jobs set up (or re-attached) in this life, with what their steps need.
    jobs: Mutex<HashMap<JobKey, Arc<JobSettings>>>,
    /// Started (or re-attached) steps by key and container id, until their job's tear-down.
    steps: Mutex<HashMap<(StepKey, String), Arc<Step>>>,
}

impl DockerProvider {
    /// Connects to the engine and agrees on the API version.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the engine does not answer.
    pub async fn connect(config: DockerConfig) -> Result<DockerProvider, ProviderError> {
        let unavailable = |err| DockerError::engine(format!("connect at {}", config.socket), err);
        let docker = Docker::connect_with_unix(
            &config.socket,
            config.request_timeout.as_secs().max(1),
            API_DEFAULT_VERSION,
        )
        .map_err(unavailable)
        .map_err(|err| err.into_provider(Phase::Other))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(unavailable)
            .map_err(|err| err.into_provider(Phase::Other))?;
        let base = std::path::absolute(&config.workspaces).map_err(|err| {
            DockerError::Workspace {
                action: "resolve",
                path: config.workspaces.clone(),
                source: err,
            }
            .into_provider(Phase::Other)
        })?;
        Ok(DockerProvider {
            docker,
            base,
            instance: config.instance,
            ready_timeout: config.service_ready_timeout,
            mirrors: config.mirrors.clone(),
            jobs: Mutex::new(HashMap::new()),
            steps: Mutex::new(HashMap::new()),
        })
    }

    /// The directory under which job attempts get their workspaces.
    pub fn workspaces(&self) -> &Path {
        &self.base
    }

    /// The value of the `hodei.instance` label on everything this provider creates.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The engine client, for callers that inspect what the provider made (tests, tools).
    pub fn engine(&self) -> &Docker {
        &self.docker
    }

    /// Everything the service `service` of a job has written so far (stdout and stderr as the
    /// engine interleaves them). Available from `set_up` until `tear_down`.
    pub async fn service_logs(
        &self,
        workspace: &Workspace,
        service: &str,
    ) -> Result<Vec<u8>, ProviderError> {
        let key = job_key(workspace);
        let mut labels = convert::job_labels(&self.instance, key);
        labels.insert(SERVICE_LABEL.to_owned(), service.to_owned());
        let found = engine::containers(&self.docker, &labels)
            .await
            .map_err(|err| err.into_provider(Phase::Other))?;
        let Some(id) = found.into_iter().find_map(|c| c.id) else {
            return Err(DockerError::Unknown {
                what: format!("service `{service}` of {key}"),
                why: "no container of it exists: not a service of the job, or torn down",
            }
            .into_provider(Phase::Other));
        };
        logs::read(&self.docker, &id, None)
            .await
            .map_err(|err| err.into_provider(Phase::Other))
    }

    /// Removes every container and network of this instance, running or not: for a Hodei that
    /// stops at once (a second Ctrl-C) and leaves nothing behind. Returns how many containers
    /// went.
    pub async fn remove_all(&self) -> Result<usize, ProviderError> {
        let labels = HashMap::from([(INSTANCE_LABEL.to_owned(), self.instance.clone())]);
        let removed = engine::remove_labelled(&self.docker, &labels)
            .await
            .map_err(|err| err.into_provider(Phase::Other))?;
        let keys: Vec<JobKey> = self.jobs().keys().copied().collect();
        for key in keys {
            let _ = jobs::remove_workspace(&convert::workspace_dir(&self.base, key)).await;
        }
        Ok(removed.len())
    }

    /// What every service of the job wrote so far, by service name, in name order.
    pub async fn all_service_logs(
        &self,
        workspace: &Workspace,
    ) -> Result<hodei_domain::ports::ServiceLogs, ProviderError> {
        let labels = convert::job_labels(&self.instance, job_key(workspace));
        let found = engine::containers(&self.docker, &labels)
            .await
            .map_err(|err| err.into_provider(Phase::Other))?;
        let mut services = Vec::new();
        for container in found {
            let service = container
                .labels
                .as_ref()
                .and_then(|labels| labels.get(SERVICE_LABEL).cloned());
            if let (Some(id), Some(service)) = (container.id, service) {
                let output = logs::read(&self.docker, &id, None)
                    .await
                    .map_err(|err| err.into_provider(Phase::Other))?;
                services.push((service, output));
            }
        }
        services.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(services)
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<JobKey, Arc<JobSettings>>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<(StepKey, String), Arc<Step>>> {
        self.steps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for DockerProvider {
    fn drop(&mut self) {
        // The containers live on for a later life; only the readers stop.
        for step in self.registry().values() {
            step.stop_following();
        }
    }
}

fn job_key(workspace: &Workspace) -> JobKey {
    JobKey {
        run: workspace.run,
        job: workspace.job,
        attempt: workspace.attempt,
    }
}

impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        error::PROVIDER
    }

    fn service_logs<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<hodei_domain::ports::ServiceLogs, ProviderError>> {
        Box::pin(self.all_service_logs(workspace))
    }

    fn copy_out<'a>(
        &'a self,
        workspace: &'a Workspace,
        patterns: &'a [String],
        into: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        // The workspace is a host directory that the job's containers mount.
        let dir = convert::workspace_dir(&self.base, job_key(workspace));
        Box::pin(crate::files::workspace::copy_out_of(
            dir,
            patterns.to_vec(),
            into.to_owned(),
            "docker",
        ))
    }

    fn copy_in<'a>(
        &'a self,
        workspace: &'a Workspace,
        from: &'a Path,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let dir = convert::workspace_dir(&self.base, job_key(workspace));
        Box::pin(crate::files::workspace::copy_into(
            from.to_owned(),
            dir,
            "docker",
        ))
    }

    fn set_up<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Workspace, ProviderError>> {
        Box::pin(async move {
            match self.set_up_job(job).await {
                Ok(workspace) => Ok(workspace),
                Err(err) => {
                    tracing::info!(job_id = %job.job, error = %err, "Cannot set up a job.");
                    Err(err.into_provider(Phase::SetUp))
                }
            }
        })
    }

    fn start_step<'a>(
        &'a self,
        workspace: &'a Workspace,
        step: &'a StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<StepHandle, ProviderError>> {
        Box::pin(async move {
            self.start(workspace, step, output).await.map_err(|err| {
                tracing::info!(
                    job_id = %workspace.job, step = step.index, error = %err,
                    "Cannot start a step."
                );
                err.into_provider(Phase::Start)
            })
        })
    }

    fn wait_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<StepExit, ProviderError>> {
        Box::pin(async move {
            self.wait(step)
                .await
                .map_err(|err| err.into_provider(Phase::Wait))
        })
    }

    fn destroy_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.destroy(step)
                .await
                .map_err(|err| err.into_provider(Phase::Other))
        })
    }

    fn tear_down<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.tear_down_job(job_key(workspace))
                .await
                .map_err(|err| err.into_provider(Phase::Other))
        })
    }

    fn reattach_step<'a>(
        &'a self,
        job: &'a JobSpec,
        index: u32,
        attempt: Attempt,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<Option<Reattached>, ProviderError>> {
        Box::pin(self.reattach_job_step(job, index, attempt, output))
    }
}

impl Reconcile for DockerProvider {
    fn reap_orphans<'a>(
        &'a self,
        spare: &'a [JobAttempt],
    ) -> BoxFuture<'a, Result<Vec<Orphan>, ProviderError>> {
        Box::pin(async move {
            self.reap(spare)
                .await
                .map_err(|err| err.into_provider(Phase::Other))
        })
    }
}
