//! The server's side of a job attempt that runs on an agent: it holds the job's machine while
//! the agent runs the attempt, offers the job to the agent through the desk, takes the agent's
//! reports (each transition checked against the machine before it is recorded), and hands the
//! machine back to the run when the attempt is over, or when its lease runs out.

use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler, Recipient,
    WrapFuture,
};
use hodei_domain::engine::JobDef;
use hodei_domain::ids::{JobId, WorkerId};
use hodei_domain::ports::{AgentStore, Fenced};
use hodei_domain::state::{DomainEvent, JobEvent, JobMachine, JobState};

use super::desk::AgentDesk;
use super::{Lost, Offer, ReportError, Reported, Unclaimed, Withdraw};
use crate::Ports;
use crate::bus::EventBus;
use crate::loghub::LogHub;
use crate::messages::{AbandonJob, AttemptEnded, CancelJob, Note, PlacementId, Publish, Release};
use crate::record::record;

/// Where a remote job sends what it needs to others.
#[derive(Clone)]
pub struct RemotePeers {
    pub desk: Addr<AgentDesk>,
    pub hub: Addr<LogHub>,
    pub bus: Addr<EventBus>,
    pub slots: Recipient<Release>,
    pub ended: Recipient<AttemptEnded>,
    /// How long past a job's timeout the server waits for the agent to end it (the agents'
    /// lease: an agent that cannot say it ended the job within that has lost it anyway).
    pub grace: std::time::Duration,
}

/// One job attempt placed on an agent.
pub struct RemoteJob {
    def: Arc<JobDef>,
    machine: JobMachine,
    agent: WorkerId,
    placement: PlacementId,
    ports: Ports,
    agents: Arc<dyn AgentStore>,
    peers: RemotePeers,
    released: bool,
    done: bool,
}

impl RemoteJob {
    pub fn new(
        def: Arc<JobDef>,
        machine: JobMachine,
        agent: WorkerId,
        placement: PlacementId,
        ports: Ports,
        agents: Arc<dyn AgentStore>,
        peers: RemotePeers,
    ) -> RemoteJob {
        RemoteJob {
            def,
            machine,
            agent,
            placement,
            ports,
            agents,
            peers,
            released: false,
            done: false,
        }
    }

    fn job(&self) -> JobId {
        self.machine.id()
    }

    fn release(&mut self) {
        if !self.released {
            self.released = true;
            self.peers.slots.do_send(Release {
                job: self.job(),
                placement: self.placement,
            });
        }
    }

    fn hand_back(&mut self, ctx: &mut Context<Self>) {
        if self.done {
            return;
        }
        self.done = true;
        self.release();
        self.peers.desk.do_send(Withdraw { job: self.job() });
        self.peers.ended.do_send(AttemptEnded {
            job: self.job(),
            machine: self.machine.clone(),
        });
        actix::ActorContext::stop(ctx);
    }
}

impl RemoteJob {
    /// The job's timeout and its grace are over and the agent has not ended it: the attempt
    /// times out here, its lease ends (the agent's next write is refused and it stops the job).
    fn backstop(&mut self, ctx: &mut Context<Self>) {
        if self.done {
            return;
        }
        let (desk, store, job) = (self.peers.desk.clone(), self.agents.clone(), self.job());
        let mut next = self.machine.clone();
        let events: Vec<DomainEvent> = next
            .apply(JobEvent::TimeOut, self.ports.clock.now())
            .into_iter()
            .collect();
        if events.is_empty() {
            // Not started yet: its time has not begun; look again a whole timeout later.
            if let Some(timeout) = self.def.timeout {
                ctx.run_later(timeout.to_std() + self.peers.grace, |act, ctx| {
                    act.backstop(ctx)
                });
            }
            return;
        }
        let fut = async move {
            match desk.send(super::LeaseOf { job }).await {
                Ok(Some(epoch)) => store
                    .end_lease(job, epoch, events.clone())
                    .await
                    .map(|ended| ended.then_some(events)),
                _ => Ok(None),
            }
        };
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| match result {
            Ok(Some(events)) => {
                act.peers.hub.do_send(Note {
                    job,
                    text: "the agent did not end the job within its timeout: the server stopped it"
                        .to_owned(),
                });
                act.machine = next;
                act.peers.bus.do_send(Publish { events });
                act.hand_back(ctx);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::error!(job_id = %job, error = %err, "Cannot record a job's timeout.");
            }
        }));
    }
}

