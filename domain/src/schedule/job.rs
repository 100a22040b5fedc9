//! Jobs as the scheduler sees them: what the caller queues ([`QueuedJob`]), what a placement round
//! decides ([`Placement`]), and the entry the cluster keeps per job while it is queued or placed.
//!
//! A queued job's place in the order is fixed when it is queued: its *rank* is
//! `tick(queued_at) - priority`, lower first, where `tick` counts aging intervals on the clock.
//! Effective priority at `now` is `tick(now) - rank`; every queued job gains one level per tick, so
//! the order of two queued jobs never changes as time passes and no key needs rewriting. Aging
//! matters against jobs queued later: a job queued `n` ticks earlier is ahead of one with up to
//! `n - 1` more priority levels.

use crate::ids::{JobId, RunId, Timestamp, WorkerId};
use crate::model::{Label, Name, Resources};

/// A job waiting for a worker, as the Scheduler actor hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub job: JobId,
    pub run: RunId,
    /// The fair-share key: jobs of equal effective priority are shared out between projects (the
    /// pipeline's name, or whatever groups the runs that should share fairly).
    pub project: Name,
    /// Labels the worker must have, all of them. Order and repeats do not matter.
    pub runs_on: Vec<Label>,
    /// CPU and memory the job takes on its worker besides a slot.
    pub resources: Resources,
    /// Higher goes first: from -100 to 100 in pipelines, any `i32` accepted here.
    pub priority: i32,
    /// At most one job of a concurrency group is placed or running at a time, across all runs.
    pub concurrency: Option<Name>,
    /// Submission order, allocated by the caller; ties are broken by the lower `seq`.
    pub seq: u64,
    /// When the job became ready to run, by the caller's clock. A job queued again after its
    /// worker was removed keeps its first instant (and `seq`), so it keeps its age.
    pub queued_at: Timestamp,
}

/// A decision of [`Cluster::place`](super::Cluster::place): start `job` on `worker`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Placement {
    pub job: JobId,
    pub run: RunId,
    pub worker: WorkerId,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobState {
    /// Waiting in this lane.
    Queued { lane: u32 },
    /// Holding a slot of this worker until it finishes.
    Placed { worker: u32 },
}

/// A queued or placed job. The text of its `QueuedJob` is interned: the class holds `runs_on` and
/// the resources, the project and group tables hold the names.
#[derive(Debug, Clone)]
pub(super) struct JobEntry {
    pub id: JobId,
    pub run: RunId,
    pub class: u32,
    pub project: u32,
    pub group: Option<u32>,
    pub priority: i32,
    /// `tick(queued_at) - priority`: lower goes first.
    pub rank: i64,
    pub seq: u64,
    pub queued_at: Timestamp,
    pub state: JobState,
    /// The worker kept for this job while it starves.
    pub reserved: Option<u32>,
}

impl JobEntry {
    /// Its key in its lane: rank, then submission order, then the index (unique).
    pub(super) fn lane_key(&self, index: u32) -> (i64, u64, u32) {
        (self.rank, self.seq, index)
    }

    pub(super) fn lane(&self) -> Option<u32> {
        match self.state {
            JobState::Queued { lane } => Some(lane),
            JobState::Placed { .. } => None,
        }
    }

    pub(super) fn worker(&self) -> Option<u32> {
        match self.state {
            JobState::Placed { worker } => Some(worker),
            JobState::Queued { .. } => None,
        }
    }
}

/// The aging tick an instant falls in: how many whole `aging_ms` intervals since the epoch.
pub(super) fn tick(at: Timestamp, aging_ms: u64) -> i64 {
    at.0.div_euclid(i64::try_from(aging_ms).unwrap_or(i64::MAX))
}

/// The rank of a job of `priority` queued at `queued_at`.
pub(super) fn rank(queued_at: Timestamp, priority: i32, aging_ms: u64) -> i64 {
    tick(queued_at, aging_ms) - i64::from(priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_count_whole_intervals_also_before_the_epoch() {
        assert_eq!(tick(Timestamp(0), 1000), 0);
        assert_eq!(tick(Timestamp(999), 1000), 0);
        assert_eq!(tick(Timestamp(1000), 1000), 1);
        assert_eq!(tick(Timestamp(-1), 1000), -1);
    }

    #[test]
    fn an_older_job_overtakes_a_later_one_with_fewer_extra_levels_than_ticks_waited() {
        // Queued 3 ticks earlier with priority 0: ahead of priority 2, level with 3, behind 4.
        let old = rank(Timestamp(0), 0, 1000);
        assert!(old < rank(Timestamp(3000), 2, 1000));
        assert_eq!(old, rank(Timestamp(3000), 3, 1000));
        assert!(old > rank(Timestamp(3000), 4, 1000));
    }
}
