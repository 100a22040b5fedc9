//! What a job's pod is doing, read from its status as the cluster reports it: the pure half of
//! following a pod. [`PodWatch`] is a small state machine consumed by value: each status seen
//! ([`PodWatch::on_status`]) or the pod's disappearance ([`PodWatch::on_deleted`]) gives the
//! next watch and a [`PodVerdict`].
//!
//! The point is to never hang on a pod that will not run (the most reported bug of CI
//! executors on Kubernetes): an image that cannot be pulled, a pod the cluster cannot place, a
//! container that cannot be created, a pod evicted, past its deadline or deleted from outside
//! ends the job with that reason. Problems the cluster may still get over (a registry that
//! fails once, a node that an autoscaler is adding) are given a bounded grace ([`Graces`]),
//! counted from when the problem was first seen; problems it cannot get over end at once.

use std::time::Duration;

use hodei_domain::ids::Timestamp;
use hodei_domain::state::StepExit;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};

use super::pod::{INIT_CONTAINER, STEPS_CONTAINER};

/// How long a problem the cluster may still get over is given before the job ends with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Graces {
    /// An image that fails to pull (`ErrImagePull`, `ImagePullBackOff`, registry down).
    pub pull: Duration,
    /// A pod the scheduler cannot place (`Unschedulable`).
    pub schedule: Duration,
    /// A container that fails to be created (`CreateContainerError` and the like).
    pub create: Duration,
}

impl Default for Graces {
    /// 60 s to pull, 5 min to be placed (time for an autoscaler to add a node), 60 s to create.
    fn default() -> Graces {
        Graces {
            pull: Duration::from_secs(60),
            schedule: Duration::from_secs(300),
            create: Duration::from_secs(60),
        }
    }
}

/// Why a pod cannot run its job, or stopped running it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PodFailure {
    #[error("cannot pull the image `{image}` of container `{container}` ({reason}): {message}")]
    ImagePull {
        container: String,
        image: String,
        reason: String,
        message: String,
    },
    #[error("the cluster cannot place the pod: {message}")]
    Unschedulable { message: String },
    #[error("cannot create container `{container}` ({reason}): {message}")]
    Create {
        container: String,
        reason: String,
        message: String,
    },
    #[error(
        "Hodei's entrypoint could not be copied into the pod (init container exit {code}): {message}"
    )]
    Init { code: i32, message: String },
    #[error("the service container `{container}` ended (exit {code}, {reason})")]
    ServiceEnded {
        container: String,
        code: i32,
        reason: String,
    },
    #[error("the pod failed ({reason}): {message}")]
    PodFailed { reason: String, message: String },
    #[error("the pod was deleted from outside Hodei")]
    Deleted,
}

/// What the job's pod is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodVerdict {
    /// Not running yet, and nothing wrong for longer than its grace.
    Starting,
    /// The steps container runs.
    Running,
    /// The steps container ended (the step that ran, if one did, ended with it): its exit,
    /// with the kernel's out-of-memory kill (`OOMKilled`) as data.
    Ended(StepExit),
    /// The pod cannot run the job, or stopped running it.
    Failed(PodFailure),
}

/// Follows one pod's statuses. See the documentation of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWatch {
    graces: Graces,
    /// The problem seen in the last status, and since when it has been seen.
    problem: Option<(Problem, Timestamp)>,
}

/// A problem that ends the job once seen for longer than its grace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    failure: PodFailure,
    grace: Duration,
}

impl PodWatch {
    pub fn new(graces: Graces) -> PodWatch {
        PodWatch {
            graces,
            problem: None,
        }
    }

