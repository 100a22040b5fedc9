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
//! ## Errors
//! An API server that cannot be reached is [`ProviderError::Unavailable`] (retryable); a pod
//! that cannot run is [`ProviderError::SetUp`] with the cluster's reason; a step the entrypoint
//! refuses is [`ProviderError::Start`]; a pod that fails or goes while a step runs is
//! [`ProviderError::Wait`] with the reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::{
    BoxFuture, Cause, JobAttempt, JobSpec, Orphan, OutputSink, Provider, ProviderError, Reconcile,
    StepHandle, StepSpec, Workspace,
};
use hodei_domain::state::{Attempt, StepExit};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Notify;

use super::cluster::{Cluster, new_token};
use super::error::{KubeError, PROVIDER};
use super::logs::LogCursor;
use super::names::{PodKey, parse_labels};
use super::pod::{PodJob, SERVICE_READY_TIMEOUT};
use super::protocol::{Frame, Marker, Request, run_request};
use super::reconcile::{Kind, Move};
use super::status::PodVerdict;

/// How long a request waits for the log to confirm it before it is sent again.
const CONFIRM: Duration = Duration::from_secs(10);
/// How many times a request is sent before the step is given up.
const SENDS: usize = 3;

type StepKey = (u32, u32);

/// How a step ended, as the log told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StepEnd {
    Exit(StepExit),
    Refused(String),
}

/// What the follower of a pod's log has seen, for the provider's calls to wait on.
#[derive(Default)]
struct Seen {
    ready: bool,
    /// The step whose output the log carries now.
    current: Option<StepKey>,
    started: std::collections::HashSet<StepKey>,
    sinks: HashMap<StepKey, Arc<dyn OutputSink>>,
    ends: HashMap<StepKey, StepEnd>,
    /// The pod's last verdict, once the follower stopped.
    verdict: Option<PodVerdict>,
    /// Why the follower stopped without a verdict.
    failed: Option<String>,
}

type Attached = (
    kube::api::AttachedProcess,
    tokio::io::WriteHalf<tokio::io::SimplexStream>,
);

/// A job attempt's pod, as this provider follows it.
struct PodState {
    name: String,
    secrets: BTreeMap<String, String>,
    seen: Mutex<Seen>,
    changed: Notify,
    /// The attach to the entrypoint's standard input, and its writing half, kept between
    /// requests.
    attached: tokio::sync::Mutex<Option<Attached>>,
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PodState {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One frame of the log.
    fn on_frame(&self, frame: Frame) {
        let mut seen = self.seen();
        match frame {
            Frame::Output(bytes) => {
                if let Some(sink) = seen.current.and_then(|key| seen.sinks.get(&key)) {
                    sink.output(&bytes);
                }
            }
            Frame::Marker(Marker::Ready) => seen.ready = true,
            Frame::Marker(Marker::Start { index, attempt }) => {
                seen.current = Some((index, attempt));
                seen.started.insert((index, attempt));
            }
            Frame::Marker(end @ Marker::End { .. }) => {
                if let Marker::End {
                    index,
                    attempt,
                    code,
                    signal,
                    oom_killed,
                } = end
                {
                    seen.current = None;
                    let exit = StepExit {
                        code,
                        signal,
                        oom_killed,
                    };
                    seen.ends.insert((index, attempt), StepEnd::Exit(exit));
                }
            }
            Frame::Marker(Marker::Refused {
                index,
                attempt,
                reason,
            }) => {
                seen.current = None;
                seen.ends.insert((index, attempt), StepEnd::Refused(reason));
            }
        }
        drop(seen);
        self.changed.notify_waiters();
    }

    /// Waits until `done` says what it waits for, or the follower stopped; at most `limit`.
    async fn wait_for<T>(
        &self,
        limit: Option<Duration>,
        mut done: impl FnMut(&Seen) -> Option<T>,
    ) -> Option<T> {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if let Some(answer) = done(&self.seen()) {
                    return Some(answer);
                }
                notified.await;
            }
        };
        match limit {
            Some(limit) => tokio::time::timeout(limit, wait).await.ok().flatten(),
            None => wait.await,
        }
    }

    /// Sends `request` until the log shows `confirmed`, attaching again when needed.
    async fn send(
        &self,
        cluster: &Cluster,
        request: &Request,
        confirmed: impl Fn(&Seen) -> bool,
    ) -> Result<(), String> {
        let mut line = serde_json::to_vec(request).map_err(|err| err.to_string())?;
        line.push(b'\n');
        let mut last = String::new();
        for _ in 0..SENDS {
            let mut attached = self.attached.lock().await;
            if attached.is_none() {
                match cluster.attach(&self.name).await {
                    Ok(mut process) => match process.stdin() {
                        Some(stdin) => *attached = Some((process, stdin)),
                        None => last = "the attach has no standard input".to_owned(),
                    },
                    Err(err) => last = err.to_string(),
                }
            }
            let Some((_, stdin)) = attached.as_mut() else {
                drop(attached);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let written = async {
                stdin.write_all(&line).await?;
                stdin.flush().await
            }
            .await;
            if let Err(err) = written {
                // A broken attach: the next try attaches anew.
                *attached = None;
                last = err.to_string();
                continue;
            }
            drop(attached);
            let stopped = |seen: &Seen| seen.verdict.is_some() || seen.failed.is_some();
            let outcome = self
                .wait_for(Some(CONFIRM), |seen| {
                    (confirmed(seen) || stopped(seen)).then_some(())
                })
                .await;
            if outcome.is_some() {
                return Ok(());
            }
            last = "the pod's log did not show the request within 10 s".to_owned();
            // Perhaps the attach broke unseen: the next try attaches anew.
            *self.attached.lock().await = None;
        }
        Err(last)
    }
}

