//! The job actor: one per job attempt. It waits for the scheduler to place the job, then drives
//! the provider through the attempt — set up, each step with its retries and timeouts, the post
//! hooks, tear down — recording every transition before announcing it, and hands the job's
//! machine back to its run actor when the attempt is over.

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, WrapFuture};
use hodei_domain::ids::{JobId, RunId, WorkerId};
use hodei_domain::model::{Duration, Env, Label, Name, Resources, Shell, Step};
use hodei_domain::ports::{JobSpec, StepHandle, StepSpec, Workspace};
use hodei_domain::state::{
    DomainEvent, JobEvent, JobMachine, JobState, MaxAttempts, StepEvent, StepExit, StepFailure,
    StepKey, StepMachine, StepSkipReason, StepState,
};
use tokio::sync::watch;

use crate::Ports;
use crate::bus::EventBus;
use crate::contain::guard_future;
use crate::fault::Point;
use crate::loghub::{HubSink, LogHub};
use crate::messages::{
    AttemptEnded, BeginStep, CancelJob, FlushLog, Note, OpenLog, Placed, PlacementId, Publish,
    Release, Skip, SkipOutput,
};
use crate::run::RunActor;
use crate::scheduler::Scheduler;

/// How long a post hook without a `timeout` of its own may run.
pub const HOOK_TIMEOUT: Duration = Duration::parse_const("10m");

/// Everything a job attempt needs to know about its job, computed by the run actor.
#[derive(Debug, Clone)]
pub struct JobDef {
    pub run: RunId,
    pub pipeline: Name,
    pub name: String,
    /// The job's steps, then its post hooks are added by outcome.
    pub steps: Vec<Step>,
    /// The complete environment of each step, secrets included.
    pub envs: Vec<Env>,
    pub hooks: Hooks,
    pub shell: Shell,
    pub timeout: Option<Duration>,
    pub spec: JobSpec,
    pub runs_on: Vec<Label>,
    pub resources: Resources,
    pub priority: i32,
    pub concurrency: Option<Name>,
    /// Secret values to mask in the job's log.
    pub secrets: Vec<String>,
}

/// Post-hook steps with their environments, by outcome.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub success: Vec<(Step, Env)>,
    pub failure: Vec<(Step, Env)>,
    pub cancelled: Vec<(Step, Env)>,
    pub always: Vec<(Step, Env)>,
}

/// What becomes of an attempt stopped half-way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cleanup {
    /// It failed: its workspace goes too, and its run reloads the job.
    TellRun,
    /// Its run actor failed: the workspace stays for the run's next actor to go on in it.
    Abandon,
}

/// Where an attempt found after a crash stopped.
enum Stopped {
    /// In a step: its machine as recorded (running when Hodei stopped, or pending a retry), and
    /// where its output began in the job's log, if it started.
    InStep(usize, StepMachine, Option<u64>),
    /// Between steps: the next one to run (the number of steps: only the hooks are left).
    Before(usize),
    /// It was ending, or cannot be told: it does not go on.
    Ending,
}

/// The step an attempt found after a crash goes on from: its machine as recorded, and its
/// process when the provider took it back ([`hodei_domain::ports::Provider::reattach_step`]).
struct Resumed {
    machine: StepMachine,
    attached: Option<StepHandle>,
}

/// How an attempt's steps ended, which decides the hooks and the job's final event.
#[derive(Debug, Clone, PartialEq)]
enum Ending {
    Succeeded,
    StepFailed { step: u32, failure: StepFailure },
    TimedOut,
    Cancelled,
}

/// Why an attempt could not go on: the store refused. The run actor reloads from the store.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AttemptError(String);

/// One job attempt.
pub struct JobActor {
    index: usize,
    def: Arc<JobDef>,
    machine: Option<JobMachine>,
    ports: Ports,
    hub: Addr<LogHub>,
    bus: Addr<EventBus>,
    scheduler: Addr<Scheduler>,
    run: Addr<RunActor>,
    cancel: watch::Sender<bool>,
    /// The worker the scheduler chose.
    placement: Placed,
    /// Holds a slot of the scheduler, to give back when the attempt ends however it ends.
    placed: Arc<SlotHeld>,
    /// What the attempt has running, to stop if the attempt fails half-way.
    live: Arc<Mutex<Live>>,
    /// The attempt's future, while it runs.
    attempt: Option<actix::SpawnHandle>,
}

