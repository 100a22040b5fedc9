//! The attempt's future: set up the workspace, run the steps in order, then the hooks by
//! outcome, collect the services' output, tear down, record the job's outcome.

use std::sync::{Arc, Mutex};

use actix::{Addr, Recipient};
use hodei_domain::engine::JobDef;
use hodei_domain::model::Step;
use hodei_domain::ports::{StoreError, Workspace};
use hodei_domain::state::{
    DomainEvent, JobEvent, JobMachine, MaxAttempts, StepEvent, StepMachine, StepSkipReason,
};
use tokio::sync::watch;

use super::step::{Outcome, StepRun, Stop, step_key};
use super::{Live, SlotHeld};
use crate::Ports;
use crate::fault::Point;
use crate::loghub::LogHub;
use crate::messages::{FlushLog, HubError, Note, Output, Release};
use crate::record::Ledger;

/// Why an attempt could not go on: the store refused a transition, or the log hub failed. The
/// run actor reloads the job from the store.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("cannot record the attempt's progress")]
    Store(#[from] StoreError),
    #[error("cannot mark the log at a step's start")]
    Log(#[from] HubError),
}

/// One attempt in progress, off the actor's state.
pub(super) struct AttemptTask {
    pub def: Arc<JobDef>,
    pub ports: Ports,
    pub hub: Addr<LogHub>,
    pub ledger: Arc<dyn Ledger>,
    pub cancel: watch::Receiver<bool>,
    pub live: Arc<Mutex<Live>>,
    pub slot: Arc<SlotHeld>,
    pub slots: Recipient<Release>,
    /// Transitions held back until the next record (see [`AttemptTask::defer`]).
    pub deferred: Mutex<Vec<DomainEvent>>,
}

/// How an attempt's steps ended, which decides the hooks and the job's final event.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Ending {
    pub outcome: Outcome,
    /// The step that failed, for [`Outcome::Failed`].
    pub step: u32,
}

impl AttemptTask {
    /// Updates what the attempt has running.
    pub fn live(&self, update: impl FnOnce(&mut Live)) {
        update(&mut self.live.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Writes a line of Hodei's own into the job's log.
    pub fn note(&self, text: String) {
        self.hub.do_send(Note {
            job: self.def.spec.job,
            text,
        });
    }

    /// Records transitions, then announces them; those held back go first, in the same append.
    pub async fn record(&self, events: Vec<DomainEvent>) -> Result<(), AttemptError> {
        let mut all = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|e| e.into_inner()));
        all.extend(events);
        Ok(self.ledger.record(all).await?)
    }

    /// Holds transitions back until the next [`record`](AttemptTask::record), which appends them
    /// first: how a step's last exit and the steps skipped after it are written with what
    /// follows them, in one commit (with the job's end, when no hook runs). Nothing starts a
    /// process before what is held back is recorded ([`flush`](AttemptTask::flush)), so a
    /// crash in between is a crash during the step: its exit is lost with Hodei, and recovery
    /// finds the step lost, as it would a moment before.
    pub fn defer(&self, events: impl IntoIterator<Item = DomainEvent>) {
        self.deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(events);
    }

    /// Records what is held back, if anything.
    pub async fn flush(&self) -> Result<(), AttemptError> {
        let held = !self
            .deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        match held {
            true => self.record(Vec::new()).await,
            false => Ok(()),
        }
    }

