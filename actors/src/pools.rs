//! The worker manager: starts ephemeral workers from pools when jobs wait for them.
//!
//! Each pass (every [`PoolSettings::every`]) reads the queue and the workers from the
//! scheduler and, per pool, the workers its [`Launcher`] finds on its engine; the pure
//! [`hodei_domain::pools::decide`] says what to do, and the pass does it:
//! - **Start**: a worker gets a one-job credential — an agent record of its own, registered
//!   here with a registration token made for it and revoked at once — and is launched as
//!   `hodei agent --one-job` with it. It takes one job, uploads its log and artifacts, leaves
//!   and exits; or leaves at its idle timeout.
//! - **Remove**: a worker that exited (or never reached the server, or idles past its
//!   deadline) is removed from its engine and its agent record deleted: its credential stops
//!   working.
//! - A failed start (the engine refuses, or the worker exits before it took a job) backs the
//!   pool off exponentially, and the scheduler's queue explains the jobs the pool would take
//!   with `pool NAME: cannot start a worker: ...` until a worker of the pool reaches the server.
//!
//! At its first pass, the manager removes every worker its pools' launchers find: those were
//! left by an earlier life of Hodei (their jobs' leases run out and the jobs are retried).
//! It runs in the supervision tree of the replica that leads, like the other singleton duties.
//! A pass that panics stops the manager and its supervisor restarts it; the next pass finds
//! the pools' workers again by label (they are this life's: they are not reaped).
//!
//! Metrics: `hodei_pool_workers{pool, state="starting"|"running"}` (gauges),
//! `hodei_pool_workers_started_total{pool}` and `hodei_pool_workers_failed_total{pool}`
//! (counters).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message,
    ResponseActFuture, Supervised, WrapFuture,
};
use hodei_domain::ids::Timestamp;
use hodei_domain::pools::{Backoff, Move, Observed, Phase, PoolRule, decide};
use hodei_domain::ports::{
    AgentStore, Clock, Launcher, NewAgent, NewAgentToken, Registration, WorkerLaunch,
};
use sha2::{Digest, Sha256};

use crate::contain::guard_future;
use crate::messages::{GetQueue, GetWorkers, PoolTrouble};
use crate::scheduler::Scheduler;
use crate::supervise::{Restarts, Supervise};

/// One pool, as the manager runs it.
#[derive(Clone)]
pub struct Pool {
    /// The pool's name: its workers are named `hodei-pool-<name>-<suffix>`.
    pub name: String,
    pub rule: PoolRule,
    pub launcher: Arc<dyn Launcher>,
    /// Where its workers reach the server.
    pub server_url: String,
    /// How long a worker waits for a job before it leaves.
    pub idle_timeout: Duration,
}

/// Makes a new random secret (a token or a credential, with its prefix).
pub type NewSecret = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// What the manager runs.
#[derive(Clone)]
pub struct PoolSettings {
    pub pools: Vec<Pool>,
    /// Where the workers' agent records and registration tokens go.
    pub agents: Arc<dyn AgentStore>,
    pub secret: NewSecret,
    /// The time between two passes.
    pub every: Duration,
}

/// What the manager keeps of one pool between passes.
#[derive(Default)]
struct PoolState {
    /// The workers of an earlier life were removed.
    reaped: bool,
    backoff: Backoff,
    /// Why its last start failed, while it has not started one since.
    trouble: Option<String>,
    /// When each worker was launched, and registered.
    launched: HashMap<String, Timestamp>,
    registered: HashMap<String, Timestamp>,
    /// The workers seen holding a job.
    took: HashSet<String>,
}

/// Starts and removes the ephemeral workers of pools. See the documentation of this module.
pub struct PoolManager {
    settings: PoolSettings,
    scheduler: Addr<Scheduler>,
    clock: Arc<dyn Clock>,
    /// Per pool; `None` while a pass holds it.
    states: Option<Vec<PoolState>>,
    restarts: Restarts,
}

impl PoolManager {
    pub fn new(
        settings: PoolSettings,
        scheduler: Addr<Scheduler>,
        clock: Arc<dyn Clock>,
        restarts: Restarts,
    ) -> PoolManager {
        let states = settings
            .pools
            .iter()
            .map(|_| PoolState::default())
            .collect();
        PoolManager {
            settings,
            scheduler,
            clock,
            states: Some(states),
            restarts,
        }
    }
}

/// Make a pass now.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Pass;

impl Actor for PoolManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.restarts.hold(ctx);
        ctx.notify(Pass);
    }
}

impl Supervised for PoolManager {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.restarting();
    }
}

impl Supervise for PoolManager {
    fn restarts(&mut self) -> &mut Restarts {
        &mut self.restarts
    }
}

