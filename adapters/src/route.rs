//! [`ByImage`]: one provider for a machine that runs jobs both ways — a job with an `image` in
//! containers on the Docker engine, every other job as local processes.
//!
//! ## Guarantees
//! - A job goes to the provider its `image` calls for, at `set_up` (or `resume`); its steps and
//!   its tear-down go to the same one.
//! - The engine's health is watched ([`ByImage::watch`], a circuit breaker of
//!   [`health`](crate::health)): a ping every 5 s while it answers; while it does not, a new
//!   try after 1 s, 2 s, 4 s … at most 30 s (a down engine is not hammered, jobs are not sent
//!   to it). Each change is reported to the caller,
//!   who withdraws or offers the `docker` label of the worker, so that jobs with an `image`
//!   wait in the queue while the engine is away and go on by themselves when it is back.
//! - While the engine is away, a job with an `image` that reaches `set_up` anyway fails it with
//!   [`ProviderError::Unavailable`] (retryable), naming the engine and why; local jobs run as
//!   usual.
//! - `tear_down` of a workspace this router does not know (after a failed set-up, after a
//!   restart) is handed to both providers: both tear-downs are idempotent and safe.
//! - `reap_orphans` reaps with both and reports what both stopped; `reattach_step` goes to the
//!   provider the job's `image` calls for (only Docker can re-attach).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use hodei_domain::ids::JobId;
use hodei_domain::ports::{
    BoxFuture, JobAttempt, JobSpec, Orphan, OutputSink, Provider, ProviderError, Reattached,
    Reconcile, StepHandle, StepSpec, Workspace,
};
use hodei_domain::state::Attempt;

use crate::docker::{DockerConfig, DockerProvider};
use crate::health::{Breaker, Probe};
use crate::local::LocalProvider;

/// Which provider holds a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Local,
    Docker,
}

/// Local processes and Docker containers behind one [`Provider`].
pub struct ByImage {
    local: Arc<LocalProvider>,
    docker: DockerLink,
    owners: Mutex<HashMap<JobId, Owner>>,
}

/// The Docker provider once the engine answered, and whether it answers now.
struct DockerLink {
    config: DockerConfig,
    provider: RwLock<Option<Arc<DockerProvider>>>,
    /// Whether the engine answers.
    breaker: Breaker,
}

pub use crate::health::EngineHealth;

impl ByImage {
    /// Routes to `local`, and to a Docker provider for the engine of `docker`, connected now if
    /// the engine answers, or as soon as it does.
    pub async fn new(local: Arc<LocalProvider>, docker: DockerConfig) -> ByImage {
        let router = ByImage {
            local,
            docker: DockerLink {
                config: docker,
                provider: RwLock::new(None),
                breaker: Breaker::new(Some("not connected yet".into())),
            },
            owners: Mutex::new(HashMap::new()),
        };
        router.check_engine().await;
        router
    }

    /// The Docker provider, once the engine answered.
    fn connected(&self) -> Option<Arc<DockerProvider>> {
        self.docker
            .provider
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops every step at once, local and in containers, leaving nothing behind: for a Hodei
    /// that stops now.
    pub async fn stop_all(&self) {
        self.local.stop_all();
        if let Some(docker) = self.connected()
            && let Err(err) = docker.remove_all().await
        {
            tracing::warn!(error = %err, "Cannot remove the containers of this Hodei.");
        }
    }

    /// Why the Docker engine cannot be used now, or `None` when it can.
    pub fn engine_trouble(&self) -> Option<String> {
        self.docker.breaker.trouble()
    }

    /// Asks the engine whether it answers (connecting first if it never did), records the
    /// answer, and says whether it changed.
    async fn check_engine(&self) -> bool {
        let trouble = match self.connected() {
            Some(provider) => match provider.engine().ping().await {
                Ok(_) => None,
                Err(err) => Some(format!(
                    "the Docker engine at {} does not answer: {err}",
                    self.docker.config.socket
                )),
            },
            None => match DockerProvider::connect(self.docker.config.clone()).await {
                Ok(provider) => {
                    *self
                        .docker
                        .provider
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(provider));
                    None
                }
                Err(err) => Some(format!("the Docker engine cannot be used: {err}")),
            },
        };
        self.docker.breaker.set(trouble)
    }

    /// Watches the engine for as long as the router lives, on the current Tokio runtime, and
    /// tells `health` of every change ([`engine_trouble`](ByImage::engine_trouble) says how it
    /// is now).
    pub fn watch(self: &Arc<Self>, health: EngineHealth) {
        crate::health::watch(self, health);
    }

    fn docker(&self) -> Result<Arc<DockerProvider>, ProviderError> {
        let unavailable = |reason: String| ProviderError::Unavailable {
            provider: "docker",
            reason: format!("the job has an `image`, and {reason}"),
            cause: None,
        };
        if let Some(trouble) = self.engine_trouble() {
            return Err(unavailable(trouble));
        }
        self.connected()
            .ok_or_else(|| unavailable("the Docker engine is not connected".into()))
    }

    fn owner(&self, job: JobId) -> Option<Owner> {
        lock(&self.owners).get(&job).copied()
    }

    fn own(&self, job: JobId, owner: Option<Owner>) {
        let mut owners = lock(&self.owners);
        match owner {
            Some(owner) => owners.insert(job, owner),
            None => owners.remove(&job),
        };
    }

    /// The provider that holds `job`.
    fn of(&self, job: JobId) -> Result<Arc<dyn Provider>, ProviderError> {
        match self.owner(job) {
            Some(Owner::Local) => Ok(self.local.clone()),
            Some(Owner::Docker) => Ok(self.docker()?),
            None => Err(ProviderError::Other {
                provider: "router",
                reason: format!("{job} has no workspace set up in this life of Hodei"),
                cause: None,
            }),
        }
    }