/// The slot of the scheduler a job actor holds: given back once, by whoever is first — the
/// attempt as soon as its last process is gone, or the actor when it stops.
#[derive(Debug)]
struct SlotHeld {
    held: std::sync::atomic::AtomicBool,
    placement: PlacementId,
}

impl SlotHeld {
    fn new(placement: PlacementId) -> SlotHeld {
        SlotHeld {
            held: std::sync::atomic::AtomicBool::new(true),
            placement,
        }
    }

    fn release(&self, scheduler: &Addr<Scheduler>, job: JobId) {
        if self.held.swap(false, std::sync::atomic::Ordering::SeqCst) {
            scheduler.do_send(Release {
                job,
                placement: self.placement,
            });
        }
    }
}

/// What an attempt has set up and started, and not yet cleaned up.
#[derive(Debug, Default)]
struct Live {
    workspace: Option<Workspace>,
    step: Option<StepHandle>,
}

impl JobActor {
    /// An actor for the attempt of `machine`, placed on `placement`: queued, or found placed or
    /// running after a restart.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        def: Arc<JobDef>,
        machine: JobMachine,
        placement: Placed,
        ports: Ports,
        hub: Addr<LogHub>,
        bus: Addr<EventBus>,
        scheduler: Addr<Scheduler>,
        run: Addr<RunActor>,
    ) -> JobActor {
        JobActor {
            index,
            def,
            machine: Some(machine),
            ports,
            hub,
            bus,
            scheduler,
            run,
            cancel: watch::channel(false).0,
            placed: Arc::new(SlotHeld::new(placement.placement)),
            placement,
            live: Arc::default(),
            attempt: None,
        }
    }

    fn job(&self) -> JobId {
        self.def.spec.job
    }

    fn release(&mut self) {
        self.placed.release(&self.scheduler, self.job());
    }

    /// The attempt failed half-way (a panic, a store refusal): the step it left running is
    /// stopped and its workspace removed before the run reloads the job, so that the job never
    /// starts again beside the old step's processes. The attempt does not go on where it
    /// stopped: what failed may fail again, and the job's retry policy bounds the tries.
    fn crashed(&mut self, ctx: &mut Context<Self>) {
        self.clean_up(ctx, Cleanup::TellRun);
    }

    /// Stops what the attempt left running, then stops the actor.
    fn clean_up(&mut self, ctx: &mut Context<Self>, how: Cleanup) {
        if let Some(attempt) = self.attempt.take() {
            ctx.cancel_future(attempt);
        }
        let live = std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
        let provider = self.ports.provider.clone();
        let job = self.job();
        let cleanup = async move {
            if let Some(step) = &live.step
                && let Err(err) = provider.destroy_step(step).await
            {
                tracing::warn!(job_id = %job, error = %err, "Cannot stop the step of a failed attempt.");
            }
            if how == Cleanup::TellRun
                && let Some(workspace) = &live.workspace
                && let Err(err) = provider.tear_down(workspace).await
            {
                tracing::warn!(job_id = %job, error = %err, "Cannot tear down the workspace of a failed attempt.");
            }
        };
        ctx.wait(
            guard_future(cleanup)
                .into_actor(self)
                .map(move |_, act, ctx| {
                    if how == Cleanup::TellRun {
                        act.run
                            .do_send(crate::run::AttemptCrashed { index: act.index });
                    }
                    actix::ActorContext::stop(ctx);
                }),
        );
    }

    fn hand_back(&mut self, ctx: &mut Context<Self>, machine: JobMachine) {
        self.release();
        self.run.do_send(AttemptEnded {
            index: self.index,
            machine,
        });
        actix::ActorContext::stop(ctx);
    }
}

impl Actor for JobActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Also after a crash: the slot goes back to the scheduler.
        self.release();
    }

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(machine) = self.machine.take() else {
            return;
        };
        self.hub.do_send(OpenLog {
            job: self.job(),
            secrets: self.def.secrets.clone(),
        });
        match machine.state().clone() {
            JobState::Queued => {
                let worker = self.placement.worker.clone();
                self.execute(ctx, machine, worker);
            }
            JobState::Placed { worker } | JobState::Running { worker } => {
                // Found mid-attempt after a restart: its processes died with the earlier Hodei.
                let same_worker = self.placement.worker == worker;
                let attempt = self.attempt();
                self.drive(ctx, async move {
                    attempt.recover(machine, worker, same_worker).await
                });
            }
            _ => self.hand_back(ctx, machine),
        }
    }
}

