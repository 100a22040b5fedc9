//! A job attempt's pod as [`KubernetesProvider`](super::KubernetesProvider) follows it: what
//! its log has shown so far ([`Seen`]: the ready marker, each step's start and end, the pod's
//! last verdict), the waits on it, and the requests sent to its entrypoint over `pods/attach`,
//! each sent again until the log confirms it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hodei_domain::ports::OutputSink;
use hodei_domain::state::StepExit;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Notify;

use super::cluster::Cluster;
use super::pod::SERVICE_READY_TIMEOUT;
use super::protocol::{Frame, Marker, Request};
use super::status::PodVerdict;

/// How long a request waits for the log to confirm it before it is sent again.
const CONFIRM: Duration = Duration::from_secs(10);
/// How many times a request is sent before the step is given up.
const SENDS: usize = 3;

pub(super) type StepKey = (u32, u32);

/// How a step ended, as the log told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StepEnd {
    Exit(StepExit),
    Refused(String),
}

/// What the follower of a pod's log has seen, for the provider's calls to wait on.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) ready: bool,
    /// The step whose output the log carries now.
    pub(super) current: Option<StepKey>,
    pub(super) started: std::collections::HashSet<StepKey>,
    pub(super) sinks: HashMap<StepKey, Arc<dyn OutputSink>>,
    pub(super) ends: HashMap<StepKey, StepEnd>,
    /// The pod's last verdict, once the follower stopped.
    pub(super) verdict: Option<PodVerdict>,
    /// Why the follower stopped without a verdict.
    pub(super) failed: Option<String>,
}

type Attached = (
    kube::api::AttachedProcess,
    tokio::io::WriteHalf<tokio::io::SimplexStream>,
);

/// A job attempt's pod, as the provider follows it.
pub(super) struct PodState {
    pub(super) name: String,
    pub(super) secrets: BTreeMap<String, String>,
    pub(super) seen: Mutex<Seen>,
    pub(super) changed: Notify,
    /// The attach to the entrypoint's standard input, and its writing half, kept between
    /// requests.
    pub(super) attached: tokio::sync::Mutex<Option<Attached>>,
    pub(super) follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PodState {
    pub(super) fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One frame of the log.
    pub(super) fn on_frame(&self, frame: Frame) {
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
    pub(super) async fn wait_for<T>(
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
    pub(super) async fn send(
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

/// Waits for the entrypoint's ready marker (its services listen), bounded.
pub(super) async fn ready(state: &PodState) -> Result<(), String> {
    let limit = SERVICE_READY_TIMEOUT + Duration::from_secs(30);
    state
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
        })
}

pub(super) fn stopped_reason(verdict: &PodVerdict) -> String {
    match verdict {
        PodVerdict::Failed(failure) => failure.to_string(),
        PodVerdict::Ended(exit) => format!("the job's container ended ({exit:?})"),
        PodVerdict::Starting | PodVerdict::Running => "the pod's log ended".to_owned(),
    }
}
