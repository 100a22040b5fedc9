//! The queue: jobs sorted into lanes and classes so that a placement round finds the best job it
//! can place without scanning the ones it cannot.
//!
//! - A **class** is every queued job with the same `runs_on` (as a set) and the same resources.
//!   Jobs of one class fit exactly the same workers, so when the best of them fits nowhere the
//!   whole class is *blocked* and skipped in O(1) until capacity frees on a worker it could use.
//! - A **lane** is the jobs of one class, one project and one concurrency group (or none). Inside a
//!   lane jobs are ordered by `(rank, seq)`; every job of a lane is placeable exactly when its head
//!   is, and fair share does not tell them apart (same project), so the head is the lane's best.
//!   The lanes of a concurrency group are *parked* (out of their class) while the group is held.
//! - A lane's key is `(rank of its head, running jobs of its project, seq of its head, lane)`,
//!   the policy's order. A class keeps its lanes by key; [`Cluster::ready`] keeps the first key of
//!   every class that is not blocked, so the best placeable job of the cluster is `ready.first()`.
//!
//! When a project's running count changes, every lane of that project is keyed again: the cost
//! is one re-insertion per class the project has queued jobs in (a few for a real pipeline), not
//! per queued job.

use std::collections::BTreeSet;

use super::Cluster;
use super::job::JobEntry;
use super::worker::Demand;
use crate::ids::Timestamp;
use crate::model::{Label, Name};

/// The key of a lane in its class, and of a class in [`Cluster::ready`]: lower goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct LaneKey {
    /// The rank of the lane's head job: `tick(queued_at) - priority`.
    pub rank: i64,
    /// Jobs of the lane's project placed and not finished: fair share among equal ranks. Exact
    /// for the lanes at their class's best rank, possibly old for the others (see
    /// [`Cluster::refresh_class`]).
    pub running: u32,
    /// The submission order of the lane's head job.
    pub seq: u64,
    pub lane: u32,
}

/// A distinct `runs_on` set and the pools whose labels include it.
#[derive(Debug, Clone)]
pub(super) struct Need {
    /// Sorted, without repeats.
    pub labels: Vec<Label>,
    pub pools: Vec<u32>,
    pub classes: Vec<u32>,
}

/// The jobs with one `runs_on` set and one demand.
#[derive(Debug, Clone)]
pub(super) struct Class {
    pub need: u32,
    pub demand: Demand,
    /// Its lanes that have queued jobs and are not parked.
    pub lanes: BTreeSet<LaneKey>,
    /// `lanes.first()`, remembered to notice when it changes.
    pub head: Option<LaneKey>,
    /// Its entry in `Cluster::ready`: the head, unless the class is blocked.
    pub ready_key: Option<LaneKey>,
    /// No available worker fits its demand (checked when its best job was tried).
    pub blocked: bool,
    /// The job of this class that holds a worker reservation, if any (at most one per class).
    pub reservation: Option<u32>,
    /// Its jobs, queued or placed: the class is dropped at zero.
    pub jobs: u32,
}

/// The queued jobs of one class, one project and one concurrency group.
#[derive(Debug, Clone)]
pub(super) struct Lane {
    pub class: u32,
    pub project: u32,
    pub group: Option<u32>,
    /// `(rank, seq, job index)` of its queued jobs.
    pub jobs: BTreeSet<(i64, u64, u32)>,
    /// Its key in its class, if it is there (not empty, not parked).
    pub key: Option<LaneKey>,
}

/// A fair-share key.
#[derive(Debug, Clone)]
pub(super) struct Project {
    pub name: Name,
    pub running: u32,
    pub lanes: Vec<u32>,
    /// Its jobs, queued or placed: the project is dropped at zero.
    pub jobs: u32,
}

/// A concurrency group.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub name: Name,
    /// The job of the group that is placed or running, if any.
    pub holder: Option<u32>,
    pub lanes: Vec<u32>,
    /// Its queued jobs plus its holder: the group is dropped at zero.
    pub jobs: u32,
}

impl Cluster {
    /// The lane a job of these interned keys goes to, made if needed; counts the job in the class,
    /// project and group.
    pub(super) fn intern(
        &mut self,
        runs_on: &[Label],
        demand: Demand,
        project: &Name,
        group: Option<&Name>,
    ) -> (u32, u32, Option<u32>, u32) {
        let need = self.need_for(runs_on);
        let class = self.class_for(need, demand);
        let project = match self.project_ids.get(project) {
            Some(&index) => index,
            None => {
                let index = self.projects.insert(Project {
                    name: project.clone(),
                    running: 0,
                    lanes: Vec::new(),
                    jobs: 0,
                });
                self.project_ids.insert(project.clone(), index);
                index
            }
        };
        let group = group.map(|name| match self.group_ids.get(name) {
            Some(&index) => index,
            None => {
                let index = self.groups.insert(Group {
                    name: name.clone(),
                    holder: None,
                    lanes: Vec::new(),
                    jobs: 0,
                });
                self.group_ids.insert(name.clone(), index);
                index
            }
        });
        let lane = match self.lane_ids.get(&(class, project, group)) {
            Some(&index) => index,
            None => {
                let index = self.lanes.insert(Lane {
                    class,
                    project,
                    group,
                    jobs: BTreeSet::new(),
                    key: None,
                });
                self.lane_ids.insert((class, project, group), index);
                self.projects[project].lanes.push(index);
                if let Some(group) = group {
                    self.groups[group].lanes.push(index);
                }
                index
            }
        };
        self.classes[class].jobs += 1;
        self.projects[project].jobs += 1;
        if let Some(group) = group {
            self.groups[group].jobs += 1;
        }
        (class, project, group, lane)
    }

