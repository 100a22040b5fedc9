//! # The local provider: steps as processes on this machine
//!
//! [`LocalProvider`] runs each step as a shell process in a workspace directory of its job
//! attempt. Where to start reading: [`LocalProvider`] here (the lifecycle and the registry of
//! started steps), then `convert.rs` (the pure translation: directories, environment, markers,
//! exit statuses), `process.rs` (spawning a step and draining its output), `group.rs`
//! (following and killing a step's process group, and why a recycled pid is never
//! signalled), `orphans.rs` (reconciliation through `/proc`); `tests.rs` and `reap_tests.rs`
//! run real processes.
//!
//! ## Guarantees (on top of [`Provider`]'s)
//! - Workspace of a job attempt: `<base>/<run>-<job>-<attempt>` (e.g. `run-3-job-7-1`), fresh
//!   at every `set_up` (a leftover of an earlier life is removed first). `tear_down` derives it
//!   from the run, job and attempt, never from [`Workspace::id`], so a hand-made `Workspace`
//!   after a failed `set_up` works and nothing outside the base is ever removed. `resume` hands
//!   back the directory of an attempt as an earlier life left it, if it is still there.
//! - A step runs `shell... script` in its own process group, with stdin `/dev/null`, one pipe for
//!   stdout and stderr (so their order is kept), in the workspace or its `working_dir`.
//! - Its environment is exactly [`StepSpec::env`] plus `PATH=/usr/local/bin:/usr/bin:/bin` when
//!   the step sets no `PATH`, plus two markers that reconciliation relies on (and that win over
//!   variables of the same name): `HODEI_PROVIDER_INSTANCE=<instance>` (the Hodei store this
//!   provider belongs to) and `HODEI_STEP=<job>/<job attempt>/<step index>/<step attempt>`.
//! - Background processes a step leaves (`server &`) live on until `destroy_step` of that step
//!   or `tear_down` of its job, like in GitHub Actions; `wait_step` does not wait for them (it
//!   reads their output for at most 100 ms after the shell exited, see `process.rs`).
//! - `destroy_step` kills the step's group with `SIGKILL` and returns once the shell is gone.
//! - `reap_orphans` kills what an earlier life of the same instance left, by its markers, and
//!   spares the steps this provider runs.
//! - Dropping the provider kills the process groups of the steps it still holds.
//!
//! ## Assumptions
//! Linux with `/proc` (pidfd since 5.3 avoids a thread per running step; older kernels fall back
//! to tokio's blocking pool). Futures run on a tokio runtime with I/O and time enabled (actix's
//! arbiters, `#[tokio::test]`). The local provider runs on the host, as the host's user: a job
//! with an [`JobSpec::image`], `services` or a `user` (which is the user inside a container) is
//! refused at `set_up` (a provider error that fails the job with the reason), never run on the
//! host instead; `resources` are the scheduler's, not limits on the processes. A step's processes that leave its process group
//! (`setsid`) or clear their environment escape `destroy_step`; the first are reaped in the next
//! life.
//!
//! ## Errors
//! [`ProviderError::SetUp`] when the workspace cannot be made; [`ProviderError::Start`] for an
//! empty or missing shell, a working directory that is absolute, climbs out with `..` or does not
//! exist, or a malformed variable; [`ProviderError::Wait`] for an unknown handle or a lost
//! status; [`ProviderError::Other`] when a workspace cannot be removed or a killed step does not
//! end within 10 s. Never a panic.

pub(crate) mod convert;
mod group;
mod orphans;
mod process;
#[cfg(test)]
mod reap_tests;
mod run_as;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::Cause;
use hodei_domain::ports::{
    BoxFuture, JobAttempt, JobSpec, Orphan, OutputSink, Provider, ProviderError, Reconcile,
    StepHandle, StepSpec, Workspace,
};
use hodei_domain::state::{Attempt, StepExit};
use tokio::sync::watch;

use convert::StepMarker;
pub use convert::{DEFAULT_PATH, INSTANCE_VAR, STEP_VAR};
use group::Leader;
use process::{Launch, Outcome};
pub use run_as::RunAs;

/// How long `destroy_step` and `tear_down` wait for a killed step's shell to be gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs steps as local processes. See the documentation of this module.
pub struct LocalProvider {
    base: PathBuf,
    instance: String,
    steps: Mutex<HashMap<StepKey, Arc<Step>>>,
    /// Where the repositories' mirrors are, for jobs that check one out.
    mirrors: Option<PathBuf>,
    /// The user steps run as, if not this process's.
    run_as: Option<RunAs>,
    /// The workspaces handed over to [`LocalProvider::run_as`] (before their first step).
    handed_over: Mutex<std::collections::HashSet<PathBuf>>,
}

