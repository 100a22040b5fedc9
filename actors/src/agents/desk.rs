//! The agent desk: the server's one place for agents. It keeps which agents are connected,
//! which jobs are offered to each, the lease of each claimed job (epoch, expiry), and checks
//! every write of an agent against that lease before it reaches the log or the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture,
};
use hodei_domain::ids::{JobId, RunId, Timestamp, WorkerId};
use hodei_domain::model::Label;
use hodei_domain::ports::{AgentStore, Clock, Fenced, LogStore, same_digest};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::{
    AgentBeat, AgentLive, AgentLog, AgentReport, AgentSeen, AgentStats, Beat, CancelLeased,
    ClaimedJob, CloseDoorbell, GetAgentStats, HandBack, LeaseExpired, LeaseOf, LeaseRun, Leaving,
    Lost, Offer, OpenDoorbell, RemoteJob, ReportError, Reported, TryClaim, Unclaimed, Wire,
    Withdraw, Work,
};
use crate::fault::{Faults, Point};
use crate::loghub::LogHub;
use crate::messages::{AppendAt, AppendedAt, HubError, LogLength, RegisterWorker, WorkerSpec};
use crate::supervise::{Restarts, Supervise, contained};
use crate::workers::{LeaveWorker, WorkerRegistry};

/// How agents are held.
#[derive(Debug, Clone, Copy)]
pub struct AgentSettings {
    /// How long an agent's lease on a job (and its place as a worker) lasts without a heartbeat.
    pub lease: Duration,
}

impl Default for AgentSettings {
    fn default() -> AgentSettings {
        AgentSettings {
            lease: Duration::from_secs(60),
        }
    }
}

struct Connected {
    last_seen: Instant,
    /// The same, by the clock, for people.
    seen_at: Timestamp,
    version: String,
    /// What its worker was last registered with, and when.
    registered: Option<(Vec<Label>, u32, Instant)>,
}

/// How often an agent that offers the same labels and slots is registered again (each poll
/// says it; registering is the scheduler's work, so it is not done at every poll).
const REGISTER_AGAIN: Duration = Duration::from_secs(1);

struct Held {
    epoch: u64,
    /// The digest of the lease's job token.
    token: [u8; 32],
    log_base: u64,
    expires: Instant,
    cancel: bool,
}

struct Route {
    agent: String,
    run: RunId,
    /// `None` for a lease found in the store at start, until the job's actor offers it again.
    actor: Option<Addr<RemoteJob>>,
    offer: Option<Offer>,
    claiming: bool,
    /// Cancelled while an agent was claiming it: the agent hears of it with the claim.
    cancel_on_claim: bool,
    /// When the job was offered.
    offered: Instant,
    lease: Option<Held>,
}

/// Holds the agents and the leases of their jobs.
pub struct AgentDesk {
    store: Arc<dyn AgentStore>,
    logs: Arc<dyn LogStore>,
    hub: Addr<LogHub>,
    registry: Addr<WorkerRegistry>,
    settings: AgentSettings,
    agents: HashMap<String, Connected>,
    /// Rung when work or a cancel is there for an agent: wakes its long-poll, or its doorbell.
    bells: HashMap<String, Arc<Notify>>,
    /// How many doorbells each agent holds open.
    doorbells: HashMap<String, usize>,
    /// Agents that said they stop and have not said they are gone.
    leaving: std::collections::HashSet<String>,
    jobs: HashMap<JobId, Route>,
    /// Told of leases that ran out with no actor to hold them.
    expired: Option<actix::Recipient<LeaseExpired>>,
    clock: Arc<dyn Clock>,
    lease_expiries: u64,
    log_bytes: u64,
    claim_seconds: Vec<f64>,
    faults: Faults,
    restarts: Restarts,
}

/// What the desk is given besides its peers: its clock, faults to inject, restarts.
pub struct DeskOwn {
    pub clock: Arc<dyn Clock>,
    pub faults: Faults,
    pub restarts: Restarts,
}

impl AgentDesk {
    pub fn new(
        store: Arc<dyn AgentStore>,
        logs: Arc<dyn LogStore>,
        hub: Addr<LogHub>,
        registry: Addr<WorkerRegistry>,
        own: DeskOwn,
        settings: AgentSettings,
    ) -> AgentDesk {
        let DeskOwn {
            clock,
            faults,
            restarts,
        } = own;
        AgentDesk {
            store,
            logs,
            hub,
            registry,
            settings,
            agents: HashMap::new(),
            bells: HashMap::new(),
            doorbells: HashMap::new(),
            leaving: Default::default(),
            jobs: HashMap::new(),
            expired: None,
            clock,
            lease_expiries: 0,
            log_bytes: 0,
            claim_seconds: Vec::new(),
            faults,
            restarts,
        }
    }

