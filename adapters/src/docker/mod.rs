//! # The Docker provider: steps in containers on a Docker engine
//!
//! [`DockerProvider`] runs each step of a job that has an `image` in a container of its own,
//! on the engine behind a local unix socket, through its API (bollard; never the `docker`
//! CLI). Where to start reading: [`DockerProvider`] here (the lifecycle and the registry of
//! started steps), then `convert.rs` (the pure translation of jobs, steps and services into
//! the engine's configuration, and the labels), `engine.rs` (the engine calls), `images.rs`
//! (pull policy), `services.rs` (services and readiness), `logs.rs` (output), `reconcile.rs`
//! (orphans and re-attach), `error.rs`. The tests run a real engine: `adapters/tests/docker.rs`.
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
//!   re-attach to them ([`DockerProvider::live_steps`], [`DockerProvider::reattach`]) or reap
//!   them ([`Reconcile::reap_orphans`]).
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
mod logs;
mod reconcile;
mod services;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, Docker};
use futures_util::StreamExt;
use hodei_domain::ports::{
    BoxFuture, JobSpec, Orphan, OutputSink, Provider, ProviderError, Reconcile, StepHandle,
    StepSpec, Workspace,
};
use hodei_domain::state::StepExit;

pub use convert::{
    INSTANCE_LABEL, JOB_ATTEMPT_LABEL, JOB_LABEL, RUN_LABEL, SERVICE_LABEL, STEP_ATTEMPT_LABEL,
    STEP_LABEL, WORKSPACE_MOUNT,
};
use convert::{JobKey, JobSettings, StepKey};
pub use error::DockerError;
use error::Phase;
pub use reconcile::LiveStep;

/// How long `wait_step` waits, after the container stopped, for the end of its output.
const OUTPUT_DRAIN: Duration = Duration::from_secs(30);
/// How long `destroy_step` waits for a killed container to be reported stopped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

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
        }
    }
}

/// Runs steps in containers on a Docker engine. See the [module documentation](self).
pub struct DockerProvider {
    docker: Docker,
    base: PathBuf,
    instance: String,
    ready_timeout: Duration,
    /// The jobs set up (or re-attached) in this life, with what their steps need.
    jobs: Mutex<HashMap<JobKey, Arc<JobSettings>>>,
    /// Started (or re-attached) steps by key and container id, until their job's tear-down.
    steps: Mutex<HashMap<(StepKey, String), Arc<Step>>>,
}

/// A step container followed by this provider.
struct Step {
    container: String,
    follower: logs::Follower,
    /// `destroy_step` killed it.
    destroyed: AtomicBool,
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

    fn jobs(&self) -> MutexGuard<'_, HashMap<JobKey, Arc<JobSettings>>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<(StepKey, String), Arc<Step>>> {
        self.steps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn step(&self, handle: &StepHandle) -> Option<Arc<Step>> {
        self.registry()
            .iter()
            .find(|((key, id), _)| {
                key.job.job == handle.job
                    && key.index == handle.index
                    && key.attempt == handle.attempt
                    && *id == handle.id
            })
            .map(|(_, step)| Arc::clone(step))
    }

    /// Registers a followed step container and returns its handle.
    fn follow(
        &self,
        key: StepKey,
        container: String,
        from: u64,
        output: Arc<dyn OutputSink>,
    ) -> StepHandle {
        let follower = logs::follow(self.docker.clone(), container.clone(), from, output);
        let step = Step {
            container: container.clone(),
            follower,
            destroyed: AtomicBool::new(false),
        };
        self.registry()
            .insert((key, container.clone()), Arc::new(step));
        StepHandle {
            job: key.job.job,
            index: key.index,
            attempt: key.attempt,
            id: container,
        }
    }