impl Handler<Pass> for PoolManager {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Pass, _: &mut Context<Self>) -> Self::Result {
        let Some(states) = self.states.take() else {
            return Box::pin(actix::fut::ready(()));
        };
        let pass = Passer {
            settings: self.settings.clone(),
            scheduler: self.scheduler.clone(),
            clock: self.clock.clone(),
        };
        let every = self.settings.every;
        let count = states.len();
        Box::pin(
            guard_future(async move { pass.run(states).await })
                .into_actor(self)
                .map(move |result, act, ctx| {
                    match result {
                        Ok(states) => act.states = Some(states),
                        Err(panicked) => {
                            // What a pool knew is gone: its workers are found again by label
                            // (and not reaped: they are this life's).
                            let mut states: Vec<PoolState> =
                                (0..count).map(|_| PoolState::default()).collect();
                            for state in &mut states {
                                state.reaped = true;
                            }
                            act.states = Some(states);
                            act.restarts.failed(panicked.message.clone());
                            ctx.stop();
                            return;
                        }
                    }
                    ctx.run_later(every, |_, ctx| ctx.notify(Pass));
                }),
        )
    }
}

/// What a pass needs, outside the actor.
struct Passer {
    settings: PoolSettings,
    scheduler: Addr<Scheduler>,
    clock: Arc<dyn Clock>,
}

impl Passer {
    async fn run(&self, mut states: Vec<PoolState>) -> Vec<PoolState> {
        // The workers before the queue: a job placed in between is then missing from the
        // queue while its worker still counts as waiting for one, which starts one worker too
        // few for a pass (the next pass makes up for it), never one too many.
        let workers = self.scheduler.send(GetWorkers).await;
        let queue = self
            .scheduler
            .send(GetQueue {
                limit: usize::MAX,
                run: None,
            })
            .await;
        let (Ok(queue), Ok(workers)) = (queue, workers) else {
            // The scheduler is restarting: the next pass sees it again.
            return states;
        };
        let runs_on: Vec<&[hodei_domain::model::Label]> =
            queue.iter().map(|w| w.runs_on.as_slice()).collect();
        let busy: HashMap<&str, bool> = workers
            .iter()
            .map(|w| (w.worker.id.0.as_str(), !w.jobs.is_empty()))
            .collect();
        for (pool, state) in self.settings.pools.iter().zip(states.iter_mut()) {
            if !state.reaped {
                state.reaped = self.reap(pool).await;
                continue;
            }
            self.pool_pass(pool, state, &runs_on, &busy).await;
        }
        states
    }

