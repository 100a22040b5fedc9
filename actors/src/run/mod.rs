//! The run actor: one per active run. It holds the run's machine and the machines of the jobs
//! that no job actor holds, and advances the run level-triggered: it takes a snapshot, asks the
//! domain's [`advance`] what follows from it, applies and records the transitions, then acts
//! on the moves — asks the scheduler for workers, withdraws jobs, stops attempts, arms a timer
//! for a retry's delay. It decides nothing itself. A missed or repeated message is harmless;
//! never two reconciles of one run run at once (the actor waits for each to be recorded).
//!
//! - `mod.rs` (here): the actor, its reconcile and its handlers.
//! - `load.rs`: the run read from the store ([`LoadError`] when it cannot be).
//! - `plans.rs`: plans shared between runs of the same definition ([`shared_plan`]).
//! - `opening.rs`: what a new run does at once, written with it ([`RunOpening`]).

mod load;
mod opening;
mod plans;

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Recipient, WrapFuture};
use hodei_domain::engine::{Approvals, Move, RunSnapshot, advance, job_def};
use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::model::Label;
use hodei_domain::plan::JobRef;
use hodei_domain::ports::{AgentStore, RunRecord};
use hodei_domain::state::{DomainEvent, JobEvent, JobMachine, JobState, RunEvent, verdict};

pub use load::LoadError;
pub use opening::RunOpening;
pub use plans::{SharedPlan, shared_plan};

use crate::Ports;
use crate::agents::{AgentDesk, LeaseExpired, RemoteJob, RemotePeers};
use crate::bus::EventBus;
use crate::contain::{ActorKind, RestartCounter, guard};
use crate::fault::Point;
use crate::job::{JobActor, JobPeers};
use crate::loghub::LogHub;
use crate::messages::{
    AbandonJob, ApproveJob, AskAgain, AttemptCrashed, AttemptEnded, CancelJob, CancelRun, Dequeue,
    Enqueue, Placed, RunActorStopped, RunLoaded, Taken,
};
use crate::record::{StoreLedger, record};
use crate::scheduler::Scheduler;
use load::{Loaded, load_run, with_secrets};

/// Where a run's actor sends what it needs to others.
#[derive(Clone)]
pub struct Peers {
    pub hub: Addr<LogHub>,
    pub bus: Addr<EventBus>,
    pub scheduler: Addr<Scheduler>,
    pub stopped: Recipient<RunActorStopped>,
    /// Told once the run is loaded and its first moves are made.
    pub loaded: Recipient<RunLoaded>,
    /// The tree's restart counts.
    pub restarts: Arc<RestartCounter>,
    /// Where jobs placed on agents go; `None` where there are no agents (`hodei run`).
    pub agents: Option<AgentPeers>,
}

/// The agent desk and the store of leases, for jobs placed on agents.
#[derive(Clone)]
pub struct AgentPeers {
    pub desk: Addr<AgentDesk>,
    pub store: Arc<dyn AgentStore>,
    /// The agents' lease.
    pub lease: std::time::Duration,
}

/// A job actor at work: on this machine, or the server's side of an attempt on an agent.
struct AttemptAddr {
    cancel: Recipient<CancelJob>,
    abandon: Recipient<AbandonJob>,
}

impl AttemptAddr {
    fn connected(&self) -> bool {
        self.cancel.connected()
    }
}

/// Walks the DAG of one run.
pub struct RunActor {
    run: RunId,
    ports: Ports,
    peers: Peers,
    approvals: Approvals,
    loaded: Option<Loaded>,
    /// The job actors at work, by job: they keep their jobs across a reload of the run.
    attempts: HashMap<JobId, AttemptAddr>,
    busy: bool,
    dirty: bool,
    /// The record of a run just created, read instead of the store at the first load.
    fresh: Option<RunRecord>,
    /// The earliest instant a timer is armed for (a retry's delay).
    wake: Option<Timestamp>,
    /// Whether [`RunLoaded`] was sent.
    announced: bool,
}

