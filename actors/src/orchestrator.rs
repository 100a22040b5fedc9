//! The orchestrator: accepts runs and keeps one run actor per active run. When it starts, it has
//! the providers reap what an earlier life left running and resumes every unfinished run found in
//! the store, before it accepts anything new. It supervises the run actors: one that stops
//! before its run is finished is started again, with backoff, within a restart budget.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, ResponseActFuture, Supervised,
    WrapFuture,
};
use hodei_domain::ids::RunId;
use hodei_domain::load::load;
use hodei_domain::ports::{JobAttempt, NewRun, RunRecord, Store, StoreError};
use hodei_domain::restart::{RestartDecision, RestartHistory, RestartPolicy};
use hodei_domain::state::{JobState, StepState};

use crate::Ports;
use crate::admission::Admission;
use crate::contain::{ActorKind, guard_future};
use crate::fault::Point;
use crate::messages::{
    ApproveJob, CancelRun, Definition, GetResuming, RerunRun, Resuming, RetryRun, RunActorStopped,
    RunLoaded, SubmitError, SubmitRun,
};
use crate::messages::{Publish, ReapOrphans};
use crate::provider::ProviderActor;
use crate::run::{Peers, RunActor, RunOpening};
use crate::supervise::{Restarts, Supervise, contained};
use hodei_domain::engine::Approvals;

/// The actors an orchestrator and its runs talk to.
#[derive(Clone)]
pub struct OrchestratorPeers {
    pub hub: Addr<crate::loghub::LogHub>,
    pub bus: Addr<crate::bus::EventBus>,
    pub scheduler: Addr<crate::scheduler::Scheduler>,
    pub provider: Addr<ProviderActor>,
    /// The agent desk, where a server takes agents.
    pub agents: Option<crate::run::AgentPeers>,
}

/// How the orchestrator runs its runs.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    pub approvals: Approvals,
    /// How often and how fast a run actor that stops before its run is finished is started
    /// again; past the limit, the run waits for the next start of Hodei.
    pub restart_policy: RestartPolicy,
}

/// Accepts, resumes and supervises runs.
pub struct Orchestrator {
    ports: Ports,
    peers: Option<Peers>,
    hub: Addr<crate::loghub::LogHub>,
    agents: Option<crate::run::AgentPeers>,
    bus: Addr<crate::bus::EventBus>,
    scheduler: Addr<crate::scheduler::Scheduler>,
    provider: Addr<ProviderActor>,
    approvals: Approvals,
    policy: RestartPolicy,
    runs: HashMap<RunId, Addr<RunActor>>,
    /// The restarts of each run's actor.
    history: HashMap<RunId, RestartHistory>,
    restarts: Restarts,
    /// The jobs unfinished runs hold, for the submissions' limit.
    admission: Admission,
    /// The runs found unfinished at start-up whose actor has not loaded them yet.
    resuming: std::collections::HashSet<RunId>,
    /// The runs whose actor stopped because the store could not be reached, with how many
    /// times in a row: they are taken up again until the store answers.
    outages: HashMap<RunId, u32>,
}

impl Orchestrator {
    pub fn new(
        ports: Ports,
        peers: OrchestratorPeers,
        runs: RunSettings,
        restarts: Restarts,
    ) -> Orchestrator {
        Orchestrator {
            ports,
            peers: None,
            hub: peers.hub,
            agents: peers.agents,
            bus: peers.bus,
            scheduler: peers.scheduler,
            provider: peers.provider,
            approvals: runs.approvals,
            policy: runs.restart_policy,
            runs: HashMap::new(),
            history: HashMap::new(),
            restarts,
            admission: Admission::default(),
            resuming: Default::default(),
            outages: HashMap::new(),
        }
    }

