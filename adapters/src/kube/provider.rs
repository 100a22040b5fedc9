//! [`KubernetesProvider`]: the [`Provider`] port on a cluster, one pod per job attempt.
//!
//! `set_up` creates the attempt's pod and its Secret ([`Cluster::create`]), waits until the
//! pod runs or fails ([`Cluster::wait_running`]: never for ever), then follows the steps
//! container's log for the whole attempt on a task of its own ([`Cluster::follow`]) and waits
//! for the entrypoint's ready marker. A step is a request on the entrypoint's standard input
//! (`pods/attach`), confirmed by its start marker in the log; a request that is not confirmed
//! is sent again on a new attach (the entrypoint runs a step once). The log's frames go to the
//! step that runs: its output to its sink, its end to `wait_step`. `destroy_step` is a kill
//! request; `tear_down` deletes the pod and its Secret. When the pod fails or goes (an image
//! that cannot be pulled, deleted from outside, evicted), every wait ends with that reason.
//!
//! A job without an `image` runs in the provider's default image, if it has one
//! ([`KubernetesProvider::with_default_image`]); the job's timeout becomes the pod's
//! `activeDeadlineSeconds` (plus a grace), a last resort behind Hodei's own.
//!
//! ## After a restart of Hodei
//! At start ([`Reconcile::reap_orphans`]), the pods of the attempts that the store shows
//! running a step (`spare`), under the epoch of jobs the server runs itself (0), stay; every
//! other pod and Secret of the instance is deleted. A step of a pod that stayed is taken back
//! by [`Provider::reattach_step`]: the pod's log is followed again from its start (the step's
//! whole output goes to the new sink, whose owner skips what it holds), and the step's end is
//! read from it as before. A step the log never shows started is not taken back (the caller
//! records it lost, and [`Provider::resume`] hands the pod back for its retry).
//!
//! ## Health
//! The API server's health is a [`Breaker`]: [`Probe::probe`] lists a pod of the instance;
//! while it fails, `set_up` refuses with [`ProviderError::Unavailable`], and the caller's watch
//! ([`crate::health::watch`]) takes the Kubernetes worker out of the queue's reach.
//!
//! ## Errors
//! An API server that cannot be reached is [`ProviderError::Unavailable`] (retryable); a pod
//! that cannot run is [`ProviderError::SetUp`] with the cluster's reason; a step the entrypoint
//! refuses is [`ProviderError::Start`]; a pod that fails or goes while a step runs is
//! [`ProviderError::Wait`] with the reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hodei_domain::ids::{JobId, RunId};
use hodei_domain::model::Image;
use hodei_domain::ports::{
    BoxFuture, Cause, JobAttempt, JobSpec, Orphan, OutputSink, Provider, ProviderError, Reattached,
    Reconcile, StepHandle, StepSpec, Workspace,
};
use hodei_domain::state::{Attempt, StepExit};
use tokio::sync::Notify;

use super::cluster::{Cluster, new_token};
use super::error::{KubeError, PROVIDER};
use super::logs::LogCursor;
use super::names::{PodKey, parse_labels};
use super::pod::PodJob;
use super::pod_state::{PodState, Seen, StepEnd, ready, stopped_reason};
use super::protocol::{Frame, Request, run_request};
use super::reconcile::{Kind, Move};
use super::status::PodVerdict;
use crate::health::{Breaker, Probe};

/// How long the API server may take to answer a probe of its health.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a step taken back after a restart may take to show in the pod's log (read again
/// from its start) before it is deemed never started.
const ADOPT_WAIT: Duration = Duration::from_secs(30);

/// Runs jobs as pods on a cluster. See the documentation of this module.
pub struct KubernetesProvider {
    cluster: Cluster,
    /// The image of a job that names none.
    default_image: Option<Image>,
    /// Whether the API server answers.
    breaker: Breaker,
    pods: Mutex<HashMap<(RunId, JobId, Attempt), Arc<PodState>>>,
}