impl RunActor {
    /// The actor of `run`, which it reads from the store when it starts.
    pub fn new(run: RunId, ports: Ports, peers: Peers, approvals: Approvals) -> RunActor {
        RunActor {
            run,
            ports,
            peers,
            approvals,
            loaded: None,
            attempts: HashMap::new(),
            busy: false,
            dirty: false,
            fresh: None,
            wake: None,
            announced: false,
        }
    }

    /// The actor of a run just created, whose record the creator has in hand.
    pub fn created(
        record: RunRecord,
        ports: Ports,
        peers: Peers,
        approvals: Approvals,
    ) -> RunActor {
        let id = record.id;
        RunActor {
            fresh: Some(record),
            ..RunActor::new(id, ports, peers, approvals)
        }
    }

    /// Decides every move the run's state calls for, records the transitions, then acts on
    /// the rest. A panic in there is contained: the run actor stops, its job actors stop where
    /// they are, and the orchestrator starts a new run actor (with backoff, within its restart
    /// budget) that reloads the run from the store.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        if let Err(panicked) = guard(|| self.decide(ctx)) {
            tracing::error!(run_id = %self.run, error = %panicked, "Reconciling a run panicked; restarting its actor.");
            // The next run actor finds their jobs placed or running and takes them over.
            for (_, actor) in self.attempts.drain() {
                actor.abandon.do_send(AbandonJob);
            }
            self.loaded = None;
            self.peers.stopped.do_send(RunActorStopped {
                run: self.run,
                store_unavailable: false,
            });
            actix::ActorContext::stop(ctx);
        }
    }

    fn decide(&mut self, ctx: &mut Context<Self>) {
        self.ports.faults.hit(Point::Reconcile);
        if self.busy {
            self.dirty = true;
            return;
        }
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        let now = self.ports.clock.now();
        let moves = advance(&RunSnapshot {
            plan: &loaded.plan,
            resolved: &loaded.resolved,
            run: &loaded.machine,
            jobs: &loaded.jobs,
            post: loaded.post.as_ref(),
            approvals: self.approvals,
            now,
        });
        let mut events: Vec<DomainEvent> = Vec::new();
        let mut effects = Vec::new();
        for m in moves {
            let applied = match m {
                Move::Run(event) => {
                    if matches!(event, RunEvent::Finish(_)) {
                        self.ports.faults.hit(Point::BeforeRunFinish);
                    }
                    loaded.machine.apply(event, now).map_err(|e| e.to_string())
                }
                Move::Job(job, event) => {
                    match loaded.slot_mut(job).and_then(|s| s.machine.as_mut()) {
                        Some(machine) => machine.apply(event, now).map_err(|e| e.to_string()),
                        None => continue,
                    }
                }
                effect => {
                    effects.push(effect);
                    continue;
                }
            };
            match applied {
                Ok(event) => events.push(event),
                Err(err) => {
                    tracing::warn!(run_id = %self.run, error = %err, "A decided move was refused.")
                }
            }
        }
        self.record(ctx, events, move |act, ctx| act.act_on(ctx, effects));
    }

    /// Acts on what a reconcile decided, once its transitions are recorded; stops once the
    /// run is over.
    fn act_on(&mut self, ctx: &mut Context<Self>, effects: Vec<Move>) {
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        if loaded.machine.is_terminal() {
            // What the last reconcile withdrew leaves the queue all the same (a run cancelled
            // while its jobs wait ends in the reconcile that withdraws them): a finished run
            // keeps no job in the queue.
            for effect in &effects {
                if let Move::Withdraw(job) = effect
                    && let Some(slot) = loaded.slot_mut(*job)
                    && slot.enqueued
                {
                    slot.enqueued = false;
                    self.peers.scheduler.do_send(Dequeue { job: slot.id });
                }
            }
            tracing::info!(run_id = %self.run, state = loaded.machine.state().name(), "Run finished.");
            self.peers.stopped.do_send(RunActorStopped {
                run: self.run,
                store_unavailable: false,
            });
            actix::ActorContext::stop(ctx);
            return;
        }
        let me = ctx.address();
        for effect in effects {
            match effect {
                Move::Enqueue(job) => {
                    let Some(request) = enqueue(loaded, job, &me) else {
                        continue;
                    };
                    self.peers.scheduler.do_send(request);
                    if let Some(slot) = loaded.slot_mut(job) {
                        slot.enqueued = true;
                    }
                }
                Move::Withdraw(job) => {
                    if let Some(slot) = loaded.slot_mut(job) {
                        slot.enqueued = false;
                        self.peers.scheduler.do_send(Dequeue { job: slot.id });
                    }
                }
                Move::StopAttempt(job) => {
                    let actor = loaded.slot(job).and_then(|s| self.attempts.get(&s.id));
                    if let Some(actor) = actor {
                        actor.cancel.do_send(CancelJob);
                    }
                }
                Move::WakeAt(at) => {
                    if self.wake.is_none_or(|armed| at < armed) {
                        self.wake = Some(at);
                        let wait = at.0.saturating_sub(self.ports.clock.now().0).max(0);
                        let wait = std::time::Duration::from_millis(wait as u64);
                        ctx.run_later(wait, move |act, ctx| {
                            if act.wake == Some(at) {
                                act.wake = None;
                            }
                            act.reconcile(ctx);
                        });
                    }
                }
                Move::Run(_) | Move::Job(..) => {}
            }
        }
        if !std::mem::replace(&mut self.announced, true) {
            self.peers.loaded.do_send(RunLoaded { run: self.run });
        }
        if std::mem::take(&mut self.dirty) {
            self.reconcile(ctx);
        }
    }

    /// Records events before anything else happens to the run, then goes on with `then`; when
    /// the store refuses, the run is reloaded from it.
    fn record(
        &mut self,
        ctx: &mut Context<Self>,
        events: Vec<DomainEvent>,
        then: impl FnOnce(&mut RunActor, &mut Context<RunActor>) + 'static,
    ) {
        let (ports, bus) = (self.ports.clone(), self.peers.bus.clone());
        self.busy = true;
        ctx.wait(async move { record(&ports, &bus, events).await }.into_actor(self).map(move |result, act, ctx| {
            act.busy = false;
            match result {
                Ok(()) => then(act, ctx),
                Err(err) => {
                    tracing::error!(run_id = %act.run, error = %err, "Cannot record the run's progress; reloading it.");
                    act.peers.restarts.record(ActorKind::Run);
                    act.load(ctx);
                }
            }
        }));
    }

    /// Reads the run from the store (or takes the record just created) and reconciles it. Job
    /// actors at work keep their jobs: the run leaves those jobs to them.
    fn load(&mut self, ctx: &mut Context<Self>) {
        self.loaded = None;
        let (ports, run) = (self.ports.clone(), self.run);
        let fresh = self.fresh.take();
        self.busy = true;
        let load = async move {
            match fresh {
                Some(record) => with_secrets(&ports, record).await,
                None => load_run(&ports, run).await,
            }
        };
        ctx.wait(load.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok(mut loaded) => {
                    act.attempts.retain(|_, actor| actor.connected());
                    for slot in loaded.slots_mut() {
                        if act.attempts.contains_key(&slot.id) {
                            slot.machine = None;
                        }
                    }
                    act.loaded = Some(loaded);
                    act.reconcile(ctx);
                }
                Err(err) => {
                    let store_unavailable =
                        matches!(&err, LoadError::Store(err) if err.is_retryable());
                    match store_unavailable {
                        // The orchestrator says once that the run waits for the store.
                        true => tracing::debug!(run_id = %act.run, error = %err, "Cannot load a run: the store is unavailable."),
                        false => tracing::error!(run_id = %act.run, error = %err, "Cannot load a run."),
                    }
                    act.peers.stopped.do_send(RunActorStopped {
                        run: act.run,
                        store_unavailable,
                    });
                    actix::ActorContext::stop(ctx);
                }
            }
        }));
    }

    /// Starts the job actor of a placed job, handing it the job's machine.
    fn start_attempt(&mut self, job: JobRef, placement: Placed, me: Addr<RunActor>) -> Taken {
        let Some(loaded) = self.loaded.as_mut() else {
            return Taken::No;
        };
        let Some(machine) = loaded.slot_mut(job).and_then(|s| s.machine.take()) else {
            return Taken::No;
        };
        // The post hooks run by the verdict of the other jobs, all done by now.
        let verdict = match job {
            JobRef::Post => verdict(loaded.jobs.iter().filter_map(|s| s.machine.as_ref())),
            JobRef::Planned(_) => None,
        };
        let mut def = job_def(
            &loaded.plan,
            &loaded.resolved,
            &machine,
            job,
            &loaded.secrets,
            verdict.as_ref(),
        );
        // The jobs whose artifacts the attempt is given, by id: those it needs that keep any.
        if let JobRef::Planned(i) = job
            && let Some(planned) = loaded.plan.jobs.get(i)
        {
            def.files.needs = planned
                .needs
                .iter()
                .filter(|&&n| {
                    loaded
                        .plan
                        .jobs
                        .get(n)
                        .is_some_and(|j| !j.artifacts.is_empty())
                })
                .filter_map(|&n| loaded.jobs.get(n).map(|slot| slot.id))
                .collect();
        }
        let id = machine.id();
        let peers = JobPeers {
            hub: self.peers.hub.clone(),
            ledger: Arc::new(StoreLedger {
                store: self.ports.store.clone(),
                bus: self.peers.bus.clone(),
            }),
            slots: self.peers.scheduler.clone().recipient(),
            ended: me.clone().recipient(),
            crashed: me.recipient(),
        };
        let attempt = match (&self.peers.agents, placement.agent) {
            (Some(agents), true) => {
                let remote = RemotePeers {
                    desk: agents.desk.clone(),
                    hub: self.peers.hub.clone(),
                    bus: self.peers.bus.clone(),
                    slots: self.peers.scheduler.clone().recipient(),
                    ended: peers.ended,
                    grace: agents.lease,
                };
                let actor = RemoteJob::new(
                    Arc::new(def),
                    machine,
                    placement.worker,
                    placement.placement,
                    self.ports.clone(),
                    agents.store.clone(),
                    remote,
                )
                .start();
                AttemptAddr {
                    cancel: actor.clone().recipient(),
                    abandon: actor.recipient(),
                }
            }
            _ => {
                // The worker's own provider, if it has one (the Kubernetes worker).
                let ports = self.ports.for_worker(&placement.worker);
                let actor = JobActor::new(Arc::new(def), machine, placement, ports, peers).start();
                AttemptAddr {
                    cancel: actor.clone().recipient(),
                    abandon: actor.recipient(),
                }
            }
        };
        self.attempts.insert(id, attempt);
        Taken::Yes
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.load(ctx);
    }
}

