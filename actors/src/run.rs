//! The run actor: one per active run. It holds the run's machine and the machines of the jobs
//! that no job actor holds, and advances the run with a level-triggered `RunActor::reconcile`:
//! read the state, decide every move that follows from it, record them, announce them, start
//! job actors for queued jobs. A missed or repeated message is harmless; never two reconciles of
//! one run run at once (the actor waits for each to be recorded).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, Recipient, WrapFuture,
};
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::load::load;
use hodei_domain::model::{Env, Step};
use hodei_domain::plan::{Plan, ResolvedRun, Skip, plan};
use hodei_domain::ports::{JobSpec, RunRecord};
use hodei_domain::state::{
    DomainEvent, Gate, JobEvent, JobMachine, JobPolicy, JobSkipReason, JobState, MaxAttempts,
    RunEvent, RunMachine, RunState, Verdict, verdict,
};

use crate::Ports;
use crate::bus::EventBus;
use crate::job::{Hooks, JobActor, JobDef, persist};
use crate::loghub::LogHub;
use crate::messages::{
    ApproveJob, AttemptEnded, CancelJob, CancelRun, Dequeue, Enqueue, QueueReply, Release,
    RunActorStopped,
};
use crate::scheduler::Scheduler;

/// The name of the job that runs the pipeline's `post` hooks: in parentheses, so that it never
/// clashes with a job of the pipeline.
pub const POST_JOB: &str = "(post)";

/// A job attempt's actor died without handing its machine back (a panic): the run reloads.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AttemptCrashed {
    pub index: usize,
}

/// Where a run's actor sends what it needs to others.
#[derive(Clone)]
pub struct Peers {
    pub hub: Addr<LogHub>,
    pub bus: Addr<EventBus>,
    pub scheduler: Addr<Scheduler>,
    pub stopped: Recipient<RunActorStopped>,
}

/// How a run actor treats approval gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approvals {
    /// Gated jobs wait for an [`ApproveJob`].
    Wait,
    /// Gated jobs are approved at once by the person running `hodei run` on their machine.
    Local,
}

struct Slot {
    id: JobId,
    /// Waiting in the scheduler's queue for a placement.
    enqueued: bool,
    machine: Option<JobMachine>,
    actor: Option<Addr<JobActor>>,
}

struct Loaded {
    id: RunId,
    plan: Arc<SharedPlan>,
    resolved: Arc<ResolvedRun>,
    machine: RunMachine,
    slots: Vec<Slot>,
    /// The index of the job that runs the pipeline's `post` hooks, if it has any.
    post: Option<usize>,
    secrets: Vec<(String, String)>,
    /// Queued retries that wait for their delay, by slot: few at a time, so not in every slot.
    not_before: std::collections::HashMap<usize, tokio::time::Instant>,
}

/// Walks the DAG of one run.
pub struct RunActor {
    run: RunId,
    ports: Ports,
    peers: Peers,
    approvals: Approvals,
    loaded: Option<Loaded>,
    /// Job actors still at work across a reload.
    carried: std::collections::HashMap<JobId, Addr<JobActor>>,
    busy: bool,
    dirty: bool,
    /// The record of a run just created, read instead of the store at the first load.
    fresh: Option<RunRecord>,
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
            carried: Default::default(),
            busy: false,
            dirty: false,
            fresh: None,
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

