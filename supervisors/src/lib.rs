//! # hodei-supervisors
//!
//! The supervision tree of Hodei: which actors run, in which order they start, and who restarts
//! whom.
//!
//! ```text
//! start_tree
//!  ├─ EventBus        supervised (actix Supervisor): restarted when it stops, state kept
//!  ├─ LogHub          supervised: maskers and watchers survive a restart
//!  ├─ Scheduler       supervised: the cluster state survives a restart
//!  ├─ WorkerRegistry  supervised; registers the local worker
//!  ├─ ProviderActor   supervised; reaps what an earlier Hodei left running
//!  └─ Orchestrator    supervised; reaps, resumes unfinished runs, then accepts new ones
//!       └─ RunActor   one per active run, restarted by the orchestrator with backoff
//!            │        (hodei_domain::restart policy), escalated after too many restarts
//!            └─ JobActor  one per attempt; a crash makes its run actor reload from the store
//! ```
//!
//! The order matters: the bus and the hub exist before anything can publish or print; the
//! scheduler before workers register; the provider before the orchestrator asks it to reap; and
//! the orchestrator resumes every unfinished run before it accepts a new one.

use actix::{Addr, Supervisor};
use hodei_actors::Ports;
use hodei_actors::bus::EventBus;
use hodei_actors::loghub::LogHub;
use hodei_actors::messages::WorkerSpec;
use hodei_actors::orchestrator::Orchestrator;
use hodei_actors::provider::ProviderActor;
use hodei_actors::run::Approvals;
use hodei_actors::scheduler::Scheduler;
use hodei_actors::workers::{RegisterWorker, WorkerRegistry};

/// What the tree needs beyond the ports.
#[derive(Debug, Clone)]
pub struct TreeConfig {
    /// The local machine as a worker, if it takes jobs.
    pub local_worker: Option<WorkerSpec>,
    /// How approval gates are handled.
    pub approvals: Approvals,
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
    pub ports: Ports,
}

/// Starts every long-lived actor, supervised, in dependency order. Must be called inside an
/// actix `System`.
pub fn start_tree(ports: Ports, config: TreeConfig) -> Tree {
    let bus = Supervisor::start(|_| EventBus::default());
    let logs = ports.logs.clone();
    let hub = Supervisor::start(move |_| LogHub::new(logs));
    let clock = ports.clock.clone();
    let scheduler = Supervisor::start(move |_| Scheduler::new(clock));
    let for_workers = scheduler.clone();
    let workers = Supervisor::start(move |_| WorkerRegistry::new(for_workers));
    if let Some(worker) = config.local_worker {
        workers.do_send(RegisterWorker {
            worker,
            lease: None,
        });
    }
    let (name, reconcile) = (ports.provider.name(), ports.reconcile.clone());
    let provider = Supervisor::start(move |_| ProviderActor::new(name, reconcile));
    let orchestrator = {
        let (ports, hub, bus, scheduler, provider) = (
            ports.clone(),
            hub.clone(),
            bus.clone(),
            scheduler.clone(),
            provider.clone(),
        );
        let approvals = config.approvals;
        Supervisor::start(move |_| {
            Orchestrator::new(ports, hub, bus, scheduler, provider, approvals)
        })
    };
    Tree {
        orchestrator,
        bus,
        hub,
        scheduler,
        workers,
        provider,
        ports,
    }
}