    /// The provider a job calls for.
    fn for_job(&self, job: &JobSpec) -> Result<(Owner, Arc<dyn Provider>), ProviderError> {
        if job.image.is_some() {
            Ok((Owner::Docker, self.docker()?))
        } else {
            Ok((Owner::Local, self.local.clone()))
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Provider for ByImage {
    fn name(&self) -> &'static str {
        "local+docker"
    }

    fn set_up<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Workspace, ProviderError>> {
        Box::pin(async move {
            let (owner, provider) = self.for_job(job)?;
            self.own(job.job, Some(owner));
            let result = provider.set_up(job).await;
            if owner == Owner::Docker
                && let Err(ProviderError::Unavailable { reason, .. }) = &result
            {
                // Do not wait for the next ping: withdraw the engine now.
                self.docker.breaker.set(Some(reason.clone()));
            }
            result
        })
    }

    fn start_step<'a>(
        &'a self,
        workspace: &'a Workspace,
        step: &'a StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<StepHandle, ProviderError>> {
        Box::pin(async move {
            self.of(workspace.job)?
                .start_step(workspace, step, output)
                .await
        })
    }

    fn wait_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<hodei_domain::state::StepExit, ProviderError>> {
        Box::pin(async move { self.of(step.job)?.wait_step(step).await })
    }

    fn destroy_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move { self.of(step.job)?.destroy_step(step).await })
    }

    fn tear_down<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let owner = self.owner(workspace.job);
            let result = match (owner, self.connected()) {
                (Some(Owner::Local), _) => self.local.tear_down(workspace).await,
                (Some(Owner::Docker), Some(docker)) => docker.tear_down(workspace).await,
                (Some(Owner::Docker), None) => {
                    Err(self.docker().err().unwrap_or(ProviderError::Other {
                        provider: "router",
                        reason: "the Docker engine is not connected".into(),
                        cause: None,
                    }))
                }
                (None, docker) => {
                    let local = self.local.tear_down(workspace).await;
                    match docker {
                        Some(docker) => local.and(docker.tear_down(workspace).await),
                        None => local,
                    }
                }
            };
            self.own(workspace.job, None);
            result
        })
    }

    fn quick_tear_down(&self, workspace: &Workspace) -> bool {
        match self.owner(workspace.job) {
            Some(Owner::Local) => self.local.quick_tear_down(workspace),
            Some(Owner::Docker) | None => false,
        }
    }

    fn copy_out<'a>(
        &'a self,
        workspace: &'a Workspace,
        patterns: &'a [String],
        into: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        Box::pin(async move {
            self.of(workspace.job)?
                .copy_out(workspace, patterns, into)
                .await
        })
    }

    fn copy_in<'a>(
        &'a self,
        workspace: &'a Workspace,
        from: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move { self.of(workspace.job)?.copy_in(workspace, from).await })
    }

    fn service_logs<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<hodei_domain::ports::ServiceLogs, ProviderError>> {
        Box::pin(async move { self.of(workspace.job)?.service_logs(workspace).await })
    }

    fn resume<'a>(
        &'a self,
        job: &'a JobSpec,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ProviderError>> {
        Box::pin(async move {
            let (owner, provider) = self.for_job(job)?;
            let resumed = provider.resume(job).await?;
            if resumed.is_some() {
                self.own(job.job, Some(owner));
            }
            Ok(resumed)
        })
    }

    fn reattach_step<'a>(
        &'a self,
        job: &'a JobSpec,
        index: u32,
        attempt: Attempt,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<Option<Reattached>, ProviderError>> {
        Box::pin(async move {
            let (owner, provider) = self.for_job(job)?;
            let reattached = provider.reattach_step(job, index, attempt, output).await?;
            if reattached.is_some() {
                self.own(job.job, Some(owner));
            }
            Ok(reattached)
        })
    }
}

impl Probe for ByImage {
    fn probe(&self) -> BoxFuture<'_, bool> {
        Box::pin(self.check_engine())
    }

    fn breaker(&self) -> &Breaker {
        &self.docker.breaker
    }
}

impl Reconcile for ByImage {
    fn reap_orphans<'a>(
        &'a self,
        spare: &'a [JobAttempt],
    ) -> BoxFuture<'a, Result<Vec<Orphan>, ProviderError>> {
        Box::pin(async move {
            // Both reap, even when one of them fails.
            let local = self.local.reap_orphans(spare).await;
            let docker = match self.connected() {
                Some(docker) => Some(docker.reap_orphans(spare).await),
                None => None,
            };
            let mut orphans = local?;
            if let Some(docker) = docker {
                orphans.extend(docker?);
            }
            Ok(orphans)
        })
    }
}

/// Reconciliation of several providers as one: each reaps (even when another fails), and the
/// orphans of all are told; the first failure is answered after all have reaped.
pub struct ReapAll(pub Vec<Arc<dyn Reconcile>>);

impl Reconcile for ReapAll {
    fn reap_orphans<'a>(
        &'a self,
        spare: &'a [JobAttempt],
    ) -> BoxFuture<'a, Result<Vec<Orphan>, ProviderError>> {
        Box::pin(async move {
            let mut orphans = Vec::new();
            let mut failed = None;
            for part in &self.0 {
                match part.reap_orphans(spare).await {
                    Ok(found) => orphans.extend(found),
                    Err(err) => {
                        failed.get_or_insert(err);
                    }
                }
            }
            match failed {
                Some(err) => Err(err),
                None => Ok(orphans),
            }
        })
    }
}
