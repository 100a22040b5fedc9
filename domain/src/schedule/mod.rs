//! # Scheduling policy
//!
//! Which queued job starts on which worker. [`Cluster`] holds the workers, what they have in use
//! and the queue; the Scheduler actor keeps one, feeds it the events it hears ([`add_worker`],
//! [`update_worker`], [`remove_worker`], [`enqueue`], [`dequeue`], [`finished`]) and calls
//! [`place`] to get the [`Placement`]s to start. [`explain`], [`position`] and [`candidates`]
//! answer the queue view of the API. Pure: no I/O, no clock (time comes in as `now` and
//! `queued_at`), no randomness.
//!
//! Where to start reading: this page (the policy), then [`Cluster::place`] in `place.rs`, then
//! the structures that make it fast: `queue.rs` (lanes and classes), `order.rs` (the best job of
//! each class and the best class) and `worker.rs` (pools of workers by label set).
//! `cluster.rs` holds the state and the event calls, `explain.rs` the queue view, `starve.rs`
//! the reservations against starvation; `tests.rs`, `explain_tests.rs` and `props.rs` (with
//! `reference.rs`) the behaviour and property tests.
//!
//! ## The policy
//!
//! **Eligibility.** A job may go to a worker that is [`Ready`](WorkerState::Ready) (not
//! draining, not offline), whose labels include every label of the job's `runs_on`, that has a
//! free slot, and whose free CPU and free memory cover the job's request in each dimension the
//! worker counts (a worker whose `capacity` leaves a dimension `None` does not count it; a job
//! that requests nothing in a dimension takes nothing of it). Free means capacity minus the
//! requests of the jobs placed on it and not finished.
//!
//! **Order.** Queued jobs are ranked by, in turn:
//! 1. *effective priority*, higher first: `priority + tick(now) - tick(queued_at)`, where
//!    `tick(t) = floor(t / aging_interval)`; a job gains one level each time the clock passes a
//!    multiple of [`Policy::aging_interval`] while it waits;
//! 2. *fair share*, among equal effective priorities: the job whose project has the fewest jobs
//!    running (placed and not finished, counting the placements made earlier in the same call)
//!    first, so one project's burst interleaves with the others' jobs;
//! 3. *submission order*: the lower `seq` first.
//!
//! All queued jobs age at the same rate, so time never reorders two queued jobs; aging acts
//! against jobs queued later: a job queued `n` ticks before another is ahead of it unless the
//! other has at least `n + 1` more priority levels (at `n` more they tie and fair share decides).
//!
//! **Placement.** [`place`] repeatedly takes the first job in that order that can be placed now
//! (eligible worker with room, concurrency group free) and places it, until `max` placements or
//! nothing else can be placed. Jobs that cannot be placed are passed over: they do not hold back
//! the jobs behind them (no head-of-line blocking). The worker chosen is, among the eligible
//! workers with room for the job, the one with the most free slots (spreading load), then the one
//! registered first.
//!
//! **Concurrency groups.** A job with `concurrency: G` is placed only when no job of `G` is placed
//! or running; it holds `G` from its placement until it is reported finished or its worker is
//! removed. The group is across all runs and projects.
//!
//! **Starvation.** Passing over a job that does not fit could starve it: a job needing a whole
//! 8-CPU worker never finds one free while 1-CPU jobs keep filling every freed CPU. So when the
//! first job in the order of a class (same `runs_on` and resources) fits no worker and has waited
//! at least [`Policy::reserve_after`] since `queued_at` (judged at the `now` of a round), it
//! *reserves* a worker: among the ready workers with its labels that could hold it when idle and
//! are not reserved, the one with the fewest jobs (soonest drained), then the one registered
//! first. Starving jobs reserve in the policy's order, the best first, so the job that leads the
//! queue never waits on the reservations of jobs behind it longer than one of them takes to run.
//! A reserved worker takes no other job. The reserving job is placed on it, before the ordered
//! pass of a round, as soon as it fits there and its group is free, or elsewhere if a worker
//! fits it first. At most one job per class holds a reservation; it is dropped when the job is
//! placed or dequeued, or the worker is updated or removed (the job reserves again if it still
//! starves).
//!
//! **Jobs no worker can take** (labels no worker has, more CPU or memory than any worker with
//! the labels offers) stay queued and cost nothing; [`explain`] says why, and the caller decides
//! whether to fail them.
//!
//! ## Guarantees
//!
//! - Never over-committed: a placement never takes a worker beyond its slots, CPU or memory, and
//!   never goes to a worker that is not ready or lacks a label of `runs_on`.
//! - At most one job of a concurrency group is placed or running at any time.
//! - Each placement of the ordered pass is the first job in the order that can be placed at that
//!   moment (reserved workers aside).
//! - Liveness: a queued job that some ready worker with its labels could hold is placed
//!   eventually, however many jobs are queued after it. Jobs queued more than `(highest priority -
//!   its priority)` ticks after it rank behind it, so finitely many jobs are ever ahead of it;
//!   each of those is placed or dequeued in turn. Once it starves and leads the starving jobs it
//!   gets the next worker reservation to free, and its reserved worker drains (it takes nothing
//!   else) until the job fits.
//! - Deterministic: the same calls with the same arguments give the same placements.
//!
//! ## Assumptions
//!
//! - Every placed job is eventually reported [`finished`] (or its worker removed): the liveness
//!   argument waits on running jobs to end, and a worker that stays [`Ready`](WorkerState::Ready)
//!   with its labels and capacity.
//! - `seq` is unique per job and increases with submission; `queued_at` is kept when a job is
//!   queued again. `now` does not run backwards (if it does, starvation is judged later; safety is
//!   unaffected).
//!
//! ## Errors
//!
//! [`ScheduleError`]: a worker registered twice or unknown, a job queued twice or unknown, a
//! placed job dequeued or a queued job reported finished. A failed call changes nothing.
//!
//! ## Cost
//!
//! With n queued jobs: placing a job is O(log n) for its lane and class, O(log classes) for the
//! order of classes, a scan of the lanes tied at its class's best rank when that class's best
//! job changed, and a comparison per lane of its project (fair share); a finish is O(log n) plus
//! a comparison per lane of the job's project and a check per class the worker's pool serves.
//! A class that fits nowhere is skipped at no cost until room frees on a worker it could use,
//! whatever the number of its jobs. A queued job takes about 160 bytes. [`explain`] is
//! O(workers), [`position`] O(n). Figures for 1,000 workers and 100,000 queued jobs are in
//! `docs/performance.md` (`cargo bench --bench scheduler`).
//!
//! [`add_worker`]: Cluster::add_worker
//! [`update_worker`]: Cluster::update_worker
//! [`remove_worker`]: Cluster::remove_worker
//! [`enqueue`]: Cluster::enqueue
//! [`dequeue`]: Cluster::dequeue
//! [`finished`]: Cluster::finished
//! [`place`]: Cluster::place
//! [`explain`]: Cluster::explain
//! [`position`]: Cluster::position
//! [`candidates`]: Cluster::candidates