    fn start_created(&mut self, record: RunRecord) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        let run = record.id;
        let actor = RunActor::created(record, self.ports.clone(), peers, self.approvals).start();
        self.runs.insert(run, actor);
    }

    fn start_run(&mut self, run: RunId) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        let actor = RunActor::new(run, self.ports.clone(), peers, self.approvals).start();
        self.runs.insert(run, actor);
    }
}

impl Actor for Orchestrator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.restarts.hold(ctx);
        self.peers = Some(Peers {
            hub: self.hub.clone(),
            bus: self.bus.clone(),
            scheduler: self.scheduler.clone(),
            stopped: ctx.address().recipient(),
            loaded: ctx.address().recipient(),
            restarts: self.restarts.counter().clone(),
            agents: self.agents.clone(),
        });
        // Resume before anything else: the mailbox waits until this is done, and while the
        // store cannot be reached (reaping steps without knowing which to spare would lose
        // them; a run left out would wait for the next start).
        let (store, provider, policy) =
            (self.ports.store.clone(), self.provider.clone(), self.policy);
        ctx.wait(
            async move {
                // The steps the store shows running may still run (a container outlives
                // Hodei): their job attempts are spared, for their job actors to take back.
                let surveyed = patiently(&policy, "survey the unfinished runs", || {
                    survey(store.as_ref())
                })
                .await;
                let Survey { spare, jobs } = match surveyed {
                    Ok(survey) => survey,
                    Err(err) => {
                        tracing::error!(error = %err, "Cannot list the running steps; none is taken back.");
                        Survey::default()
                    }
                };
                match provider.send(ReapOrphans { spare }).await {
                    Ok(Ok(orphans)) => {
                        for orphan in orphans {
                            tracing::warn!(job_id = %orphan.job, step = orphan.step, "Stopped a step left running by an earlier Hodei.");
                        }
                    }
                    Ok(Err(err)) => tracing::error!(error = %err, "Cannot reap what an earlier Hodei left running."),
                    Err(err) => tracing::error!(error = %err, "The provider actor is not running."),
                }
                let runs = patiently(&policy, "list the unfinished runs", || {
                    store.unfinished_runs()
                })
                .await;
                (runs, jobs)
            }
            .into_actor(self)
            .map(|(result, jobs), act, _| match result {
                Ok(runs) => {
                    act.admission.found(jobs);
                    if !runs.is_empty() {
                        tracing::info!(runs = runs.len(), "Resuming unfinished runs.");
                    }
                    for run in runs {
                        if !act.runs.contains_key(&run) {
                            act.resuming.insert(run);
                            act.start_run(run);
                        }
                    }
                }
                Err(err) => tracing::error!(error = %err, "Cannot list unfinished runs; they resume at the next start."),
            }),
        );
    }
}

/// What `attempt` returns once it succeeds or fails for good: tried again, with the restart
/// policy's backoff, for as long as the store is unavailable.
async fn patiently<T, F>(
    policy: &RestartPolicy,
    what: &str,
    attempt: impl Fn() -> F,
) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut earlier = 0;
    loop {
        match attempt().await {
            Err(err) if err.is_retryable() => {
                if earlier == 0 {
                    tracing::warn!(error = %err, "Cannot {what} yet: the store is unavailable; trying again until it answers.");
                }
                let delay = std::time::Duration::from_millis(policy.delay_ms(earlier));
                earlier = earlier.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
            done => return done,
        }
    }
}

/// What the store holds of unfinished runs at start-up.
#[derive(Default)]
struct Survey {
    /// The job attempts that the store shows running a step.
    spare: Vec<JobAttempt>,
    /// Each unfinished run's number of jobs.
    jobs: Vec<(RunId, usize)>,
}

