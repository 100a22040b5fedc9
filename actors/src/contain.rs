//! Panic containment and restart bookkeeping for supervised actors.
//!
//! actix restarts a supervised actor when it *stops*, not when a handler panics: a panic drops
//! the actor's task and closes its mailbox for good. Handlers and actor futures that call code
//! which might panic run through [`guard`] / [`guard_future`], which turn a panic into an error;
//! the actor then stops itself and its supervisor restarts it, and `started()` reloads its state.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;

/// A panic caught inside an actor, with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("panicked: {message}")]
pub struct Panicked {
    pub message: String,
}

fn message(payload: Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs `f`, turning a panic into [`Panicked`].
pub fn guard<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Panicked {
        message: message(payload),
    })
}

/// Awaits `future`, turning a panic while polling it into [`Panicked`].
pub async fn guard_future<T>(future: impl Future<Output = T>) -> Result<T, Panicked> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|payload| Panicked {
            message: message(payload),
        })
}

/// Restarts of the actors of one supervision tree, by actor kind; read by metrics and tests.
#[derive(Debug, Default)]
pub struct RestartCounter {
    orchestrator: AtomicU64,
    run: AtomicU64,
    job: AtomicU64,
    scheduler: AtomicU64,
    loghub: AtomicU64,
    bus: AtomicU64,
    workers: AtomicU64,
    provider: AtomicU64,
    timer: AtomicU64,
    agent_desk: AtomicU64,
    pool_manager: AtomicU64,
}

/// The kinds of actors whose restarts are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    Orchestrator,
    Run,
    Job,
    Scheduler,
    LogHub,
    EventBus,
    WorkerRegistry,
    Provider,
    Timer,
    AgentDesk,
    PoolManager,
}

impl ActorKind {
    /// The name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ActorKind::Orchestrator => "orchestrator",
            ActorKind::Run => "run",
            ActorKind::Job => "job",
            ActorKind::Scheduler => "scheduler",
            ActorKind::LogHub => "loghub",
            ActorKind::EventBus => "event_bus",
            ActorKind::WorkerRegistry => "worker_registry",
            ActorKind::Provider => "provider",
            ActorKind::Timer => "timer",
            ActorKind::AgentDesk => "agent_desk",
            ActorKind::PoolManager => "pool_manager",
        }
    }
}

impl RestartCounter {
    fn slot(&self, kind: ActorKind) -> &AtomicU64 {
        match kind {
            ActorKind::Orchestrator => &self.orchestrator,
            ActorKind::Run => &self.run,
            ActorKind::Job => &self.job,
            ActorKind::Scheduler => &self.scheduler,
            ActorKind::LogHub => &self.loghub,
            ActorKind::EventBus => &self.bus,
            ActorKind::WorkerRegistry => &self.workers,
            ActorKind::Provider => &self.provider,
            ActorKind::Timer => &self.timer,
            ActorKind::AgentDesk => &self.agent_desk,
            ActorKind::PoolManager => &self.pool_manager,
        }
    }

    /// Counts and logs one restart.
    pub fn record(&self, kind: ActorKind) {
        let total = self.slot(kind).fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            actor = kind.name(),
            restarts = total,
            "Restarting a supervised actor."
        );
    }

    /// Restarts of one kind so far.
    pub fn get(&self, kind: ActorKind) -> u64 {
        self.slot(kind).load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_an_error_with_its_message() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result = guard(|| -> u32 { panic!("boom {}", 7) });
        std::panic::set_hook(prev);
        assert_eq!(
            result,
            Err(Panicked {
                message: "boom 7".into()
            })
        );
        assert_eq!(guard(|| 3), Ok(3));
    }
}