impl Handler<AttemptEnded> for RunActor {
    type Result = ();

    fn handle(&mut self, msg: AttemptEnded, ctx: &mut Context<Self>) {
        self.attempts.remove(&msg.job);
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        let Some(slot) = loaded.find(msg.job).and_then(|job| loaded.slot_mut(job)) else {
            return;
        };
        slot.machine = Some(msg.machine);
        self.reconcile(ctx);
    }
}

impl Handler<AttemptCrashed> for RunActor {
    type Result = ();

    fn handle(&mut self, msg: AttemptCrashed, ctx: &mut Context<Self>) {
        tracing::error!(run_id = %self.run, job_id = %msg.job, "A job attempt failed; reloading its job from the store.");
        self.peers.restarts.record(ActorKind::Job);
        self.attempts.remove(&msg.job);
        // Only that job is affected: read what the store recorded of it, and let a new job
        // actor take it from there (a job found placed or running has lost its process).
        let (store, run) = (self.ports.store.clone(), self.run);
        self.busy = true;
        ctx.wait(async move { store.run(run).await }.into_actor(self).map(
            move |result, act, ctx| {
                act.busy = false;
                let record = match result {
                    Ok(Some(record)) => record,
                    _ => return act.load(ctx),
                };
                let Some(loaded) = act.loaded.as_mut() else {
                    return;
                };
                let found = record
                    .jobs
                    .iter()
                    .enumerate()
                    .find(|(_, j)| j.id == msg.job);
                let Some((position, stored)) = found else {
                    return;
                };
                let Some(job) = loaded.plan.job_at(position) else {
                    return;
                };
                let policy = loaded.plan.policy(job);
                if let Some(slot) = loaded.slot_mut(job) {
                    slot.enqueued = false;
                    slot.machine = Some(JobMachine::restore(
                        run,
                        stored.id,
                        policy,
                        stored.attempt,
                        stored.state.clone(),
                        stored.since,
                    ));
                }
                act.reconcile(ctx);
            },
        ));
    }
}