impl KubernetesProvider {
    /// The provider of the namespace that `cluster` names; jobs without an `image` are
    /// refused. Its API server is taken to answer until a probe says otherwise.
    pub fn new(cluster: Cluster) -> KubernetesProvider {
        KubernetesProvider {
            cluster,
            default_image: None,
            breaker: Breaker::default(),
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// Jobs without an `image` run in `image`.
    pub fn with_default_image(self, image: Image) -> KubernetesProvider {
        KubernetesProvider {
            default_image: Some(image),
            ..self
        }
    }

    /// Why the API server cannot be used now, or `None` when it can.
    pub fn trouble(&self) -> Option<String> {
        self.breaker.trouble()
    }

    /// Asks the API server whether it answers within [`PROBE_TIMEOUT`], and records the
    /// answer. (The kube client tries a request again while the API server answers `429`,
    /// `503` or `504`, for minutes: the probe does not wait that long.)
    async fn check(&self) -> bool {
        let trouble = match tokio::time::timeout(PROBE_TIMEOUT, self.cluster.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(format!("the Kubernetes API server cannot be used: {err}")),
            Err(_) => Some(format!(
                "the Kubernetes API server cannot be used: it did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            )),
        };
        self.breaker.set(trouble)
    }

    /// The name of the pod of a job attempt of this server (epoch 0).
    fn name_of(&self, run: RunId, job: JobId, attempt: Attempt) -> String {
        self.cluster.pod_name(PodKey {
            run,
            job,
            attempt,
            epoch: 0,
        })
    }

    fn pods(&self) -> MutexGuard<'_, HashMap<(RunId, JobId, Attempt), Arc<PodState>>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pod_of(&self, run: RunId, job: JobId, attempt: Attempt) -> Option<Arc<PodState>> {
        self.pods().get(&(run, job, attempt)).cloned()
    }

    async fn set_up_job(&self, job: &JobSpec) -> Result<Workspace, ProviderError> {
        if let Some(trouble) = self.breaker.trouble() {
            return Err(ProviderError::Unavailable {
                provider: PROVIDER,
                reason: trouble,
                cause: None,
            });
        }
        let token = new_token().map_err(|err| set_up(&err))?;
        let with_image;
        let job = match (&job.image, &self.default_image) {
            (None, Some(image)) => {
                with_image = JobSpec {
                    image: Some(image.clone()),
                    ..job.clone()
                };
                &with_image
            }
            _ => job,
        };
        let pod_job = PodJob {
            spec: job,
            epoch: 0,
            timeout: job.timeout,
        };
        let created = match self.cluster.create(pod_job, &job.secrets.0, &token).await {
            Ok(created) => created,
            Err(err) => {
                let err = set_up(&err);
                if let ProviderError::Unavailable { reason, .. } = &err {
                    // Do not wait for the next probe: the API server is away now.
                    self.breaker.set(Some(reason.clone()));
                }
                return Err(err);
            }
        };
        let name = created.name;
        let gone = |reason: String| async {
            let _ = self.cluster.delete(&name).await;
            Err(ProviderError::SetUp {
                reason,
                cause: None,
            })
        };
        match self.cluster.wait_running(&name).await {
            Ok(PodVerdict::Running) => {}
            Ok(PodVerdict::Failed(failure)) => return gone(failure.to_string()).await,
            Ok(PodVerdict::Ended(exit)) => {
                return gone(format!(
                    "the job's container ended at once ({exit:?}): can its image run Hodei's entrypoint (glibc, /bin/sh)?"
                ))
                .await;
            }
            Ok(PodVerdict::Starting) => return gone("the pod never started".into()).await,
            Err(err) => {
                let _ = self.cluster.delete(&name).await;
                return Err(set_up(&err));
            }
        }
        let state = self.follow(name.clone(), token, job);
        if let Err(reason) = ready(&state).await {
            return Err(ProviderError::SetUp {
                reason,
                cause: None,
            });
        }
        Ok(Workspace {
            run: job.run,
            job: job.job,
            attempt: job.attempt,
            id: name,
        })
    }

    /// Follows the log of pod `name` from its start, on a task of its own, for the attempt
    /// of `job`; the pod is this provider's from now on.
    fn follow(&self, name: String, token: String, job: &JobSpec) -> Arc<PodState> {
        let state = Arc::new(PodState {
            name,
            secrets: job.secrets.0.clone(),
            seen: Mutex::new(Seen::default()),
            changed: Notify::new(),
            attached: tokio::sync::Mutex::new(None),
            follower: Mutex::new(None),
        });
        let follower = {
            let cluster = self.cluster.clone();
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let mut cursor = LogCursor::new();
                let frames = Arc::clone(&state);
                let mut on_frame = move |frame: Frame| frames.on_frame(frame);
                let outcome = cluster
                    .follow(&state.name, &token, &mut cursor, &mut on_frame)
                    .await;
                let mut seen = state.seen();
                match outcome {
                    Ok(verdict) => seen.verdict = Some(verdict),
                    Err(err) => seen.failed = Some(err.to_string()),
                }
                drop(seen);
                state.changed.notify_waiters();
            })
        };
        *state
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(follower);
        self.pods()
            .insert((job.run, job.job, job.attempt), Arc::clone(&state));
        state
    }

    /// The pod an earlier life made for the attempt of `job`, followed again, if it still
    /// runs (the reconciliation at start kept it) and its Secret is there; `None` otherwise.
    async fn adopt(&self, job: &JobSpec) -> Result<Option<Arc<PodState>>, ProviderError> {
        if let Some(state) = self.pod_of(job.run, job.job, job.attempt) {
            return Ok(Some(state));
        }
        let name = self.name_of(job.run, job.job, job.attempt);
        match self.cluster.wait_running(&name).await {
            Ok(PodVerdict::Running) => {}
            Ok(_) => return Ok(None),
            Err(err) => return Err(other(&err)),
        }
        let Some(token) = self.cluster.token(&name).await.map_err(|err| other(&err))? else {
            return Ok(None);
        };
        tracing::info!(pod = %name, job_id = %job.job, "Following again the pod of a job that ran when Hodei stopped.");
        Ok(Some(self.follow(name, token, job)))
    }

    async fn reattach(
        &self,
        job: &JobSpec,
        index: u32,
        attempt: Attempt,
        output: Arc<dyn OutputSink>,
    ) -> Result<Option<Reattached>, ProviderError> {
        let Some(state) = self.adopt(job).await? else {
            return Ok(None);
        };
        let key = (index, attempt.get());
        state.seen().sinks.insert(key, output);
        let shown = state
            .wait_for(Some(ADOPT_WAIT), |seen| {
                if seen.started.contains(&key) || seen.ends.contains_key(&key) {
                    Some(true)
                } else if seen.verdict.is_some() || seen.failed.is_some() {
                    Some(false)
                } else {
                    None
                }
            })
            .await
            .unwrap_or(false);
        if !shown {
            // Never started in the pod: the caller records it lost; the pod stays for its
            // retry ([`Provider::resume`]) or its tear-down.
            state.seen().sinks.remove(&key);
            return Ok(None);
        }
        let workspace = Workspace {
            run: job.run,
            job: job.job,
            attempt: job.attempt,
            id: state.name.clone(),
        };
        let step = step_handle(&workspace, index, attempt);
        Ok(Some(Reattached { workspace, step }))
    }

    async fn resume_job(&self, job: &JobSpec) -> Result<Option<Workspace>, ProviderError> {
        let Some(state) = self.adopt(job).await? else {
            return Ok(None);
        };
        if let Err(reason) = ready(&state).await {
            tracing::warn!(pod = %state.name, error = %reason, "Cannot go on in the pod of a job that ran when Hodei stopped.");
            return Ok(None);
        }
        Ok(Some(Workspace {
            run: job.run,
            job: job.job,
            attempt: job.attempt,
            id: state.name.clone(),
        }))
    }

    async fn start(
        &self,
        workspace: &Workspace,
        step: &StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> Result<StepHandle, ProviderError> {
        let state = self
            .pod_of(workspace.run, workspace.job, workspace.attempt)
            .ok_or_else(|| ProviderError::Start {
                reason: format!("pod {} is not set up by this provider", workspace.id),
                cause: None,
            })?;
        let key = (step.index, step.attempt.get());
        state.seen().sinks.insert(key, output);
        let request = Request::Run(run_request(step, &state.secrets));
        state
            .send(&self.cluster, &request, |seen| {
                seen.started.contains(&key) || seen.ends.contains_key(&key)
            })
            .await
            .map_err(|reason| ProviderError::Start {
                reason: format!("cannot hand the step to pod {}: {reason}", state.name),
                cause: None,
            })?;
        Ok(step_handle(workspace, step.index, step.attempt))
    }

    fn state_of(&self, step: &StepHandle) -> Option<Arc<PodState>> {
        let mut parts = step.id.split('/');
        let run = RunId(parts.next()?.parse().ok()?);
        let attempt = Attempt::new(parts.next()?.parse().ok()?)?;
        self.pod_of(run, step.job, attempt)
    }

    async fn wait(&self, step: &StepHandle) -> Result<StepExit, ProviderError> {
        let state = self.state_of(step).ok_or_else(|| ProviderError::Wait {
            reason: format!("step {} is not known to this provider", step.id),
            cause: None,
        })?;
        let key = (step.index, step.attempt.get());
        let outcome = state
            .wait_for(None, |seen| {
                if let Some(end) = seen.ends.get(&key) {
                    return Some(Ok(end.clone()));
                }
                match (&seen.verdict, &seen.failed) {
                    // The steps container ended under the step: its exit is the step's.
                    (Some(PodVerdict::Ended(exit)), _) => Some(Ok(StepEnd::Exit(*exit))),
                    (Some(verdict), _) => Some(Err(stopped_reason(verdict))),
                    (None, Some(failed)) => Some(Err(failed.clone())),
                    (None, None) => None,
                }
            })
            .await
            .unwrap_or_else(|| Err("the pod's log ended".into()));
        match outcome {
            Ok(StepEnd::Exit(exit)) => Ok(exit),
            Ok(StepEnd::Refused(reason)) => Err(ProviderError::Start {
                reason,
                cause: None,
            }),
            Err(reason) => Err(ProviderError::Wait {
                reason,
                cause: None,
            }),
        }
    }

    async fn destroy(&self, step: &StepHandle) -> Result<(), ProviderError> {
        let Some(state) = self.state_of(step) else {
            return Ok(());
        };
        let key = (step.index, step.attempt.get());
        if state.seen().ends.contains_key(&key) {
            return Ok(());
        }
        let request = Request::Kill {
            index: key.0,
            attempt: key.1,
        };
        state
            .send(&self.cluster, &request, |seen| seen.ends.contains_key(&key))
            .await
            .map_err(|reason| ProviderError::Other {
                provider: PROVIDER,
                reason: format!("cannot stop step {} of pod {}: {reason}", key.0, state.name),
                cause: None,
            })
    }

    async fn tear_down_job(&self, workspace: &Workspace) -> Result<(), ProviderError> {
        let state = self
            .pods()
            .remove(&(workspace.run, workspace.job, workspace.attempt));
        if let Some(state) = &state
            && let Some(follower) = state
                .follower
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        {
            follower.abort();
        }
        let name = match &state {
            Some(state) => state.name.clone(),
            // A workspace this life did not set up (after a failed set-up, after a restart):
            // never an empty name, which would name the whole collection.
            None if workspace.id.is_empty() => {
                self.name_of(workspace.run, workspace.job, workspace.attempt)
            }
            None => workspace.id.clone(),
        };
        self.cluster.delete(&name).await.map_err(|err| other(&err))
    }

    async fn reap(&self, spare: &[JobAttempt]) -> Result<Vec<Orphan>, ProviderError> {
        // The pods of the attempts to take back, under the server's own epoch, stay.
        let keep = |key: &PodKey| {
            key.epoch == 0
                && spare.contains(&JobAttempt {
                    job: key.job,
                    attempt: key.attempt,
                })
        };
        let moves = self
            .cluster
            .reap_sparing(&keep)
            .await
            .map_err(|err| other(&err))?;
        Ok(moves
            .into_iter()
            .filter_map(|step| match step {
                Move::Delete {
                    kind: Kind::Pod,
                    name,
                } => Some(name),
                _ => None,
            })
            .filter_map(|name| {
                let key = orphan_key(&name)?;
                Some(Orphan {
                    job: key.job,
                    job_attempt: key.attempt,
                    // A pod is the whole attempt: which step ran in it is not known here.
                    step: 0,
                    step_attempt: Attempt::new(1)?,
                    id: name,
                })
            })
            .collect())
    }
}

/// The job attempt a pod's name tells (`...-run-<r>-job-<j>-<attempt>`), for orphans.
fn orphan_key(name: &str) -> Option<PodKey> {
    let parts: Vec<&str> = name.rsplitn(5, '-').collect();
    // [attempt, job, "job", run, "...-run"]
    let labels = BTreeMap::from([
        (
            super::names::RUN_LABEL.to_owned(),
            parts.get(3)?.to_string(),
        ),
        (
            super::names::JOB_LABEL.to_owned(),
            parts.get(1)?.to_string(),
        ),
        (
            super::names::ATTEMPT_LABEL.to_owned(),
            parts.first()?.to_string(),
        ),
        (super::names::EPOCH_LABEL.to_owned(), "0".to_owned()),
    ]);
    parse_labels(&labels)
}

/// The handle of step `index`, attempt `attempt`, of the attempt in `workspace`.
fn step_handle(workspace: &Workspace, index: u32, attempt: Attempt) -> StepHandle {
    StepHandle {
        job: workspace.job,
        index,
        attempt,
        id: format!(
            "{}/{}/{}/{}",
            workspace.run.0, workspace.attempt, index, attempt
        ),
    }
}

fn unavailable(err: &KubeError) -> ProviderError {
    ProviderError::Unavailable {
        provider: PROVIDER,
        reason: err.to_string(),
        cause: Cause::of(err.clone()),
    }
}

fn set_up(err: &KubeError) -> ProviderError {
    if err.is_retryable() {
        return unavailable(err);
    }
    ProviderError::SetUp {
        reason: err.to_string(),
        cause: Cause::of(err.clone()),
    }
}

fn other(err: &KubeError) -> ProviderError {
    if err.is_retryable() {
        return unavailable(err);
    }
    ProviderError::Other {
        provider: PROVIDER,
        reason: err.to_string(),
        cause: Cause::of(err.clone()),
    }
}

impl Provider for KubernetesProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn set_up<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Workspace, ProviderError>> {
        Box::pin(self.set_up_job(job))
    }

    fn start_step<'a>(
        &'a self,
        workspace: &'a Workspace,
        step: &'a StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<StepHandle, ProviderError>> {
        Box::pin(self.start(workspace, step, output))
    }

    fn wait_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<StepExit, ProviderError>> {
        Box::pin(self.wait(step))
    }

    fn destroy_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.destroy(step))
    }

    fn tear_down<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.tear_down_job(workspace))
    }

    fn resume<'a>(
        &'a self,
        job: &'a JobSpec,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ProviderError>> {
        Box::pin(self.resume_job(job))
    }

    fn reattach_step<'a>(
        &'a self,
        job: &'a JobSpec,
        index: u32,
        attempt: Attempt,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<Option<Reattached>, ProviderError>> {
        Box::pin(self.reattach(job, index, attempt, output))
    }
}

impl Probe for KubernetesProvider {
    fn probe(&self) -> BoxFuture<'_, bool> {
        Box::pin(self.check())
    }

    fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl Reconcile for KubernetesProvider {
    fn reap_orphans<'a>(
        &'a self,
        spare: &'a [JobAttempt],
    ) -> BoxFuture<'a, Result<Vec<Orphan>, ProviderError>> {
        Box::pin(self.reap(spare))
    }
}