    /// Wakes whatever waits for the agent — its doorbell and a long-poll alike — and leaves a
    /// permit for the next wait, so that a ring between two waits is not missed (at worst it
    /// wakes one wait for nothing).
    fn ring(&self, agent: &str) {
        if let Some(bell) = self.bells.get(agent) {
            bell.notify_waiters();
            bell.notify_one();
        }
    }

    fn bell(&mut self, agent: &str) -> Arc<Notify> {
        self.bells.entry(agent.to_owned()).or_default().clone()
    }

    fn cancels_of(&self, agent: &str) -> Vec<JobId> {
        self.jobs
            .iter()
            .filter(|(_, r)| r.agent == agent && r.lease.as_ref().is_some_and(|l| l.cancel))
            .map(|(job, _)| *job)
            .collect()
    }

    /// The lease on `job` with `epoch` that the job token (by its digest) opens, if it is
    /// still held.
    fn held(&self, token: &[u8; 32], job: JobId, epoch: u64) -> Result<&Route, ReportError> {
        match self.jobs.get(&job) {
            Some(route)
                if route
                    .lease
                    .as_ref()
                    .is_some_and(|l| l.epoch == epoch && same_digest(&l.token, token)) =>
            {
                Ok(route)
            }
            _ => Err(ReportError::Stale),
        }
    }

    /// Ends the lease on `job`: its attempt is lost with its agent, through the job's actor
    /// (or its run, when no actor holds it).
    fn lose(&mut self, job: JobId, handed_back: bool) {
        let Some(route) = self.jobs.get_mut(&job) else {
            return;
        };
        let Some(held) = route.lease.take() else {
            return;
        };
        route.offer = None;
        match (&route.actor, &self.expired) {
            (Some(actor), _) => actor.do_send(Lost {
                epoch: held.epoch,
                handed_back,
            }),
            (None, Some(expired)) => expired.do_send(LeaseExpired {
                run: route.run,
                job,
                agent: route.agent.clone(),
                epoch: held.epoch,
            }),
            (None, None) => {}
        }
    }

    /// Leases that ran out, and offers to agents that went away.
    fn reap(&mut self) {
        let now = Instant::now();
        let lease = self.settings.lease;
        self.agents
            .retain(|_, agent| now.duration_since(agent.last_seen) <= lease);
        let expired: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, r)| r.lease.as_ref().is_some_and(|l| l.expires <= now))
            .map(|(job, _)| *job)
            .collect();
        for job in expired {
            if let Some(route) = self.jobs.get(&job) {
                tracing::warn!(job_id = %job, agent = %route.agent, "An agent's lease ran out.");
            }
            self.lease_expiries += 1;
            self.lose(job, false);
        }
        for route in self.jobs.values_mut() {
            if route.lease.is_none()
                && !route.claiming
                && route.offer.is_some()
                && !self.agents.contains_key(&route.agent)
            {
                route.offer = None;
                if let Some(actor) = &route.actor {
                    actor.do_send(Unclaimed);
                }
            }
        }
        // Routes with nothing left: no offer, no lease.
        self.jobs
            .retain(|_, r| r.offer.is_some() || r.lease.is_some() || r.claiming);
    }
}

impl Actor for AgentDesk {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.restarts.hold(ctx);
        // The leases agents held when the server stopped go on: their agents have a lease's
        // time to come back; the jobs' actors take them over as their runs resume. After a
        // restart of the desk, what it knew in memory stays (a supervisor restarts the same
        // desk): only leases it does not know are added.
        let store = self.store.clone();
        ctx.wait(async move { store.leases().await }.into_actor(self).map(
            |leases, act, _| match leases {
                Ok(leases) => {
                    let expires = Instant::now() + act.settings.lease;
                    for lease in leases {
                        act.jobs.entry(lease.job).or_insert_with(|| Route {
                                agent: lease.agent,
                                run: lease.run,
                                actor: None,
                                offer: None,
                                claiming: false,
                                cancel_on_claim: false,
                                offered: Instant::now(),
                                lease: Some(Held {
                                    epoch: lease.epoch,
                                    token: lease.token,
                                    log_base: lease.log_base,
                                    expires,
                                    cancel: false,
                                }),
                            });
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "Cannot read the agents' leases; their jobs are lost when the agents report.");
                }
            },
        ));
        let every =
            (self.settings.lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        ctx.run_interval(every, |act, _| act.reap());
    }
}

