//! The scheduler actor: holds the cluster state — workers, their free slots, the queue — as a
//! [`hodei_domain::schedule::Cluster`], and places jobs by its policy. The actor only translates
//! messages: every decision is the domain's.
//!
//! A handler that panics is contained and the scheduler restarts; the restarted scheduler keeps
//! the primary facts of its state (workers, queued jobs with their age, placements) and builds
//! every index anew from them ([`Cluster::rebuilt`]), so that a half-done update cannot outlive
//! the panic. Every run that waits for placements is asked to send its requests again
//! ([`AskAgain`]), so that none lost in the failure is forgotten. A placement is answered with
//! [`Placed`] and acknowledged; one that its asker refuses or never reads is released here, so
//! that no slot outlives the job it was given to.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient, Supervised};
use hodei_domain::ids::{JobId, RunId, WorkerId};
use hodei_domain::model::Label;
use hodei_domain::ports::Clock;
use hodei_domain::schedule::{
    Cluster, Placement, Policy, QueuedJob, ScheduleError, Worker, WorkerState,
};

use crate::fault::{Faults, Point};
use crate::messages::{
    AddWorker, AskAgain, Dequeue, Enqueue, GetQueue, GetQueueStats, GetWorkers, Placed,
    PlacementId, PoolTrouble, QueueStats, Release, RemoveWorker, SetWorkerState, Taken, Waiting,
    WorkerView,
};
use crate::supervise::{Restarts, Supervise, contained};

/// The label every worker offers besides its own: `worker=<id>`, which a job found running
/// on that worker after a restart asks for. `None` for an id a label cannot spell.
pub fn worker_label(worker: &WorkerId) -> Option<Label> {
    format!("worker={}", worker.0).parse().ok()
}

/// The address that waits for a run's placements. One per run, not per job: a queued job costs
/// the scheduler its queue entry only.
struct Asker {
    reply: Recipient<Placed>,
    again: Recipient<AskAgain>,
    queued: u32,
}

/// Holds the cluster state and places jobs.
pub struct Scheduler {
    cluster: Cluster,
    clock: Arc<dyn Clock>,
    /// Who waits for the placements of each run's jobs, and how many of them are queued.
    askers: HashMap<RunId, Asker>,
    /// The placement each placed job holds; a release of any other placement is stale.
    placements: HashMap<JobId, PlacementId>,
    /// The last number given to a queued job or a placement.
    seq: u64,
    /// The workers that are agents.
    agents: std::collections::HashSet<WorkerId>,
    /// Queued jobs that run on a worker already (found there after a restart).
    resumes: HashMap<JobId, WorkerId>,
    /// Pools of ephemeral workers that cannot start one: their labels and why.
    pool_trouble: std::collections::BTreeMap<String, (Vec<Label>, String)>,
    faults: Faults,
    restarts: Restarts,
}

impl Scheduler {
    /// A scheduler with the default policy and no worker yet.
    pub fn new(clock: Arc<dyn Clock>, faults: Faults, restarts: Restarts) -> Scheduler {
        Scheduler {
            cluster: Cluster::new(Policy::default()),
            clock,
            askers: HashMap::new(),
            placements: HashMap::new(),
            seq: 0,
            agents: Default::default(),
            resumes: HashMap::new(),
            pool_trouble: Default::default(),
            faults,
            restarts,
        }
    }
}

impl Scheduler {
    /// Places what can be placed and tells each job where it goes. A placement that its asker
    /// does not take up — it refuses it, or stops before it reads it — is released here: a slot
    /// is held only by a job actor that took it.
    fn place(&mut self, ctx: &mut Context<Self>) {
        self.faults.hit(Point::Place);
        let now = self.clock.now();
        let placements = self.cluster.place(now, usize::MAX);
        self.announce(ctx, placements);
    }

    /// Gives the queued jobs that run on `worker` already (found placed or running there after a
    /// restart: they are pinned to it) their place back first, whatever else was placed there
    /// meanwhile; otherwise new jobs could fill the worker's slots while the jobs it runs wait
    /// for a slot on it, and neither would ever move.
    fn place_back(&mut self, ctx: &mut Context<Self>, worker: &WorkerId) {
        let mut pinned: Vec<JobId> = self
            .resumes
            .iter()
            .filter(|(_, on)| *on == worker)
            .map(|(job, _)| *job)
            .collect();
        pinned.sort_unstable();
        let placements: Vec<Placement> = pinned
            .into_iter()
            .filter_map(|job| self.cluster.place_back(job, worker))
            .collect();
        self.announce(ctx, placements);
    }