/// A step by its handle: the pid tells apart two starts of the same step attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StepKey {
    job: JobId,
    index: u32,
    attempt: Attempt,
    pid: i32,
}

impl StepKey {
    fn of(handle: &StepHandle) -> Option<StepKey> {
        Some(StepKey {
            job: handle.job,
            index: handle.index,
            attempt: handle.attempt,
            pid: handle.id.parse().ok()?,
        })
    }
}

/// A started step, kept until its job's `tear_down`.
struct Step {
    workspace: (RunId, JobId, Attempt),
    marker: StepMarker,
    leader: Arc<Leader>,
    outcome: watch::Receiver<Outcome>,
}

impl Step {
    /// The step's outcome once its monitor published it; `None` if the monitor is gone.
    async fn outcome(&self) -> Option<Result<StepExit, ProviderError>> {
        let mut outcome = self.outcome.clone();
        let done = outcome.wait_for(Option::is_some).await.ok()?;
        done.clone()
    }

    /// Kills the step and waits, bounded, for its shell to be gone.
    async fn destroy(&self) -> Result<(), ProviderError> {
        self.leader.destroy();
        match tokio::time::timeout(KILL_TIMEOUT, self.outcome()).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ProviderError::Other {
                provider: "local",
                reason: format!(
                    "process group {} did not end within {} s of SIGKILL",
                    self.leader.pgid(),
                    KILL_TIMEOUT.as_secs()
                ),
                cause: None,
            }),
        }
    }
}

impl LocalProvider {
    /// A provider whose workspaces live under `workspaces` and whose processes carry
    /// `HODEI_PROVIDER_INSTANCE=<instance>`: give each Hodei store its own instance, so that
    /// reconciliation never touches another Hodei's processes on the same machine.
    pub fn new(workspaces: PathBuf, instance: String) -> LocalProvider {
        LocalProvider {
            base: workspaces,
            instance,
            steps: Mutex::new(HashMap::new()),
            mirrors: None,
            run_as: None,
            handed_over: Mutex::default(),
        }
    }

    /// Runs the steps as `user` (see `run_as.rs`).
    pub fn with_run_as(mut self, user: RunAs) -> LocalProvider {
        self.run_as = Some(user);
        self
    }

    /// The user steps run as, if not this process's.
    pub fn run_as(&self) -> Option<&RunAs> {
        self.run_as.as_ref()
    }

    /// Checks out the jobs' repositories from the mirrors under `dir` (`<repository>.git`).
    pub fn with_mirrors(mut self, dir: PathBuf) -> LocalProvider {
        self.mirrors = Some(dir);
        self
    }

    /// The directory under which job attempts get their workspaces.
    pub fn workspaces(&self) -> &Path {
        &self.base
    }

    /// The value of `HODEI_PROVIDER_INSTANCE` in this provider's steps.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<StepKey, Arc<Step>>> {
        self.steps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn step(&self, handle: &StepHandle) -> Option<Arc<Step>> {
        let key = StepKey::of(handle)?;
        self.registry().get(&key).cloned()
    }

    fn start(
        &self,
        workspace: &Workspace,
        step: &StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> Result<StepHandle, ProviderError> {
        let dir =
            convert::workspace_dir(&self.base, workspace.run, workspace.job, workspace.attempt);
        let cwd = convert::working_dir(&dir, step.working_dir.as_deref())?;
        if !cwd.is_dir() {
            return Err(ProviderError::Start {
                reason: format!(
                    "working directory `{}` does not exist in the workspace {}",
                    step.working_dir.as_deref().unwrap_or("."),
                    dir.display()
                ),
                cause: None,
            });
        }
        let (program, args) = convert::shell(step)?;
        let marker = StepMarker {
            job: workspace.job,
            job_attempt: workspace.attempt,
            step: step.index,
            step_attempt: step.attempt,
        };
        let marker_text = marker.to_string();
        let mut env = convert::step_env(&step.env, &self.instance, &marker_text)?;
        if let Some(user) = &self.run_as {
            // What Hodei and the job's set-up put in the workspace (a checkout, restored
            // caches and artifacts) becomes the user's before its first step.
            let fresh = self
                .handed_over
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(dir.clone());
            if fresh && let Err(err) = user.hand_over(&dir) {
                self.handed_over
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&dir);
                return Err(ProviderError::Start {
                    reason: format!(
                        "cannot give the workspace {} to the user `{}`: {err}",
                        dir.display(),
                        user.name
                    ),
                    cause: Cause::of(err),
                });
            }
            for (name, value) in [
                ("HOME", &user.home),
                ("USER", &user.name),
                ("LOGNAME", &user.name),
            ] {
                if !step.env.contains_key(name) {
                    env.push((name, value.as_str()));
                }
            }
        }
        let launch = Launch {
            user: self.run_as.as_ref().map(|u| (u.uid, u.gid)),
            job: workspace.job,
            step: step.index,
            program,
            args,
            script: &step.script,
            cwd: &cwd,
            env: &env,
        };
        let spawned = process::spawn(&launch, output)?;
        let pid = spawned.leader.pgid();
        tracing::debug!(
            job_id = %workspace.job, step = step.index, attempt = %step.attempt, pid,
            "Started a step."
        );
        let key = StepKey {
            job: workspace.job,
            index: step.index,
            attempt: step.attempt,
            pid,
        };
        let entry = Step {
            workspace: (workspace.run, workspace.job, workspace.attempt),
            marker,
            leader: spawned.leader,
            outcome: spawned.outcome,
        };
        self.registry().insert(key, Arc::new(entry));
        Ok(StepHandle {
            job: workspace.job,
            index: step.index,
            attempt: step.attempt,
            id: pid.to_string(),
        })
    }
}

