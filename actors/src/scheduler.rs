//! The scheduler actor: holds the cluster state — workers, their free slots, the queue — as a
//! [`hodei_domain::schedule::Cluster`], and places jobs by its policy. The actor only translates
//! messages: every decision is the domain's.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, MessageResponse, Recipient, Supervised};
use hodei_domain::ids::{JobId, WorkerId};
use hodei_domain::ports::Clock;
use hodei_domain::schedule::{Cluster, Policy, QueuedJob, WaitReason, Worker};

use crate::contain::{ActorKind, guard, restarts};
use crate::messages::{AddWorker, Dequeue, Enqueue, Placed, Release};

/// A worker is gone (its lease ran out): place nothing more on it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RemoveWorker {
    pub worker: WorkerId,
}

/// Why a queued job waits, for the queue view.
#[derive(Debug, Message)]
#[rtype(result = "Option<WaitReason>")]
pub struct Explain {
    pub job: JobId,
}

/// How many jobs wait and how many hold a slot: the queue depth of the metrics.
#[derive(Debug, Message)]
#[rtype(result = "QueueStats")]
pub struct GetQueueStats;

/// The answer to [`GetQueueStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct QueueStats {
    pub queued: usize,
    pub placed: usize,
}

/// Holds the cluster state and places jobs.
pub struct Scheduler {
    cluster: Cluster,
    clock: Arc<dyn Clock>,
    replies: HashMap<JobId, Recipient<Placed>>,
    seq: u64,
}

impl Scheduler {
    /// A scheduler with the default policy and no worker yet.
    pub fn new(clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler {
            cluster: Cluster::new(Policy::default()),
            clock,
            replies: HashMap::new(),
            seq: 0,
        }
    }
}

impl Scheduler {
    /// Places what can be placed and tells each job where it goes.
    fn place(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let placements = match guard(|| self.cluster.place(now, usize::MAX)) {
            Ok(placements) => placements,
            Err(panicked) => {
                tracing::error!(error = %panicked, "The scheduling policy panicked; restarting the scheduler.");
                actix::ActorContext::stop(ctx);
                return;
            }
        };
        for placement in placements {
            match self.replies.remove(&placement.job) {
                Some(reply) => reply.do_send(Placed {
                    job: placement.job,
                    worker: placement.worker,
                }),
                None => {
                    // Nobody waits for it any more: give the slot back.
                    let _ = self.cluster.finished(placement.job);
                }
            }
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;
}

impl Supervised for Scheduler {
    fn restarting(&mut self, _: &mut Context<Self>) {
        restarts().record(ActorKind::Scheduler);
    }
}

impl Handler<AddWorker> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AddWorker, ctx: &mut Context<Self>) {
        let w = msg.worker;
        let worker = Worker::ready(w.id, w.labels, w.slots);
        let result = match self.cluster.add_worker(worker.clone()) {
            Err(hodei_domain::schedule::ScheduleError::DuplicateWorker { .. }) => {
                self.cluster.update_worker(worker)
            }
            other => other,
        };
        if let Err(err) = result {
            tracing::error!(error = %err, "Cannot add a worker.");
        }
        self.place(ctx);
    }
}

impl Handler<RemoveWorker> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: RemoveWorker, _: &mut Context<Self>) {
        match self.cluster.remove_worker(&msg.worker) {
            Ok(orphaned) if !orphaned.is_empty() => {
                tracing::warn!(worker = %msg.worker, jobs = orphaned.len(), "Jobs were placed on a lost worker.");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "Cannot remove a worker."),
        }
    }
}

impl Handler<Enqueue> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        self.seq += 1;
        let queued = QueuedJob {
            job: msg.job,
            run: msg.run,
            project: msg.pipeline,
            runs_on: msg.runs_on,
            resources: msg.resources,
            priority: msg.priority,
            concurrency: msg.concurrency,
            seq: self.seq,
            queued_at: self.clock.now(),
        };
        match self.cluster.enqueue(queued) {
            Ok(()) => {
                self.replies.insert(msg.job, msg.reply);
                self.place(ctx);
            }
            Err(err) => tracing::error!(job_id = %msg.job, error = %err, "Cannot queue a job."),
        }
    }
}

impl Handler<Dequeue> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Dequeue, ctx: &mut Context<Self>) {
        self.replies.remove(&msg.job);
        if self.cluster.dequeue(msg.job).is_ok() {
            self.place(ctx);
        }
    }
}

impl Handler<Release> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) {
        if self.cluster.finished(msg.job).is_ok() {
            self.place(ctx);
        }
    }
}

impl Handler<Explain> for Scheduler {
    type Result = Option<WaitReason>;

    fn handle(&mut self, msg: Explain, _: &mut Context<Self>) -> Option<WaitReason> {
        self.cluster.explain(msg.job)
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
