//! The job actor: one per job attempt. It holds the job's machine from the moment the scheduler
//! places the job, drives the provider through the attempt — set up, each step with its retries
//! and timeouts, the hooks, tear down — recording every transition before announcing it, and
//! hands the machine back to its run when the attempt is over.
//!
//! - `mod.rs` (here): the actor — start, cancel, abandon, clean-up after a failure.
//! - `attempt.rs`: the attempt's future — set-up, the steps in order, the hooks, the outcome.
//! - `step.rs`: one step through its tries, its timeouts and a cancel.
//! - `recovery.rs`: an attempt found running after a crash of Hodei goes on where it stopped.
//! - `files.rs`: artifacts and caches restored before the steps, kept and saved after them.

mod attempt;
mod files;
mod recovery;
mod step;

use std::sync::{Arc, Mutex};

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Recipient, WrapFuture};
use hodei_domain::engine::JobDef;
use hodei_domain::ids::JobId;
use hodei_domain::ports::{StepHandle, Workspace};
use hodei_domain::state::{JobEvent, JobMachine, JobState};
use tokio::sync::watch;

use crate::Ports;
use crate::contain::guard_future;
use crate::loghub::LogHub;
use crate::messages::{
    AbandonJob, AttemptCrashed, AttemptEnded, CancelJob, LoseJob, OpenLog, Placed, PlacementId,
    Release,
};
use crate::record::Ledger;

use attempt::{AttemptError, AttemptTask};

/// Where a job actor sends what it needs to others.
#[derive(Clone)]
pub struct JobPeers {
    pub hub: Addr<LogHub>,
    /// Where the attempt's transitions are recorded.
    pub ledger: Arc<dyn Ledger>,
    /// Who takes the attempt's slot back: the scheduler, or an agent's own count.
    pub slots: Recipient<Release>,
    /// Where the machine goes back when the attempt is over.
    pub ended: Recipient<AttemptEnded>,
    /// Who reloads the job when the attempt fails half-way.
    pub crashed: Recipient<AttemptCrashed>,
}

/// What becomes of an attempt stopped half-way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cleanup {
    /// It failed: its workspace goes too, and its run reloads the job.
    TellRun,
    /// Its run actor failed: the workspace stays for the run's next actor to go on in it.
    Abandon,
}

/// One job attempt.
pub struct JobActor {
    def: Arc<JobDef>,
    machine: Option<JobMachine>,
    ports: Ports,
    peers: JobPeers,
    cancel: watch::Sender<bool>,
    /// Where the scheduler placed the job.
    placement: Placed,
    /// The slot of the scheduler the attempt holds, given back however the attempt ends.
    slot: Arc<SlotHeld>,
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

    fn release(&self, slots: &Recipient<Release>, job: JobId) {
        if self.held.swap(false, std::sync::atomic::Ordering::SeqCst) {
            slots.do_send(Release {
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
    /// The actor of an attempt of `machine`'s job, placed by the scheduler: a queued job, or one
    /// found placed or running after a restart. `def` is what the attempt runs.
    pub fn new(
        def: Arc<JobDef>,
        machine: JobMachine,
        placement: Placed,
        ports: Ports,
        peers: JobPeers,
    ) -> JobActor {
        JobActor {
            def,
            machine: Some(machine),
            ports,
            peers,
            cancel: watch::channel(false).0,
            slot: Arc::new(SlotHeld::new(placement.placement)),
            placement,
            live: Arc::default(),
            attempt: None,
        }
    }

    fn job(&self) -> JobId {
        self.def.spec.job
    }

    fn release(&mut self) {
        self.slot.release(&self.peers.slots, self.job());
    }

    /// Stops what the attempt left running, then stops the actor. After a failure
    /// ([`Cleanup::TellRun`]) the workspace goes too and the run reloads the job, so that the
    /// job never starts again beside the old step's processes; the attempt does not go on
    /// where it stopped: what failed may fail again, and the job's retry policy bounds the
    /// tries.
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
                        act.peers.crashed.do_send(AttemptCrashed { job: act.job() });
                    }
                    actix::ActorContext::stop(ctx);
                }),
        );
    }

    fn hand_back(&mut self, ctx: &mut Context<Self>, machine: JobMachine) {
        self.release();
        self.peers.ended.do_send(AttemptEnded {
            job: self.job(),
            machine,
        });
        actix::ActorContext::stop(ctx);
    }

    /// What the attempt's future needs of the actor.
    fn task(&self) -> AttemptTask {
        AttemptTask {
            def: self.def.clone(),
            ports: self.ports.clone(),
            hub: self.peers.hub.clone(),
            ledger: self.peers.ledger.clone(),
            cancel: self.cancel.subscribe(),
            live: self.live.clone(),
            slot: self.slot.clone(),
            slots: self.peers.slots.clone(),
            deferred: Default::default(),
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
                act.clean_up(ctx, Cleanup::TellRun);
            }
            Err(panicked) => {
                tracing::error!(job_id = %act.job(), error = %panicked, "A job attempt panicked.");
                act.clean_up(ctx, Cleanup::TellRun);
            }
        })));
    }
}

impl Actor for JobActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Also after a crash: the slot goes back to the scheduler.
        self.release();
    }

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(mut machine) = self.machine.take() else {
            return;
        };
        self.peers.hub.do_send(OpenLog {
            job: self.job(),
            secrets: self.def.secrets.clone(),
        });
        let worker = self.placement.worker.clone();
        match machine.state().clone() {
            JobState::Queued => {
                let placed = match machine.apply(
                    JobEvent::Place {
                        worker: worker.clone(),
                    },
                    self.ports.clock.now(),
                ) {
                    Ok(event) => event,
                    Err(err) => {
                        tracing::warn!(job_id = %self.job(), error = %err, "Ignoring a placement.");
                        return self.hand_back(ctx, machine);
                    }
                };
                let task = self.task();
                self.drive(ctx, async move { task.execute(machine, placed).await });
            }
            JobState::Placed { worker: was } | JobState::Running { worker: was } => {
                // Found mid-attempt after a restart: its processes died with the earlier Hodei,
                // unless the provider still has them.
                let same_worker = was == worker;
                let task = self.task();
                self.drive(
                    ctx,
                    async move { task.recover(machine, was, same_worker).await },
                );
            }
            _ => self.hand_back(ctx, machine),
        }
    }
}

impl Handler<AbandonJob> for JobActor {
    type Result = ();

    fn handle(&mut self, _: AbandonJob, ctx: &mut Context<Self>) {
        self.clean_up(ctx, Cleanup::Abandon);
    }
}

impl Handler<LoseJob> for JobActor {
    type Result = ();

    fn handle(&mut self, _: LoseJob, ctx: &mut Context<Self>) {
        self.clean_up(ctx, Cleanup::TellRun);
    }
}

impl Handler<CancelJob> for JobActor {
    type Result = ();

    fn handle(&mut self, _: CancelJob, _: &mut Context<Self>) {
        // The attempt sees the signal, stops its step and runs the hooks.
        let _ = self.cancel.send(true);
    }
}