    async fn set_up_job(&self, job: &JobSpec) -> Result<Workspace, DockerError> {
        let key = JobKey {
            run: job.run,
            job: job.job,
            attempt: job.attempt,
        };
        let dir = convert::workspace_dir(&self.base, key);
        // Refuse a job without image before touching anything.
        JobSettings::of(job, String::new(), None)?;
        self.forget(key);
        let leftovers =
            engine::remove_labelled(&self.docker, &convert::job_labels(&self.instance, key))
                .await?;
        if !leftovers.is_empty() {
            tracing::info!(
                job_id = %job.job, count = leftovers.len(),
                "Removed leftover containers of the job."
            );
        }
        if let Some(image) = &job.image {
            images::ensure(&self.docker, image.as_str(), job.pull).await?;
        }
        for (_, service) in &job.services {
            images::ensure(&self.docker, service.image.as_str(), job.pull).await?;
        }
        make_workspace(&dir, job.user.is_some()).await?;
        let network = if job.services.is_empty() {
            None
        } else {
            let request = convert::network(&self.instance, key);
            let created = error::engine(self.docker.create_network(request).await, || {
                format!("create the network of {key}")
            })?;
            Some(created.id)
        };
        let settings = JobSettings::of(job, dir.to_string_lossy().into_owned(), network.clone())?;
        self.jobs().insert(key, Arc::new(settings));
        if let Some(network) = &network {
            services::start(
                &self.docker,
                &self.instance,
                key,
                &job.services,
                network,
                self.ready_timeout,
            )
            .await?;
        }
        Ok(Workspace {
            run: job.run,
            job: job.job,
            attempt: job.attempt,
            id: dir.to_string_lossy().into_owned(),
        })
    }