impl actix::Supervised for AgentDesk {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.restarting();
    }
}

impl Supervise for AgentDesk {
    fn restarts(&mut self) -> &mut Restarts {
        &mut self.restarts
    }
}

impl Handler<AgentSeen> for AgentDesk {
    type Result = actix::MessageResult<AgentSeen>;

    fn handle(&mut self, msg: AgentSeen, ctx: &mut Context<Self>) -> Self::Result {
        let answer = contained(self, ctx, |act, _| {
            let now = act.clock.now();
            let connected = act.agents.entry(msg.agent.clone()).or_insert_with(|| {
                tracing::info!(agent = %msg.agent, version = %msg.version, "Agent connected.");
                Connected {
                    last_seen: Instant::now(),
                    seen_at: now,
                    version: msg.version.clone(),
                    registered: None,
                }
            });
            connected.last_seen = Instant::now();
            connected.seen_at = now;
            connected.version = msg.version;
            let bell = act.bell(&msg.agent);
            let rejoins = act.leaving.remove(&msg.agent);
            if rejoins {
                // Back after it said it stops (and died before it was gone): a fresh worker.
                act.registry.do_send(LeaveWorker {
                    worker: WorkerId(msg.agent.clone()),
                    gone: true,
                });
            }
            let labels = agent_labels(&msg.agent, msg.labels);
            let connected = act
                .agents
                .get_mut(&msg.agent)
                .expect("the agent was just inserted");
            if rejoins {
                connected.registered = None;
            }
            let fresh = connected.registered.as_ref().is_some_and(|(l, s, at)| {
                *l == labels && *s == msg.slots && at.elapsed() < REGISTER_AGAIN
            });
            if !fresh {
                connected.registered = Some((labels.clone(), msg.slots, Instant::now()));
                act.registry.do_send(RegisterWorker {
                    worker: WorkerSpec {
                        id: WorkerId(msg.agent.clone()),
                        labels,
                        slots: msg.slots,
                        agent: true,
                        offline: false,
                    },
                    lease: Some(act.settings.lease),
                });
            }
            act.registry.do_send(crate::messages::Heartbeat {
                worker: WorkerId(msg.agent),
            });
            actix::MessageResult(bell)
        });
        answer.unwrap_or_else(|| actix::MessageResult(Arc::new(Notify::new())))
    }
}

