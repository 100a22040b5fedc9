//! # hodei-supervisors
//!
//! The supervision tree of Hodei: which actors run, in which order they start, and who restarts
//! whom.
//!
//! ```text
//! start_tree                       escalation: TreeConfig::escalation (default: exit, resume
//!  │                               at the next start)
//!  ├─ EventBus        supervised: subscribers survive a restart
//!  ├─ LogHub          supervised: maskers and watchers survive a restart; a lost chunk is
//!  │                  noted in its job's log
//!  ├─ Scheduler       supervised: rebuilds its indexes from workers, queue and placements;
//!  │                  asks again for requests a failure lost
//!  ├─ WorkerRegistry  supervised; registers the local worker
//!  ├─ ProviderActor   supervised; reaps what an earlier Hodei left running
//!  ├─ AgentDesk       (a server with agents) connected agents, offers, leases
//!  ├─ Orchestrator    supervised; reaps, resumes unfinished runs, then accepts new ones
//!  │    └─ RunActor   one per active run, restarted by the orchestrator with the backoff
//!  │         │        of TreeConfig::restart_policy; after too many restarts the run is
//!  │         │        parked until the next start (or a cancel or an approval)
//!  │         └─ JobActor  one per attempt; a crash stops its step and makes its run actor
//!  │                      reload the job from the store
//!  ├─ Timer           supervised, when TreeConfig::ticks is set (the server): fires the
//!  │                  pipelines' `on.schedule` entries, each tick claimed once in the store
//!  └─ PoolManager     supervised, when TreeConfig::pools is set: starts ephemeral workers
//!                     when jobs wait for a pool's labels; reaps an earlier life's at start
//! ```
//!
//! Every long-lived actor contains the panics of its handlers (`hodei_actors::supervise`): it
//! stops, and actix's `Supervisor` starts it again after the backoff of
//! [`TreeConfig::restart_policy`]; past the policy's limit the tree's
//! [`TreeConfig::escalation`] decides. Restarts are counted per tree ([`Tree::restarts`]).
//!
//! The order matters: the bus and the hub exist before anything can publish or print; the
//! scheduler before workers register; the provider before the orchestrator asks it to reap; and
//! the orchestrator resumes every unfinished run before it accepts a new one.

use actix::{Addr, Supervisor};
use hodei_actors::Ports;
use hodei_actors::agents::{AgentDesk, AgentSettings, DeskOwn, Wire};
use hodei_actors::bus::EventBus;
use hodei_actors::run::AgentPeers;
use hodei_domain::ports::AgentStore;
use std::sync::Arc;

use hodei_actors::contain::{ActorKind, RestartCounter};
use hodei_actors::loghub::LogHub;
use hodei_actors::messages::RegisterWorker;
use hodei_actors::messages::WorkerSpec;
use hodei_actors::orchestrator::{Orchestrator, OrchestratorPeers, RunSettings};
use hodei_actors::pools::{PoolManager, PoolSettings};
use hodei_actors::provider::ProviderActor;
use hodei_actors::scheduler::Scheduler;
use hodei_actors::supervise::{Escalation, Restarts, exit_on_escalation};
use hodei_actors::timer::{Timer, TimerSettings};
use hodei_actors::workers::WorkerRegistry;
use hodei_domain::engine::Approvals;
use hodei_domain::ports::{Heads, TickStore};
use hodei_domain::restart::RestartPolicy;

/// What the tree needs beyond the ports.
#[derive(Clone)]
pub struct TreeConfig {
    /// The local machine as a worker, if it takes jobs.
    pub local_worker: Option<WorkerSpec>,
    /// How approval gates are handled.
    pub approvals: Approvals,
    /// How often and how fast a failed long-lived actor is restarted.
    pub restart_policy: RestartPolicy,
    /// What happens when a long-lived actor fails more often than the policy allows.
    pub escalation: Escalation,
    /// Agents on other machines take jobs: their store and how they are held.
    pub agents: Option<(Arc<dyn AgentStore>, AgentSettings)>,
    /// Where the ticks of schedules are claimed: with it, the tree runs a [`Timer`] that fires
    /// the pipelines' `on.schedule` entries (`hodei server`); without, none fire (`hodei run`).
    pub ticks: Option<Arc<dyn TickStore>>,
    /// Where the timer takes the code of scheduled runs of repositories' pipelines; without,
    /// they run without a checkout.
    pub heads: Option<Arc<dyn Heads>>,
    /// How the timer looks for due ticks.
    pub timer: TimerSettings,
    /// Pools of ephemeral workers: with them, the tree runs a [`PoolManager`].
    pub pools: Option<PoolSettings>,
}

impl TreeConfig {
    /// The local worker and approval mode given; the default restart policy (for the long-lived
    /// actors and for run actors alike); escalation stops the process with exit code 70 (its
    /// own supervisor starts it again, and every unfinished run resumes).
    pub fn new(local_worker: Option<WorkerSpec>, approvals: Approvals) -> TreeConfig {
        TreeConfig {
            local_worker,
            approvals,
            restart_policy: RestartPolicy::default(),
            escalation: exit_on_escalation(),
            agents: None,
            ticks: None,
            heads: None,
            timer: TimerSettings::default(),
            pools: None,
        }
    }
}