    /// Removes the workers an earlier life left; `false` if the engine cannot be asked yet.
    async fn reap(&self, pool: &Pool) -> bool {
        let found = match pool.launcher.workers().await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(pool = %pool.name, error = %err, "Cannot look for the workers an earlier run left; trying again.");
                return false;
            }
        };
        for worker in found {
            tracing::info!(pool = %pool.name, worker = %worker.name, "Removing a worker an earlier run of Hodei left.");
            self.remove(pool, &worker.name).await;
        }
        true
    }

    async fn pool_pass(
        &self,
        pool: &Pool,
        state: &mut PoolState,
        queue: &[&[hodei_domain::model::Label]],
        busy: &HashMap<&str, bool>,
    ) {
        let now = self.clock.now();
        let found = match pool.launcher.workers().await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(pool = %pool.name, error = %err, "Cannot list the pool's workers.");
                return;
            }
        };
        let mut observed = Vec::with_capacity(found.len());
        for worker in &found {
            let launched = *state.launched.entry(worker.name.clone()).or_insert(now);
            let seen = busy.get(worker.name.as_str()).copied();
            if seen.is_some() && !state.registered.contains_key(&worker.name) {
                state.registered.insert(worker.name.clone(), now);
                // A worker reached the server: the pool starts at full speed again.
                state.backoff.succeeded();
                if state.trouble.take().is_some() {
                    self.tell_trouble(pool, None);
                }
            }
            if seen == Some(true) {
                state.took.insert(worker.name.clone());
            }
            let took_job = state.took.contains(&worker.name);
            let phase = match (worker.exited, seen) {
                (Some(code), _) => Phase::Exited { code, took_job },
                _ if took_job => Phase::Busy,
                (None, Some(_)) => Phase::Idle,
                // Registered once and gone from the scheduler: it is leaving.
                (None, None) if state.registered.contains_key(&worker.name) => Phase::Busy,
                (None, None) => Phase::Starting,
            };
            observed.push(Observed {
                name: worker.name.clone(),
                phase,
                launched,
                registered: state.registered.get(&worker.name).copied(),
            });
        }
        let (starting, running) = observed.iter().fold((0, 0), |(s, r), w| match w.phase {
            Phase::Starting => (s + 1, r),
            Phase::Idle | Phase::Busy => (s, r + 1),
            Phase::Exited { .. } => (s, r),
        });
        metrics::gauge!("hodei_pool_workers", "pool" => pool.name.clone(), "state" => "starting")
            .set(f64::from(starting));
        metrics::gauge!("hodei_pool_workers", "pool" => pool.name.clone(), "state" => "running")
            .set(f64::from(running));
        for step in decide(&pool.rule, queue, &observed, &state.backoff, now) {
            match step {
                Move::Remove { name, failure } => {
                    self.remove(pool, &name).await;
                    state.launched.remove(&name);
                    state.registered.remove(&name);
                    state.took.remove(&name);
                    if let Some(failure) = failure {
                        self.failed(pool, state, failure, now);
                    }
                }
                Move::Start { count } => {
                    for _ in 0..count {
                        match self.start(pool).await {
                            Ok(name) => {
                                state.launched.insert(name, now);
                                metrics::counter!("hodei_pool_workers_started_total", "pool" => pool.name.clone())
                                    .increment(1);
                            }
                            Err(failure) => {
                                self.failed(pool, state, failure, now);
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    fn failed(&self, pool: &Pool, state: &mut PoolState, failure: String, now: Timestamp) {
        state.backoff.failed(now);
        tracing::warn!(
            pool = %pool.name,
            error = %failure,
            failures = state.backoff.failures,
            "Cannot start a worker of the pool; backing off."
        );
        metrics::counter!("hodei_pool_workers_failed_total", "pool" => pool.name.clone())
            .increment(1);
        self.tell_trouble(pool, Some(failure.clone()));
        state.trouble = Some(failure);
    }

    fn tell_trouble(&self, pool: &Pool, trouble: Option<String>) {
        self.scheduler.do_send(PoolTrouble {
            pool: pool.name.clone(),
            labels: pool.rule.labels.clone(),
            trouble,
        });
    }

    /// Starts one worker: its credential, then its container or pod. Answers its name, or why
    /// it cannot start.
    async fn start(&self, pool: &Pool) -> Result<String, String> {
        let secret = || (self.settings.secret)();
        let suffix: String = secret()?
            .chars()
            .skip(6)
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .take(10)
            .collect();
        let name = format!("hodei-pool-{}-{suffix}", pool.name);
        let credential = self.credential(pool, &name, secret).await?;
        let launch = WorkerLaunch {
            name: name.clone(),
            server_url: pool.server_url.clone(),
            credential,
            idle_timeout: pool.idle_timeout,
        };
        match pool.launcher.launch(&launch).await {
            Ok(()) => {
                tracing::info!(pool = %pool.name, worker = %name, "Started a worker.");
                Ok(name)
            }
            Err(err) => {
                self.remove(pool, &name).await;
                Err(err.to_string())
            }
        }
    }

    /// Registers the agent of worker `name` with a credential of its own: through a
    /// registration token made for it alone and revoked at once.
    async fn credential(
        &self,
        pool: &Pool,
        name: &str,
        secret: impl Fn() -> Result<String, String>,
    ) -> Result<String, String> {
        let (token, credential) = (secret()?, secret()?);
        let digest = |text: &str| -> [u8; 32] { Sha256::digest(text.as_bytes()).into() };
        let store = &self.settings.agents;
        let at = self.clock.now();
        let record = store
            .create_agent_token(NewAgentToken {
                name: name.to_owned(),
                digest: digest(&token),
                labels: Some(pool.rule.labels.clone()),
                expires: Some(Timestamp(at.0 + 60_000)),
                at,
            })
            .await
            .map_err(|err| format!("cannot store its registration token: {err}"))?;
        let registered = store
            .register_agent(NewAgent {
                name: name.to_owned(),
                digest: digest(&credential),
                labels: pool.rule.labels.clone(),
                token: digest(&token),
                at,
            })
            .await;
        if let Err(err) = store.revoke_agent_token(record.id, at).await {
            tracing::warn!(worker = %name, error = %err, "Cannot revoke the registration token of a worker; it expires in a minute.");
        }
        match registered {
            Ok((Registration::Registered, _)) => Ok(credential),
            Ok((refused, _)) => Err(format!("cannot register its agent: {refused:?}")),
            Err(err) => Err(format!("cannot register its agent: {err}")),
        }
    }

    /// Removes a worker from its engine and deletes its agent record (its credential stops
    /// working). Failures are logged: the next pass finds what is left.
    async fn remove(&self, pool: &Pool, name: &str) {
        if let Err(err) = pool.launcher.remove(name).await {
            tracing::warn!(pool = %pool.name, worker = %name, error = %err, "Cannot remove a worker; trying again at the next pass.");
            return;
        }
        if let Err(err) = self.settings.agents.delete_agent(name).await {
            tracing::warn!(worker = %name, error = %err, "Cannot delete the agent of a removed worker.");
        }
    }
}