    /// Decides every move the run's state calls for, records them, then acts on them. A panic in
    /// there is contained: the run actor stops, and the orchestrator starts a new one (with
    /// backoff, within its restart budget) that reloads the run from the store.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        if let Err(panicked) = crate::contain::guard(|| self.decide(ctx)) {
            tracing::error!(run_id = %self.run, error = %panicked, "Reconciling a run panicked; restarting its actor.");
            // Its job actors stop where they are; the next run actor finds their jobs lost and
            // retries or fails them by their policy.
            if let Some(loaded) = self.loaded.take() {
                for slot in loaded.slots {
                    if let Some(actor) = slot.actor {
                        actor.do_send(crate::messages::AbandonJob);
                    }
                }
            }
            self.peers
                .stopped
                .do_send(RunActorStopped { run: self.run });
            actix::ActorContext::stop(ctx);
        }
    }

    fn decide(&mut self, ctx: &mut Context<Self>) {
        self.ports.faults.hit(crate::fault::Point::Reconcile);
        if self.busy {
            self.dirty = true;
            return;
        }
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        let now = self.ports.clock.now();
        let mut events: Vec<DomainEvent> = Vec::new();
        let mut push = |result: Result<DomainEvent, _>| {
            if let Ok(event) = result {
                events.push(event);
            }
        };
        if loaded.machine.state() == RunState::Pending {
            push(loaded.machine.apply(RunEvent::Start, now));
        }
        let cancelling = loaded.machine.state() == RunState::Cancelling;
        let mut to_cancel = Vec::new();
        let plan_jobs = loaded.plan.jobs.len();
        for &i in &loaded.plan.order {
            let needs = &loaded.plan.jobs[i].needs;
            // A move can call for another at once (needs met → waiting for approval → approved
            // here): follow them until the job rests.
            for _ in 0..4 {
                let next = {
                    let slot = &loaded.slots[i];
                    if slot.actor.is_some() {
                        if cancelling {
                            to_cancel.push(i);
                        }
                        break;
                    }
                    match slot.state() {
                        Some(JobState::Pending) if cancelling => Some(JobEvent::Skip {
                            reason: JobSkipReason::RunCancelled,
                        }),
                        Some(JobState::Pending) => readiness(loaded, i, needs),
                        Some(JobState::WaitingApproval) if cancelling => Some(JobEvent::Cancel),
                        Some(JobState::WaitingApproval) if self.approvals == Approvals::Local => {
                            Some(JobEvent::Approve { by: "local".into() })
                        }
                        Some(
                            JobState::Queued | JobState::Placed { .. } | JobState::Running { .. },
                        ) if cancelling => {
                            if slot.enqueued {
                                self.peers.scheduler.do_send(Dequeue { job: slot.id });
                            }
                            Some(JobEvent::Cancel)
                        }
                        _ => None,
                    }
                };
                let Some(event) = next else { break };
                let slot = &mut loaded.slots[i];
                let Some(machine) = slot.machine.as_mut() else {
                    break;
                };
                match machine.apply(event, now) {
                    Ok(event) => push(Ok(event)),
                    Err(_) => break,
                }
                let queued = machine.state() == &JobState::Queued;
                slot.enqueued = slot.enqueued && queued;
            }
        }
        // Once every job of the plan is done: the post hooks, then the verdict.
        let done = loaded.slots[..plan_jobs]
            .iter()
            .all(|s| s.state_is_terminal());
        if done && !loaded.machine.state().is_terminal() {
            let post_done = match loaded.post {
                None => true,
                Some(p) => {
                    let slot = &mut loaded.slots[p];
                    if let Some(machine) = slot.machine.as_mut()
                        && machine.state() == &JobState::Pending
                    {
                        push(machine.apply(JobEvent::NeedsMet, now));
                    }
                    slot.state_is_terminal()
                }
            };
            if post_done {
                // Every terminal job's machine is home (no actor holds it).
                let machines: Option<Vec<JobMachine>> = loaded.slots[..plan_jobs]
                    .iter()
                    .map(|s| s.machine.clone())
                    .collect();
                if let Some(v) = machines.as_deref().and_then(|m| verdict(m.iter())) {
                    self.ports.faults.hit(crate::fault::Point::BeforeRunFinish);
                    push(loaded.machine.apply(RunEvent::Finish(v), now));
                }
            }
        }
        for i in to_cancel {
            if let Some(actor) = &loaded.slots[i].actor {
                actor.do_send(CancelJob);
            }
        }
        self.record(ctx, events, RunActor::after_reconcile);
    }

    /// Starts job actors for queued jobs, and stops once the run is over.
    fn after_reconcile(&mut self, ctx: &mut Context<Self>) {
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        if loaded.machine.state().is_terminal() {
            tracing::info!(run_id = %self.run, state = loaded.machine.state().name(), "Run finished.");
            self.peers
                .stopped
                .do_send(RunActorStopped { run: self.run });
            actix::ActorContext::stop(ctx);
            return;
        }
        let now = tokio::time::Instant::now();
        let me = ctx.address();
        for i in 0..loaded.slots.len() {
            let slot = &loaded.slots[i];
            if slot.actor.is_some() || slot.enqueued || slot.machine.is_none() {
                continue;
            }
            // Queued: ask the scheduler for a worker; the job actor starts once placed. Found
            // placed or running after a restart: once the scheduler gives it a slot again, a job
            // actor records the loss and goes on as the job's policy allows.
            let asks = match slot.state() {
                Some(JobState::Queued) => loaded.not_before.get(&i).is_none_or(|&at| at <= now),
                Some(JobState::Placed { .. } | JobState::Running { .. }) => true,
                _ => false,
            };
            if asks {
                loaded.not_before.remove(&i);
                let request = enqueue(loaded, i, me.clone().recipient());
                self.peers.scheduler.do_send(request);
                loaded.slots[i].enqueued = true;
            }
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
        then: fn(&mut RunActor, &mut Context<RunActor>),
    ) {
        let (ports, bus) = (self.ports.clone(), self.peers.bus.clone());
        self.busy = true;
        ctx.wait(async move { persist(&ports, &bus, events).await }.into_actor(self).map(move |result, act, ctx| {
            act.busy = false;
            match result {
                Ok(()) => then(act, ctx),
                Err(err) => {
                    tracing::error!(run_id = %act.run, error = %err, "Cannot record the run's progress; reloading it.");
                    act.reload(ctx);
                }
            }
        }));
    }

    /// Starts the job actor of slot `i`, handing it the job's machine.
    fn spawn_job(
        &mut self,
        i: usize,
        placement: Option<hodei_domain::ids::WorkerId>,
        me: Addr<RunActor>,
    ) {
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        let Some(machine) = loaded.slots[i].machine.take() else {
            return;
        };
        let def = Arc::new(job_def(loaded, i, &machine));
        let actor = JobActor::new(
            i,
            def,
            machine,
            placement,
            self.ports.clone(),
            self.peers.hub.clone(),
            self.peers.bus.clone(),
            self.peers.scheduler.clone(),
            me,
        )
        .start();
        loaded.slots[i].actor = Some(actor);
    }

    /// Forgets the cached state and reads the run again from the store.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        // Job actors at work keep their jobs: the reloaded run leaves those jobs to them.
        if let Some(loaded) = self.loaded.take() {
            for slot in loaded.slots {
                if let Some(actor) = slot.actor {
                    self.carried.insert(slot.id, actor);
                }
            }
        }
        crate::contain::restarts().record(crate::contain::ActorKind::Run);
        self.load(ctx);
    }

    fn load(&mut self, ctx: &mut Context<Self>) {
        let (ports, run) = (self.ports.clone(), self.run);
        let fresh = self.fresh.take();
        self.busy = true;
        let load = async move {
            match fresh {
                // Just created: the record is what the store holds.
                Some(record) => with_secrets(&ports, record).await,
                None => load_run(&ports, run).await,
            }
        };
        ctx.wait(load.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok(mut loaded) => {
                    for slot in &mut loaded.slots {
                        if let Some(actor) = act.carried.remove(&slot.id) {
                            slot.machine = None;
                            slot.actor = Some(actor);
                        }
                    }
                    act.carried.clear();
                    let now = tokio::time::Instant::now();
                    for &at in loaded.not_before.values() {
                        ctx.run_later(at.saturating_duration_since(now), |act, ctx| {
                            act.reconcile(ctx)
                        });
                    }
                    act.loaded = Some(loaded);
                    act.reconcile(ctx);
                }
                Err(err) => {
                    tracing::error!(run_id = %act.run, error = %err, "Cannot load a run; it resumes at the next start.");
                    act.peers.stopped.do_send(RunActorStopped { run: act.run });
                    actix::ActorContext::stop(ctx);
                }
            }
        }));
    }
}