/// Reads every unfinished run once: what is running, and how many jobs each run holds.
async fn survey(store: &dyn Store) -> Result<Survey, StoreError> {
    let mut survey = Survey::default();
    for run in store.unfinished_runs().await? {
        let Some(record) = store.run(run).await? else {
            continue;
        };
        survey.jobs.push((run, record.jobs.len()));
        for job in record.jobs {
            let in_step = job
                .steps
                .iter()
                .any(|s| s.job_attempt == job.attempt && s.state == StepState::Running);
            if matches!(job.state, JobState::Running { .. }) && in_step {
                survey.spare.push(JobAttempt {
                    job: job.id,
                    attempt: job.attempt,
                });
            }
        }
    }
    Ok(survey)
}

impl Supervised for Orchestrator {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The run actors live on; `started` resumes the unfinished runs that have none.
        self.restarts.restarting();
        self.runs.retain(|_, run| run.connected());
    }
}

impl Supervise for Orchestrator {
    fn restarts(&mut self) -> &mut Restarts {
        &mut self.restarts
    }
}

impl Handler<SubmitRun> for Orchestrator {
    type Result = ResponseActFuture<Self, Result<RunId, SubmitError>>;

    fn handle(&mut self, msg: SubmitRun, _: &mut Context<Self>) -> Self::Result {
        let store = self.ports.store.clone();
        let now = self.ports.clock.now();
        // Checking the pipeline is pure work: done here, contained.
        let checked = crate::contain::guard(|| {
            let act = &mut *self;
            act.ports.faults.hit(Point::SubmitRun);
            // A definition already planned (the same text as an earlier run's) is not parsed
            // again; one that does not load is parsed for its diagnostics.
            let source = msg.definition.source();
            let Some(plan) = crate::run::shared_plan(source) else {
                let loaded = load(source);
                let text: Vec<String> = loaded
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| d.one_line("pipeline"))
                    .collect();
                return Err(SubmitError::InvalidPipeline(text.join("\n")));
            };
            let resolved = plan
                .resolve(msg.inputs.clone())
                .map_err(SubmitError::InvalidInputs)?;
            let jobs = plan.run_jobs();
            // Checked and reserved in one step: concurrent submissions never pass the limit.
            act.admission.reserve(msg.limit, jobs.len())?;
            let name = plan.pipeline.to_string();
            let opening = RunOpening::new(plan, resolved, act.approvals, now);
            Ok((name, jobs, Arc::new(opening)))
        });
        let (name, jobs, opening) = match checked {
            Ok(Ok(checked)) => checked,
            Ok(Err(err)) => return Box::pin(actix::fut::ready(Err(err))),
            Err(panicked) => {
                // Answered first, then the orchestrator stops and is restarted.
                self.restarts.failed(panicked.message.clone());
                let answer = Err(SubmitError::Internal(panicked.message));
                return Box::pin(actix::fut::ready(answer).map(|answer, _, ctx| {
                    actix::ActorContext::stop(ctx);
                    answer
                }));
            }
        };
        let count = jobs.len();
        let fut = async move {
            let version = match msg.definition {
                Definition::Stored(version) => version,
                Definition::Text(source) => store.put_pipeline(&name, &source, now).await?,
            };
            let record = store
                .create_run(NewRun {
                    pipeline: version.name.clone(),
                    version: version.version,
                    inputs: msg.inputs,
                    jobs,
                    at: now,
                    opening: Some(opening.clone()),
                })
                .await?;
            Ok::<_, SubmitError>((record, opening))
        };
        Box::pin(
            guard_future(fut)
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let result = match result {
                        Ok(result) => result,
                        Err(panicked) => {
                            act.admission.settle(count, None);
                            act.restarts.failed(panicked.message.clone());
                            actix::ActorContext::stop(ctx);
                            return Err(SubmitError::Internal(panicked.message));
                        }
                    };
                    let (record, opening) = match result {
                        Ok(created) => created,
                        Err(err) => {
                            act.admission.settle(count, None);
                            return Err(err);
                        }
                    };
                    let run = record.id;
                    act.admission.settle(count, Some(run));
                    // Written with the run: announced before anything its actor records.
                    let events = opening.take_written();
                    if !events.is_empty() {
                        act.bus.do_send(Publish { events });
                    }
                    act.start_created(record);
                    Ok(run)
                }),
        )
    }
}

