//! The placement round: [`Cluster::place`] decides which queued jobs start on which workers.
//!
//! A round has two phases:
//! 1. **Reservations.** Each job holding a worker reservation (it starved) is placed on its
//!    reserved worker as soon as it fits there and its concurrency group is free.
//! 2. **The queue.** `ready.first()` is the class that is not blocked with the lowest bound of its
//!    best job's key. If no worker fits its jobs, it is marked blocked and leaves `ready`
//!    (O(log classes)): no job of it is looked at again until capacity frees on a worker it could
//!    use ([`Cluster::worker_changed`]). Otherwise its best job is computed; if its key is the
//!    bound, no class can have a better job and it is placed; if not, the bound is raised to it
//!    and the round looks again. Each step places a job, blocks a class or raises a bound to an
//!    exact key (at most once per class between placements), so a round ends.
//!
//! Before and after the two phases, the blocked classes whose best job starves reserve workers
//! (`starve.rs`).

use super::Cluster;
use super::job::{JobState, Placement};
use super::worker::AvailKey;
use crate::ids::Timestamp;

impl Cluster {
    /// Places up to `max` queued jobs, best first, and returns the decisions in the order they
    /// were made. The caller starts each job on its worker and later reports it
    /// [`finished`](Cluster::finished). `now` is the caller's clock: it decides which waiting jobs
    /// starve (see [`Policy::reserve_after`](super::Policy::reserve_after)).
    ///
    /// Cost: O(log n) per placement plus O(pools eligible) per class tried, where n is the number
    /// of queued jobs; a class that fits nowhere costs one try per round in which capacity freed
    /// for it, not one per job.
    pub fn place(&mut self, now: Timestamp, max: usize) -> Vec<Placement> {
        let mut placed = Vec::new();
        if max == 0 {
            return placed;
        }
        self.reserve_starving(now);
        self.place_reserved(&mut placed, max);
        while placed.len() < max {
            let Some((bound, class)) = self.ready.first() else {
                break;
            };
            // Placeability first: it is the same for every job of the class, and most classes a
            // round looks at are full.
            let Some(worker) = self.find_worker(class) else {
                self.set_blocked(class, true);
                continue;
            };
            let head = if self.classes[class].exact {
                bound
            } else {
                self.class_head(class)
                    .expect("a class in `ready` has a lane")
            };
            if head != bound {
                // Project counts went up since the bound was set: store the exact key and take
                // the class only if it still comes first.
                self.set_bound(class, head);
                if self.ready.first() != Some((head, class)) {
                    continue;
                }
            }
            let job = self.lane_head(head.lane);
            placed.push(self.assign(job, worker));
        }
        self.reserve_starving(now);
        placed
    }

    /// Places the queued job `job` on `worker` whatever is free there, and returns the
    /// placement: a job that already runs on that worker (an agent that went on while the
    /// server restarted) takes its place back, even when other jobs were placed there meanwhile
    /// (the worker is then over-committed until its jobs end; the ones placed meanwhile wait on
    /// it). `None` if the job is not queued or the worker is unknown.
    pub fn place_back(
        &mut self,
        job: crate::ids::JobId,
        worker: &crate::ids::WorkerId,
    ) -> Option<Placement> {
        let job = self.find_job(job).ok()?;
        let worker = *self.worker_ids.get(worker)?;
        self.jobs[job].lane()?;
        Some(self.occupy(job, worker))
    }

    /// The best worker for a job of `class`: among the available workers of the eligible pools
    /// that fit it, the one with the most free slots, then the one registered first. (A reserved
    /// worker is not available; its job is placed on it by `place_reserved`.)
    fn find_worker(&self, class: u32) -> Option<u32> {
        let class = &self.classes[class];
        let demand = class.demand;
        let mut best: Option<AvailKey> = None;
        for &pool in &self.needs[class.need].pools {
            for &key in &self.pools[pool].available {
                if best.is_some_and(|best| key >= best) {
                    break;
                }
                if self.workers[key.2].fits_now(demand) {
                    best = Some(key);
                    break;
                }
            }
        }
        best.map(|(_, _, worker)| worker)
    }

    /// Places a queued job on a worker that fits it and updates everything that depends on it.
    pub(super) fn assign(&mut self, job: u32, worker: u32) -> Placement {
        debug_assert!(self.workers[worker].fits_now(self.classes[self.jobs[job].class].demand));
        self.occupy(job, worker)
    }

    /// [`assign`](Cluster::assign) without asking whether the job fits: for a placement that
    /// already exists (a job that runs there), when the cluster is rebuilt.
    pub(super) fn occupy(&mut self, job: u32, worker: u32) -> Placement {
        let lane = self.pull_job(job);
        let entry = &mut self.jobs[job];
        entry.state = JobState::Placed { worker };
        let (class, project, group) = (entry.class, entry.project, entry.group);
        let demand = self.classes[class].demand;
        let worker_entry = &mut self.workers[worker];
        worker_entry.used_slots += 1;
        worker_entry.used_cpu += demand.cpu;
        worker_entry.used_memory += demand.memory;
        worker_entry.jobs.push(job);
        if self.jobs[job].reserved.is_some() {
            // Also refreshes `worker` when it is the reserved one.
            self.cancel_reservation(job);
        }
        self.refresh_available(worker);
        self.running[project as usize] += 1;
        self.raised_running(project);
        if let Some(group) = group {
            debug_assert!(self.groups[group].holder.is_none());
            self.groups[group].holder = Some(job);
            self.rekey_group(group);
        }
        self.drop_lane_if_empty(lane);
        let entry = &self.jobs[job];
        Placement {
            job: entry.id,
            run: entry.run,
            worker: self.workers[worker].spec.id.clone(),
        }
    }
}