    fn announce(&mut self, ctx: &mut Context<Self>, placements: Vec<Placement>) {
        for placement in placements {
            self.resumes.remove(&placement.job);
            let (job, run) = (placement.job, placement.run);
            match self.askers.get(&run) {
                Some(asker) if asker.reply.connected() => {
                    self.seq += 1;
                    let id = PlacementId(self.seq);
                    self.placements.insert(job, id);
                    let agent = self.agents.contains(&placement.worker);
                    let answer = asker.reply.send(Placed {
                        job,
                        worker: placement.worker,
                        placement: id,
                        agent,
                    });
                    let me = ctx.address();
                    actix::spawn(async move {
                        if !matches!(answer.await, Ok(Taken::Yes)) {
                            me.do_send(Release { job, placement: id });
                        }
                    });
                }
                // Nobody waits for it any more (its run actor stopped; the next one asks
                // again): give the slot back.
                _ => {
                    let _ = self.cluster.finished(job);
                }
            }
            self.left_queue(run);
        }
    }

    /// Frees the slot of a placed job, whichever placement holds it.
    fn free(&mut self, job: JobId) {
        self.placements.remove(&job);
        let _ = self.cluster.finished(job);
    }

    /// One job of `run` left the queue.
    fn left_queue(&mut self, run: RunId) {
        if let Some(asker) = self.askers.get_mut(&run) {
            asker.queued = asker.queued.saturating_sub(1);
            if asker.queued == 0 {
                self.askers.remove(&run);
            }
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.restarts.hold(ctx);
        if self.cluster.queued_len() > 0 {
            // After a restart: what waited is placed without waiting for the next message.
            ctx.notify(PlaceQueued);
        }
    }
}

/// Place what waits in the queue.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct PlaceQueued;

impl Handler<PlaceQueued> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: PlaceQueued, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, ctx| act.place(ctx));
    }
}

impl Supervised for Scheduler {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.restarting();
        self.cluster = self.cluster.rebuilt();
        // A queued job nobody waits for is forgotten. Every asker is asked to send again what
        // waits: a request that the failure lost is then queued, the others are not queued
        // twice.
        self.askers.retain(|_, asker| asker.reply.connected());
        for asker in self.askers.values_mut() {
            asker.queued = 0;
        }
        for job in self.cluster.queue_order() {
            let run = self.cluster.run_of(job);
            match run.and_then(|run| self.askers.get_mut(&run)) {
                Some(asker) => asker.queued += 1,
                None => {
                    let _ = self.cluster.dequeue(job);
                }
            }
        }
        for (&run, asker) in &self.askers {
            asker.again.do_send(AskAgain { run });
        }
    }
}

impl Supervise for Scheduler {
    fn restarts(&mut self) -> &mut Restarts {
        &mut self.restarts
    }
}

impl Handler<AddWorker> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AddWorker, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, ctx| {
            let mut w = msg.worker;
            w.labels.extend(worker_label(&w.id));
            if w.agent {
                act.agents.insert(w.id.clone());
            }
            let id = w.id.clone();
            let mut worker = Worker::ready(w.id, w.labels, w.slots);
            if w.offline {
                worker.state = WorkerState::Offline;
            }
            let result = match act.cluster.add_worker(worker.clone()) {
                // A new offer of a known worker (its labels changed): a drained worker stays
                // drained, a lost agent offline; a worker of this process is offline as
                // offered (its engine answers or not).
                Err(ScheduleError::DuplicateWorker { .. }) => {
                    if let Some(known) = act.cluster.worker(&worker.id) {
                        let ours = !act.agents.contains(&worker.id);
                        if !(w.offline || ours && known.state == WorkerState::Offline) {
                            worker.state = known.state;
                        }
                    }
                    act.cluster.update_worker(worker)
                }
                other => other,
            };
            if let Err(err) = result {
                tracing::error!(error = %err, "Cannot add a worker.");
            }
            act.place_back(ctx, &id);
            act.place(ctx);
        });
    }
}

impl Handler<RemoveWorker> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: RemoveWorker, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, _| {
            match act.cluster.remove_worker(&msg.worker) {
                Ok(orphaned) if !orphaned.is_empty() => {
                    tracing::warn!(worker = %msg.worker, jobs = orphaned.len(), "Jobs were placed on a lost worker.");
                    for job in orphaned {
                        act.placements.remove(&job.job);
                    }
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "Cannot remove a worker."),
            }
        });
    }
}

impl Handler<Enqueue> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, ctx| {
            // The asker is known first: if queuing fails half-way, a restart asks it again.
            let run = msg.run;
            act.askers
                .entry(run)
                .and_modify(|asker| {
                    asker.reply = msg.reply.clone();
                    asker.again = msg.again.clone();
                })
                .or_insert(Asker {
                    reply: msg.reply,
                    again: msg.again,
                    queued: 0,
                });
            act.seq += 1;
            let (resume_on, msg_job) = (msg.resume_on, msg.job);
            let queued = QueuedJob {
                job: msg.job,
                run,
                project: msg.pipeline,
                runs_on: msg.runs_on,
                resources: msg.resources,
                priority: msg.priority,
                concurrency: msg.concurrency,
                seq: act.seq,
                queued_at: act.clock.now(),
            };
            let joined = match act.cluster.enqueue(queued.clone()) {
                Ok(()) => true,
                // Asked again by a run actor that reloaded: the latest asker gets the answer.
                Err(ScheduleError::DuplicateJob { .. }) if act.cluster.is_queued(msg.job) => false,
                // Placed for an asker that is gone: that placement was never taken up.
                Err(ScheduleError::DuplicateJob { .. }) => {
                    act.free(msg.job);
                    act.cluster.enqueue(queued).is_ok()
                }
                Err(err) => {
                    tracing::error!(job_id = %msg.job, error = %err, "Cannot queue a job.");
                    false
                }
            };
            if joined && let Some(asker) = act.askers.get_mut(&run) {
                asker.queued += 1;
            }
            if act.askers.get(&run).is_some_and(|asker| asker.queued == 0) {
                act.askers.remove(&run);
            }
            // A job that runs on a known worker already goes back there at once.
            if joined && let Some(worker) = resume_on {
                act.resumes.insert(msg_job, worker.clone());
                act.place_back(ctx, &worker);
            }
            act.place(ctx);
        });
    }
}