impl JobActor {
    /// Records the placement and runs the attempt.
    fn execute(&mut self, ctx: &mut Context<Self>, machine: JobMachine, worker: WorkerId) {
        let mut machine = machine;
        let now = self.ports.clock.now();
        let placed = match machine.apply(
            JobEvent::Place {
                worker: worker.clone(),
            },
            now,
        ) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(job_id = %self.job(), error = %err, "Ignoring a placement.");
                self.hand_back(ctx, machine);
                return;
            }
        };
        let attempt = self.attempt();
        self.drive(ctx, async move { attempt.execute(machine, placed).await });
    }

    /// What the attempt's future needs of the actor.
    fn attempt(&self) -> Attempt {
        Attempt {
            def: self.def.clone(),
            ports: self.ports.clone(),
            hub: self.hub.clone(),
            bus: self.bus.clone(),
            cancel: self.cancel.subscribe(),
            live: self.live.clone(),
            slot: self.placed.clone(),
            scheduler: self.scheduler.clone(),
        }
    }

    /// Runs the attempt's future: its machine goes back to the run when it ends; if it fails
    /// half-way, what it left running is stopped and the run reloads the job.
    fn drive(
        &mut self,
        ctx: &mut Context<Self>,
        attempt: impl std::future::Future<Output = Result<JobMachine, AttemptError>> + 'static,
    ) {
        let fut = guard_future(attempt);
        self.attempt = Some(ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(Ok(machine)) => act.hand_back(ctx, machine),
            Ok(Err(err)) => {
                tracing::error!(job_id = %act.job(), error = %err, "A job attempt stopped: the store refused a transition; its run reloads it.");
                act.crashed(ctx);
            }
            Err(panicked) => {
                tracing::error!(job_id = %act.job(), error = %panicked, "A job attempt panicked.");
                act.crashed(ctx);
            }
        })));
    }
}

impl Handler<crate::messages::AbandonJob> for JobActor {
    type Result = ();

    fn handle(&mut self, _: crate::messages::AbandonJob, ctx: &mut Context<Self>) {
        self.clean_up(ctx, Cleanup::Abandon);
    }
}

impl Handler<CancelJob> for JobActor {
    type Result = ();

    fn handle(&mut self, _: CancelJob, ctx: &mut Context<Self>) {
        match self.machine.take() {
            // Not placed yet: take it out of the queue and cancel it here.
            Some(mut machine) => {
                self.scheduler
                    .do_send(crate::messages::Dequeue { job: self.job() });
                let (ports, bus) = (self.ports.clone(), self.bus.clone());
                let now = ports.clock.now();
                let event = machine.apply(JobEvent::Cancel, now);
                let fut = async move {
                    if let Ok(event) = event {
                        persist(&ports, &bus, vec![event]).await?;
                    }
                    Ok::<_, AttemptError>(machine)
                };
                ctx.wait(fut.into_actor(self).map(|result, act, ctx| match result {
                    Ok(machine) => act.hand_back(ctx, machine),
                    Err(err) => {
                        tracing::error!(job_id = %act.job(), error = %err, "Cannot record a cancelled job.");
                        actix::ActorContext::stop(ctx);
                    }
                }));
            }
            // Running: the attempt sees the signal, stops its step and runs the hooks.
            None => {
                let _ = self.cancel.send(true);
            }
        }
    }
}

/// Appends events to the store, then announces them.
pub async fn persist(
    ports: &Ports,
    bus: &Addr<EventBus>,
    events: Vec<DomainEvent>,
) -> Result<(), AttemptError> {
    if events.is_empty() {
        return Ok(());
    }
    ports
        .store
        .append(events.clone())
        .await
        .map_err(|e| AttemptError(e.to_string()))?;
    bus.do_send(Publish { events });
    Ok(())
}

/// One attempt in progress, off the actor's state.
struct Attempt {
    def: Arc<JobDef>,
    ports: Ports,
    hub: Addr<LogHub>,
    bus: Addr<EventBus>,
    cancel: watch::Receiver<bool>,
    live: Arc<Mutex<Live>>,
    slot: Arc<SlotHeld>,
    scheduler: Addr<Scheduler>,
}