impl LocalProvider {
    /// Kills every step this provider runs now, with everything they started: an emergency stop
    /// (a second Ctrl-C). The steps' waits then report them killed.
    pub fn stop_all(&self) {
        for step in self.registry().values() {
            step.leader.destroy();
        }
    }
}

impl Drop for LocalProvider {
    fn drop(&mut self) {
        for step in self.registry().values() {
            step.leader.destroy();
        }
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn resume<'a>(
        &'a self,
        job: &'a JobSpec,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ProviderError>> {
        Box::pin(async move {
            let dir = convert::workspace_dir(&self.base, job.run, job.job, job.attempt);
            match tokio::fs::metadata(&dir).await {
                Ok(meta) if meta.is_dir() => Ok(Some(Workspace {
                    run: job.run,
                    job: job.job,
                    attempt: job.attempt,
                    id: dir.to_string_lossy().into_owned(),
                })),
                Ok(_) => Ok(None),
                Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
                Err(err) => Err(ProviderError::SetUp {
                    reason: format!("cannot look for the workspace {}: {err}", dir.display()),
                    cause: Cause::of(err),
                }),
            }
        })
    }

    fn copy_out<'a>(
        &'a self,
        workspace: &'a Workspace,
        patterns: &'a [String],
        into: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        let dir =
            convert::workspace_dir(&self.base, workspace.run, workspace.job, workspace.attempt);
        Box::pin(crate::files::workspace::copy_out_of(
            dir,
            patterns.to_vec(),
            into.to_owned(),
            "local",
        ))
    }

    fn copy_in<'a>(
        &'a self,
        workspace: &'a Workspace,
        from: &'a Path,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let dir =
            convert::workspace_dir(&self.base, workspace.run, workspace.job, workspace.attempt);
        Box::pin(crate::files::workspace::copy_into(
            from.to_owned(),
            dir,
            "local",
        ))
    }

    fn set_up<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Workspace, ProviderError>> {
        Box::pin(async move {
            // Running such a job on the host would report a success the job never had.
            if let Some(image) = &job.image {
                return Err(ProviderError::SetUp {
                    reason: format!(
                        "the job needs the container image `{image}`, and the local provider runs steps as processes on this machine; run it where the Docker provider is available, or remove `image` to run it here"
                    ),
                    cause: None,
                });
            }
            if let Some((name, _)) = job.services.first() {
                return Err(ProviderError::SetUp {
                    reason: format!(
                        "the job needs the service `{name}`, and the local provider cannot start service containers"
                    ),
                    cause: None,
                });
            }
            if let Some(user) = &job.user {
                return Err(ProviderError::SetUp {
                    reason: format!(
                        "the job sets `user: {user}`, the user of its processes inside its container, and has no `image`; the local provider runs steps as this machine's user (or the `run_as` of the server or agent): give the job an `image`, or remove `user`"
                    ),
                    cause: None,
                });
            }
            let dir = convert::workspace_dir(&self.base, job.run, job.job, job.attempt);
            let fail = |what: &str, err: std::io::Error| ProviderError::SetUp {
                reason: format!("cannot {what} {}: {err}", dir.display()),
                cause: Cause::of(err),
            };
            // One trip to the blocking pool: what an earlier set-up left removed, the
            // directory made.
            let made = dir.clone();
            let fresh = tokio::task::spawn_blocking(move || {
                let removed = match std::fs::remove_dir_all(&made) {
                    Ok(()) => true,
                    Err(err) if err.kind() == ErrorKind::NotFound => false,
                    Err(err) => return Err(("remove the leftover workspace", err)),
                };
                std::fs::create_dir_all(&made).map_err(|err| ("create the workspace", err))?;
                Ok(removed)
            })
            .await
            .map_err(|err| fail("set up", std::io::Error::other(err)))?;
            match fresh {
                Ok(true) => tracing::info!(
                    job_id = %job.job, dir = %dir.display(),
                    "Removed a leftover workspace."
                ),
                Ok(false) => {}
                Err((what, err)) => return Err(fail(what, err)),
            }
            // Steps of another user must not reach the mirror through hard-linked objects.
            let objects = match self.run_as {
                Some(_) => crate::git::Objects::Copied,
                None => crate::git::Objects::Linked,
            };
            crate::git::fill_workspace(self.mirrors.as_deref(), job, &dir, objects)
                .await
                .map_err(|err| ProviderError::SetUp {
                    reason: err.to_string(),
                    cause: None,
                })?;
            Ok(Workspace {
                run: job.run,
                job: job.job,
                attempt: job.attempt,
                id: dir.to_string_lossy().into_owned(),
            })
        })
    }

    fn start_step<'a>(
        &'a self,
        workspace: &'a Workspace,
        step: &'a StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<StepHandle, ProviderError>> {
        Box::pin(async move {
            self.start(workspace, step, output).inspect_err(|err| {
                tracing::info!(
                    job_id = %workspace.job, step = step.index, error = %err,
                    "Cannot start a step."
                );
            })
        })
    }

    fn wait_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<StepExit, ProviderError>> {
        Box::pin(async move {
            let Some(entry) = self.step(step) else {
                return Err(ProviderError::Wait {
                    reason: format!(
                        "no step {} of {} with pid {:?} was started here (or its job was torn down)",
                        step.index, step.job, step.id
                    ),
                    cause: None,
                });
            };
            entry.outcome().await.unwrap_or_else(|| {
                Err(ProviderError::Wait {
                    reason: "the step's monitor stopped (its runtime shut down)".into(),
                    cause: None,
                })
            })
        })
    }

    fn destroy_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            match self.step(step) {
                Some(entry) => entry.destroy().await,
                None => {
                    tracing::debug!(
                        job_id = %step.job, step = step.index,
                        "Nothing to destroy: the step was not started here."
                    );
                    Ok(())
                }
            }
        })
    }

    fn tear_down<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let key = (workspace.run, workspace.job, workspace.attempt);
            let mut steps = Vec::new();
            self.registry().retain(|_, step| {
                let ours = step.workspace == key;
                if ours {
                    steps.push(Arc::clone(step));
                }
                !ours
            });
            let mut result = Ok(());
            for step in steps {
                if let Err(err) = step.destroy().await {
                    tracing::warn!(
                        job_id = %workspace.job, error = %err,
                        "A step outlived its job."
                    );
                    result = Err(err);
                }
            }
            let dir = convert::workspace_dir(&self.base, key.0, key.1, key.2);
            self.handed_over
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&dir);
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                // Never made, or its base is not even a directory: nothing to remove.
                Err(err)
                    if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {}
                Err(err) => {
                    return Err(ProviderError::Other {
                        provider: "local",
                        reason: format!("cannot remove the workspace {}: {err}", dir.display()),
                        cause: Cause::of(err),
                    });
                }
            }
            result
        })
    }

    /// A directory of this machine to remove.
    fn quick_tear_down(&self, _workspace: &Workspace) -> bool {
        true
    }
}

impl Reconcile for LocalProvider {
    /// A local step's process cannot be re-attached (its output pipe died with the earlier
    /// Hodei): `spare` is not looked at, and every step process of an earlier life is reaped.
    fn reap_orphans<'a>(
        &'a self,
        _spare: &'a [JobAttempt],
    ) -> BoxFuture<'a, Result<Vec<Orphan>, ProviderError>> {
        Box::pin(async move {
            let mut spare = orphans::Spare::default();
            for step in self.registry().values() {
                if step.leader.is_pinned() {
                    spare.pgids.insert(step.leader.pgid());
                }
                spare.markers.insert(step.marker.to_string());
            }
            let instance = self.instance.clone();
            let found = tokio::task::spawn_blocking(move || orphans::reap(&instance, &spare))
                .await
                .map_err(|err| ProviderError::Other {
                    provider: "local",
                    reason: format!("the /proc scan stopped: {err}"),
                    cause: Cause::of(err),
                })??;
            if !found.is_empty() {
                tracing::info!(
                    count = found.len(),
                    "Reaped orphaned steps of an earlier life."
                );
            }
            Ok(found)
        })
    }
}
