//! A run as its actor holds it, read from the store: its plan, its resolved inputs, its
//! machines and its secrets.

use std::sync::Arc;

use hodei_domain::engine::{JobSlot, Restored, restore};
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::plan::{InputError, JobRef, ResolvedRun};
use hodei_domain::ports::{RunRecord, StoreError};
use hodei_domain::state::RunMachine;

use super::plans::{SharedPlan, shared_plan};
use crate::Ports;

/// Why a run cannot be loaded: it resumes at the next start of Hodei.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the run")]
    Store(#[from] StoreError),
    #[error("{run} is not in the store")]
    NotFound { run: RunId },
    #[error("the stored definition of pipeline `{pipeline}` no longer loads")]
    Definition { pipeline: String },
    #[error("the run's inputs no longer fit its pipeline: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Inputs(Vec<InputError>),
    #[error("{run} has {stored} jobs, its plan {planned}")]
    Jobs {
        run: RunId,
        stored: usize,
        planned: usize,
    },
    #[error("{reason}")]
    Secret { reason: String },
}

/// A run as its actor holds it.
pub(super) struct Loaded {
    pub plan: Arc<SharedPlan>,
    pub resolved: Arc<ResolvedRun>,
    pub machine: RunMachine,
    /// The plan's jobs, in the plan's order.
    pub jobs: Vec<JobSlot>,
    /// The job of the pipeline's post hooks, if it has any.
    pub post: Option<JobSlot>,
    /// The run's secrets, by name.
    pub secrets: Vec<(String, String)>,
}

impl Loaded {
    pub fn slot(&self, job: JobRef) -> Option<&JobSlot> {
        match job {
            JobRef::Planned(i) => self.jobs.get(i),
            JobRef::Post => self.post.as_ref(),
        }
    }

    pub fn slot_mut(&mut self, job: JobRef) -> Option<&mut JobSlot> {
        match job {
            JobRef::Planned(i) => self.jobs.get_mut(i),
            JobRef::Post => self.post.as_mut(),
        }
    }

    /// The job with this id.
    pub fn find(&self, id: JobId) -> Option<JobRef> {
        if let Some(i) = self.jobs.iter().position(|s| s.id == id) {
            return Some(JobRef::Planned(i));
        }
        self.post
            .as_ref()
            .filter(|p| p.id == id)
            .map(|_| JobRef::Post)
    }

    /// Every job of the run: the plan's, then the post-hooks job.
    pub fn slots_mut(&mut self) -> impl Iterator<Item = &mut JobSlot> {
        self.jobs.iter_mut().chain(self.post.as_mut())
    }
}

/// Reads a run and rebuilds its plan and machines.
pub(super) async fn load_run(ports: &Ports, run: RunId) -> Result<Loaded, LoadError> {
    let record = ports
        .store
        .run(run)
        .await?
        .ok_or(LoadError::NotFound { run })?;
    with_secrets(ports, record).await
}

/// Rebuilds a run from its record, with the values of its secrets.
pub(super) async fn with_secrets(ports: &Ports, record: RunRecord) -> Result<Loaded, LoadError> {
    let secrets = crate::secrets::run_secrets(ports, &record)
        .await
        .map_err(|reason| LoadError::Secret { reason })?;
    loaded_from(record, secrets)
}

/// Rebuilds a run's plan and machines from its record and its secrets' values.
fn loaded_from(record: RunRecord, secrets: Vec<(String, String)>) -> Result<Loaded, LoadError> {
    let run = record.id;
    let plan = shared_plan(&record.source).ok_or_else(|| LoadError::Definition {
        pipeline: record.pipeline.clone(),
    })?;
    let resolved = plan
        .resolve(record.inputs.clone())
        .map_err(LoadError::Inputs)?;
    let Some(Restored {
        run: machine,
        jobs,
        post,
    }) = restore(&plan, &record)
    else {
        return Err(LoadError::Jobs {
            run,
            stored: record.jobs.len(),
            planned: plan.run_jobs().len(),
        });
    };
    Ok(Loaded {
        resolved: Arc::new(resolved),
        machine,
        plan,
        jobs,
        post,
        secrets,
    })
}