    async fn start(
        &self,
        workspace: &Workspace,
        step: &StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> Result<StepHandle, DockerError> {
        let key = job_key(workspace);
        let Some(settings) = self.jobs().get(&key).cloned() else {
            return Err(DockerError::Unknown {
                what: format!("the workspace of {key}"),
                why: "it was not set up by this provider, or was torn down; set it up again",
            });
        };
        let host_dir = Path::new(&settings.workspace);
        let cwd = crate::local::convert::working_dir(host_dir, step.working_dir.as_deref())
            .map_err(|err| DockerError::Invalid {
                what: format!("step {}: {err}", step.index),
                expected: "a working directory inside the workspace",
            })?;
        if !cwd.is_dir() {
            return Err(DockerError::Invalid {
                what: format!(
                    "step {}: working directory `{}`",
                    step.index,
                    step.working_dir.as_deref().unwrap_or(".")
                ),
                expected: "a directory that exists in the workspace",
            });
        }
        let step_key = StepKey {
            job: key,
            index: step.index,
            attempt: step.attempt,
        };
        let body = convert::step_container(&self.instance, step_key, &settings, step)?;
        let name = convert::step_name(&self.instance, step_key);
        let container = engine::run(&self.docker, &name, body).await?;
        tracing::debug!(
            job_id = %workspace.job, step = step.index, attempt = %step.attempt,
            container = %container, "Started a step."
        );
        Ok(self.follow(step_key, container, 0, output))
    }

    async fn wait(&self, handle: &StepHandle) -> Result<StepExit, DockerError> {
        let Some(step) = self.step(handle) else {
            return Err(DockerError::Unknown {
                what: format!(
                    "step {} (attempt {}) of {} in container {:?}",
                    handle.index, handle.attempt, handle.job, handle.id
                ),
                why: "it was not started or re-attached here, or its job was torn down",
            });
        };
        let mut stopped = self.docker.wait_container(&step.container, None);
        match stopped.next().await {
            // A non-zero exit comes as an error: it is the step's exit code, read below.
            Some(Ok(_)) | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => {}
            Some(Err(err)) => {
                return Err(DockerError::engine(
                    format!("wait for the container {}", step.container),
                    err,
                ));
            }
            None => {
                return Err(DockerError::Output {
                    container: step.container.clone(),
                    problem: "is not reported stopped: the engine closed the wait".to_owned(),
                });
            }
        }
        if let Err(problem) = drain(&step.follower.progress).await {
            return Err(DockerError::Output {
                container: step.container.clone(),
                problem,
            });
        }
        let record = engine::inspect(&self.docker, &step.container).await?;
        let state = record.state.unwrap_or_default();
        Ok(convert::step_exit(
            state.exit_code.unwrap_or(-1),
            state.oom_killed.unwrap_or(false),
            step.destroyed.load(Ordering::SeqCst),
        ))
    }

    async fn destroy(&self, handle: &StepHandle) -> Result<(), DockerError> {
        let container = match self.step(handle) {
            Some(step) => {
                step.destroyed.store(true, Ordering::SeqCst);
                step.container.clone()
            }
            // Not followed here (an earlier life's step): kill it only if its labels say it
            // is this step of this instance.
            None if handle.id.is_empty() => return Ok(()),
            None => match engine::inspect(&self.docker, &handle.id).await {
                Err(err) if err.is_not_found() => return Ok(()),
                Err(err) => return Err(err),
                Ok(record) => {
                    let labels = record.config.and_then(|c| c.labels).unwrap_or_default();
                    let ours = labels.get(INSTANCE_LABEL) == Some(&self.instance)
                        && convert::parse_step_labels(&labels).is_some_and(|key| {
                            key.job.job == handle.job
                                && key.index == handle.index
                                && key.attempt == handle.attempt
                        });
                    if !ours {
                        return Ok(());
                    }
                    handle.id.clone()
                }
            },
        };
        engine::kill(&self.docker, &container).await?;
        let mut stopped = self.docker.wait_container(&container, None);
        match tokio::time::timeout(KILL_TIMEOUT, stopped.next()).await {
            Ok(_) => Ok(()),
            Err(_) => Err(DockerError::Output {
                container,
                problem: format!(
                    "is not reported stopped within {} s of SIGKILL",
                    KILL_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    /// Forgets a job attempt's steps (stopping their readers) and settings.
    fn forget(&self, key: JobKey) {
        self.jobs().remove(&key);
        self.registry().retain(|(step, _), entry| {
            let ours = step.job == key;
            if ours {
                entry.follower.task.abort();
            }
            !ours
        });
    }

    async fn tear_down_job(&self, key: JobKey) -> Result<(), DockerError> {
        self.forget(key);
        engine::remove_labelled(&self.docker, &convert::job_labels(&self.instance, key)).await?;
        remove_workspace(&convert::workspace_dir(&self.base, key)).await
    }
}

impl Drop for DockerProvider {
    fn drop(&mut self) {
        // The containers live on for a later life; only the readers stop.
        for step in self.registry().values() {
            step.follower.task.abort();
        }
    }
}

/// Waits until a follower delivered a stopped container's whole output.
async fn drain(progress: &logs::Progress) -> Result<u64, String> {
    let mut progress = progress.clone();
    let drained = tokio::time::timeout(OUTPUT_DRAIN, progress.wait_for(Option::is_some)).await;
    match drained {
        Ok(Ok(done)) => done.clone().unwrap_or(Ok(0)),
        Ok(Err(_)) => Err("was no longer followed (its job was torn down)".to_owned()),
        Err(_) => Err(format!(
            "did not end within {} s of the container's exit",
            OUTPUT_DRAIN.as_secs()
        )),
    }
}

fn job_key(workspace: &Workspace) -> JobKey {
    JobKey {
        run: workspace.run,
        job: workspace.job,
        attempt: workspace.attempt,
    }
}

/// A fresh workspace directory; writable by any user when the job runs as a chosen user (the
/// directory is the job's own, under the provider's base).
async fn make_workspace(dir: &Path, any_user: bool) -> Result<(), DockerError> {
    let fail = |action, source| DockerError::Workspace {
        action,
        path: dir.to_path_buf(),
        source,
    };
    remove_workspace(dir).await?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|err| fail("create", err))?;
    if any_user {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .await
            .map_err(|err| fail("open to the job's user", err))?;
    }
    Ok(())
}

async fn remove_workspace(dir: &Path) -> Result<(), DockerError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(()),
        Err(err) => Err(DockerError::Workspace {
            action: "remove",
            path: dir.to_path_buf(),
            source: err,
        }),
    }
}

impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        error::PROVIDER
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
}

impl Reconcile for DockerProvider {
    fn reap_orphans(&self) -> BoxFuture<'_, Result<Vec<Orphan>, ProviderError>> {
        Box::pin(async move {
            self.reap()
                .await
                .map_err(|err| err.into_provider(Phase::Other))
        })
    }
}
