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
//! - A class keeps its lanes grouped by the rank of their head; how the best job of a class and
//!   the best class are found is in `order.rs`.
//!
//! Names (`runs_on` sets, projects, groups) are interned once per distinct value; a class, lane,
//! project or group is dropped with its last job.

use std::collections::{BTreeMap, BTreeSet};

use super::Cluster;
use super::job::JobEntry;
use super::worker::Demand;
use crate::ids::Timestamp;
use crate::model::{Label, Name};

/// The policy's key of a lane's head job: lower goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct LaneKey {
    /// `tick(queued_at) - priority`.
    pub rank: i64,
    /// Jobs of the lane's project placed and not finished: fair share among equal ranks.
    pub running: u32,
    /// The submission order.
    pub seq: u64,
    pub lane: u32,
}

/// A lane in its class's group of lanes whose head has one rank: the head's `seq`, the lane, and
/// the lane's project (so a scan of the top reads the running counts without visiting lanes).
pub(super) type RankEntry = (u64, u32, u32);

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
    /// Its lanes that have queued jobs and are not parked, grouped by the rank of their head (in
    /// no order inside a group: the best of the top group is found by a scan).
    pub lanes: BTreeMap<i64, Vec<RankEntry>>,
    /// A key no greater than its best job's; `None` when it has no lane.
    pub bound: Option<LaneKey>,
    /// Whether `bound` is its best job's key, so no scan of the top is needed.
    pub exact: bool,
    /// Its key in `Cluster::ready`: the bound, unless the class is blocked.
    pub ready_key: Option<LaneKey>,
    /// No available worker fits its demand (checked when its best job was tried).
    pub blocked: bool,
    /// The job of this class that holds a worker reservation, if any (at most one per class).
    pub reservation: Option<u32>,
    /// It starves and no worker could be reserved for it (listed in `Cluster::awaiting`).
    pub awaiting: bool,
    /// The instant of its live entry in `Cluster::watch`, if it has one.
    pub watched_at: Option<Timestamp>,
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
    /// `(rank, seq)` of its head while it is in its class (not empty, not parked).
    pub entry: Option<(i64, u64)>,
    /// Its index in its class's group for that rank.
    pub pos: u32,
    /// Its index in its project's `lanes`.
    pub slot: u32,
}

/// A lane as its project lists it: a copy of its place in its class, so that a change of the
/// project's running count reads one short vector instead of visiting each lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProjectLane {
    pub lane: u32,
    pub class: u32,
    /// `(rank, seq)` of its head while it is in its class (not parked).
    pub head: Option<(i64, u64)>,
}

/// A fair-share key. Its running count is in `Cluster::running`.
#[derive(Debug, Clone)]
pub(super) struct Project {
    pub name: Name,
    pub lanes: Vec<ProjectLane>,
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
                    lanes: Vec::new(),
                    jobs: 0,
                });
                if self.running.len() <= index as usize {
                    self.running.resize(index as usize + 1, 0);
                }
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
                let lanes = &mut self.projects[project].lanes;
                let slot = u32::try_from(lanes.len()).expect("fewer than 2^32 lanes");
                let index = self.lanes.insert(Lane {
                    class,
                    project,
                    group,
                    jobs: BTreeSet::new(),
                    entry: None,
                    pos: 0,
                    slot,
                });
                self.projects[project].lanes.push(ProjectLane {
                    lane: index,
                    class,
                    head: None,
                });
                self.lane_ids.insert((class, project, group), index);
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
        // The usual `runs_on` is already sorted without repeats: look it up as it is.
        if runs_on.is_sorted_by(|a, b| a < b)
            && let Some(&index) = self.need_ids.get(runs_on)
        {
            return index;
        }
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
            lanes: BTreeMap::new(),
            bound: None,
            exact: false,
            ready_key: None,
            blocked: false,
            reservation: None,
            awaiting: false,
            watched_at: None,
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

    /// Puts the lanes of a group back in their classes or takes them out (it was freed or
    /// taken).
    pub(super) fn rekey_group(&mut self, group: u32) {
        for i in 0..self.groups[group].lanes.len() {
            let lane = self.groups[group].lanes[i];
            self.rekey_lane(lane);
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

    /// Drops a lane that has no queued job left.
    pub(super) fn drop_lane_if_empty(&mut self, lane: u32) {
        if !self.lanes[lane].jobs.is_empty() {
            return;
        }
        self.rekey_lane(lane);
        let entry = self.lanes.remove(lane);
        self.lane_ids
            .remove(&(entry.class, entry.project, entry.group));
        let lanes = &mut self.projects[entry.project].lanes;
        lanes.swap_remove(entry.slot as usize);
        if let Some(moved) = lanes.get(entry.slot as usize) {
            self.lanes[moved.lane].slot = entry.slot;
        }
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
            debug_assert!(project.lanes.is_empty() && self.running[entry.project as usize] == 0);
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