/// The run `run` as stored, or [`StoreError::NotFound`](hodei_domain::ports::StoreError).
async fn stored_run(store: &dyn Store, run: RunId) -> Result<RunRecord, SubmitError> {
    store.run(run).await?.ok_or_else(|| {
        SubmitError::Store(hodei_domain::ports::StoreError::NotFound {
            what: run.to_string(),
        })
    })
}

/// A new run of what `earlier` ran: the same pinned definition, inputs and jobs (in plan
/// order), all pending.
async fn create_from(
    store: &dyn Store,
    earlier: &RunRecord,
    at: hodei_domain::ids::Timestamp,
) -> Result<RunRecord, SubmitError> {
    Ok(store
        .create_run(NewRun {
            pipeline: earlier.pipeline.clone(),
            version: earlier.version,
            inputs: earlier.inputs.again(),
            jobs: earlier.jobs.iter().map(|job| job.name.clone()).collect(),
            at,
            opening: None,
        })
        .await?)
}

impl Orchestrator {
    /// Reads the run `earlier`, reserves room for a run of as many jobs within `limit`, then
    /// answers with the run that `make` creates from it, and starts its actor: with the record
    /// in hand when it is `fresh`, from the store otherwise. A panic stops the orchestrator,
    /// which is restarted.
    fn start_made<F>(
        &mut self,
        earlier: RunId,
        how: &'static str,
        limit: Option<usize>,
        make: impl FnOnce(RunRecord) -> F + 'static,
    ) -> ResponseActFuture<Self, Result<RunId, SubmitError>>
    where
        F: std::future::Future<Output = Result<(RunRecord, bool), SubmitError>> + 'static,
    {
        let store = self.ports.store.clone();
        let read = async move { stored_run(store.as_ref(), earlier).await };
        Box::pin(
            guard_future(read)
                .into_actor(self)
                .then(move |read, act, _| {
                    // Checked and reserved here, in the orchestrator's own context.
                    let reserved = match read {
                        Ok(Ok(record)) => {
                            let jobs = record.jobs.len();
                            act.admission.reserve(limit, jobs).map(|()| (record, jobs))
                        }
                        Ok(Err(err)) => Err(err),
                        Err(panicked) => Err(SubmitError::Internal(panicked.message)),
                    };
                    async move {
                        match reserved {
                            Ok((record, jobs)) => (guard_future(make(record)).await, jobs),
                            Err(err) => (Ok(Err(err)), 0),
                        }
                    }
                    .into_actor(act)
                })
                .map(move |(result, jobs), act, ctx| {
                    let made = match result {
                        Ok(made) => made,
                        Err(panicked) => {
                            act.admission.settle(jobs, None);
                            act.restarts.failed(panicked.message.clone());
                            actix::ActorContext::stop(ctx);
                            return Err(SubmitError::Internal(panicked.message));
                        }
                    };
                    let (record, fresh) = match made {
                        Ok(made) => made,
                        Err(err) => {
                            act.admission.settle(jobs, None);
                            return Err(err);
                        }
                    };
                    let run = record.id;
                    act.admission.settle(jobs, Some(run));
                    tracing::info!(run_id = %run, from = %earlier, how, "Run made from another.");
                    if fresh {
                        act.start_created(record);
                    } else {
                        act.start_run(run);
                    }
                    Ok(run)
                }),
        )
    }
}

impl Handler<RerunRun> for Orchestrator {
    type Result = ResponseActFuture<Self, Result<RunId, SubmitError>>;

    fn handle(&mut self, msg: RerunRun, _: &mut Context<Self>) -> Self::Result {
        let (store, now) = (self.ports.store.clone(), self.ports.clock.now());
        self.start_made(msg.run, "rerun", msg.limit, move |earlier| async move {
            Ok((create_from(store.as_ref(), &earlier, now).await?, true))
        })
    }
}