/// Runs jobs as pods on a cluster. See the documentation of this module.
pub struct KubernetesProvider {
    cluster: Cluster,
    pods: Mutex<HashMap<(RunId, JobId, Attempt), Arc<PodState>>>,
}

impl KubernetesProvider {
    /// The provider of the namespace that `cluster` names.
    pub fn new(cluster: Cluster) -> KubernetesProvider {
        KubernetesProvider {
            cluster,
            pods: Mutex::new(HashMap::new()),
        }
    }

    fn pods(&self) -> MutexGuard<'_, HashMap<(RunId, JobId, Attempt), Arc<PodState>>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pod_of(&self, run: RunId, job: JobId, attempt: Attempt) -> Option<Arc<PodState>> {
        self.pods().get(&(run, job, attempt)).cloned()
    }

    async fn set_up_job(&self, job: &JobSpec) -> Result<Workspace, ProviderError> {
        let token = new_token().map_err(|err| set_up(&err))?;
        let pod_job = PodJob {
            spec: job,
            epoch: 0,
            timeout: None,
        };
        let created = self
            .cluster
            .create(pod_job, &job.secrets.0, &token)
            .await
            .map_err(|err| set_up(&err))?;
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
        let state = Arc::new(PodState {
            name: name.clone(),
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
        let limit = SERVICE_READY_TIMEOUT + Duration::from_secs(30);
        let ready = state
            .wait_for(Some(limit), |seen| {
                if seen.ready {
                    Some(Ok(()))
                } else if let Some(verdict) = &seen.verdict {
                    Some(Err(stopped_reason(verdict)))
                } else {
                    seen.failed.clone().map(Err)
                }
            })
            .await
            .unwrap_or_else(|| {
                Err(format!(
                    "the pod's entrypoint was not ready within {} s (a service that does not listen?)",
                    limit.as_secs()
                ))
            });
        if let Err(reason) = ready {
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
        Ok(StepHandle {
            job: workspace.job,
            index: step.index,
            attempt: step.attempt,
            id: format!(
                "{}/{}/{}/{}",
                workspace.run.0, workspace.attempt, step.index, step.attempt
            ),
        })
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
            None => workspace.id.clone(),
        };
        self.cluster.delete(&name).await.map_err(|err| other(&err))
    }

    async fn reap(&self) -> Result<Vec<Orphan>, ProviderError> {
        // This provider takes no step back after a restart: everything of an earlier life goes.
        let moves = self.cluster.reap(&[]).await.map_err(|err| other(&err))?;
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

fn stopped_reason(verdict: &PodVerdict) -> String {
    match verdict {
        PodVerdict::Failed(failure) => failure.to_string(),
        PodVerdict::Ended(exit) => format!("the job's container ended ({exit:?})"),
        PodVerdict::Starting | PodVerdict::Running => "the pod's log ended".to_owned(),
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
}

impl Reconcile for KubernetesProvider {
    fn reap_orphans<'a>(
        &'a self,
        spare: &'a [JobAttempt],
    ) -> BoxFuture<'a, Result<Vec<Orphan>, ProviderError>> {
        let _ = spare;
        Box::pin(self.reap())
    }
}
