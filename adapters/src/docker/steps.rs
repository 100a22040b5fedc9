//! The steps of a job: a container each, started, waited for (after all its output was
//! delivered), and destroyed; the registry of the steps this provider follows.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use hodei_domain::ports::{OutputSink, StepHandle, StepSpec, Workspace};
use hodei_domain::state::StepExit;

use super::convert::{self, StepKey};
use super::error::DockerError;
use super::{DockerProvider, INSTANCE_LABEL, engine, job_key, logs};

/// How long `wait_step` waits, after the container stopped, for the end of its output.
const OUTPUT_DRAIN: Duration = Duration::from_secs(30);
/// How long `destroy_step` waits for a killed container to be reported stopped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// A step container followed by this provider.
pub(super) struct Step {
    container: String,
    follower: logs::Follower,
    /// `destroy_step` killed it.
    destroyed: AtomicBool,
}

impl Step {
    /// Stops delivering the step's output (the container is left as it is).
    pub(super) fn stop_following(&self) {
        self.follower.task.abort();
    }
}

impl DockerProvider {
    pub(super) fn step(&self, handle: &StepHandle) -> Option<Arc<Step>> {
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
    pub(super) fn follow(
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

    pub(super) async fn start(
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

    pub(super) async fn wait(&self, handle: &StepHandle) -> Result<StepExit, DockerError> {
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
        let destroyed = step.destroyed.load(Ordering::SeqCst);
        let mut state = engine::inspect(&self.docker, &step.container)
            .await?
            .state
            .unwrap_or_default();
        // The engine learns of an out-of-memory kill from an event of its own, which can come
        // after the exit (half a second late, and more than 3 s on a busy machine): a SIGKILL we
        // did not send is looked at again for up to 10 s. Only such a kill waits.
        for _ in 0..200 {
            let killed = state.exit_code == Some(137) && !destroyed;
            if !killed || state.oom_killed == Some(true) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            state = engine::inspect(&self.docker, &step.container)
                .await?
                .state
                .unwrap_or_default();
        }
        Ok(convert::step_exit(
            state.exit_code.unwrap_or(-1),
            state.oom_killed.unwrap_or(false),
            destroyed,
        ))
    }

    pub(super) async fn destroy(&self, handle: &StepHandle) -> Result<(), DockerError> {
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
