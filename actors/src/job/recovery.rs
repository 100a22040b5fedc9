//! An attempt found placed or running after a crash of Hodei (or of the actors that drove it)
//! goes on where it stopped, as [`resume_point`] reads it from the store: a step the provider
//! still runs is taken back; a step lost with its process is recorded `lost` and tried again if
//! its retry policy allows; between steps, the next step runs. Otherwise (or when the attempt
//! was ending) its workspace is removed, the job's worker is recorded lost, and the job's own
//! retry policy decides.

use std::sync::Arc;

use hodei_domain::engine::{ResumePoint, resume_point};
use hodei_domain::ids::WorkerId;
use hodei_domain::ports::{JobSpec, Reattached, Workspace};
use hodei_domain::state::{JobEvent, JobMachine, JobState, StepEvent, StepMachine, StepState};

use super::attempt::{AttemptError, AttemptTask, step_name};
use super::step::Resumed;
use crate::loghub::HubSink;
use crate::messages::{OutputSkip, SkipOutput};

/// Where a recovered attempt goes on: the step, its machine if it was lost or waits for a
/// retry, and the note that says so.
type GoOn = (usize, Option<Resumed>, String);

impl AttemptTask {
    /// Takes over an attempt found placed or running after a restart; `same_worker` when the
    /// scheduler placed it where it ran before (its workspace may still be there).
    pub(super) async fn recover(
        self,
        mut machine: JobMachine,
        worker: WorkerId,
        same_worker: bool,
    ) -> Result<JobMachine, AttemptError> {
        let stopped = if matches!(machine.state(), JobState::Running { .. }) && same_worker {
            let record = self.ports.store.run(self.def.run).await?;
            let job = record.and_then(|r| r.jobs.into_iter().find(|j| j.id == machine.id()));
            match job {
                Some(job) => resume_point(&machine, &job.steps, &self.def.steps),
                None => ResumePoint::Ending,
            }
        } else {
            ResumePoint::Ending
        };
        let mut spec = self.def.spec.clone();
        spec.attempt = machine.attempt();
        let go_on = match stopped {
            ResumePoint::InStep {
                index,
                machine: sm,
                log_offset: Some(log_offset),
            } if sm.state() == &StepState::Running => {
                match self.reattach(&spec, index, &sm, log_offset).await {
                    Some(reattached) => {
                        self.live(|live| {
                            live.workspace = Some(reattached.workspace.clone());
                            live.step = Some(reattached.step.clone());
                        });
                        let resumed = Resumed {
                            machine: sm,
                            attached: Some(reattached.step),
                        };
                        let deadline = self.deadline();
                        return self
                            .run_steps(
                                machine,
                                reattached.workspace,
                                deadline,
                                index,
                                Some(resumed),
                            )
                            .await;
                    }
                    None => self.lost_step(index, sm, &worker).await?,
                }
            }
            ResumePoint::InStep {
                index, machine: sm, ..
            } => self.lost_step(index, sm, &worker).await?,
            ResumePoint::Before(next) => {
                let note = if next < self.def.steps.len() {
                    format!(
                        "Hodei stopped between steps; the job goes on with step {} in its workspace",
                        next + 1
                    )
                } else {
                    "Hodei stopped after the job's last step; the job goes on in its workspace"
                        .to_owned()
                };
                Some((next, None, note))
            }
            ResumePoint::Ending => None,
        };
        if let Some((from, sm, note)) = go_on {
            match self.ports.provider.resume(&spec).await {
                Ok(Some(workspace)) => {
                    self.note(note);
                    self.live(|live| live.workspace = Some(workspace.clone()));
                    let deadline = self.deadline();
                    return self.run_steps(machine, workspace, deadline, from, sm).await;
                }
                Ok(None) => self.note(
                    "the job's workspace is gone: the job cannot go on where it stopped".to_owned(),
                ),
                Err(err) => self.note(format!("cannot take the job's workspace back: {err}")),
            }
        }
        // What the lost attempt set up goes; a new attempt starts afresh.
        let workspace = Workspace {
            run: spec.run,
            job: spec.job,
            attempt: spec.attempt,
            id: String::new(),
        };
        if let Err(err) = self.ports.provider.tear_down(&workspace).await {
            tracing::warn!(job_id = %spec.job, error = %err, "Cannot tear down the workspace of a lost attempt.");
        }
        self.note(format!(
            "the job's process on worker `{worker}` was lost when Hodei stopped"
        ));
        let event = machine.apply(JobEvent::WorkerLost { worker }, self.ports.clock.now());
        self.record(event.into_iter().collect()).await?;
        Ok(machine)
    }

    /// Takes back a step that the store shows running, if the provider still has it (a
    /// container lives on without Hodei). Its output comes again from its first byte: the hub
    /// masks it afresh and drops what the log already holds since `log_offset`.
    async fn reattach(
        &self,
        spec: &JobSpec,
        index: usize,
        sm: &StepMachine,
        log_offset: u64,
    ) -> Option<Reattached> {
        let job = spec.job;
        self.hub.do_send(SkipOutput {
            job,
            skip: OutputSkip::StoredSince(log_offset),
        });
        let sink = Arc::new(HubSink {
            hub: self.hub.clone(),
            job,
        });
        let found = self
            .ports
            .provider
            .reattach_step(spec, index as u32, sm.attempt(), sink)
            .await;
        match found {
            Ok(Some(reattached)) => {
                tracing::info!(job_id = %job, step = index, "Took back a step that ran on while Hodei was down.");
                return Some(reattached);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(job_id = %job, step = index, error = %err, "Cannot take back a step after a restart.");
            }
        }
        self.hub.do_send(SkipOutput {
            job,
            skip: OutputSkip::Nothing,
        });
        None
    }

    /// A step found running whose process is gone is recorded lost; a step pending (lost, or
    /// waiting for its retry) goes on with a new try if its retry policy allows.
    async fn lost_step(
        &self,
        index: usize,
        mut sm: StepMachine,
        worker: &WorkerId,
    ) -> Result<Option<GoOn>, AttemptError> {
        if sm.state() == &StepState::Running {
            self.note(format!(
                "step {} ({}) was lost: its process on worker `{worker}` died when Hodei stopped",
                index + 1,
                step_name(&self.def.steps[index])
            ));
            let event = sm.apply(StepEvent::Lost, self.ports.clock.now());
            self.record(event.into_iter().collect()).await?;
        }
        Ok((sm.state() == &StepState::Pending).then(|| {
            let note = format!(
                "trying step {} again, attempt {}, in the job's workspace",
                index + 1,
                sm.attempt()
            );
            let resumed = Resumed {
                machine: sm,
                attached: None,
            };
            (index, Some(resumed), note)
        }))
    }
}