/// The labels an agent offers: its own (or its token's), `agent` (so that a pipeline can ask for
/// any agent) and `checkout` (every agent checks out registered repositories from its own
/// mirrors, whatever its version or its token's labels).
fn agent_labels(_agent: &str, mut labels: Vec<Label>) -> Vec<Label> {
    let agent = "agent".parse::<Label>().ok();
    for label in agent.into_iter().chain([Label::checkout()]) {
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    labels
}

impl Handler<Offer> for AgentDesk {
    type Result = ();

    fn handle(&mut self, msg: Offer, ctx: &mut Context<Self>) {
        let answer = contained(self, ctx, |act, _| {
            let agent = msg.agent.clone();
            match act.jobs.get_mut(&msg.job) {
                // A new actor for a job an agent holds (its run reloaded, the server restarted):
                // it takes the route.
                Some(route) if route.lease.is_some() => route.actor = Some(msg.actor),
                _ => {
                    act.jobs.insert(
                        msg.job,
                        Route {
                            agent: agent.clone(),
                            run: msg.run,
                            actor: Some(msg.actor.clone()),
                            offer: Some(msg),
                            claiming: false,
                            cancel_on_claim: false,
                            offered: Instant::now(),
                            lease: None,
                        },
                    );
                    act.ring(&agent);
                }
            }
        });
        answer.unwrap_or(())
    }
}

impl Handler<GetAgentStats> for AgentDesk {
    type Result = actix::MessageResult<GetAgentStats>;

    fn handle(&mut self, msg: GetAgentStats, _: &mut Context<Self>) -> Self::Result {
        let connected = self
            .agents
            .iter()
            .map(|(name, agent)| AgentLive {
                name: name.clone(),
                version: agent.version.clone(),
                last_seen: agent.seen_at,
                leases: self
                    .jobs
                    .values()
                    .filter(|r| &r.agent == name && r.lease.is_some())
                    .count(),
                doorbell: self.doorbells.get(name).is_some_and(|n| *n > 0),
            })
            .collect();
        actix::MessageResult(AgentStats {
            connected,
            lease_expiries: self.lease_expiries,
            log_bytes: self.log_bytes,
            claim_seconds: match msg.take_claims {
                true => std::mem::take(&mut self.claim_seconds),
                false => Vec::new(),
            },
        })
    }
}

impl Handler<Leaving> for AgentDesk {
    type Result = ();

    fn handle(&mut self, msg: Leaving, ctx: &mut Context<Self>) {
        let answer = contained(self, ctx, |act, _| {
            let worker = WorkerId(msg.agent.clone());
            if msg.gone {
                tracing::info!(agent = %msg.agent, "Agent gone.");
                act.leaving.remove(&msg.agent);
                act.agents.remove(&msg.agent);
            } else {
                tracing::info!(agent = %msg.agent, "Agent stopping: no new job for it.");
                act.leaving.insert(msg.agent.clone());
            }
            act.registry.do_send(LeaveWorker {
                worker,
                gone: msg.gone,
            });
            // What it was offered and has not claimed goes to other workers.
            for route in act.jobs.values_mut() {
                if route.agent == msg.agent
                    && route.lease.is_none()
                    && !route.claiming
                    && route.offer.take().is_some()
                    && let Some(actor) = &route.actor
                {
                    actor.do_send(Unclaimed);
                }
            }
        });
        answer.unwrap_or(())
    }
}

impl Handler<HandBack> for AgentDesk {
    type Result = Result<(), ReportError>;

    fn handle(&mut self, msg: HandBack, ctx: &mut Context<Self>) -> Result<(), ReportError> {
        let answer = contained(self, ctx, |act, _| {
            let agent = act.held(&msg.token, msg.job, msg.epoch)?.agent.clone();
            tracing::info!(job_id = %msg.job, agent = %agent, "An agent that stops handed a job back.");
            act.lose(msg.job, true);
            Ok(())
        });
        answer.unwrap_or_else(|| Err(ReportError::Unavailable))
    }
}

impl Handler<OpenDoorbell> for AgentDesk {
    type Result = actix::MessageResult<OpenDoorbell>;

    fn handle(&mut self, msg: OpenDoorbell, _: &mut Context<Self>) -> Self::Result {
        *self.doorbells.entry(msg.agent.clone()).or_default() += 1;
        actix::MessageResult(self.bell(&msg.agent))
    }
}

impl Handler<CloseDoorbell> for AgentDesk {
    type Result = ();

    fn handle(&mut self, msg: CloseDoorbell, _: &mut Context<Self>) {
        if let Some(open) = self.doorbells.get_mut(&msg.agent) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.doorbells.remove(&msg.agent);
            }
        }
    }
}

impl Handler<LeaseOf> for AgentDesk {
    type Result = Option<u64>;

    fn handle(&mut self, msg: LeaseOf, _: &mut Context<Self>) -> Option<u64> {
        self.jobs
            .get(&msg.job)
            .and_then(|r| r.lease.as_ref())
            .map(|l| l.epoch)
    }
}

impl Handler<LeaseRun> for AgentDesk {
    type Result = Result<RunId, ReportError>;

    fn handle(&mut self, msg: LeaseRun, _: &mut Context<Self>) -> Self::Result {
        self.held(&msg.token, msg.job, msg.epoch)
            .map(|route| route.run)
    }
}

impl Handler<Wire> for AgentDesk {
    type Result = ();

    fn handle(&mut self, msg: Wire, _: &mut Context<Self>) {
        self.expired = Some(msg.expired);
    }
}

impl Handler<Withdraw> for AgentDesk {
    type Result = ();

    fn handle(&mut self, msg: Withdraw, _: &mut Context<Self>) {
        self.jobs.remove(&msg.job);
    }
}

impl Handler<CancelLeased> for AgentDesk {
    type Result = bool;

