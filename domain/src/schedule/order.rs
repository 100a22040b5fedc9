//! The order of the queue: each class's best job, and the best class, kept up to date cheaply
//! while projects' running counts change at every placement and finish.
//!
//! - A class keeps its lanes by their head's `(rank, seq)`, keys that never change while the head
//!   stays. Its best job is among the lanes at its best rank (the *top*): the one whose project
//!   runs the fewest jobs, then the lowest `seq` ([`Cluster::class_head`] scans the top).
//! - [`Cluster::ready`] orders the classes that are not blocked by a **lower bound** of their best
//!   job's key `(rank, running, seq, lane)`. A placement raises its project's running count, which
//!   can only make keys worse, so the bounds stay true and nothing is touched; a finish lowers it,
//!   and the bound of each class where the project has a lane now below the bound is lowered
//!   (a comparison, no re-insertion). A round takes the class with the lowest bound, computes its
//!   best job, and places it if the bound was exact, or stores the exact key and looks again. A
//!   class remembers when its bound is exact (nothing changed its best lane since), and then
//!   needs no scan.
//!
//! So a change of a project's running count costs a comparison per class the project has queued
//! jobs in, not a re-insertion in each: keying every lane of a busy project again on every
//! placement and finish made up most of the cost of a round.

use super::Cluster;
use super::queue::{LaneKey, ProjectLane};

impl Cluster {
    /// Puts the lane's head in its class again (or takes the lane out: empty or parked) and
    /// keeps the class's bound true.
    pub(super) fn rekey_lane(&mut self, lane: u32) {
        let entry = &self.lanes[lane];
        let parked = entry
            .group
            .is_some_and(|group| self.groups[group].holder.is_some());
        let new = if parked {
            None
        } else {
            entry.jobs.first().map(|&(rank, seq, _)| (rank, seq))
        };
        if new == entry.entry {
            return;
        }
        let (class, old) = (entry.class, entry.entry);
        let (project, slot) = (entry.project, entry.slot);
        self.lanes[lane].entry = new;
        self.projects[project].lanes[slot as usize].head = new;
        let class_entry = &mut self.classes[class];
        let top = class_entry.lanes.first_key_value().map(|(&rank, _)| rank);
        if let Some((rank, _)) = old {
            let group = class_entry
                .lanes
                .get_mut(&rank)
                .expect("a lane in its class is in its rank group");
            let pos = self.lanes[lane].pos;
            group.swap_remove(pos as usize);
            if let Some(&(_, moved, _)) = group.get(pos as usize) {
                self.lanes[moved].pos = pos;
            }
            if group.is_empty() {
                class_entry.lanes.remove(&rank);
            }
            // The bound stays true (the best job can only be worse), but if it was this lane's
            // key the best job is now another.
            if class_entry.bound.is_some_and(|bound| bound.lane == lane) {
                class_entry.exact = false;
            }
        }
        if let Some((rank, seq)) = new {
            let group = class_entry.lanes.entry(rank).or_default();
            self.lanes[lane].pos = u32::try_from(group.len()).expect("fewer than 2^32 lanes");
            group.push((seq, lane, project));
            let key = LaneKey {
                rank,
                running: self.running[project as usize],
                seq,
                lane,
            };
            // Below the bound, hence below every other lane's key: the new best job.
            if class_entry.bound.is_none_or(|bound| key < bound) {
                class_entry.bound = Some(key);
                class_entry.exact = true;
            }
        }
        if class_entry.lanes.is_empty() {
            class_entry.bound = None;
            class_entry.exact = false;
        }
        let new_top = class_entry.lanes.first_key_value().map(|(&rank, _)| rank);
        let top_changed = new_top != top || new.is_some_and(|(rank, _)| Some(rank) == new_top);
        self.refresh_ready(class);
        if top_changed && self.classes[class].blocked {
            self.watch_starvation(class);
        }
    }

    /// After a project's running count went up: its keys only got worse, so every bound stays
    /// true, but a class whose best job was the project's is no longer known exactly.
    pub(super) fn raised_running(&mut self, project: u32) {
        for i in 0..self.projects[project].lanes.len() {
            let ProjectLane { lane, class, .. } = self.projects[project].lanes[i];
            let entry = &mut self.classes[class];
            if entry.exact && entry.bound.is_some_and(|bound| bound.lane == lane) {
                entry.exact = false;
            }
        }
    }

    /// After a project's running count went down: lowers the bound of each class where one of
    /// its lanes now comes before the bound (it is then that class's best job).
    pub(super) fn lower_bounds(&mut self, project: u32) {
        let running = self.running[project as usize];
        for i in 0..self.projects[project].lanes.len() {
            let ProjectLane { lane, class, head } = self.projects[project].lanes[i];
            let Some((rank, seq)) = head else {
                continue;
            };
            let entry = &mut self.classes[class];
            let key = LaneKey {
                rank,
                running,
                seq,
                lane,
            };
            if entry.bound.is_some_and(|bound| key < bound) {
                entry.bound = Some(key);
                entry.exact = true;
                self.refresh_ready(class);
            }
        }
    }

    /// The key of the class's best job: among its lanes at the best rank, the project with the
    /// fewest running jobs, then the lowest `seq`. O(lanes at the best rank).
    pub(super) fn class_head(&self, class: u32) -> Option<LaneKey> {
        let (&rank, group) = self.classes[class].lanes.first_key_value()?;
        let (running, seq, lane) = group
            .iter()
            .map(|&(seq, lane, project)| (self.running[project as usize], seq, lane))
            .min()?;
        Some(LaneKey {
            rank,
            running,
            seq,
            lane,
        })
    }

    /// The lane at the best rank whose head was submitted first, and its head job.
    pub(super) fn first_lane(&self, class: u32) -> Option<(u32, u32)> {
        let (_, group) = self.classes[class].lanes.first_key_value()?;
        let &(_, lane, _) = group.iter().min()?;
        Some((lane, self.lane_head(lane)))
    }

    /// Stores the exact key of the class's best job as its bound.
    pub(super) fn set_bound(&mut self, class: u32, key: LaneKey) {
        self.classes[class].bound = Some(key);
        self.classes[class].exact = true;
        self.refresh_ready(class);
    }

    /// Brings the class's entry in `ready` up to date: its bound, unless it is blocked.
    fn refresh_ready(&mut self, class: u32) {
        let entry = &mut self.classes[class];
        let ready = entry.bound.filter(|_| !entry.blocked);
        if ready != entry.ready_key {
            entry.ready_key = ready;
            self.ready.set(class, ready);
        }
    }

    /// Marks the class blocked (no available worker fits it) or not.
    pub(super) fn set_blocked(&mut self, class: u32, blocked: bool) {
        if self.classes[class].blocked == blocked {
            return;
        }
        self.classes[class].blocked = blocked;
        self.refresh_ready(class);
        if blocked {
            self.watch_starvation(class);
        }
    }
}