impl Handler<RetryRun> for Orchestrator {
    type Result = ResponseActFuture<Self, Result<RunId, SubmitError>>;

    fn handle(&mut self, msg: RetryRun, _: &mut Context<Self>) -> Self::Result {
        let (ports, hub, bus) = (self.ports.clone(), self.hub.clone(), self.bus.clone());
        let now = ports.clock.now();
        let earlier_run = msg.run;
        let made = move |earlier: RunRecord| async move {
            if !matches!(
                earlier.state,
                hodei_domain::state::RunState::Failed | hodei_domain::state::RunState::Cancelled
            ) {
                return Err(SubmitError::NotRetryable {
                    state: earlier.state.name(),
                });
            }
            let record = create_from(ports.store.as_ref(), &earlier, now).await?;
            // What succeeded is carried over before the run starts (the pipeline's own post
            // hooks run again, for the new run's outcome).
            let policy = hodei_domain::state::JobPolicy {
                max_attempts: hodei_domain::state::MaxAttempts::ONE,
                gate: hodei_domain::state::Gate::Open,
                continue_on_error: false,
            };
            let mut events = Vec::new();
            let mut carried = Vec::new();
            for (before, after) in earlier.jobs.iter().zip(&record.jobs) {
                if before.state != hodei_domain::state::JobState::Succeeded
                    || before.name == hodei_domain::plan::POST_JOB
                {
                    continue;
                }
                let mut machine = hodei_domain::state::JobMachine::restore(
                    record.id,
                    after.id,
                    policy,
                    after.attempt,
                    after.state.clone(),
                    now,
                );
                if let Ok(event) = machine.apply(hodei_domain::state::JobEvent::CarryOver, now) {
                    events.push(event);
                    carried.push(after.id);
                    // Its artifacts too, for the jobs of the retry that need it.
                    let (from, to) = ((earlier.id, before.id), (record.id, after.id));
                    if let Err(err) = ports.files.carry_artifacts(from, to).await {
                        tracing::warn!(job_id = %after.id, error = %err, "Cannot carry a job's artifacts over to its retry.");
                    }
                }
            }
            crate::record::record(&ports, &bus, events).await?;
            for job in carried {
                hub.do_send(crate::messages::Note {
                    job,
                    text: format!("succeeded in {earlier_run}: carried over, not run again"),
                });
            }
            // Not fresh: the run actor reads it back with its carried-over jobs.
            Ok((record, false))
        };
        self.start_made(earlier_run, "retry", msg.limit, made)
    }
}

impl Orchestrator {
    /// Hands a request to run `run`'s actor. A run that is not finished but has no actor now
    /// (its actor waits out a restart backoff, or gave up until the next start of Hodei) gets
    /// one at once, so that a user's cancel or approval is never dropped; a finished or unknown
    /// run ignores it.
    fn deliver(
        &mut self,
        run: RunId,
        ctx: &mut Context<Self>,
        send: impl FnOnce(&Addr<RunActor>) + 'static,
    ) {
        if let Some(actor) = self.runs.get(&run) {
            send(actor);
            return;
        }
        let store = self.ports.store.clone();
        ctx.spawn(async move { store.run(run).await }.into_actor(self).map(
            move |found, act, _| match found {
                Ok(Some(record)) if !record.state.is_terminal() => {
                    if !act.runs.contains_key(&run) {
                        tracing::info!(run_id = %run, "Run actor started for a request to a run that had none.");
                        act.start_run(run);
                    }
                    if let Some(actor) = act.runs.get(&run) {
                        send(actor);
                    }
                }
                Ok(_) => {
                    tracing::info!(run_id = %run, "A request to a finished or unknown run ignored.")
                }
                Err(err) => {
                    tracing::error!(run_id = %run, error = %err, "Cannot read a run to hand it a request.")
                }
            },
        ));
    }
}