impl Slot {
    /// The job's state while its machine is here; `None` while a job actor holds it.
    fn state(&self) -> Option<&JobState> {
        self.machine.as_ref().map(JobMachine::state)
    }

    fn state_is_terminal(&self) -> bool {
        self.actor.is_none() && self.state().is_some_and(is_terminal)
    }
}

fn is_terminal(state: &JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded
            | JobState::Failed { .. }
            | JobState::TimedOut
            | JobState::Cancelled
            | JobState::Skipped { .. }
    )
}

/// What a pending job's needs allow: wait, skip, or go.
fn readiness(loaded: &Loaded, index: usize, needs: &[usize]) -> Option<JobEvent> {
    let mut all_done = true;
    for &need in needs {
        let slot = &loaded.slots[need];
        if !slot.state_is_terminal() {
            all_done = false;
            continue;
        }
        let allowed_failure = slot
            .machine
            .as_ref()
            .is_some_and(|m| m.policy().continue_on_error);
        match slot.state() {
            Some(JobState::Succeeded) => {}
            Some(JobState::Failed { .. } | JobState::TimedOut) if allowed_failure => {}
            Some(JobState::Skipped { .. }) => {
                return Some(JobEvent::Skip {
                    reason: JobSkipReason::NeedSkipped { job: slot.id },
                });
            }
            _ => {
                return Some(JobEvent::Skip {
                    reason: JobSkipReason::NeedFailed { job: slot.id },
                });
            }
        }
    }
    if !all_done {
        return None;
    }
    match loaded.resolved.skips[index] {
        Some(Skip::WhenFalse) => Some(JobEvent::Skip {
            reason: JobSkipReason::WhenFalse,
        }),
        // Skips that follow from a skipped need were found above, with the need's id.
        Some(Skip::NeedSkipped { .. }) | None => Some(JobEvent::NeedsMet),
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
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        let Some(slot) = loaded.slots.get_mut(msg.index) else {
            return;
        };
        slot.actor = None;
        if msg.machine.state() == &JobState::Queued {
            // A retry: wait for the policy's delay before the next attempt.
            let delay = loaded
                .plan
                .jobs
                .get(msg.index)
                .and_then(|j| j.retry.delay)
                .map(|d| d.to_std());
            if let Some(delay) = delay {
                loaded
                    .not_before
                    .insert(msg.index, tokio::time::Instant::now() + delay);
                ctx.run_later(delay, |act, ctx| act.reconcile(ctx));
            }
        }
        slot.machine = Some(msg.machine);
        self.reconcile(ctx);
    }
}