/// The running tree: the addresses callers talk to.
#[derive(Clone)]
pub struct Tree {
    pub orchestrator: Addr<Orchestrator>,
    pub bus: Addr<EventBus>,
    pub hub: Addr<LogHub>,
    pub scheduler: Addr<Scheduler>,
    pub workers: Addr<WorkerRegistry>,
    pub provider: Addr<ProviderActor>,
    /// The agent desk, when agents take jobs.
    pub desk: Option<Addr<AgentDesk>>,
    /// The timer of schedules, when [`TreeConfig::ticks`] was given.
    pub timer: Option<Addr<Timer>>,
    /// The worker manager, when [`TreeConfig::pools`] was given.
    pub pools: Option<Addr<PoolManager>>,
    pub ports: Ports,
    /// How often each kind of actor of this tree was restarted.
    pub restarts: Arc<RestartCounter>,
}

/// Starts every long-lived actor, supervised, in dependency order. Must be called inside an
/// actix `System`.
pub fn start_tree(ports: Ports, config: TreeConfig) -> Tree {
    let counter = Arc::new(RestartCounter::default());
    let restarts = |kind: ActorKind| {
        Restarts::new(
            kind,
            config.restart_policy,
            ports.clock.clone(),
            config.escalation.clone(),
            counter.clone(),
        )
    };
    let (faults, r) = (ports.faults.clone(), restarts(ActorKind::EventBus));
    let bus = Supervisor::start(move |_| EventBus::new(faults, r));
    let (logs, faults, r) = (
        ports.logs.clone(),
        ports.faults.clone(),
        restarts(ActorKind::LogHub),
    );
    let hub = Supervisor::start(move |_| LogHub::new(logs, faults, r));
    let (clock, faults, r) = (
        ports.clock.clone(),
        ports.faults.clone(),
        restarts(ActorKind::Scheduler),
    );
    let scheduler = Supervisor::start(move |_| Scheduler::new(clock, faults, r));
    let (for_workers, faults, r) = (
        scheduler.clone(),
        ports.faults.clone(),
        restarts(ActorKind::WorkerRegistry),
    );
    let workers = Supervisor::start(move |_| WorkerRegistry::new(for_workers, faults, r));
    if let Some(worker) = config.local_worker {
        workers.do_send(RegisterWorker {
            worker,
            lease: None,
        });
    }
    let (name, reconcile, r) = (
        ports.provider.name(),
        ports.reconcile.clone(),
        restarts(ActorKind::Provider),
    );
    let provider = Supervisor::start(move |_| ProviderActor::new(name, reconcile, r));
    let agents = config.agents.as_ref().map(|(store, settings)| {
        let (store, logs, hub, workers, settings) = (
            store.clone(),
            ports.logs.clone(),
            hub.clone(),
            workers.clone(),
            *settings,
        );
        let own = DeskOwn {
            clock: ports.clock.clone(),
            faults: ports.faults.clone(),
            restarts: restarts(ActorKind::AgentDesk),
        };
        let for_desk = store.clone();
        let desk =
            Supervisor::start(move |_| AgentDesk::new(for_desk, logs, hub, workers, own, settings));
        AgentPeers {
            desk,
            store: store.clone(),
            lease: settings.lease,
        }
    });
    let orchestrator = {
        let peers = OrchestratorPeers {
            hub: hub.clone(),
            bus: bus.clone(),
            scheduler: scheduler.clone(),
            provider: provider.clone(),
            agents: agents.clone(),
        };
        let runs = RunSettings {
            approvals: config.approvals,
            restart_policy: config.restart_policy,
        };
        let (ports, r) = (ports.clone(), restarts(ActorKind::Orchestrator));
        Supervisor::start(move |_| Orchestrator::new(ports, peers, runs, r))
    };
    if let Some(agents) = &agents {
        agents.desk.do_send(Wire {
            expired: orchestrator.clone().recipient(),
        });
    }
    let heads = config.heads;
    let timer = config.ticks.map(|ticks| {
        let (own, orchestrator, settings, r) = (
            (
                ports.faults.clone(),
                ports.store.clone(),
                ports.clock.clone(),
            ),
            orchestrator.clone(),
            config.timer,
            restarts(ActorKind::Timer),
        );
        Supervisor::start(move |_| Timer::new(own, (ticks, heads), orchestrator, settings, r))
    });
    let pools = config
        .pools
        .filter(|p| !p.pools.is_empty())
        .map(|settings| {
            let (for_pools, clock, r) = (
                scheduler.clone(),
                ports.clock.clone(),
                restarts(ActorKind::PoolManager),
            );
            Supervisor::start(move |_| PoolManager::new(settings, for_pools, clock, r))
        });
    Tree {
        pools,
        restarts: counter,
        timer,
        orchestrator,
        bus,
        hub,
        scheduler,
        workers,
        provider,
        desk: agents.map(|a| a.desk),
        ports,
    }
}