impl Handler<CancelRun> for Orchestrator {
    type Result = ();

    fn handle(&mut self, msg: CancelRun, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, ctx| {
            act.deliver(msg.run, ctx, move |actor| actor.do_send(msg));
        });
    }
}

impl Handler<crate::agents::LeaseExpired> for Orchestrator {
    type Result = ();

    fn handle(&mut self, msg: crate::agents::LeaseExpired, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, ctx| {
            act.deliver(msg.run, ctx, move |actor| actor.do_send(msg));
        });
    }
}

impl Handler<ApproveJob> for Orchestrator {
    type Result = ();

    fn handle(&mut self, msg: ApproveJob, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, ctx| {
            act.deliver(msg.run, ctx, move |actor| actor.do_send(msg));
        });
    }
}

impl Handler<RunActorStopped> for Orchestrator {
    type Result = ();

    fn handle(&mut self, msg: RunActorStopped, ctx: &mut Context<Self>) {
        self.runs.remove(&msg.run);
        self.resuming.remove(&msg.run);
        // Did the run finish, or did its actor give up? Ask the store, the source of truth.
        let store = self.ports.store.clone();
        let now = self.ports.clock.now();
        ctx.spawn(async move { store.run(msg.run).await }.into_actor(self).map(move |result, act, ctx| {
            let finished = matches!(&result, Ok(Some(record)) if record.state.is_terminal());
            if finished {
                act.history.remove(&msg.run);
                act.outages.remove(&msg.run);
                act.admission.finished(msg.run);
                return;
            }
            // A database restarting, a disk full: the run is not at fault, and it must not
            // wait for the next start of Hodei once the store is back. Its actor is started
            // again, with the restart policy's backoff but outside its budget, until the store
            // answers (a leader that cannot reach the database stops leading anyway).
            if msg.store_unavailable || matches!(&result, Err(err) if err.is_retryable()) {
                let earlier = act.outages.entry(msg.run).or_insert(0);
                if *earlier == 0 {
                    tracing::warn!(run_id = %msg.run, "The store is unavailable; the run goes on once it answers.");
                }
                let delay_ms = act.policy.delay_ms(*earlier);
                *earlier += 1;
                act.restarts.counter().record(ActorKind::Run);
                ctx.run_later(std::time::Duration::from_millis(delay_ms), move |act, _| {
                    if !act.runs.contains_key(&msg.run) {
                        act.start_run(msg.run);
                    }
                });
                return;
            }
            let decision = act.history.entry(msg.run).or_default().on_stop(&act.policy, now);
            match decision {
                RestartDecision::Restart { delay_ms, .. } => {
                    act.restarts.counter().record(ActorKind::Run);
                    ctx.run_later(std::time::Duration::from_millis(delay_ms), move |act, _| {
                        if !act.runs.contains_key(&msg.run) {
                            act.start_run(msg.run);
                        }
                    });
                }
                RestartDecision::Escalate { restarts_in_window } => {
                    tracing::error!(run_id = %msg.run, restarts = restarts_in_window, "A run keeps failing; it resumes at the next start of Hodei.");
                }
            }
        }));
    }
}

impl Handler<RunLoaded> for Orchestrator {
    type Result = ();

    fn handle(&mut self, msg: RunLoaded, _: &mut Context<Self>) {
        self.resuming.remove(&msg.run);
        if self.outages.remove(&msg.run).is_some() {
            tracing::info!(run_id = %msg.run, "The store answers again; the run goes on.");
        }
    }
}

impl Handler<GetResuming> for Orchestrator {
    type Result = Resuming;

    fn handle(&mut self, _: GetResuming, _: &mut Context<Self>) -> Resuming {
        Resuming {
            runs: self.resuming.len(),
        }
    }
}