impl Handler<LeaseExpired> for RunActor {
    type Result = ();

    /// An agent held one of the run's jobs when the server stopped, and did not come back
    /// within its lease: the attempt is lost with its worker, and the job goes by its retry
    /// policy (to another worker).
    fn handle(&mut self, msg: LeaseExpired, ctx: &mut Context<Self>) {
        let Some(agents) = self.peers.agents.clone() else {
            return;
        };
        if self.attempts.contains_key(&msg.job) {
            return;
        }
        let now = self.ports.clock.now();
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        let Some(slot) = loaded.find(msg.job).and_then(|job| loaded.slot_mut(job)) else {
            return;
        };
        let Some(machine) = slot.machine.as_ref() else {
            return;
        };
        let mut next = machine.clone();
        let events: Vec<DomainEvent> = match machine.state() {
            JobState::Placed { worker } | JobState::Running { worker } if worker.0 == msg.agent => {
                next.apply(
                    JobEvent::WorkerLost {
                        worker: worker.clone(),
                    },
                    now,
                )
                .into_iter()
                .collect()
            }
            _ => Vec::new(),
        };
        if slot.enqueued {
            slot.enqueued = false;
            self.peers.scheduler.do_send(Dequeue { job: slot.id });
        }
        let (store, bus) = (agents.store, self.peers.bus.clone());
        let job = msg.job;
        self.busy = true;
        ctx.wait(
            async move {
                let ended = store.end_lease(job, msg.epoch, events.clone()).await;
                if matches!(ended, Ok(true)) && !events.is_empty() {
                    bus.do_send(crate::messages::Publish {
                        events: events.clone(),
                    });
                }
                (ended, events.is_empty())
            }
            .into_actor(self)
            .map(move |(ended, nothing), act, ctx| {
                act.busy = false;
                match ended {
                    Ok(true) if !nothing => {
                        if let Some(slot) = act
                            .loaded
                            .as_mut()
                            .and_then(|l| l.find(job).and_then(|j| l.slot_mut(j)))
                        {
                            slot.machine = Some(next);
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::error!(job_id = %job, error = %err, "Cannot record a lost lease; reloading the run.");
                        return act.load(ctx);
                    }
                }
                act.reconcile(ctx);
            }),
        );
    }
}

impl Handler<AskAgain> for RunActor {
    type Result = ();

