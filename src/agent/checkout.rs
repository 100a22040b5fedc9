//! Checkout on an agent: before a job's workspace is set up, the agent fetches the run's
//! commit into its own mirror of the repository (`DATA/mirrors/<repository>.git`, once per
//! commit and machine), and the providers then fill the workspace from that mirror as they do
//! on the server. Where the repository is, and its credentials, come from the server in answer
//! to the job's own token ([`Client::job_checkout`]): they are in no claim, no log and no
//! process list (`git` gets them through its environment).
//!
//! [`FetchFirst`] is the agent's providers with that fetch in front of `set_up`; everything
//! else goes to them as it is.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hodei_adapters::git::GitMirrors;
use hodei_adapters::route::ByImage;
use hodei_api::client::Client;
use hodei_domain::forge::Forge;
use hodei_domain::ids::JobId;
use hodei_domain::ports::{
    BoxFuture, Checkout, JobSpec, MirrorSource, Mirrors, OutputSink, Provider, ProviderError,
    Reattached, ServiceLogs, StepHandle, StepSpec, Workspace,
};
use hodei_domain::state::{Attempt, StepExit};

/// How long asking the server for the repository is tried again while it is away.
const ASK_FOR: Duration = Duration::from_secs(60);

/// The agent's providers, for one job attempt, with its repository fetched before its
/// workspace is set up.
pub struct FetchFirst {
    pub inner: Arc<ByImage>,
    pub mirrors: Arc<GitMirrors>,
    /// Presents the job token of the claim.
    pub client: Client,
    pub epoch: u64,
}

impl FetchFirst {
    /// Fetches the run's commit into this machine's mirror, unless it is there already.
    async fn fetch(&self, job: JobId, checkout: &Checkout) -> Result<(), String> {
        let repo = &checkout.repository;
        let since = Instant::now();
        let source = loop {
            match self.client.job_checkout(job, self.epoch).await {
                Ok(source) => break source,
                Err(err) if err.is_retryable() && since.elapsed() < ASK_FOR => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => {
                    return Err(format!(
                        "cannot ask the server where repository `{repo}` is: {err}"
                    ));
                }
            }
        };
        if source.repository != *repo || source.commit != checkout.commit {
            return Err(format!(
                "the server names repository `{}` at {} for this job, not `{repo}` at {}",
                source.repository, source.commit, checkout.commit
            ));
        }
        let forge: Forge = source.forge.parse()?;
        let mut wanted = source.refs.clone();
        wanted.push(source.commit.clone());
        let mirror = MirrorSource {
            repository: source.repository.clone(),
            forge,
            url: source.url.clone(),
            credentials: source.credentials.clone(),
        };
        self.mirrors
            .fetch(&mirror, &wanted)
            .await
            .map_err(|err| err.to_string())
    }
}

impl Provider for FetchFirst {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn set_up<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Workspace, ProviderError>> {
        Box::pin(async move {
            if let Some(checkout) = &job.checkout {
                self.fetch(job.job, checkout)
                    .await
                    .map_err(|reason| ProviderError::SetUp {
                        reason,
                        cause: None,
                    })?;
            }
            self.inner.set_up(job).await
        })
    }

    fn start_step<'a>(
        &'a self,
        workspace: &'a Workspace,
        step: &'a StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<StepHandle, ProviderError>> {
        self.inner.start_step(workspace, step, output)
    }

    fn wait_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<StepExit, ProviderError>> {
        self.inner.wait_step(step)
    }

    fn destroy_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.destroy_step(step)
    }

    fn tear_down<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.tear_down(workspace)
    }

    fn quick_tear_down(&self, workspace: &Workspace) -> bool {
        self.inner.quick_tear_down(workspace)
    }

    fn service_logs<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<ServiceLogs, ProviderError>> {
        self.inner.service_logs(workspace)
    }

    fn copy_out<'a>(
        &'a self,
        workspace: &'a Workspace,
        patterns: &'a [String],
        into: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        self.inner.copy_out(workspace, patterns, into)
    }

    fn copy_in<'a>(
        &'a self,
        workspace: &'a Workspace,
        from: &'a Path,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.copy_in(workspace, from)
    }

    fn resume<'a>(
        &'a self,
        job: &'a JobSpec,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ProviderError>> {
        self.inner.resume(job)
    }

    fn reattach_step<'a>(
        &'a self,
        job: &'a JobSpec,
        index: u32,
        attempt: Attempt,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<Option<Reattached>, ProviderError>> {
        self.inner.reattach_step(job, index, attempt, output)
    }
}