impl Attempt {
    /// Updates what the attempt has running.
    fn live(&self, update: impl FnOnce(&mut Live)) {
        update(&mut self.live.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn note(&self, text: String) {
        self.hub.do_send(Note {
            job: self.def.spec.job,
            text,
        });
    }

    /// Runs the attempt. The placement is recorded with the first transition after the set-up
    /// (started, or the set-up's failure), in one store round trip: a crash during the set-up
    /// leaves the job queued, and the next set-up removes what the first one left.
    async fn execute(
        self,
        mut machine: JobMachine,
        placed: DomainEvent,
    ) -> Result<JobMachine, AttemptError> {
        let provider = self.ports.provider.clone();
        let job = self.def.spec.job;
        let deadline = self
            .def
            .timeout
            .map(|t| tokio::time::Instant::now() + t.to_std());
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
                persist(
                    &self.ports,
                    &self.bus,
                    std::iter::once(placed).chain(event).collect(),
                )
                .await?;
                return Ok(machine);
            }
        };
        let started = machine.apply(JobEvent::Start, self.ports.clock.now());
        persist(
            &self.ports,
            &self.bus,
            std::iter::once(placed).chain(started).collect(),
        )
        .await?;
        self.ports.faults.hit(Point::AfterPlace);
        self.run_steps(machine, workspace, deadline, 0, None).await
    }