    fn handle(&mut self, _: AskAgain, ctx: &mut Context<Self>) {
        // The scheduler may have lost requests: every job waiting for a worker asks again.
        if let Some(loaded) = self.loaded.as_mut() {
            for slot in loaded.slots_mut() {
                slot.enqueued = false;
            }
        }
        self.reconcile(ctx);
    }
}

impl Handler<Placed> for RunActor {
    type Result = Taken;

    fn handle(&mut self, msg: Placed, ctx: &mut Context<Self>) -> Taken {
        let Some(loaded) = self.loaded.as_mut() else {
            return Taken::No;
        };
        let Some(job) = loaded.find(msg.job) else {
            return Taken::No;
        };
        let Some(slot) = loaded.slot_mut(job) else {
            return Taken::No;
        };
        let waits = matches!(
            slot.machine.as_ref().map(JobMachine::state),
            Some(JobState::Queued | JobState::Placed { .. } | JobState::Running { .. })
        );
        // Cancelled or reloaded meanwhile: the scheduler takes the slot back.
        if !slot.enqueued || !waits {
            return Taken::No;
        }
        slot.enqueued = false;
        self.start_attempt(job, msg, ctx.address())
    }
}

impl Handler<CancelRun> for RunActor {
    type Result = ();

    fn handle(&mut self, msg: CancelRun, ctx: &mut Context<Self>) {
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        let now = self.ports.clock.now();
        match loaded.machine.apply(RunEvent::Cancel { by: msg.by }, now) {
            Ok(event) => self.record(ctx, vec![event], RunActor::reconcile),
            Err(err) => tracing::info!(run_id = %self.run, error = %err, "Cancel ignored."),
        }
    }
}

impl Handler<ApproveJob> for RunActor {
    type Result = ();