impl Handler<QueueReply> for RunActor {
    type Result = ();

    fn handle(&mut self, msg: QueueReply, ctx: &mut Context<Self>) {
        let (job, worker) = match msg {
            QueueReply::Placed { job, worker } => (job, worker),
            QueueReply::AskAgain { .. } => {
                // The scheduler may have lost requests: every job waiting for a slot asks again.
                if let Some(loaded) = self.loaded.as_mut() {
                    for slot in &mut loaded.slots {
                        if slot.actor.is_none() {
                            slot.enqueued = false;
                        }
                    }
                }
                return self.after_reconcile(ctx);
            }
        };
        let slot = self.loaded.as_mut().and_then(|l| {
            l.slots
                .iter()
                .position(|s| s.id == job)
                .map(|i| (i, &mut l.slots[i]))
        });
        match slot {
            Some((i, slot))
                if slot.enqueued
                    && matches!(
                        slot.state(),
                        Some(JobState::Queued | JobState::Placed { .. } | JobState::Running { .. })
                    ) =>
            {
                slot.enqueued = false;
                self.spawn_job(i, Some(worker), ctx.address());
            }
            _ => {
                // Cancelled or reloaded meanwhile: give the slot back.
                self.peers.scheduler.do_send(Release { job });
            }
        }
    }
}

impl Handler<AttemptCrashed> for RunActor {
    type Result = ();

