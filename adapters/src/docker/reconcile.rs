//! After a restart of Hodei: finding the step containers an earlier life left, re-attaching
//! to those worth keeping, and reaping the rest.
//!
//! The actors first call [`Reconcile::reap_orphans`](hodei_domain::ports::Reconcile::reap_orphans)
//! with the job attempts that the store shows running a step: it spares those, and the jobs
//! this life set up or re-attached, and removes everything else of this instance: step and
//! service containers (running or not) and networks, and the workspaces of the jobs it reaped.
//! Each step container removed is reported as an [`Orphan`]; services and networks are not
//! steps and are removed silently. Then each resumed job takes its step back
//! ([`Provider::reattach_step`](hodei_domain::ports::Provider::reattach_step), or
//! [`DockerProvider::reattach`] given a [`LiveStep`] of [`DockerProvider::live_steps`]), or,
//! if it cannot, tears its job attempt down.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use bollard::models::ContainerSummaryStateEnum;
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::{
    JobAttempt, JobSpec, Orphan, OutputSink, ProviderError, Reattached, StepHandle, Workspace,
};
use hodei_domain::state::Attempt;

use super::convert::{self, JobKey, StepKey};
use super::error::{DockerError, Phase};
use super::jobs::remove_workspace;
use super::{DockerProvider, INSTANCE_LABEL, STEP_ATTEMPT_LABEL, STEP_LABEL, engine};

/// A step container of this instance, as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStep {
    pub run: RunId,
    pub job: JobId,
    pub job_attempt: Attempt,
    pub index: u32,
    pub attempt: Attempt,
    /// The container's id.
    pub container: String,
    /// Whether it still runs (else it has ended and its exit code waits to be collected).
    pub running: bool,
}

impl LiveStep {
    fn key(&self) -> StepKey {
        StepKey {
            job: JobKey {
                run: self.run,
                job: self.job,
                attempt: self.job_attempt,
            },
            index: self.index,
            attempt: self.attempt,
        }
    }
}

impl DockerProvider {
    /// The step containers of this instance the engine has, running or ended, oldest job
    /// first: what an earlier life started and did not tear down.
    pub async fn live_steps(&self) -> Result<Vec<LiveStep>, ProviderError> {
        let labels = HashMap::from([(INSTANCE_LABEL.to_owned(), self.instance.clone())]);
        let found = engine::containers(&self.docker, &labels)
            .await
            .map_err(|err| err.into_provider(Phase::Other))?;
        let mut steps: Vec<LiveStep> = found
            .into_iter()
            .filter_map(|summary| {
                let key = convert::parse_step_labels(summary.labels.as_ref()?)?;
                Some(LiveStep {
                    run: key.job.run,
                    job: key.job.job,
                    job_attempt: key.job.attempt,
                    index: key.index,
                    attempt: key.attempt,
                    container: summary.id?,
                    running: summary.state == Some(ContainerSummaryStateEnum::RUNNING),
                })
            })
            .collect();
        steps.sort_by_key(|step| (step.key(), step.container.clone()));
        Ok(steps)
    }

    /// Follows a step container of an earlier life again: its output from byte `from` (what
    /// the log already holds) goes to `output`, and the handle works with `wait_step`,
    /// `destroy_step` and its job's `tear_down`, as if this life had started it. Its job's
    /// settings are read back from the container, so the job's next steps can start in the
    /// same workspace.
    ///
    /// # Errors
    /// [`ProviderError::Wait`] when the container is gone or is not this step of this instance.
    pub async fn reattach(
        &self,
        step: &LiveStep,
        from: u64,
        output: Arc<dyn OutputSink>,
    ) -> Result<StepHandle, ProviderError> {
        let refuse = |why| {
            DockerError::Unknown {
                what: format!(
                    "container {} of step {} of {}",
                    step.container, step.index, step.job
                ),
                why,
            }
            .into_provider(Phase::Wait)
        };
        let record = match engine::inspect(&self.docker, &step.container).await {
            Ok(record) => record,
            Err(err) if err.is_not_found() => return Err(refuse("it is gone")),
            Err(err) => return Err(err.into_provider(Phase::Wait)),
        };
        let labels = record
            .config
            .as_ref()
            .and_then(|config| config.labels.clone())
            .unwrap_or_default();
        let key = step.key();
        if labels.get(INSTANCE_LABEL) != Some(&self.instance)
            || convert::parse_step_labels(&labels) != Some(key)
        {
            return Err(refuse("its labels name another instance or step"));
        }
        if let Some(settings) = convert::settings_from(&record) {
            self.jobs()
                .entry(key.job)
                .or_insert_with(|| Arc::new(settings));
        }
        tracing::info!(
            job_id = %step.job, step = step.index, container = %step.container, from,
            "Re-attached to a step."
        );
        Ok(self.follow(key, step.container.clone(), from, output))
    }

