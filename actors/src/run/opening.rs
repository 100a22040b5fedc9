//! A new run's opening as the orchestrator hands it to the store: [`engine::open`] on the run's
//! shared plan, keeping what the store wrote so that it can be announced once committed.

use std::sync::{Arc, Mutex};

use hodei_domain::engine::{self, Approvals};
use hodei_domain::ids::Timestamp;
use hodei_domain::plan::ResolvedRun;
use hodei_domain::ports::{Opening, RunRecord};
use hodei_domain::state::DomainEvent;

use super::SharedPlan;

/// The opening of a run about to be created.
pub struct RunOpening {
    plan: Arc<SharedPlan>,
    resolved: ResolvedRun,
    approvals: Approvals,
    now: Timestamp,
    /// What the last call of [`Opening::open`] returned: what the store wrote if it committed.
    written: Mutex<Vec<DomainEvent>>,
}

impl RunOpening {
    pub fn new(
        plan: Arc<SharedPlan>,
        resolved: ResolvedRun,
        approvals: Approvals,
        now: Timestamp,
    ) -> RunOpening {
        RunOpening {
            plan,
            resolved,
            approvals,
            now,
            written: Mutex::default(),
        }
    }

    /// The transitions written with the run, to announce once the store has committed it.
    pub fn take_written(&self) -> Vec<DomainEvent> {
        std::mem::take(&mut *self.written.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::fmt::Debug for RunOpening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOpening")
            .field("pipeline", &self.plan.pipeline)
            .field("approvals", &self.approvals)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl Opening for RunOpening {
    fn open(&self, record: &mut RunRecord) -> Vec<DomainEvent> {
        let events = engine::open(&self.plan, &self.resolved, self.approvals, self.now, record);
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = events.clone();
        events
    }
}
