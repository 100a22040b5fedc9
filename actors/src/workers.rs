//! The worker registry: one worker actor per worker — the local machine, and later agents on
//! other machines — each making its worker known to the scheduler and watching its lease.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message, Supervised};
use hodei_domain::ids::WorkerId;

use crate::contain::{ActorKind, restarts};
use crate::messages::{AddWorker, WorkerSpec};
use crate::scheduler::{RemoveWorker, Scheduler};

/// Register a worker; answers when it is known to the scheduler.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RegisterWorker {
    pub worker: WorkerSpec,
    /// How long the worker may stay silent before it is considered lost; `None` for the local
    /// machine, which lives and dies with Hodei.
    pub lease: Option<Duration>,
}

/// A worker is alive.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Heartbeat {
    pub worker: WorkerId,
}

/// Keeps the worker actors.
pub struct WorkerRegistry {
    scheduler: Addr<Scheduler>,
    workers: HashMap<WorkerId, Addr<WorkerActor>>,
}

impl WorkerRegistry {
    pub fn new(scheduler: Addr<Scheduler>) -> WorkerRegistry {
        WorkerRegistry {
            scheduler,
            workers: HashMap::new(),
        }
    }
}

impl Actor for WorkerRegistry {
    type Context = Context<Self>;
}

impl Supervised for WorkerRegistry {
    fn restarting(&mut self, _: &mut Context<Self>) {
        restarts().record(ActorKind::WorkerRegistry);
    }
}

impl Handler<RegisterWorker> for WorkerRegistry {
    type Result = ();

    fn handle(&mut self, msg: RegisterWorker, _: &mut Context<Self>) {
        let id = msg.worker.id.clone();
        tracing::info!(worker = %id, slots = msg.worker.slots, "Worker registered.");
        let actor = WorkerActor {
            spec: msg.worker,
            lease: msg.lease,
            last_seen: Instant::now(),
            scheduler: self.scheduler.clone(),
        }
        .start();
        self.workers.insert(id, actor);
    }
}

impl Handler<Heartbeat> for WorkerRegistry {
    type Result = ();

    fn handle(&mut self, msg: Heartbeat, _: &mut Context<Self>) {
        if let Some(worker) = self.workers.get(&msg.worker) {
            worker.do_send(msg);
        }
    }
}

/// One worker: announces itself to the scheduler and withdraws it when its lease runs out.
pub struct WorkerActor {
    spec: WorkerSpec,
    lease: Option<Duration>,
    last_seen: Instant,
    scheduler: Addr<Scheduler>,
}

impl Actor for WorkerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.scheduler.do_send(AddWorker {
            worker: self.spec.clone(),
        });
        if let Some(lease) = self.lease {
            ctx.run_interval(lease / 2, move |act, ctx| {
                if act.last_seen.elapsed() > lease {
                    tracing::warn!(worker = %act.spec.id, "Worker lost: its lease ran out.");
                    act.scheduler.do_send(RemoveWorker {
                        worker: act.spec.id.clone(),
                    });
                    actix::ActorContext::stop(ctx);
                }
            });
        }
    }
}

impl Handler<Heartbeat> for WorkerActor {
    type Result = ();

    fn handle(&mut self, _: Heartbeat, _: &mut Context<Self>) {
        self.last_seen = Instant::now();
    }
}