    fn handle(&mut self, msg: AttemptCrashed, ctx: &mut Context<Self>) {
        tracing::error!(run_id = %self.run, job = msg.index, "A job actor crashed; reloading its job from the store.");
        crate::contain::restarts().record(crate::contain::ActorKind::Job);
        // Only that job is affected: read what the store recorded of it, and let a new job actor
        // take it from there (a job found placed or running has lost its process).
        let (store, run, index) = (self.ports.store.clone(), self.run, msg.index);
        self.busy = true;
        ctx.wait(async move { store.run(run).await }.into_actor(self).map(
            move |result, act, ctx| {
                act.busy = false;
                let record = match result {
                    Ok(Some(record)) => record,
                    _ => return act.reload(ctx),
                };
                let Some(loaded) = act.loaded.as_mut() else {
                    return;
                };
                let (Some(slot), Some(job)) = (loaded.slots.get_mut(index), record.jobs.get(index))
                else {
                    return;
                };
                let policy = job_policy(&loaded.plan, index);
                slot.actor = None;
                slot.machine = Some(JobMachine::restore(
                    run,
                    job.id,
                    policy,
                    job.attempt,
                    job.state.clone(),
                    job.since,
                ));
                act.after_reconcile(ctx);
                act.reconcile(ctx);
            },
        ));
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
        let Some(slot) = loaded.slots.iter_mut().find(|s| s.id == msg.job) else {
            return;
        };
        let Some(machine) = slot.machine.as_mut() else {
            return;
        };
        match machine.apply(JobEvent::Approve { by: msg.by }, now) {
            Ok(event) => self.record(ctx, vec![event], RunActor::after_reconcile),
            Err(err) => tracing::info!(run_id = %self.run, error = %err, "Approval ignored."),
        }
    }
}

/// A plan with the text it was made from. Runs of the same definition share one: a thousand
/// queued runs of a pipeline hold one plan, not a thousand.
pub struct SharedPlan {
    source: String,
    plan: Plan,
}

impl std::ops::Deref for SharedPlan {
    type Target = Plan;

    fn deref(&self) -> &Plan {
        &self.plan
    }
}

/// The plan of a pipeline definition, shared with every run that uses the same text.
pub(crate) fn shared_plan(source: &str) -> Option<Arc<SharedPlan>> {
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    use std::sync::{Mutex, OnceLock, Weak};
    static CACHE: OnceLock<Mutex<HashMap<u64, Weak<SharedPlan>>>> = OnceLock::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut hasher);
    let key = hasher.finish();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Ok(cache) = cache.lock()
        && let Some(shared) = cache.get(&key).and_then(Weak::upgrade)
        && shared.source == source
    {
        return Some(shared);
    }
    let pipeline = load(source).pipeline?;
    let shared = Arc::new(SharedPlan {
        source: source.to_owned(),
        plan: plan(&pipeline),
    });
    if let Ok(mut cache) = cache.lock() {
        cache.retain(|_, weak| weak.strong_count() > 0);
        cache.insert(key, Arc::downgrade(&shared));
    }
    Some(shared)
}

/// The policy of the plan's job `i`, or of the job of the pipeline's post hooks.
fn job_policy(plan: &Plan, i: usize) -> JobPolicy {
    match plan.jobs.get(i) {
        Some(planned) => JobPolicy {
            max_attempts: MaxAttempts::from_retries(planned.retry.max),
            gate: if planned.approval.is_some() {
                Gate::Approval
            } else {
                Gate::Open
            },
            continue_on_error: planned.continue_on_error,
        },
        None => JobPolicy {
            max_attempts: MaxAttempts::ONE,
            gate: Gate::Open,
            continue_on_error: true,
        },
    }
}

/// Reads a run and rebuilds its plan and machines.
async fn load_run(ports: &Ports, run: RunId) -> Result<Loaded, String> {
    let record = ports
        .store
        .run(run)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{run} not found"))?;
    with_secrets(ports, record).await
}

/// Rebuilds a run from its record, with the values of its secrets.
async fn with_secrets(ports: &Ports, record: RunRecord) -> Result<Loaded, String> {
    let secrets = crate::secrets::run_secrets(ports, &record).await?;
    loaded_from(ports, record, secrets)
}