impl Actor for RemoteJob {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The agent enforces the job's timeout; the server stops the attempt itself if the
        // agent has not ended it a grace period later (a stuck or lying agent).
        if let Some(timeout) = self.def.timeout {
            let ran = match self.machine.state() {
                JobState::Running { .. } => {
                    let millis = self.ports.clock.now().millis_since(self.machine.since());
                    std::time::Duration::from_millis(millis)
                }
                _ => std::time::Duration::ZERO,
            };
            let after = timeout.to_std().saturating_sub(ran) + self.peers.grace;
            ctx.run_later(after, |act, ctx| act.backstop(ctx));
        }
        self.peers.desk.do_send(Offer {
            job: self.job(),
            run: self.machine.run(),
            agent: self.agent.0.clone(),
            def: self.def.clone(),
            machine: self.machine.clone(),
            actor: ctx.address(),
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.release();
    }
}

impl Handler<Reported> for RemoteJob {
    type Result = AtomicResponse<Self, Result<Fenced, ReportError>>;

    fn handle(&mut self, msg: Reported, _: &mut Context<Self>) -> Self::Result {
        // Every transition must be one this machine could make, with exactly these fields.
        let mut next = self.machine.clone();
        let checked: Result<(), ReportError> = msg
            .events
            .iter()
            .try_for_each(|event| next.follow(event).map_err(ReportError::Refused));
        if let Err(err) = checked {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(err))));
        }
        if msg.end && !matches!(next.state(), JobState::Queued) && !next.is_terminal() {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(ReportError::NotOver))));
        }
        let store = self.agents.clone();
        let job = self.job();
        let events = msg.events.clone();
        let fut = async move { store.report(job, msg.epoch, msg.seq, events, msg.end).await };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |result, act, ctx| match result {
                Ok(Fenced::Done) => {
                    act.machine = next;
                    if !msg.events.is_empty() {
                        act.peers.bus.do_send(Publish { events: msg.events });
                    }
                    if msg.end {
                        act.hand_back(ctx);
                    }
                    Ok(Fenced::Done)
                }
                Ok(other) => Ok(other),
                Err(err) => Err(ReportError::Store(err)),
            },
        )))
    }
}

impl Handler<Lost> for RemoteJob {
    type Result = ();

    /// The agent's lease ran out: the attempt is lost with its worker (a job that had not
    /// started waits for another worker, same attempt).
    fn handle(&mut self, msg: Lost, ctx: &mut Context<Self>) {
        let mut next = self.machine.clone();
        let events: Vec<DomainEvent> = match next.state() {
            JobState::Placed { .. } | JobState::Running { .. } => next
                .apply(
                    JobEvent::WorkerLost {
                        worker: self.agent.clone(),
                    },
                    self.ports.clock.now(),
                )
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        let store = self.agents.clone();
        let job = self.job();
        let note = match msg.handed_back {
            true => format!(
                "the agent `{}` was stopped and handed this job back",
                self.agent
            ),
            false => format!(
                "the agent `{}` stopped answering: its lease on this job ran out",
                self.agent
            ),
        };
        let fut = async move {
            store
                .end_lease(job, msg.epoch, events.clone())
                .await
                .map(|ended| (ended, events))
        };
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| match result {
            Ok((true, events)) => {
                act.peers.hub.do_send(Note { job, text: note });
                act.machine = next;
                if !events.is_empty() {
                    act.peers.bus.do_send(Publish { events });
                }
                act.hand_back(ctx);
            }
            Ok((false, _)) => {}
            Err(err) => {
                tracing::error!(job_id = %job, error = %err, "Cannot record a lost lease; the job's run reloads it.");
                act.hand_back(ctx);
            }
        }));
    }
}

impl Handler<Unclaimed> for RemoteJob {
    type Result = ();

    /// The agent went away before it claimed the job: the job waits for another worker.
    fn handle(&mut self, _: Unclaimed, ctx: &mut Context<Self>) {
        self.hand_back(ctx);
    }
}

impl Handler<CancelJob> for RemoteJob {
    type Result = ();

    fn handle(&mut self, _: CancelJob, ctx: &mut Context<Self>) {
        let desk = self.peers.desk.clone();
        let job = self.job();
        // Not claimed yet: the job is cancelled here. Claimed: the agent is told, stops the
        // step, runs the hooks and reports.
        let fut = async move { desk.send(super::CancelLeased { job }).await };
        ctx.wait(fut.into_actor(self).map(move |leased, act, ctx| {
            if matches!(leased, Ok(true)) {
                return;
            }
            let now = act.ports.clock.now();
            let Ok(event) = act.machine.apply(JobEvent::Cancel, now) else {
                return;
            };
            let (ports, bus) = (act.ports.clone(), act.peers.bus.clone());
            ctx.wait(
                async move { record(&ports, &bus, vec![event]).await }
                    .into_actor(act)
                    .map(|result, act, ctx| {
                        if let Err(err) = result {
                            tracing::error!(job_id = %act.job(), error = %err, "Cannot record a cancel.");
                        }
                        act.hand_back(ctx);
                    }),
            );
        }));
    }
}

impl Handler<AbandonJob> for RemoteJob {
    type Result = ();

    /// The run actor failed: the agent goes on; the run's next actor takes the job over.
    fn handle(&mut self, _: AbandonJob, ctx: &mut Context<Self>) {
        self.done = true;
        actix::ActorContext::stop(ctx);
    }
}