mod cluster;
mod explain;
mod index;
mod job;
mod order;
mod place;
mod queue;
mod starve;
mod worker;

#[cfg(test)]
mod explain_tests;
#[cfg(test)]
mod props;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use cluster::Cluster;
pub use explain::WaitReason;
pub use job::{Placement, QueuedJob};
pub use worker::{Usage, Worker, WorkerState};

use crate::ids::{JobId, WorkerId};

/// The tunable parts of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A waiting job gains one level of effective priority per interval (counted in whole
    /// intervals of the clock; less than 1 ms counts as 1 ms). With the default of one minute, a
    /// job of priority 0 overtakes later jobs of priority 100 after 100 minutes.
    pub aging_interval: Duration,
    /// A job that waited this long and fits no worker reserves one (see the module doc).
    pub reserve_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            aging_interval: Duration::from_secs(60),
            reserve_after: Duration::from_secs(10 * 60),
        }
    }
}

/// A call the cluster refuses; it changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("worker `{worker}` is already registered; update it instead")]
    DuplicateWorker { worker: WorkerId },
    #[error("worker `{worker}` is not registered")]
    UnknownWorker { worker: WorkerId },
    #[error("{job} is already queued or placed; a retry needs a new job id")]
    DuplicateJob { job: JobId },
    #[error("{job} is neither queued nor placed")]
    UnknownJob { job: JobId },
    #[error("{job} is placed on worker `{worker}`, not queued; report it finished instead")]
    AlreadyPlaced { job: JobId, worker: WorkerId },
    #[error("{job} is still queued, not placed; dequeue it instead")]
    StillQueued { job: JobId },
}