    /// The job's deadline, from now.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.def
            .timeout
            .map(|t| tokio::time::Instant::now() + t.to_std())
    }

    /// Runs the attempt. The placement is recorded with the first transition after the set-up
    /// (started, or the set-up's failure), in one store round trip: a crash during the set-up
    /// leaves the job queued, and the next set-up removes what the first one left.
    pub async fn execute(
        self,
        mut machine: JobMachine,
        placed: DomainEvent,
    ) -> Result<JobMachine, AttemptError> {
        let provider = self.ports.provider.clone();
        let job = self.def.spec.job;
        let deadline = self.deadline();
        let mut spec = self.def.spec.clone();
        spec.attempt = machine.attempt();
        let workspace = match provider.set_up(&spec).await {
            Ok(workspace) => {
                self.live(|live| live.workspace = Some(workspace.clone()));
                workspace
            }
            Err(err) => {
                self.note(format!("cannot set up the job: {err}"));
                let _ = provider
                    .tear_down(&Workspace {
                        run: spec.run,
                        job,
                        attempt: spec.attempt,
                        id: String::new(),
                    })
                    .await;
                let _ = self.hub.send(FlushLog { job }).await;
                let event = machine.apply(
                    JobEvent::ProviderError {
                        message: err.to_string(),
                    },
                    self.ports.clock.now(),
                );
                self.record(std::iter::once(placed).chain(event).collect())
                    .await?;
                return Ok(machine);
            }
        };
        let started = machine.apply(JobEvent::Start, self.ports.clock.now());
        self.record(std::iter::once(placed).chain(started).collect())
            .await?;
        self.ports.faults.reach(Point::AfterPlace).await;
        self.run_steps(machine, workspace, deadline, 0, None).await
    }

    /// Runs the steps from `first` on (the first one from `resumed`, its machine after a lost
    /// try), then the hooks, tears the workspace down and records the job's outcome.
    pub async fn run_steps(
        &self,
        mut machine: JobMachine,
        workspace: Workspace,
        deadline: Option<tokio::time::Instant>,
        first: usize,
        mut resumed: Option<super::step::Resumed>,
    ) -> Result<JobMachine, AttemptError> {
        let provider = self.ports.provider.clone();
        let job = self.def.spec.job;
        let mut ending = Ending {
            outcome: Outcome::Succeeded,
            step: 0,
        };
        let restored = match (first, &resumed) {
            (0, None) => super::files::before_steps(self, &workspace).await,
            _ => Default::default(),
        };
        let steps = self.def.steps.len();
        let mut next = first;
        while next < steps {
            let step = &self.def.steps[next];
            let outcome = self
                .run_step(
                    &workspace,
                    &machine,
                    StepRun {
                        index: next,
                        step,
                        env: &self.def.envs[next],
                        deadline,
                        stop: Stop::OnCancel,
                        resumed: resumed.take(),
                    },
                )
                .await?;
            next += 1;
            match outcome {
                Outcome::Succeeded => {}
                Outcome::Failed(failure) if step.continue_on_error => {
                    self.note(format!(
                        "step {next} failed ({failure}); the job goes on: `continue_on_error`"
                    ));
                }
                outcome => {
                    ending = Ending {
                        outcome,
                        step: (next - 1) as u32,
                    };
                    break;
                }
            }
        }
        self.skip_rest(&machine, next);
        // Keeping files or collecting services can take a while: the steps' ends are recorded
        // first. Without them, they are written with the job's end.
        let files = &self.def.files;
        if !files.artifacts.is_empty()
            || files.cache.is_some()
            || !self.def.spec.services.is_empty()
        {
            self.flush().await?;
        }
        let kept = super::files::after_steps(self, &workspace, &ending.outcome, restored).await;
        self.run_hooks(&workspace, &machine, &ending.outcome)
            .await?;
        self.collect_services(&workspace).await;
        if !provider.quick_tear_down(&workspace) {
            self.flush().await?;
        }
        if let Err(err) = self
            .hub
            .send(FlushLog { job })
            .await
            .map_err(HubError::from)
            .and_then(|r| r)
        {
            tracing::error!(job_id = %job, error = %err, "Cannot flush a job's log.");
        }
        if let Err(err) = provider.tear_down(&workspace).await {
            tracing::warn!(job_id = %job, error = %err, "Cannot tear down a job's workspace.");
        }
        self.live(|live| live.workspace = None);
        // Nothing of the job runs any more: its slot can take the next job while the outcome
        // is recorded.
        self.slot.release(&self.slots, job);
        let event = match ending.outcome {
            Outcome::Succeeded => match kept {
                Ok(()) => JobEvent::Succeed,
                Err(message) => JobEvent::ProviderError { message },
            },
            Outcome::Failed(failure) => JobEvent::StepFailed {
                step: ending.step,
                failure,
            },
            Outcome::JobTimedOut => JobEvent::TimeOut,
            Outcome::Cancelled => JobEvent::Cancel,
        };
        let event = machine.apply(event, self.ports.clock.now());
        self.record(event.into_iter().collect()).await?;
        Ok(machine)
    }

    /// Records the steps from `next` on, which did not run, as skipped (with what follows).
    fn skip_rest(&self, machine: &JobMachine, next: usize) {
        let now = self.ports.clock.now();
        let skipped = (next..self.def.steps.len())
            .filter_map(|index| {
                let mut sm = StepMachine::new(step_key(machine, index), MaxAttempts::ONE, now);
                sm.apply(
                    StepEvent::Skip {
                        reason: StepSkipReason::EarlierStepFailed,
                    },
                    now,
                )
                .ok()
            })
            .collect::<Vec<_>>();
        self.defer(skipped);
    }

    /// The hooks: by outcome, then `always`. They run even after a cancel or a timeout, to
    /// their end, and their own failures do not change the job's outcome.
    async fn run_hooks(
        &self,
        workspace: &Workspace,
        machine: &JobMachine,
        outcome: &Outcome,
    ) -> Result<(), AttemptError> {
        let hooks = &self.def.hooks;
        let by_outcome = match outcome {
            Outcome::Succeeded => &hooks.success,
            Outcome::Cancelled => &hooks.cancelled,
            Outcome::Failed(_) | Outcome::JobTimedOut => &hooks.failure,
        };
        let first = self.def.steps.len();
        for (index, (step, env)) in (first..).zip(by_outcome.iter().chain(hooks.always.iter())) {
            let run = StepRun {
                index,
                step,
                env,
                deadline: None,
                stop: Stop::AtItsEnd,
                resumed: None,
            };
            if let Outcome::Failed(failure) = self.run_step(workspace, machine, run).await? {
                self.note(format!(
                    "post hook {} failed ({failure}); the job's outcome stands",
                    index + 1
                ));
            }
        }
        Ok(())
    }

    /// What the job's services wrote goes into its log after the steps, each under a note.
    async fn collect_services(&self, workspace: &Workspace) {
        if self.def.spec.services.is_empty() {
            return;
        }
        let job = self.def.spec.job;
        match self.ports.provider.service_logs(workspace).await {
            Ok(services) => {
                for (service, output) in services {
                    self.note(format!("output of the service `{service}`:"));
                    if !output.is_empty() {
                        let mut bytes = output;
                        if !bytes.ends_with(b"\n") {
                            bytes.push(b'\n');
                        }
                        self.hub.do_send(Output { job, bytes });
                    }
                }
            }
            Err(err) => self.note(format!("cannot read the services' output: {err}")),
        }
    }
}

/// A step as it is named in notes.
pub(super) fn step_name(step: &Step) -> String {
    match &step.name {
        Some(name) => name.clone(),
        None => {
            let first = step.run.lines().next().unwrap_or_default();
            let short: String = first.chars().take(40).collect();
            if short.len() < first.len() || step.run.lines().count() > 1 {
                format!("`{short}…`")
            } else {
                format!("`{short}`")
            }
        }
    }
}