    fn need_for(&mut self, runs_on: &[Label]) -> u32 {
        let mut labels = runs_on.to_vec();
        labels.sort_unstable();
        labels.dedup();
        if let Some(&index) = self.need_ids.get(&labels) {
            return index;
        }
        let pools = self
            .pools
            .iter()
            .filter(|(_, pool)| pool.includes(&labels))
            .map(|(index, _)| index)
            .collect();
        let index = self.needs.insert(Need {
            labels: labels.clone(),
            pools,
            classes: Vec::new(),
        });
        self.need_ids.insert(labels, index);
        index
    }

    fn class_for(&mut self, need: u32, demand: Demand) -> u32 {
        if let Some(&index) = self.class_ids.get(&(need, demand)) {
            return index;
        }
        let index = self.classes.insert(Class {
            need,
            demand,
            lanes: BTreeSet::new(),
            head: None,
            ready_key: None,
            blocked: false,
            reservation: None,
            jobs: 0,
        });
        self.class_ids.insert((need, demand), index);
        self.needs[need].classes.push(index);
        for i in 0..self.needs[need].pools.len() {
            let pool = self.needs[need].pools[i];
            self.pools[pool].classes.push(index);
        }
        index
    }

    /// Puts a job (already in `jobs`, state `Queued`) into its lane.
    pub(super) fn push_job(&mut self, job: u32) {
        let entry = &self.jobs[job];
        let lane = entry.lane().expect("a pushed job is queued");
        let key = entry.lane_key(job);
        self.lanes[lane].jobs.insert(key);
        self.queued += 1;
        self.rekey_lane(lane);
    }

    /// Takes a queued job out of its lane and keys the lane again at once (no index may see a
    /// lane whose key names a job that left it). Returns the lane, which may now be empty.
    pub(super) fn pull_job(&mut self, job: u32) -> u32 {
        let entry = &self.jobs[job];
        let lane = entry.lane().expect("a pulled job is queued");
        let key = entry.lane_key(job);
        self.lanes[lane].jobs.remove(&key);
        self.queued -= 1;
        self.rekey_lane(lane);
        lane
    }

    /// Computes the lane's key again and moves it in its class.
    pub(super) fn rekey_lane(&mut self, lane: u32) {
        let entry = &self.lanes[lane];
        let parked = entry
            .group
            .is_some_and(|group| self.groups[group].holder.is_some());
        let key = if parked {
            None
        } else {
            entry.jobs.first().map(|&(rank, seq, _)| LaneKey {
                rank,
                running: self.projects[entry.project].running,
                seq,
                lane,
            })
        };
        if key == entry.key {
            return;
        }
        let (class, old) = (entry.class, entry.key);
        self.lanes[lane].key = key;
        let lanes = &mut self.classes[class].lanes;
        if let Some(old) = old {
            lanes.remove(&old);
        }
        if let Some(key) = key {
            lanes.insert(key);
        }
        self.refresh_class(class);
    }

    /// After a project's running count changed: keys again those of its lanes whose head ties
    /// the best rank of their class, the only ones whose place the count can change now (see
    /// [`Cluster::refresh_class`] for the others).
    pub(super) fn rekey_project(&mut self, project: u32) {
        let running = self.projects[project].running;
        for i in 0..self.projects[project].lanes.len() {
            let lane = self.projects[project].lanes[i];
            let Some(key) = self.lanes[lane].key else {
                continue;
            };
            let top = self.classes[self.lanes[lane].class].head.map(|head| head.rank);
            if key.running != running && top == Some(key.rank) {
                self.rekey_lane(lane);
            }
        }
    }

    /// Keys every lane of a group again (it was taken or freed: its lanes park or come back).
    pub(super) fn rekey_group(&mut self, group: u32) {
        for i in 0..self.groups[group].lanes.len() {
            let lane = self.groups[group].lanes[i];
            self.rekey_lane(lane);
        }
    }

