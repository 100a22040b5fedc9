//! [`ByImage`]: one provider for a machine that runs jobs both ways — a job with an `image` in
//! containers on the Docker engine, every other job as local processes.
//!
//! ## Guarantees
//! - A job goes to the provider its `image` calls for, at `set_up` (or `resume`); its steps and
//!   its tear-down go to the same one.
//! - When the engine could not be reached when Hodei started, a job with an `image` fails its
//!   set-up with [`ProviderError::Unavailable`], naming the engine and why; local jobs run as
//!   usual.
//! - `tear_down` of a workspace this router does not know (after a failed set-up, after a
//!   restart) is handed to both providers: both tear-downs are idempotent and safe.
//! - `reap_orphans` reaps with both and reports what both stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use hodei_domain::ids::JobId;
use hodei_domain::ports::{
    BoxFuture, JobSpec, Orphan, OutputSink, Provider, ProviderError, Reconcile, StepHandle,
    StepSpec, Workspace,
};

use crate::docker::DockerProvider;
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
    /// The Docker provider, or why there is none.
    docker: Result<Arc<DockerProvider>, String>,
    owners: Mutex<HashMap<JobId, Owner>>,
}

impl ByImage {
    /// Routes to `local`, and to `docker` when the engine could be reached (otherwise the
    /// reason, said to every job that needs it).
    pub fn new(local: Arc<LocalProvider>, docker: Result<Arc<DockerProvider>, String>) -> ByImage {
        ByImage {
            local,
            docker,
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn docker(&self) -> Result<&DockerProvider, ProviderError> {
        self.docker
            .as_deref()
            .map_err(|reason| ProviderError::Unavailable {
                provider: "docker",
                reason: format!("the job has an `image`, and {reason}"),
            })
    }

    fn owner(&self, job: JobId) -> Option<Owner> {
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&job)
            .copied()
    }

    fn own(&self, job: JobId, owner: Option<Owner>) {
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        match owner {
            Some(owner) => owners.insert(job, owner),
            None => owners.remove(&job),
        };
    }

    /// The provider that holds `job`.
    fn of(&self, job: JobId) -> Result<&dyn Provider, ProviderError> {
        match self.owner(job) {
            Some(Owner::Local) => Ok(self.local.as_ref()),
            Some(Owner::Docker) => Ok(self.docker()?),
            None => Err(ProviderError::Other {
                provider: "router",
                reason: format!("{job} has no workspace set up in this life of Hodei"),
            }),
        }
    }

    /// The provider a job calls for.
    fn for_job(&self, job: &JobSpec) -> Result<(Owner, &dyn Provider), ProviderError> {
        if job.image.is_some() {
            Ok((Owner::Docker, self.docker()?))
        } else {
            Ok((Owner::Local, self.local.as_ref()))
        }
    }
}

impl Provider for ByImage {
    fn name(&self) -> &'static str {
        "local+docker"
    }

    fn set_up<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Workspace, ProviderError>> {
        Box::pin(async move {
            let (owner, provider) = self.for_job(job)?;
            self.own(job.job, Some(owner));
            provider.set_up(job).await
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
            let result = match owner {
                Some(Owner::Local) => self.local.tear_down(workspace).await,
                Some(Owner::Docker) => self.docker()?.tear_down(workspace).await,
                None => {
                    let local = self.local.tear_down(workspace).await;
                    match &self.docker {
                        Ok(docker) => local.and(docker.tear_down(workspace).await),
                        Err(_) => local,
                    }
                }
            };
            self.own(workspace.job, None);
            result
        })
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
}

impl Reconcile for ByImage {
    fn reap_orphans(&self) -> BoxFuture<'_, Result<Vec<Orphan>, ProviderError>> {
        Box::pin(async move {
            // Both reap, even when one of them fails.
            let local = self.local.reap_orphans().await;
            let docker = match &self.docker {
                Ok(docker) => Some(docker.reap_orphans().await),
                Err(_) => None,
            };
            let mut orphans = local?;
            if let Some(docker) = docker {
                orphans.extend(docker?);
            }
            Ok(orphans)
        })
    }
}
