//! One step of an attempt through its tries: started through the provider, waited for with
//! its timeout, the job's deadline and a cancel, recorded, tried again by its retry policy.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use hodei_domain::model::{Duration, Env, Step};
use hodei_domain::ports::{ProviderError, StepHandle, StepSpec, Workspace};
use hodei_domain::state::{
    JobMachine, MaxAttempts, StepEvent, StepExit, StepFailure, StepKey, StepMachine, StepState,
};

use super::attempt::{AttemptError, AttemptTask, step_name};
use crate::fault::Point;
use crate::loghub::HubSink;
use crate::messages::{BeginStep, HubError, LogLength};

/// How a step ended, and so how the attempt's steps did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// It succeeded (for the attempt: every step succeeded or was allowed to fail).
    Succeeded,
    /// Its last try failed.
    Failed(StepFailure),
    /// The job's own timeout elapsed.
    JobTimedOut,
    /// The job was cancelled.
    Cancelled,
}

/// Whether a cancel of the job stops a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A step of the job: a cancel stops it.
    OnCancel,
    /// A hook: it runs to its end (or its timeout), cancel or not.
    AtItsEnd,
}

/// The step a recovered attempt goes on from: its machine as recorded, and its process when
/// the provider took it back ([`hodei_domain::ports::Provider::reattach_step`]).
pub(crate) struct Resumed {
    pub machine: StepMachine,
    pub attached: Option<StepHandle>,
}

/// A step to run, with what it needs.
pub(crate) struct StepRun<'a> {
    /// Its position in the job (hooks come after the steps).
    pub index: usize,
    pub step: &'a Step,
    pub env: &'a Env,
    /// The job's deadline.
    pub deadline: Option<tokio::time::Instant>,
    pub stop: Stop,
    pub resumed: Option<Resumed>,
}

/// How waiting for a step ended.
enum Waited {
    Exited(Result<StepExit, ProviderError>),
    StepTimedOut,
    JobTimedOut,
    Cancelled,
}

impl AttemptTask {
    /// Runs one step through its tries.
    pub(super) async fn run_step(
        &self,
        workspace: &Workspace,
        job: &JobMachine,
        run: StepRun<'_>,
    ) -> Result<Outcome, AttemptError> {
        let StepRun {
            index,
            step,
            env,
            deadline,
            stop,
            resumed,
        } = run;
        let provider = &self.ports.provider;
        let retries = step.retry.map_or(0, |r| r.max);
        let (mut sm, mut attached) = match resumed {
            Some(Resumed { machine, attached }) => (machine, attached),
            None => (
                StepMachine::new(
                    step_key(job, index),
                    MaxAttempts::from_retries(retries),
                    self.ports.clock.now(),
                ),
                None,
            ),
        };
        let shell = step.shell.clone().unwrap_or_else(|| self.def.shell.clone());
        loop {
            if let Some(handle) = attached.take() {
                // Taken back after a crash of Hodei: it started in the earlier life, and its
                // timeout counts from then.
                let elapsed = self.ports.clock.now().0.saturating_sub(sm.since().0);
                let elapsed = StdDuration::from_millis(u64::try_from(elapsed).unwrap_or(0));
                let step_deadline = step
                    .timeout
                    .map(|t| tokio::time::Instant::now() + t.to_std().saturating_sub(elapsed));
                let ended = self.wait(&handle, step_deadline, deadline, stop).await;
                self.live(|live| live.step = None);
                self.note(format!(
                    "step {} ran on while Hodei was down: it was taken back, its output and its exit collected",
                    index + 1
                ));
                if let Some(outcome) = self.step_ended(index, step, &mut sm, ended).await? {
                    return Ok(outcome);
                }
                continue;
            }
            if stop == Stop::OnCancel && *self.cancel.borrow() {
                let event = sm.apply(StepEvent::Cancel, self.ports.clock.now());
                self.record(event.into_iter().collect()).await?;
                return Ok(Outcome::Cancelled);
            }
            let spec = StepSpec {
                index: index as u32,
                attempt: sm.attempt(),
                script: step.run.clone(),
                shell: shell.argv().to_vec(),
                env: env.clone(),
                working_dir: step.working_dir.clone(),
            };
            // What the previous step's end left held back is durable before a process starts.
            self.flush().await?;
            let sink = Arc::new(HubSink {
                hub: self.hub.clone(),
                job: self.def.spec.job,
            });
            // The step's output begins where the log ends now (no offset when the masker holds
            // back the start of a secret that the previous step printed).
            let log_offset = self
                .hub
                .send(BeginStep {
                    job: self.def.spec.job,
                })
                .await
                .map_err(HubError::from)??;
            let handle = match provider.start_step(workspace, &spec, sink).await {
                Ok(handle) => {
                    self.live(|live| live.step = Some(handle.clone()));
                    handle
                }
                Err(err) => {
                    self.note(format!("cannot start step {}: {err}", index + 1));
                    let event = sm.apply(
                        StepEvent::ProviderError {
                            message: err.to_string(),
                        },
                        self.ports.clock.now(),
                    );
                    self.record(event.into_iter().collect()).await?;
                    match sm.state() {
                        StepState::Pending => continue,
                        _ => {
                            return Ok(Outcome::Failed(StepFailure::Provider {
                                message: err.to_string(),
                            }));
                        }
                    }
                }
            };
            let event = sm.apply(StepEvent::Start { log_offset }, self.ports.clock.now());
            self.record(event.into_iter().collect()).await?;
            self.ports.faults.reach(Point::AfterStepStart).await;
            let step_deadline = step
                .timeout
                .map(|t| tokio::time::Instant::now() + t.to_std());
            let ended = self.wait(&handle, step_deadline, deadline, stop).await;
            self.live(|live| live.step = None);
            self.ports.faults.reach(Point::AfterStepExit).await;
            if let Some(outcome) = self.step_ended(index, step, &mut sm, ended).await? {
                return Ok(outcome);
            }
        }
    }