    fn handle(&mut self, msg: CancelLeased, ctx: &mut Context<Self>) -> bool {
        let answer = contained(self, ctx, |act, _| {
            let Some(route) = act.jobs.get_mut(&msg.job) else {
                return false;
            };
            if route.claiming {
                // Claimed this very moment: the agent hears of the cancel with the claim.
                route.cancel_on_claim = true;
                return true;
            }
            match &mut route.lease {
                Some(held) => {
                    held.cancel = true;
                    let agent = route.agent.clone();
                    act.ring(&agent);
                    true
                }
                None => {
                    route.offer = None;
                    false
                }
            }
        });
        answer.unwrap_or(false)
    }
}

impl Handler<TryClaim> for AgentDesk {
    type Result = ResponseActFuture<Self, Result<Work, ReportError>>;

    fn handle(&mut self, msg: TryClaim, ctx: &mut Context<Self>) -> Self::Result {
        let answer = contained(self, ctx, |act, _| -> Self::Result {
            act.faults.hit(Point::AgentClaim);
            if let Some(connected) = act.agents.get_mut(&msg.agent) {
                connected.last_seen = Instant::now();
            }
            let cancel = act.cancels_of(&msg.agent);
            let offered = match msg.room && !act.leaving.contains(&msg.agent) {
                true => act
                    .jobs
                    .iter_mut()
                    .filter(|(_, r)| r.agent == msg.agent && r.lease.is_none() && !r.claiming)
                    .find_map(|(job, r)| r.offer.as_ref().map(|_| *job)),
                false => None,
            };
            let Some(job) = offered else {
                return Box::pin(actix::fut::ready(Ok(Work {
                    job: None,
                    more: Vec::new(),
                    cancel,
                })));
            };
            let route = act.jobs.get_mut(&job).expect("the route was just found");
            route.claiming = true;
            let offer = route.offer.as_ref().expect("an offered job has its offer");
            let (def, machine, run) = (offer.def.clone(), offer.machine.clone(), offer.run);
            let (store, hub, agent) = (act.store.clone(), act.hub.clone(), msg.agent.clone());
            let token = msg.token;
            let attempt = machine.attempt();
            let lease_ms = u64::try_from(act.settings.lease.as_millis()).unwrap_or(u64::MAX);
            let claim = async move {
                let base = hub
                    .send(LogLength { job })
                    .await
                    .map_err(HubError::from)
                    .and_then(|r| r)
                    .map_err(ReportError::Log)?;
                store
                    .claim(job, run, attempt, agent, base, token.digest)
                    .await
                    .map_err(ReportError::Store)
            };
            Box::pin(claim.into_actor(act).map(move |result, act, _| {
            let lease = act.settings.lease;
            let route = act.jobs.get_mut(&job);
            let lease_record = match result {
                Ok(lease) => lease,
                Err(err) => {
                    if let Some(route) = route {
                        route.claiming = false;
                    }
                    return Err(err);
                }
            };
            let Some(route) = route.filter(|r| r.offer.is_some()) else {
                // Withdrawn or cancelled meanwhile: the lease is left to expire unused.
                return Ok(Work {
                    job: None,
                    more: Vec::new(),
                    cancel,
                });
            };
            route.claiming = false;
            route.offer = None;
            let waited = route.offered.elapsed().as_secs_f64();
            route.lease = Some(Held {
                epoch: lease_record.epoch,
                token: lease_record.token,
                log_base: lease_record.log_base,
                expires: Instant::now() + lease,
                cancel: route.cancel_on_claim,
            });
            let mut cancel = cancel;
            if route.cancel_on_claim {
                cancel.push(job);
            }
            act.claim_seconds.push(waited);
            if act.claim_seconds.len() > 10_000 {
                act.claim_seconds.remove(0);
            }
            tracing::info!(job_id = %job, agent = %route.agent, epoch = lease_record.epoch, "An agent claimed a job.");
            Ok(Work {
                job: Some(Box::new(ClaimedJob {
                    job,
                    run,
                    epoch: lease_record.epoch,
                    log_base: lease_record.log_base,
                    lease_ms,
                    token: token.secret,
                    def: (*def).clone(),
                    machine,
                })),
                more: Vec::new(),
                cancel,
            })
        }))
        });
        answer.unwrap_or_else(|| Box::pin(actix::fut::ready(Err(ReportError::Unavailable))))
    }
}

impl Handler<AgentBeat> for AgentDesk {
    type Result = actix::MessageResult<AgentBeat>;