    /// Brings the class's head and its entry in `ready` up to date.
    ///
    /// The running count in a lane's key is kept exact only for the lanes whose head has the
    /// class's best rank: they are the only ones fair share orders now, and keying all of a
    /// project's lanes on every placement and finish would cost one re-insertion per class the
    /// project uses. A lane below the best rank may carry an old count; when the best rank moves
    /// to its rank, it is keyed again here before the class's head is read. A lane whose head
    /// changes is always keyed exactly.
    pub(super) fn refresh_class(&mut self, class: u32) {
        if let Some(&first) = self.classes[class].lanes.first()
            && self.classes[class].head.map(|head| head.rank) != Some(first.rank)
        {
            self.exact_top(class, first.rank);
        }
        let entry = &mut self.classes[class];
        let head = entry.lanes.first().copied();
        let head_changed = head != entry.head;
        entry.head = head;
        let ready = if entry.blocked { None } else { head };
        if ready != entry.ready_key {
            if let Some(old) = entry.ready_key {
                self.ready.remove(&old);
            }
            if let Some(key) = ready {
                self.ready.insert(key);
            }
            entry.ready_key = ready;
        }
        if head_changed && entry.blocked {
            self.watch_starvation(class);
        }
    }

    /// Keys again, with their project's running count now, the lanes of the class at `rank`.
    fn exact_top(&mut self, class: u32, rank: i64) {
        let mut stale = std::mem::take(&mut self.scratch);
        stale.extend(
            self.classes[class]
                .lanes
                .iter()
                .take_while(|key| key.rank == rank)
                .filter(|key| key.running != self.projects[self.lanes[key.lane].project].running)
                .copied(),
        );
        for old in stale.drain(..) {
            let key = LaneKey {
                running: self.projects[self.lanes[old.lane].project].running,
                ..old
            };
            let lanes = &mut self.classes[class].lanes;
            lanes.remove(&old);
            lanes.insert(key);
            self.lanes[old.lane].key = Some(key);
        }
        self.scratch = stale;
    }

    /// Marks the class blocked (no available worker fits it) or not.
    pub(super) fn set_blocked(&mut self, class: u32, blocked: bool) {
        if self.classes[class].blocked == blocked {
            return;
        }
        self.classes[class].blocked = blocked;
        self.refresh_class(class);
        if blocked {
            self.watch_starvation(class);
        }
    }

    /// Makes sure the next placement round looks again at a blocked class when its best job
    /// starts to starve: no capacity may free for it before then, and a blocked class is not tried.
    fn watch_starvation(&mut self, class: u32) {
        let entry = &self.classes[class];
        if let (None, Some(head)) = (entry.reservation, entry.head) {
            let deadline = self.starving_at(self.lane_head(head.lane));
            self.next_reserve_check = self.next_reserve_check.min(deadline);
        }
    }

    /// The job at the head of a lane that has one.
    pub(super) fn lane_head(&self, lane: u32) -> u32 {
        self.lanes[lane]
            .jobs
            .first()
            .expect("a keyed lane has a queued job")
            .2
    }

    /// When a job queued at `queued_at` starts to starve.
    pub(super) fn starving_at(&self, job: u32) -> Timestamp {
        let queued_at = self.jobs[job].queued_at;
        Timestamp(queued_at.0.saturating_add_unsigned(self.reserve_after_ms))
    }

    /// Drops a lane that has no queued job left.
    pub(super) fn drop_lane_if_empty(&mut self, lane: u32) {
        if !self.lanes[lane].jobs.is_empty() {
            return;
        }
        self.rekey_lane(lane);
        let entry = self.lanes.remove(lane);
        self.lane_ids
            .remove(&(entry.class, entry.project, entry.group));
        self.projects[entry.project].lanes.retain(|&l| l != lane);
        if let Some(group) = entry.group {
            self.groups[group].lanes.retain(|&l| l != lane);
        }
    }

    /// Forgets a job that leaves the cluster (finished, dequeued, evicted): its entry goes and the
    /// class, project and group it was counted in are dropped when nothing else uses them.
    pub(super) fn forget_job(&mut self, job: u32) -> JobEntry {
        let entry = self.jobs.remove(job);
        self.job_ids.remove(&entry.id);
        let class = &mut self.classes[entry.class];
        class.jobs -= 1;
        if class.jobs == 0 {
            self.drop_class(entry.class);
        }
        let project = &mut self.projects[entry.project];
        project.jobs -= 1;
        if project.jobs == 0 {
            debug_assert!(project.lanes.is_empty() && project.running == 0);
            let project = self.projects.remove(entry.project);
            self.project_ids.remove(&project.name);
        }
        if let Some(group) = entry.group {
            let group_entry = &mut self.groups[group];
            group_entry.jobs -= 1;
            if group_entry.jobs == 0 {
                debug_assert!(group_entry.lanes.is_empty() && group_entry.holder.is_none());
                let group_entry = self.groups.remove(group);
                self.group_ids.remove(&group_entry.name);
            }
        }
        entry
    }

    fn drop_class(&mut self, class: u32) {
        let entry = self.classes.remove(class);
        debug_assert!(entry.lanes.is_empty() && entry.ready_key.is_none());
        self.class_ids.remove(&(entry.need, entry.demand));
        for &pool in &self.needs[entry.need].pools {
            self.pools[pool].classes.retain(|&c| c != class);
        }
        let need = &mut self.needs[entry.need];
        need.classes.retain(|&c| c != class);
        if need.classes.is_empty() {
            let need = self.needs.remove(entry.need);
            self.need_ids.remove(&need.labels);
        }
    }
}