    /// Records how a step's try ended and says so in the log: the step's outcome, or `None`
    /// when it is tried again (after its retry delay).
    async fn step_ended(
        &self,
        index: usize,
        step: &Step,
        sm: &mut StepMachine,
        ended: Waited,
    ) -> Result<Option<Outcome>, AttemptError> {
        // Everything the step printed is with the hub before its end is recorded: a reader of
        // the log, or an agent's upload, never sees a step end before its last output.
        let _ = self
            .hub
            .send(LogLength {
                job: self.def.spec.job,
            })
            .await;
        let delay = step.retry.and_then(|r| r.delay).map(Duration::to_std);
        let (event, outcome) = match ended {
            Waited::Exited(Ok(exit)) if exit.is_success() => {
                (StepEvent::Exited(exit), Outcome::Succeeded)
            }
            Waited::Exited(Ok(exit)) => (
                StepEvent::Exited(exit),
                Outcome::Failed(StepFailure::Exit(exit)),
            ),
            Waited::Exited(Err(err)) => {
                let message = err.to_string();
                (
                    StepEvent::ProviderError {
                        message: message.clone(),
                    },
                    Outcome::Failed(StepFailure::Provider { message }),
                )
            }
            Waited::StepTimedOut => {
                self.note(format!("step {} timed out", index + 1));
                (StepEvent::TimeOut, Outcome::Failed(StepFailure::TimedOut))
            }
            Waited::JobTimedOut => {
                self.note("the job timed out".to_owned());
                (StepEvent::Cancel, Outcome::JobTimedOut)
            }
            Waited::Cancelled => {
                self.note("the job was cancelled".to_owned());
                (StepEvent::Cancel, Outcome::Cancelled)
            }
        };
        let event = sm.apply(event, self.ports.clock.now());
        match sm.state() {
            // Tried again: recorded before the retry's delay.
            StepState::Pending => self.record(event.into_iter().collect()).await?,
            // Written with what follows: the next step's start is not made before it is recorded.
            _ => self.defer(event),
        }
        match (sm.state(), outcome) {
            (StepState::Failed { .. } | StepState::TimedOut, Outcome::Failed(failure)) => {
                self.note(format!(
                    "step {} ({}) failed: {failure}",
                    index + 1,
                    step_name(step),
                ));
                Ok(Some(Outcome::Failed(failure)))
            }
            (StepState::Pending, Outcome::Failed(failure)) => {
                self.note(format!(
                    "step {} failed ({failure}); trying again, attempt {}",
                    index + 1,
                    sm.attempt()
                ));
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                Ok(None)
            }
            (_, outcome) => Ok(Some(outcome)),
        }
    }

    /// Waits for a step, stopping it at its timeout, the job's deadline or a cancel.
    async fn wait(
        &self,
        handle: &StepHandle,
        step_deadline: Option<tokio::time::Instant>,
        job_deadline: Option<tokio::time::Instant>,
        stop: Stop,
    ) -> Waited {
        let provider = &self.ports.provider;
        let sleep_until = |at: Option<tokio::time::Instant>| async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut cancel = self.cancel.clone();
        let cancelled = async move {
            if stop == Stop::AtItsEnd {
                return std::future::pending().await;
            }
            while !*cancel.borrow_and_update() {
                if cancel.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        let reason = tokio::select! {
            exit = provider.wait_step(handle) => return Waited::Exited(exit),
            _ = sleep_until(step_deadline) => Waited::StepTimedOut,
            _ = sleep_until(job_deadline) => Waited::JobTimedOut,
            _ = cancelled => Waited::Cancelled,
        };
        if let Err(err) = provider.destroy_step(handle).await {
            tracing::warn!(job_id = %self.def.spec.job, error = %err, "Cannot stop a step.");
        }
        // Collect what the step printed before it was stopped; a provider that cannot say
        // within a bound is not waited for.
        let _ = tokio::time::timeout(StdDuration::from_secs(10), provider.wait_step(handle)).await;
        reason
    }
}

/// The key of step `index` of the job's current attempt.
pub(crate) fn step_key(job: &JobMachine, index: usize) -> StepKey {
    StepKey {
        run: job.run(),
        job: job.id(),
        job_attempt: job.attempt(),
        index: index as u32,
    }
}
