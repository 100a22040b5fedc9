//! # hodei-actors
//!
//! The actix actors of Hodei and the typed messages they exchange.
//!
//! ```text
//! Orchestrator      accepts runs; one RunActor per active run; resumes unfinished runs at start
//!  └─ RunActor      walks the DAG of one run (level-triggered reconcile); one JobActor per attempt
//!      └─ JobActor  queued → placed → running → done: drives the provider through the steps
//! Scheduler         holds the cluster state (workers, slots, queue) and places jobs
//! WorkerRegistry    one WorkerActor per worker (the local machine, later agents)
//! LogHub            per-job output: mask secrets → persist → fan out to watchers
//! EventBus          domain events to subscribers (progress display, API, metrics)
//! ProviderActor     owns a provider: reconciles what an earlier life left behind, tracks health
//! ```
//!
//! Actors are thin: their handlers call the pure rules of [`hodei_domain`] (state machines,
//! the run engine's decisions, planning, scheduling, masking) and the ports it defines
//! ([`Ports`]). This crate never imports `hodei-adapters`; the binary hands concrete adapters
//! in at start-up. Every message is in [`messages`].
//!
//! **Durability**: every transition is appended to the store (event and projection in one
//! transaction) before it is announced on the [`bus::EventBus`]. Actor state is a cache of the
//! store: a restarted actor reloads what it needs in `started()`.
//!
//! **Supervision**: long-lived actors are restarted by actix's `Supervisor` when they stop; a
//! panic in a handler or an actor future is contained ([`contain`]) and turned into a stop, so
//! that the supervisor restarts the actor instead of losing it. Restarts follow a
//! [`hodei_domain::restart::RestartPolicy`] ([`supervise`]) and are counted.
//!
//! Start reading at [`orchestrator`], then [`run`] (and `hodei_domain::engine`, which decides
//! for it) and [`job`].

pub mod admission;
pub mod agents;
pub mod bus;
pub mod contain;
pub mod fault;
pub mod job;
pub mod loghub;
pub mod messages;
pub mod orchestrator;
pub mod pools;
pub mod provider;
pub mod record;
pub mod run;
pub mod scheduler;
pub mod secrets;
pub mod supervise;
pub mod timer;
pub mod workers;

use std::sync::Arc;

use hodei_domain::ports::{Clock, FileStore, LogStore, Provider, Reconcile, SecretStore, Store};

/// The outside world, as the actors see it: the ports of the domain with the adapters the binary
/// chose behind them.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub logs: Arc<dyn LogStore>,
    /// Runs the jobs placed on this process's workers, unless [`Ports::worker_providers`]
    /// names another provider for the worker.
    pub provider: Arc<dyn Provider>,
    /// The providers of workers of this process that run their jobs elsewhere (the
    /// Kubernetes worker: pods on a cluster), by worker.
    pub worker_providers: WorkerProviders,
    pub reconcile: Arc<dyn Reconcile>,
    pub clock: Arc<dyn Clock>,
    pub secrets: Arc<dyn SecretStore>,
    /// Where jobs keep their artifacts and caches.
    pub files: Arc<dyn FileStore>,
    /// Panics planned by a test; [`fault::Faults::none`] otherwise.
    pub faults: fault::Faults,
}

/// Providers by worker, for [`Ports::worker_providers`].
pub type WorkerProviders =
    Arc<std::collections::BTreeMap<hodei_domain::ids::WorkerId, Arc<dyn Provider>>>;

impl Ports {
    /// The ports of a job attempt placed on `worker`: its provider is the worker's.
    pub fn for_worker(&self, worker: &hodei_domain::ids::WorkerId) -> Ports {
        let mut ports = self.clone();
        if let Some(provider) = self.worker_providers.get(worker) {
            ports.provider = provider.clone();
        }
        ports
    }
}