/// Rebuilds a run's plan and machines from its record.
fn loaded_from(
    ports: &Ports,
    record: RunRecord,
    secrets: Vec<(String, String)>,
) -> Result<Loaded, String> {
    let run = record.id;
    let plan = shared_plan(&record.source).ok_or_else(|| {
        format!(
            "the stored definition of {} no longer loads",
            record.pipeline
        )
    })?;
    let resolved = plan.resolve(record.inputs.clone()).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let post = (!plan.post.is_empty()).then_some(plan.jobs.len());
    let expected = plan.jobs.len() + usize::from(post.is_some());
    if record.jobs.len() != expected {
        return Err(format!(
            "{run} has {} jobs, its plan {expected}",
            record.jobs.len()
        ));
    }
    let now = ports.clock.now();
    let mut not_before = std::collections::HashMap::new();
    let slots = record
        .jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let policy = job_policy(&plan, i);
            let machine = JobMachine::restore(
                run,
                job.id,
                policy,
                job.attempt,
                job.state.clone(),
                job.since,
            );
            // A retry waits for its delay, counted from when it was recorded: a restart of
            // Hodei neither skips nor restarts the wait.
            let delay = plan.jobs.get(i).and_then(|planned| planned.retry.delay);
            let waits = match (&job.state, delay) {
                (JobState::Queued, Some(delay)) if job.attempt.get() > 1 => {
                    let due = job.since.0.saturating_add(
                        i64::try_from(delay.to_std().as_millis()).unwrap_or(i64::MAX),
                    );
                    u64::try_from(due.saturating_sub(now.0))
                        .ok()
                        .filter(|&wait| wait > 0)
                        .map(|wait| {
                            tokio::time::Instant::now() + std::time::Duration::from_millis(wait)
                        })
                }
                _ => None,
            };
            if let Some(at) = waits {
                not_before.insert(i, at);
            }
            Slot {
                id: job.id,
                enqueued: false,
                machine: Some(machine),
                actor: None,
            }
        })
        .collect();
    let machine = RunMachine::restore(run, record.state, record.since);
    Ok(Loaded {
        plan,
        resolved: Arc::new(resolved),
        id: record.id,
        machine,
        slots,
        post,
        secrets,
        not_before,
    })
}

/// The labels a job's worker must have: its `runs_on`, and `docker` for a job with an `image`.
fn runs_on(planned: &hodei_domain::plan::PlannedJob) -> Vec<hodei_domain::model::Label> {
    let mut labels = planned.runs_on.clone();
    let docker = hodei_domain::model::Label::docker();
    if planned.image.is_some() && !labels.contains(&docker) {
        labels.push(docker);
    }
    labels
}

/// The scheduler request for the queued job of slot `i`.
fn enqueue(loaded: &Loaded, i: usize, reply: Recipient<QueueReply>) -> Enqueue {
    let slot = &loaded.slots[i];
    match loaded.plan.jobs.get(i) {
        Some(planned) => Enqueue {
            job: slot.id,
            run: loaded.id,
            pipeline: loaded.plan.pipeline.clone(),
            runs_on: runs_on(planned),
            resources: planned.resources,
            priority: planned.priority,
            concurrency: planned.concurrency.clone(),
            reply,
        },
        // The pipeline's post hooks go anywhere.
        None => Enqueue {
            job: slot.id,
            run: loaded.id,
            pipeline: loaded.plan.pipeline.clone(),
            runs_on: Vec::new(),
            resources: Default::default(),
            priority: 0,
            concurrency: None,
            reply,
        },
    }
}