    /// Takes over an attempt found placed or running after a crash of Hodei (or of the actors
    /// that drove it). If the provider still has the job's workspace, the attempt goes on where
    /// it stopped: a step lost with its process is recorded `lost` and tried again if its retry
    /// policy allows; between steps, the next step runs. Otherwise (or when the attempt was
    /// ending) its workspace is removed, the job's worker is recorded lost, and the job's own
    /// retry policy decides.
    async fn recover(
        self,
        mut machine: JobMachine,
        worker: WorkerId,
        same_worker: bool,
    ) -> Result<JobMachine, AttemptError> {
        let stopped = if matches!(machine.state(), JobState::Running { .. }) && same_worker {
            self.stopped(&machine).await?
        } else {
            Stopped::Ending
        };
        let mut spec = self.def.spec.clone();
        spec.attempt = machine.attempt();
        let go_on = match stopped {
            Stopped::InStep(index, sm, Some(log_offset)) if sm.state() == &StepState::Running => {
                match self.reattach(&spec, index, &sm, log_offset).await {
                    Some(reattached) => {
                        self.live(|live| {
                            live.workspace = Some(reattached.workspace.clone());
                            live.step = Some(reattached.step.clone());
                        });
                        let deadline = self
                            .def
                            .timeout
                            .map(|t| tokio::time::Instant::now() + t.to_std());
                        let resumed = Resumed {
                            machine: sm,
                            attached: Some(reattached.step),
                        };
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
            Stopped::InStep(index, sm, _) => self.lost_step(index, sm, &worker).await?,
            Stopped::Before(next) => {
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
            Stopped::Ending => None,
        };
        if let Some((from, sm, note)) = go_on {
            match self.ports.provider.resume(&spec).await {
                Ok(Some(workspace)) => {
                    self.note(note);
                    self.live(|live| live.workspace = Some(workspace.clone()));
                    let deadline = self
                        .def
                        .timeout
                        .map(|t| tokio::time::Instant::now() + t.to_std());
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
        persist(&self.ports, &self.bus, event.into_iter().collect()).await?;
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
    ) -> Option<hodei_domain::ports::Reattached> {
        let job = spec.job;
        self.hub.do_send(SkipOutput {
            job,
            skip: Skip::StoredSince(log_offset),
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
            skip: Skip::Nothing,
        });
        None
    }

    /// A step found running whose process is gone is recorded lost; a step pending (lost, or
    /// waiting for its retry) goes on with a new try if its retry policy allows: where the
    /// attempt goes on, and the note that says so.
    async fn lost_step(
        &self,
        index: usize,
        mut sm: StepMachine,
        worker: &WorkerId,
    ) -> Result<Option<(usize, Option<Resumed>, String)>, AttemptError> {
        if sm.state() == &StepState::Running {
            self.note(format!(
                "step {} ({}) was lost: its process on worker `{worker}` died when Hodei stopped",
                index + 1,
                step_name(&self.def.steps[index])
            ));
            let event = sm.apply(StepEvent::Lost, self.ports.clock.now());
            persist(&self.ports, &self.bus, event.into_iter().collect()).await?;
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

    /// Where the job's current attempt stopped, from what the store recorded of its steps.
    async fn stopped(&self, machine: &JobMachine) -> Result<Stopped, AttemptError> {
        let record = self
            .ports
            .store
            .run(self.def.run)
            .await
            .map_err(|e| AttemptError(e.to_string()))?;
        let Some(job) = record.and_then(|r| r.jobs.into_iter().find(|j| j.id == machine.id()))
        else {
            return Ok(Stopped::Ending);
        };
        let mut steps: Vec<_> = job
            .steps
            .iter()
            .filter(|s| s.job_attempt == machine.attempt())
            .collect();
        steps.sort_by_key(|s| (s.index, s.attempt));
        // An attempt that was ending (a step failed for good, steps skipped, post hooks) does
        // not go on.
        let ending = steps.iter().any(|s| {
            let lenient = self
                .def
                .steps
                .get(s.index as usize)
                .is_some_and(|step| step.continue_on_error);
            s.index as usize >= self.def.steps.len()
                || matches!(s.state, StepState::Skipped { .. })
                || (!lenient
                    && matches!(
                        s.state,
                        StepState::Failed { .. } | StepState::TimedOut | StepState::Cancelled
                    ))
        });
        if ending {
            return Ok(Stopped::Ending);
        }
        let Some(last) = steps.last() else {
            return Ok(Stopped::Before(0));
        };
        let index = last.index as usize;
        Ok(match last.state {
            StepState::Running | StepState::Pending => {
                let retries = self.def.steps[index].retry.map_or(0, |r| r.max);
                Stopped::InStep(
                    index,
                    StepMachine::restore(
                        step_key(machine, index),
                        MaxAttempts::from_retries(retries),
                        last.attempt,
                        last.state.clone(),
                        last.since,
                    ),
                    last.log_offset,
                )
            }
            _ => Stopped::Before(index + 1),
        })
    }

    /// Runs the steps from `first` on (the first one from `resumed`, its machine after a lost
    /// try), then the post hooks, tears the workspace down and records the job's outcome.
    async fn run_steps(
        &self,
        mut machine: JobMachine,
        workspace: Workspace,
        deadline: Option<tokio::time::Instant>,
        first: usize,
        mut resumed: Option<Resumed>,
    ) -> Result<JobMachine, AttemptError> {
        let provider = self.ports.provider.clone();
        let job = self.def.spec.job;
        let mut ending = Ending::Succeeded;
        let steps = self.def.steps.len();
        let mut next = first;
        while next < steps {
            let outcome = self
                .run_step(
                    &workspace,
                    &machine,
                    next,
                    &self.def.steps[next],
                    &self.def.envs[next],
                    deadline,
                    true,
                    resumed.take(),
                )
                .await?;
            next += 1;
            match outcome {
                StepOutcome::Done => {}
                StepOutcome::Failed(failure) if self.def.steps[next - 1].continue_on_error => {
                    self.note(format!(
                        "step {} failed ({}); the job goes on: `continue_on_error`",
                        next,
                        describe(&failure)
                    ));
                }
                StepOutcome::Failed(failure) => {
                    ending = Ending::StepFailed {
                        step: (next - 1) as u32,
                        failure,
                    };
                    break;
                }
                StepOutcome::JobTimedOut => {
                    ending = Ending::TimedOut;
                    break;
                }
                StepOutcome::Cancelled => {
                    ending = Ending::Cancelled;
                    break;
                }
            }
        }
        // The steps that did not run are recorded as skipped.
        let mut skipped = Vec::new();
        for index in next..steps {
            let key = step_key(&machine, index);
            let mut sm = StepMachine::new(key, MaxAttempts::ONE, self.ports.clock.now());
            if let Ok(event) = sm.apply(
                StepEvent::Skip {
                    reason: StepSkipReason::EarlierStepFailed,
                },
                self.ports.clock.now(),
            ) {
                skipped.push(event);
            }
        }
        persist(&self.ports, &self.bus, skipped).await?;

        // Post hooks: by outcome, then `always`. They run even after a cancel or a timeout, and
        // their own failures do not change the job's outcome.
        let hooks = &self.def.hooks;
        let by_outcome = match &ending {
            Ending::Succeeded => &hooks.success,
            Ending::Cancelled => &hooks.cancelled,
            _ => &hooks.failure,
        };
        for (index, (step, env)) in (steps..).zip(by_outcome.iter().chain(hooks.always.iter())) {
            // A hook without a timeout of its own gets the default: a hook that hangs must not
            // hold the job, its slot and its run forever.
            let bounded;
            let step = if step.timeout.is_some() {
                step
            } else {
                bounded = Step {
                    timeout: Some(HOOK_TIMEOUT),
                    ..step.clone()
                };
                &bounded
            };
            let outcome = self
                .run_step(&workspace, &machine, index, step, env, None, false, None)
                .await?;
            if let StepOutcome::Failed(failure) = outcome {
                self.note(format!(
                    "post hook {} failed ({}); the job's outcome stands",
                    index + 1,
                    describe(&failure)
                ));
            }
        }

        // What the job's services wrote goes into its log after the steps, each under a note.
        if !self.def.spec.services.is_empty() {
            match provider.service_logs(&workspace).await {
                Ok(services) => {
                    for (service, output) in services {
                        self.note(format!("output of the service `{service}`:"));
                        if !output.is_empty() {
                            let mut bytes = output;
                            if !bytes.ends_with(b"\n") {
                                bytes.push(b'\n');
                            }
                            self.hub.do_send(crate::messages::Output { job, bytes });
                        }
                    }
                }
                Err(err) => self.note(format!("cannot read the services' output: {err}")),
            }
        }
        if let Err(err) = self
            .hub
            .send(FlushLog { job })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        {
            tracing::error!(job_id = %job, error = %err, "Cannot flush a job's log.");
        }
        if let Err(err) = provider.tear_down(&workspace).await {
            tracing::warn!(job_id = %job, error = %err, "Cannot tear down a job's workspace.");
        }
        self.live(|live| live.workspace = None);
        // Nothing of the job runs any more: its slot can take the next job while the outcome
        // is recorded.
        self.slot.release(&self.scheduler, job);
        let event = match ending {
            Ending::Succeeded => JobEvent::Succeed,
            Ending::StepFailed { step, failure } => JobEvent::StepFailed { step, failure },
            Ending::TimedOut => JobEvent::TimeOut,
            Ending::Cancelled => JobEvent::Cancel,
        };
        let event = machine.apply(event, self.ports.clock.now());
        persist(&self.ports, &self.bus, event.into_iter().collect()).await?;
        Ok(machine)
    }

    /// Runs one step through its attempts. `cancellable` is false for post hooks, which run to
    /// the end even when the job is being cancelled.
    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        workspace: &Workspace,
        job: &JobMachine,
        index: usize,
        step: &Step,
        env: &Env,
        deadline: Option<tokio::time::Instant>,
        cancellable: bool,
        resumed: Option<Resumed>,
    ) -> Result<StepOutcome, AttemptError> {
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
                let ended = self
                    .wait(&handle, step_deadline, deadline, cancellable)
                    .await;
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
            if cancellable && *self.cancel.borrow() {
                let event = sm.apply(StepEvent::Cancel, self.ports.clock.now());
                persist(&self.ports, &self.bus, event.into_iter().collect()).await?;
                return Ok(StepOutcome::Cancelled);
            }
            let spec = StepSpec {
                index: index as u32,
                attempt: sm.attempt(),
                script: step.run.clone(),
                shell: shell.argv().to_vec(),
                env: env.clone(),
                working_dir: step.working_dir.clone(),
            };
            let sink = Arc::new(HubSink {
                hub: self.hub.clone(),
                job: self.def.spec.job,
            });
            // The step's output begins where the log ends now, masked from a fresh start.
            let log_offset = self
                .hub
                .send(BeginStep {
                    job: self.def.spec.job,
                })
                .await
                .unwrap_or_else(|err| Err(err.to_string()))
                .map_err(|err| {
                    AttemptError(format!("cannot mark the log at a step's start: {err}"))
                })?;
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
                    persist(&self.ports, &self.bus, event.into_iter().collect()).await?;
                    match sm.state() {
                        StepState::Pending => continue,
                        _ => {
                            return Ok(StepOutcome::Failed(StepFailure::Provider {
                                message: err.to_string(),
                            }));
                        }
                    }
                }
            };
            let event = sm.apply(StepEvent::Start { log_offset }, self.ports.clock.now());
            persist(&self.ports, &self.bus, event.into_iter().collect()).await?;
            self.ports.faults.hit(Point::AfterStepStart);
            let step_deadline = step
                .timeout
                .map(|t| tokio::time::Instant::now() + t.to_std());
            let ended = self
                .wait(&handle, step_deadline, deadline, cancellable)
                .await;
            self.live(|live| live.step = None);
            self.ports.faults.hit(Point::AfterStepExit);
            if let Some(outcome) = self.step_ended(index, step, &mut sm, ended).await? {
                return Ok(outcome);
            }
        }
    }

    /// Records how a step attempt ended and says so in the log: the step's outcome, or `None`
    /// when it is tried again (after its retry delay).
    async fn step_ended(
        &self,
        index: usize,
        step: &Step,
        sm: &mut StepMachine,
        ended: Waited,
    ) -> Result<Option<StepOutcome>, AttemptError> {
        let delay = step.retry.and_then(|r| r.delay).map(Duration::to_std);
        let (event, outcome) = match ended {
            Waited::Exited(Ok(exit)) => (StepEvent::Exited(exit), exit_outcome(exit)),
            Waited::Exited(Err(err)) => {
                let message = err.to_string();
                (
                    StepEvent::ProviderError {
                        message: message.clone(),
                    },
                    StepOutcome::Failed(StepFailure::Provider { message }),
                )
            }
            Waited::StepTimedOut => {
                self.note(format!("step {} timed out", index + 1));
                (
                    StepEvent::TimeOut,
                    StepOutcome::Failed(StepFailure::TimedOut),
                )
            }
            Waited::JobTimedOut => {
                self.note("the job timed out".to_owned());
                (StepEvent::Cancel, StepOutcome::JobTimedOut)
            }
            Waited::Cancelled => {
                self.note("the job was cancelled".to_owned());
                (StepEvent::Cancel, StepOutcome::Cancelled)
            }
        };
        let event = sm.apply(event, self.ports.clock.now());
        persist(&self.ports, &self.bus, event.into_iter().collect()).await?;
        match (sm.state(), outcome) {
            (StepState::Failed { .. } | StepState::TimedOut, StepOutcome::Failed(failure)) => {
                self.note(format!(
                    "step {} ({}) failed: {}",
                    index + 1,
                    step_name(step),
                    describe(&failure)
                ));
                Ok(Some(StepOutcome::Failed(failure)))
            }
            (StepState::Pending, StepOutcome::Failed(failure)) => {
                self.note(format!(
                    "step {} failed ({}); trying again, attempt {}",
                    index + 1,
                    describe(&failure),
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
        cancellable: bool,
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
            if !cancellable {
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

enum Waited {
    Exited(Result<StepExit, hodei_domain::ports::ProviderError>),
    StepTimedOut,
    JobTimedOut,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
enum StepOutcome {
    Done,
    Failed(StepFailure),
    JobTimedOut,
    Cancelled,
}

fn exit_outcome(exit: StepExit) -> StepOutcome {
    if exit.is_success() {
        StepOutcome::Done
    } else {
        StepOutcome::Failed(StepFailure::Exit(exit))
    }
}

/// A step's name for notes: its `name`, or the first line of its script.
fn step_name(step: &Step) -> String {
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

fn step_key(job: &JobMachine, index: usize) -> StepKey {
    StepKey {
        run: job.run(),
        job: job.id(),
        job_attempt: job.attempt(),
        index: index as u32,
    }
}

/// A failure in a few words, for notes in the log.
pub fn describe(failure: &StepFailure) -> String {
    match failure {
        StepFailure::Exit(exit) => match (exit.code, exit.signal) {
            _ if exit.oom_killed => "killed for lack of memory".to_owned(),
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "no exit status".to_owned(),
        },
        StepFailure::TimedOut => "timed out".to_owned(),
        StepFailure::Lost => "lost".to_owned(),
        StepFailure::Provider { message } => message.clone(),
    }
}
