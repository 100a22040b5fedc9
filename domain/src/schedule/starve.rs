//! Starvation: worker reservations for jobs that waited too long and fit nowhere.
//!
//! Passing over a job that does not fit is what keeps the queue moving, and what could starve a
//! large job forever while small ones take every freed slot. So a class whose best job has waited
//! [`Policy::reserve_after`](super::Policy::reserve_after) while the class is blocked reserves a
//! worker for that job; the reserved worker takes nothing else and drains until the job fits.
//!
//! Everything here is event-driven, so that a round costs nothing when nothing changed:
//! - `watch` holds `(instant, class)`: a blocked class to look at once its best job may starve.
//!   A class is watched when it becomes blocked, when its first lane changes while it is
//!   blocked, and when its reservation is released. Entries are checked when they come due (the
//!   class may have been unblocked, reserved or dropped since: then nothing happens).
//! - `awaiting` holds the starving classes for which no worker could be reserved (all the
//!   workers that could hold the job are kept for others, or not ready): they are watched again
//!   when a worker may become reservable (a reservation released, a worker added or updated).
//! - `due` holds the reserved jobs whose worker got room or whose group was freed since the last
//!   round: only they are tried in phase 1 of a round.

use std::cmp::Reverse;

use super::Cluster;
use super::job::Placement;
use super::queue::LaneKey;
use super::worker::WorkerState;
use crate::ids::Timestamp;

impl Cluster {
    /// Phase 1 of a round: the reserved jobs that may fit their reserved worker now, best first.
    pub(super) fn place_reserved(&mut self, placed: &mut Vec<Placement>, max: usize) {
        if self.due.is_empty() {
            return;
        }
        let mut due = std::mem::take(&mut self.due);
        // An index may have been reused since it was listed: keep what is a reservation now.
        due.retain(|&job| {
            self.jobs
                .get(job)
                .is_some_and(|entry| entry.reserved.is_some())
        });
        due.sort_unstable_by_key(|&job| self.jobs[job].lane_key(job));
        due.dedup();
        for (i, &job) in due.iter().enumerate() {
            if placed.len() >= max {
                self.due.extend_from_slice(&due[i..]);
                break;
            }
            let entry = &self.jobs[job];
            let worker = entry.reserved.expect("kept above");
            let group_free = entry
                .group
                .is_none_or(|group| self.groups[group].holder.is_none());
            let demand = self.classes[entry.class].demand;
            if group_free && self.workers[worker].fits_now(demand) {
                placed.push(self.assign(job, worker));
            }
        }
    }

    /// Reserves workers for the watched classes whose best job starves at `now`, best job first:
    /// workers go to starving jobs in the policy's order, so the job that leads the queue is never
    /// kept waiting by the reservations of jobs behind it.
    pub(super) fn reserve_starving(&mut self, now: Timestamp) {
        let mut starving: Vec<(LaneKey, u32, u32)> = Vec::new();
        while let Some(&Reverse((at, class))) = self.watch.peek() {
            if at > now {
                break;
            }
            self.watch.pop();
            // An index may have been reused, or the class watched again from an earlier instant.
            let Some(entry) = self.classes.get_mut(class) else {
                continue;
            };
            if entry.watched_at != Some(at) {
                continue;
            }
            entry.watched_at = None;
            if !entry.blocked || entry.reservation.is_some() || entry.awaiting {
                continue;
            }
            if self.needs[entry.need].pools.is_empty() {
                // No worker has its labels: nothing to reserve until one is added.
                self.classes[class].awaiting = true;
                self.awaiting.push(class);
                continue;
            }
            let Some(head) = self.class_head(class) else {
                continue;
            };
            let job = self.lane_head(head.lane);
            let deadline = self.starving_at(job);
            if now < deadline {
                self.watch_from(class, deadline);
            } else {
                starving.push((head, class, job));
            }
        }
        starving.sort_unstable();
        starving.dedup_by_key(|&mut (_, class, _)| class);
        for (_, class, job) in starving {
            if !self.reserve(class, job) {
                self.classes[class].awaiting = true;
                self.awaiting.push(class);
            }
        }
    }

    /// Keeps a worker for a starving job: among the ready, unreserved workers of the eligible
    /// pools that could hold it when idle, the one with the fewest jobs (the soonest to drain),
    /// then the one registered first. Returns whether one was found. O(eligible workers).
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
        self.due.push(job);
        self.refresh_available(worker);
        true
    }

    /// Drops a job's worker reservation; the worker takes other jobs again, and may be reserved
    /// for another starving job.
    pub(super) fn cancel_reservation(&mut self, job: u32) {
        let Some(worker) = self.jobs[job].reserved.take() else {
            return;
        };
        self.workers[worker].reserved_for = None;
        let class = self.jobs[job].class;
        self.classes[class].reservation = None;
        self.reservations.retain(|&j| j != job);
        // The class may have another starving job to reserve for.
        self.watch_from(class, Timestamp(i64::MIN));
        self.worker_reservable();
        self.worker_changed(worker);
    }

    /// A worker may have become reservable: the classes that found none try again.
    pub(super) fn worker_reservable(&mut self) {
        for class in std::mem::take(&mut self.awaiting) {
            if let Some(entry) = self.classes.get_mut(class) {
                entry.awaiting = false;
                self.watch_from(class, Timestamp(i64::MIN));
            }
        }
    }

    /// Watches a blocked class for the instant its best job may start to starve: no capacity may
    /// free for it before then, and a blocked class is not tried. The instant is that of the head
    /// of its first lane by `(rank, seq)`, the earliest queued at the best rank when `seq` follows
    /// submission; `reserve_starving` then judges the exact best job.
    pub(super) fn watch_starvation(&mut self, class: u32) {
        let entry = &self.classes[class];
        if entry.reservation.is_some() || entry.awaiting {
            return;
        }
        if let Some((_, job)) = self.first_lane(class) {
            let deadline = self.starving_at(job);
            self.watch_from(class, deadline);
        }
    }

    /// Watches a class from `at` on, unless it is already watched from no later: one live entry
    /// per class, so the heap stays within the number of classes (plus entries made stale by an
    /// earlier instant, skipped when they come due).
    fn watch_from(&mut self, class: u32, at: Timestamp) {
        let entry = &mut self.classes[class];
        if entry.watched_at.is_none_or(|watched| at < watched) {
            entry.watched_at = Some(at);
            self.watch.push(Reverse((at, class)));
        }
    }

    /// When a job starts to starve.
    pub(super) fn starving_at(&self, job: u32) -> Timestamp {
        let queued_at = self.jobs[job].queued_at;
        Timestamp(queued_at.0.saturating_add_unsigned(self.reserve_after_ms))
    }
}