/// What the job actor of slot `i` needs.
fn job_def(loaded: &Loaded, i: usize, machine: &JobMachine) -> JobDef {
    let plan = &loaded.plan;
    let resolved = &loaded.resolved;
    let secret_env = |mut env: Env| {
        // Hodei's own variables win, as they do over every other layer.
        for (name, value) in loaded
            .secrets
            .iter()
            .filter(|(name, _)| !name.starts_with("HODEI"))
        {
            env.insert(name.clone(), value.clone());
        }
        env
    };
    let spec_of = |name: &str| JobSpec {
        run: loaded.id,
        job: machine.id(),
        attempt: machine.attempt(),
        name: name.to_owned(),
        image: None,
        pull: hodei_domain::model::PullPolicy::IfNotPresent,
        user: None,
        services: Vec::new(),
        resources: Default::default(),
        checkout: plan.checkout_for(&resolved.inputs),
    };
    let secrets: Vec<String> = loaded.secrets.iter().map(|(_, v)| v.clone()).collect();
    let Some(planned) = plan.jobs.get(i) else {
        // The pipeline's post hooks, by the verdict of the jobs.
        let machines: Vec<JobMachine> = loaded.slots[..plan.jobs.len()]
            .iter()
            .filter_map(|s| s.machine.clone())
            .collect();
        let verdict = verdict(machines.iter()).unwrap_or(Verdict::Cancelled);
        let by_verdict = match verdict {
            Verdict::Succeeded => &plan.post.success,
            Verdict::Failed { .. } => &plan.post.failure,
            Verdict::Cancelled => &plan.post.cancelled,
        };
        let steps: Vec<Step> = by_verdict
            .iter()
            .chain(plan.post.always.iter())
            .map(|s| Step {
                continue_on_error: true,
                ..s.clone()
            })
            .collect();
        let envs = steps
            .iter()
            .map(|s| secret_env(post_env(plan, resolved, s)))
            .collect();
        return JobDef {
            run: loaded.id,
            pipeline: plan.pipeline.clone(),
            name: POST_JOB.into(),
            steps,
            envs,
            hooks: Hooks::default(),
            shell: hodei_domain::model::Shell::sh(),
            timeout: None,
            spec: spec_of(POST_JOB),
            runs_on: Vec::new(),
            resources: Default::default(),
            priority: 0,
            concurrency: None,
            secrets,
        };
    };
    let env_of = |step: &Step| secret_env(resolved.step_env(plan, i, step));
    let hook = |steps: &[Step]| {
        steps
            .iter()
            .map(|s| (s.clone(), env_of(s)))
            .collect::<Vec<_>>()
    };
    let mut spec = spec_of(&planned.name);
    spec.image = planned.image.clone();
    spec.pull = planned.pull;
    spec.user = planned.user.clone();
    spec.services = planned
        .services
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    spec.resources = planned.resources;
    JobDef {
        run: loaded.id,
        pipeline: plan.pipeline.clone(),
        name: planned.name.clone(),
        steps: planned.steps.clone(),
        envs: planned.steps.iter().map(env_of).collect(),
        hooks: Hooks {
            success: hook(&planned.post.success),
            failure: hook(&planned.post.failure),
            cancelled: hook(&planned.post.cancelled),
            always: hook(&planned.post.always),
        },
        shell: planned.shell.clone(),
        timeout: planned.timeout,
        spec,
        runs_on: planned.runs_on.clone(),
        resources: planned.resources,
        priority: planned.priority,
        concurrency: planned.concurrency.clone(),
        secrets,
    }
}

/// The environment of a pipeline-level post hook: as a job's, without job or matrix variables.
fn post_env(plan: &Plan, resolved: &ResolvedRun, step: &Step) -> Env {
    let mut env: Env = BTreeMap::new();
    env.insert("CI".into(), "true".into());
    for layer in [&plan.env, &resolved.params, &step.env, &resolved.inputs.env] {
        env.extend(layer.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    env.insert("HODEI".into(), "true".into());
    env.insert("HODEI_PIPELINE".into(), plan.pipeline.to_string());
    env.insert("HODEI_JOB".into(), POST_JOB.into());
    env.insert("HODEI_BRANCH".into(), resolved.inputs.branch.clone());
    env.insert("HODEI_EVENT".into(), resolved.inputs.event.clone());
    env.insert("HODEI_TAG".into(), resolved.inputs.tag.clone());
    env
}