    /// [`Provider::reattach_step`](hodei_domain::ports::Provider::reattach_step): the
    /// container of that step, if the engine still has it and this life has not followed it
    /// (a step this life started and then abandoned was stopped by it: it is lost), followed
    /// again from its first byte.
    pub(super) async fn reattach_job_step(
        &self,
        job: &JobSpec,
        index: u32,
        attempt: Attempt,
        output: Arc<dyn OutputSink>,
    ) -> Result<Option<Reattached>, ProviderError> {
        let key = StepKey {
            job: JobKey {
                run: job.run,
                job: job.job,
                attempt: job.attempt,
            },
            index,
            attempt,
        };
        if self.registry().keys().any(|(step, _)| *step == key) {
            return Ok(None);
        }
        let mut labels = convert::job_labels(&self.instance, key.job);
        labels.insert(STEP_LABEL.to_owned(), index.to_string());
        labels.insert(STEP_ATTEMPT_LABEL.to_owned(), attempt.to_string());
        let found = engine::containers(&self.docker, &labels)
            .await
            .map_err(|err| err.into_provider(Phase::Wait))?;
        let Some(container) = found.into_iter().find_map(|summary| summary.id) else {
            return Ok(None);
        };
        let live = LiveStep {
            run: job.run,
            job: job.job,
            job_attempt: job.attempt,
            index,
            attempt,
            container,
            running: true,
        };
        let step = match self.reattach(&live, 0, output).await {
            Ok(step) => step,
            // Gone between the listing and the inspection: nothing to take back.
            Err(ProviderError::Wait { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let dir = convert::workspace_dir(&self.base, key.job);
        Ok(Some(Reattached {
            workspace: Workspace {
                run: job.run,
                job: job.job,
                attempt: job.attempt,
                id: dir.to_string_lossy().into_owned(),
            },
            step,
        }))
    }

    /// Removes everything of this instance that belongs to no job of this life and to none of
    /// the job attempts in `keep`.
    pub(super) async fn reap(&self, keep: &[JobAttempt]) -> Result<Vec<Orphan>, DockerError> {
        let mut spare: HashSet<JobKey> = self.jobs().keys().copied().collect();
        spare.extend(self.registry().keys().map(|(step, _)| step.job));
        let kept = |job: &JobKey| {
            spare.contains(job)
                || keep
                    .iter()
                    .any(|k| k.job == job.job && k.attempt == job.attempt)
        };
        let labels = HashMap::from([(INSTANCE_LABEL.to_owned(), self.instance.clone())]);

        let mut orphans = Vec::new();
        let mut reaped = BTreeSet::new();
        for container in engine::containers(&self.docker, &labels).await? {
            let (Some(id), Some(labels)) = (container.id, container.labels) else {
                continue;
            };
            let job = convert::parse_job_labels(&labels);
            if job.is_some_and(|job| kept(&job)) {
                continue;
            }
            engine::remove(&self.docker, &id).await?;
            if let Some(job) = job {
                reaped.insert(job);
            }
            if labels.contains_key(STEP_LABEL)
                && let Some(step) = convert::parse_step_labels(&labels)
            {
                orphans.push(Orphan {
                    job: step.job.job,
                    job_attempt: step.job.attempt,
                    step: step.index,
                    step_attempt: step.attempt,
                    id,
                });
            }
        }
        for network in engine::networks(&self.docker, &labels).await? {
            let job = network.labels.as_ref().and_then(convert::parse_job_labels);
            if job.is_some_and(|job| kept(&job)) {
                continue;
            }
            let Some(id) = network.id else { continue };
            if let Err(err) = self.docker.remove_network(&id).await {
                let err = DockerError::engine(format!("remove the network {id}"), err);
                if !err.is_not_found() {
                    return Err(err);
                }
            }
            if let Some(job) = job {
                reaped.insert(job);
            }
        }
        for job in reaped {
            remove_workspace(&convert::workspace_dir(&self.base, job)).await?;
        }
        if !orphans.is_empty() {
            tracing::info!(
                count = orphans.len(),
                "Reaped step containers of an earlier life."
            );
        }
        orphans.sort_by_key(|orphan| {
            (
                orphan.job,
                orphan.job_attempt,
                orphan.step,
                orphan.step_attempt,
            )
        });
        Ok(orphans)
    }
}