    /// The pod as the cluster reports it `now`.
    pub fn on_status(self, pod: &Pod, now: Timestamp) -> (PodWatch, PodVerdict) {
        if pod.metadata.deletion_timestamp.is_some() {
            return self.on_deleted();
        }
        let status = pod.status.clone().unwrap_or_default();
        if let Some(verdict) = ended(&status) {
            return (self.cleared(), verdict);
        }
        let Some(problem) = problem(&status, self.graces) else {
            let running = containers(&status.container_statuses).any(|c| {
                c.name == STEPS_CONTAINER && c.state.as_ref().is_some_and(|s| s.running.is_some())
            });
            let verdict = if running {
                PodVerdict::Running
            } else {
                PodVerdict::Starting
            };
            return (self.cleared(), verdict);
        };
        // The same kind of problem goes on: its grace counts from when it was first seen.
        let since = match &self.problem {
            Some((seen, since)) if same_kind(&seen.failure, &problem.failure) => *since,
            _ => now,
        };
        let waited = Duration::from_millis(u64::try_from(now.0 - since.0).unwrap_or(0));
        let verdict = if waited >= problem.grace {
            PodVerdict::Failed(problem.failure.clone())
        } else {
            PodVerdict::Starting
        };
        (
            PodWatch {
                graces: self.graces,
                problem: Some((problem, since)),
            },
            verdict,
        )
    }

    /// The pod is gone (a watch's `Deleted` event, or `404` to a read) while the job ran.
    pub fn on_deleted(self) -> (PodWatch, PodVerdict) {
        (self.cleared(), PodVerdict::Failed(PodFailure::Deleted))
    }

    fn cleared(self) -> PodWatch {
        PodWatch {
            problem: None,
            ..self
        }
    }
}

fn same_kind(a: &PodFailure, b: &PodFailure) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn containers(
    statuses: &Option<Vec<ContainerStatus>>,
) -> impl Iterator<Item = &ContainerStatus> + Clone {
    statuses.iter().flatten()
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

/// A verdict that needs no grace: the pod or its steps container ended.
fn ended(status: &PodStatus) -> Option<PodVerdict> {
    for init in containers(&status.init_container_statuses) {
        if let Some(done) = init.state.as_ref().and_then(|s| s.terminated.as_ref())
            && init.name == INIT_CONTAINER
            && done.exit_code != 0
        {
            return Some(PodVerdict::Failed(PodFailure::Init {
                code: done.exit_code,
                message: text(&done.message),
            }));
        }
    }
    let terminated =
        |container: &ContainerStatus| container.state.as_ref().and_then(|s| s.terminated.clone());
    let mut all = containers(&status.container_statuses);
    if let Some(done) = all
        .clone()
        .filter(|c| c.name == STEPS_CONTAINER)
        .find_map(terminated)
    {
        let exit = match done.signal {
            Some(signal) => StepExit::signal(signal),
            None => StepExit::code(done.exit_code),
        };
        let oom_killed = done.reason.as_deref() == Some("OOMKilled");
        return Some(PodVerdict::Ended(StepExit { oom_killed, ..exit }));
    }
    if let Some((name, done)) = all.find_map(|c| terminated(c).map(|done| (c.name.clone(), done))) {
        return Some(PodVerdict::Failed(PodFailure::ServiceEnded {
            container: name,
            code: done.exit_code,
            reason: text(&done.reason),
        }));
    }
    if status.phase.as_deref() == Some("Failed") {
        return Some(PodVerdict::Failed(PodFailure::PodFailed {
            reason: text(&status.reason),
            message: text(&status.message),
        }));
    }
    None
}

/// The worst problem the status shows, with its grace; `None` if all looks well.
fn problem(status: &PodStatus, graces: Graces) -> Option<Problem> {
    let all =
        containers(&status.init_container_statuses).chain(containers(&status.container_statuses));
    for container in all {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = text(&waiting.reason);
        let message = text(&waiting.message);
        let pull = |grace| Problem {
            failure: PodFailure::ImagePull {
                container: container.name.clone(),
                image: container.image.clone(),
                reason: reason.clone(),
                message: message.clone(),
            },
            grace,
        };
        let create = |grace| Problem {
            failure: PodFailure::Create {
                container: container.name.clone(),
                reason: reason.clone(),
                message: message.clone(),
            },
            grace,
        };
        match reason.as_str() {
            // Never changes by waiting: the image is not on the node and may not be pulled,
            // or its name cannot be one.
            "ErrImageNeverPull" | "InvalidImageName" => return Some(pull(Duration::ZERO)),
            "ErrImagePull" | "ImagePullBackOff" | "RegistryUnavailable" => {
                return Some(pull(graces.pull));
            }
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                return Some(create(graces.create));
            }
            _ => {}
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    unschedulable.map(|condition| Problem {
        failure: PodFailure::Unschedulable {
            message: text(&condition.message),
        },
        grace: graces.schedule,
    })
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