impl Handler<Dequeue> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Dequeue, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, ctx| {
            let run = act.cluster.run_of(msg.job);
            act.resumes.remove(&msg.job);
            if act.cluster.dequeue(msg.job).is_ok() {
                if let Some(run) = run {
                    act.left_queue(run);
                }
                act.place(ctx);
            }
        });
    }
}

impl Handler<Release> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, ctx| {
            // A release of an earlier placement than the job's current one is stale.
            if act.placements.get(&msg.job) != Some(&msg.placement) {
                return;
            }
            act.free(msg.job);
            act.place(ctx);
        });
    }
}

impl Handler<GetQueue> for Scheduler {
    type Result = Vec<Waiting>;

    fn handle(&mut self, msg: GetQueue, ctx: &mut Context<Self>) -> Vec<Waiting> {
        contained(self, ctx, |act, _| {
            let cluster = &act.cluster;
            cluster
                .queue_order()
                .into_iter()
                .enumerate()
                .filter_map(|(position, job)| {
                    let queued = cluster.queued(job)?;
                    if msg.run.is_some_and(|run| run != queued.run) {
                        return None;
                    }
                    // A job that a pool's worker would take, while the pool cannot start one,
                    // waits for that.
                    let troubled = act.pool_trouble.iter().find(|(_, (labels, _))| {
                        queued.runs_on.iter().all(|label| labels.contains(label))
                    });
                    let reason = match troubled {
                        Some((pool, (_, trouble))) => {
                            format!("pool {pool}: cannot start a worker: {trouble}")
                        }
                        None => cluster
                            .explain(job)
                            .map(|reason| reason.to_string())
                            .unwrap_or_default(),
                    };
                    Some(Waiting {
                        job,
                        run: queued.run,
                        position,
                        pipeline: queued.project.to_string(),
                        runs_on: queued.runs_on,
                        priority: queued.priority,
                        queued_at: queued.queued_at,
                        candidates: cluster.candidates(job).unwrap_or_default(),
                        reason,
                    })
                })
                .take(msg.limit)
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Handler<PoolTrouble> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: PoolTrouble, _: &mut Context<Self>) {
        match msg.trouble {
            Some(trouble) => {
                self.pool_trouble.insert(msg.pool, (msg.labels, trouble));
            }
            None => {
                self.pool_trouble.remove(&msg.pool);
            }
        }
    }
}

impl Handler<GetWorkers> for Scheduler {
    type Result = Vec<WorkerView>;

    fn handle(&mut self, _: GetWorkers, ctx: &mut Context<Self>) -> Vec<WorkerView> {
        contained(self, ctx, |act, _| {
            let mut workers: Vec<WorkerView> = act
                .cluster
                .workers()
                .map(|worker| WorkerView {
                    worker: worker.clone(),
                    jobs: act
                        .cluster
                        .usage(&worker.id)
                        .map(|usage| usage.jobs)
                        .unwrap_or_default(),
                })
                .collect();
            workers.sort_by(|a, b| a.worker.id.cmp(&b.worker.id));
            workers
        })
        .unwrap_or_default()
    }
}

impl Handler<SetWorkerState> for Scheduler {
    type Result = Result<(), ScheduleError>;

    fn handle(&mut self, msg: SetWorkerState, ctx: &mut Context<Self>) -> Self::Result {
        let worker = msg.worker.clone();
        contained(self, ctx, |act, ctx| {
            let result = act.cluster.set_worker_state(&msg.worker, msg.state);
            if result.is_ok() {
                tracing::info!(worker = %msg.worker, state = ?msg.state, "Worker state changed.");
                act.place(ctx);
            }
            result
        })
        .unwrap_or(Err(ScheduleError::UnknownWorker { worker }))
    }
}

impl Handler<GetQueueStats> for Scheduler {
    type Result = QueueStats;

    fn handle(&mut self, _: GetQueueStats, _: &mut Context<Self>) -> QueueStats {
        QueueStats {
            queued: self.cluster.queued_len(),
            placed: self.cluster.placed_len(),
        }
    }
}
