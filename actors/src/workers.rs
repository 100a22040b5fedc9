//! The worker registry: one worker actor per worker — the local machine, and later agents on
//! other machines — each making its worker known to the scheduler and watching its lease.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, AsyncContext, Context, Handler, Supervised};
use hodei_domain::ids::WorkerId;

use crate::fault::{Faults, Point};
use crate::messages::{
    AddWorker, Heartbeat, RegisterWorker, RemoveWorker, SetWorkerState, WorkerSpec,
};
use crate::scheduler::Scheduler;
use crate::supervise::{Restarts, Supervise, contained};

/// Keeps the worker actors.
pub struct WorkerRegistry {
    scheduler: Addr<Scheduler>,
    /// Every registered worker; its actor once it is started.
    workers: HashMap<WorkerId, Registered>,
    faults: Faults,
    restarts: Restarts,
}

struct Registered {
    spec: WorkerSpec,
    lease: Option<Duration>,
    actor: Option<Addr<WorkerActor>>,
}

impl WorkerRegistry {
    pub fn new(scheduler: Addr<Scheduler>, faults: Faults, restarts: Restarts) -> WorkerRegistry {
        WorkerRegistry {
            scheduler,
            workers: HashMap::new(),
            faults,
            restarts,
        }
    }

    /// Starts the actor of every registered worker that has none.
    fn start_workers(&mut self) {
        for registered in self.workers.values_mut() {
            if registered.actor.is_some() {
                continue;
            }
            tracing::info!(worker = %registered.spec.id, slots = registered.spec.slots, "Worker registered.");
            registered.actor = Some(
                WorkerActor {
                    spec: registered.spec.clone(),
                    lease: registered.lease,
                    last_seen: Instant::now(),
                    scheduler: self.scheduler.clone(),
                }
                .start(),
            );
        }
    }
}

impl Actor for WorkerRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.restarts.hold(ctx);
        // After a restart: a registration the failure interrupted is finished.
        self.start_workers();
    }
}

impl Supervised for WorkerRegistry {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.restarting();
        // A worker whose lease ran out is gone; the others keep their actors.
        self.workers.retain(|_, registered| {
            registered
                .actor
                .as_ref()
                .is_none_or(|actor| actor.connected())
        });
    }
}

impl Supervise for WorkerRegistry {
    fn restarts(&mut self) -> &mut Restarts {
        &mut self.restarts
    }
}

impl Handler<RegisterWorker> for WorkerRegistry {
    type Result = ();

    fn handle(&mut self, msg: RegisterWorker, ctx: &mut Context<Self>) {
        contained(self, ctx, |act, _| {
            // A known worker offered again (its labels or slots changed): the registry keeps
            // the new spec and hands it to the scheduler; its actor and lease go on.
            if let Some(known) = act.workers.get_mut(&msg.worker.id)
                && known.actor.as_ref().is_some_and(|actor| actor.connected())
            {
                known.spec = msg.worker.clone();
                known.lease = msg.lease;
                act.scheduler.do_send(AddWorker { worker: msg.worker });
                return;
            }
            act.workers.insert(
                msg.worker.id.clone(),
                Registered {
                    spec: msg.worker,
                    lease: msg.lease,
                    actor: None,
                },
            );
            act.faults.hit(Point::RegisterWorker);
            act.start_workers();
        });
    }
}

/// A worker that stops (an agent that got SIGTERM): it takes no new job (draining) while its
/// running ones end; once `gone`, it is forgotten, and comes back ready if it registers again.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct LeaveWorker {
    pub worker: WorkerId,
    pub gone: bool,
}

impl Handler<LeaveWorker> for WorkerRegistry {
    type Result = ();

    fn handle(&mut self, msg: LeaveWorker, _: &mut Context<Self>) {
        if !msg.gone {
            self.scheduler.do_send(SetWorkerState {
                worker: msg.worker,
                state: hodei_domain::schedule::WorkerState::Draining,
            });
            return;
        }
        if let Some(registered) = self.workers.remove(&msg.worker) {
            if let Some(actor) = registered.actor {
                actor.do_send(Retire);
            }
            tracing::info!(worker = %msg.worker, "Worker left.");
            self.scheduler.do_send(RemoveWorker { worker: msg.worker });
        }
    }
}

/// The worker left: its actor stops.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Retire;

impl Handler<Retire> for WorkerActor {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        actix::ActorContext::stop(ctx);
    }
}

impl Handler<Heartbeat> for WorkerRegistry {
    type Result = ();

    fn handle(&mut self, msg: Heartbeat, _: &mut Context<Self>) {
        if let Some(actor) = self
            .workers
            .get(&msg.worker)
            .and_then(|registered| registered.actor.as_ref())
        {
            actor.do_send(msg);
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