    fn handle(&mut self, msg: AgentBeat, ctx: &mut Context<Self>) -> Self::Result {
        let answer = contained(self, ctx, |act, _| {
            let now = Instant::now();
            let seen_at = act.clock.now();
            if let Some(connected) = act.agents.get_mut(&msg.agent) {
                connected.last_seen = now;
                connected.seen_at = seen_at;
            }
            act.registry.do_send(crate::messages::Heartbeat {
                worker: WorkerId(msg.agent.clone()),
            });
            let mut lost = Vec::new();
            for (job, epoch) in msg.jobs {
                match act.jobs.get_mut(&job) {
                    Some(route) if route.agent == msg.agent => match &mut route.lease {
                        Some(held) if held.epoch == epoch => {
                            held.expires = now + act.settings.lease
                        }
                        _ => lost.push(job),
                    },
                    _ => lost.push(job),
                }
            }
            actix::MessageResult(Beat {
                lost,
                cancel: act.cancels_of(&msg.agent),
            })
        });
        answer.unwrap_or_else(|| actix::MessageResult(Beat::default()))
    }
}

impl Handler<AgentLog> for AgentDesk {
    type Result = ResponseActFuture<Self, Result<u64, ReportError>>;

    fn handle(&mut self, msg: AgentLog, ctx: &mut Context<Self>) -> Self::Result {
        let answer = contained(self, ctx, |act, _| -> Self::Result {
            let base = match act.held(&msg.token, msg.job, msg.epoch) {
                Ok(route) => route.lease.as_ref().map_or(0, |l| l.log_base),
                Err(err) => return Box::pin(actix::fut::ready(Err(err))),
            };
            act.log_bytes += msg.bytes.len() as u64;
            // Sent from the desk's handler: the hub takes it before any later claim's length.
            let appended = act.hub.send(AppendAt {
                job: msg.job,
                offset: base + msg.offset,
                bytes: msg.bytes,
            });
            Box::pin(
                async move {
                    match appended.await.map_err(HubError::from).and_then(|r| r) {
                        Ok(AppendedAt::Taken { length } | AppendedAt::Gap { length }) => {
                            Ok(length.saturating_sub(base))
                        }
                        Err(err) => Err(ReportError::Log(err)),
                    }
                }
                .into_actor(act),
            )
        });
        answer.unwrap_or_else(|| Box::pin(actix::fut::ready(Err(ReportError::Unavailable))))
    }
}

impl Handler<AgentReport> for AgentDesk {
    type Result = ResponseActFuture<Self, Result<Fenced, ReportError>>;

    fn handle(&mut self, msg: AgentReport, ctx: &mut Context<Self>) -> Self::Result {
        let answer = contained(self, ctx, |act, _| -> Self::Result {
            let (actor, base) = match act.held(&msg.token, msg.job, msg.epoch) {
                Ok(Route {
                    actor: Some(actor),
                    lease,
                    ..
                }) => (actor.clone(), lease.as_ref().map_or(0, |l| l.log_base)),
                // Its run has not taken the job back yet: the agent sends again.
                Ok(_) => return Box::pin(actix::fut::ready(Err(ReportError::NotReady))),
                Err(err) => return Box::pin(actix::fut::ready(Err(err))),
            };
            let logs = act.logs.clone();
            let job = msg.job;
            let report = async move {
                // The output the agent sent before these transitions is committed before they
                // are: a crash between the two never keeps a job's end and loses its output's
                // tail (which no lease would let the agent send again).
                let length = logs
                    .settle(job)
                    .await
                    .map_err(|e| ReportError::Log(e.into()))?;
                if let Some(seal) = msg.end {
                    // The attempt's output must be whole before its lease closes.
                    let committed = length.saturating_sub(base);
                    if committed != seal.length {
                        return Err(ReportError::LogIncomplete {
                            committed,
                            expected: seal.length,
                        });
                    }
                    let bytes = logs
                        .read(job, base, Some(length))
                        .await
                        .map_err(|e| ReportError::Log(e.into()))?;
                    if Sha256::digest(&bytes)[..] != seal.sha256[..] {
                        return Err(ReportError::Checksum);
                    }
                }
                actor
                    .send(Reported {
                        epoch: msg.epoch,
                        seq: msg.seq,
                        events: msg.events,
                        end: msg.end.is_some(),
                    })
                    .await
                    .map_err(|_| ReportError::NotReady)?
            };
            Box::pin(report.into_actor(act))
        });
        answer.unwrap_or_else(|| Box::pin(actix::fut::ready(Err(ReportError::Unavailable))))
    }
}