    fn handle(&mut self, msg: ApproveJob, ctx: &mut Context<Self>) {
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        let now = self.ports.clock.now();
        let machine = loaded
            .find(msg.job)
            .and_then(|job| loaded.slot_mut(job))
            .and_then(|slot| slot.machine.as_mut());
        let Some(machine) = machine else {
            return;
        };
        match machine.apply(JobEvent::Approve { by: msg.by }, now) {
            Ok(event) => self.record(ctx, vec![event], RunActor::reconcile),
            Err(err) => tracing::info!(run_id = %self.run, error = %err, "Approval ignored."),
        }
    }
}

/// The scheduler request for a job of the run.
fn enqueue(loaded: &Loaded, job: JobRef, me: &Addr<RunActor>) -> Option<Enqueue> {
    let slot = loaded.slot(job)?;
    let plan = &loaded.plan;
    // Found placed or running after a restart: it goes back to the worker that has it (an
    // agent that ran on while the server was down); if that worker is lost, so is the attempt.
    let resume_on = match slot.machine.as_ref().map(JobMachine::state) {
        Some(JobState::Placed { worker } | JobState::Running { worker }) => Some(worker.clone()),
        _ => None,
    };
    let pinned = resume_on.as_ref().and_then(crate::scheduler::worker_label);
    // A job that checks out the run's repository needs a worker that can.
    let checkout = plan
        .checkout_for(&loaded.resolved.inputs)
        .map(|_| Label::checkout());
    let request = |mut runs_on: Vec<Label>, resources, priority, concurrency| Enqueue {
        job: slot.id,
        run: loaded.machine.id(),
        pipeline: plan.pipeline.clone(),
        runs_on: {
            runs_on.extend(checkout.clone());
            runs_on.extend(pinned.clone());
            runs_on
        },
        resources,
        priority,
        concurrency,
        resume_on: resume_on.clone(),
        reply: me.clone().recipient(),
        again: me.clone().recipient(),
    };
    Some(match job {
        JobRef::Planned(i) => {
            let planned = plan.jobs.get(i)?;
            request(
                planned.labels(),
                planned.resources,
                planned.priority,
                planned.concurrency.clone(),
            )
        }
        // The pipeline's post hooks go anywhere.
        JobRef::Post => request(Vec::new(), Default::default(), 0, None),
    })
}
