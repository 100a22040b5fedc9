//! The placement round: [`Cluster::place`] decides which queued jobs start on which workers.
//!
//! A round has two phases:
//! 1. **Reservations.** Each job holding a worker reservation (it starved) is placed on its
//!    reserved worker as soon as it fits there and its concurrency group is free.
//! 2. **The queue.** `ready.first()` is the best job of the best class that is not blocked. If a
//!    worker fits it, it is placed; if none does, its class is marked blocked and leaves `ready`
//!    (O(log classes)): no job of it is looked at again until capacity frees on a worker it could
//!    use ([`Cluster::worker_changed`]). Each step places a job or blocks a class, so a round ends.
//!
//! Starvation is checked lazily: a blocked class's best job starves at `queued_at +
//! reserve_after`; `next_reserve_check` holds the earliest such instant, and only a round at or
//! after it scans the blocked classes to reserve workers.

use super::Cluster;
use super::job::{JobState, Placement};
use super::worker::{AvailKey, WorkerState};
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
        if now >= self.next_reserve_check {
            self.reserve_starving(now);
        }
        self.place_reserved(&mut placed, max);
        while placed.len() < max {
            let Some(&key) = self.ready.first() else {
                break;
            };
            let job = self.lane_head(key.lane);
            let class = self.lanes[key.lane].class;
            match self.find_worker(class, job) {
                Some(worker) => placed.push(self.assign(job, worker)),
                None => self.set_blocked(class, true),
            }
        }
        if now >= self.next_reserve_check {
            self.reserve_starving(now);
        }
        placed
    }

    /// Phase 1: reserved jobs that fit their reserved worker, best first.
    fn place_reserved(&mut self, placed: &mut Vec<Placement>, max: usize) {
        if self.reservations.is_empty() {
            return;
        }
        let mut reserved = self.reservations.clone();
        reserved.sort_by_key(|&job| self.jobs[job].lane_key(job));
        for job in reserved {
            if placed.len() >= max {
                break;
            }
            let entry = &self.jobs[job];
            let worker = entry.reserved.expect("a listed reservation is held");
            let group_free = entry
                .group
                .is_none_or(|group| self.groups[group].holder.is_none());
            let demand = self.classes[entry.class].demand;
            if group_free && self.workers[worker].fits_now(demand) {
                placed.push(self.assign(job, worker));
            }
        }
    }

    /// The best worker for a job of `class`: among the available workers of the eligible pools
    /// (and the job's own reserved worker) that fit it, the one with the most free slots, then the
    /// one registered first.
    fn find_worker(&self, class: u32, job: u32) -> Option<u32> {
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
        if let Some(worker) = self.jobs[job].reserved {
            let entry = &self.workers[worker];
            if entry.fits_now(demand) {
                let key = entry.avail_key(worker);
                best = Some(best.map_or(key, |best| best.min(key)));
            }
        }
        best.map(|(_, _, worker)| worker)
    }

    /// Places a queued job on a worker that fits it and updates everything that depends on it.
    fn assign(&mut self, job: u32, worker: u32) -> Placement {
        let lane = self.pull_job(job);
        let entry = &mut self.jobs[job];
        entry.state = JobState::Placed { worker };
        let (class, project, group) = (entry.class, entry.project, entry.group);
        let demand = self.classes[class].demand;
        let worker_entry = &mut self.workers[worker];
        debug_assert!(worker_entry.fits_now(demand));
        worker_entry.used_slots += 1;
        worker_entry.used_cpu += demand.cpu;
        worker_entry.used_memory += demand.memory;
        worker_entry.jobs.push(job);
        if self.jobs[job].reserved.is_some() {
            // Also refreshes `worker` when it is the reserved one.
            self.cancel_reservation(job);
        }
        self.refresh_available(worker);
        self.projects[project].running += 1;
        self.rekey_project(project);
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

    /// Reserves a worker for the best job of every blocked class that starves and has none, best
    /// job first, and sets the next instant worth checking again.
    fn reserve_starving(&mut self, now: Timestamp) {
        let mut next = Timestamp(i64::MAX);
        // Best first: workers go to the starving jobs in the policy's order, so the job that
        // leads the whole queue is never kept waiting by reservations for others.
        let mut starving: Vec<(super::queue::LaneKey, u32, u32)> = self
            .classes
            .iter()
            .filter(|(_, class)| class.blocked && class.reservation.is_none())
            .filter_map(|(index, class)| {
                let head = class.head?;
                Some((head, index, self.lane_head(head.lane)))
            })
            .collect();
        starving.sort_unstable();
        for (_, class, job) in starving {
            let at = self.starving_at(job);
            if now < at {
                next = next.min(at);
            } else {
                // When no worker can be kept for it, a change of workers or a released
                // reservation (both reset `next_reserve_check`) is what may help.
                self.reserve(class, job);
            }
        }
        self.next_reserve_check = next;
    }

    /// Keeps a worker for a starving job: among the ready, unreserved workers of the eligible
    /// pools that could hold it when idle, the one with the fewest jobs (the soonest to drain),
    /// then the one registered first. Returns whether one was found.
    fn reserve(&mut self, class: u32, job: u32) -> bool {
        let class_entry = &self.classes[class];
        let demand = class_entry.demand;
        let mut best: Option<(usize, u64, u32)> = None;
        for &pool in &self.needs[class_entry.need].pools {
            for &worker in &self.pools[pool].workers {
                let entry = &self.workers[worker];
                if entry.spec.state == WorkerState::Ready
                    && entry.reserved_for.is_none()
                    && entry.could_hold(demand)
                {
                    let key = (entry.jobs.len(), entry.reg, worker);
                    best = Some(best.map_or(key, |best| best.min(key)));
                }
            }
        }
        let Some((_, _, worker)) = best else {
            return false;
        };
        self.workers[worker].reserved_for = Some(job);
        self.jobs[job].reserved = Some(worker);
        self.classes[class].reservation = Some(job);
        self.reservations.push(job);
        self.refresh_available(worker);
        true
    }
}
