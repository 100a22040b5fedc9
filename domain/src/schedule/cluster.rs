//! [`Cluster`]: the scheduler's whole state (workers, their usage, the queue) and the calls that
//! change it from outside: workers come, change and go; jobs are queued, dequeued and finish.
//! Placement itself is in `place.rs`, the queue view in `explain.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use super::index::{IdMap, MinTree, Slab};
use super::job::{JobEntry, JobState, QueuedJob, rank};
use super::queue::{Class, Group, Lane, LaneKey, Need, Project};
use super::worker::{Demand, Pool, Usage, Worker, WorkerEntry, WorkerState};
use super::{Policy, ScheduleError};
use crate::ids::{JobId, RunId, Timestamp, WorkerId};
use crate::model::{Label, Name};

/// Workers, their usage and the queue, with the placement policy of [`Policy`].
///
/// One value is held by the Scheduler actor; every method is a plain function of the value and
/// its arguments (time comes in as `now` or `queued_at`).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub(super) policy: Policy,
    pub(super) aging_ms: u64,
    pub(super) reserve_after_ms: u64,
    pub(super) workers: Slab<WorkerEntry>,
    pub(super) worker_ids: HashMap<WorkerId, u32>,
    pub(super) next_reg: u64,
    pub(super) pools: Slab<Pool>,
    pub(super) pool_ids: HashMap<BTreeSet<Label>, u32>,
    pub(super) needs: Slab<Need>,
    pub(super) need_ids: HashMap<Vec<Label>, u32>,
    pub(super) classes: Slab<Class>,
    pub(super) class_ids: IdMap<(u32, Demand), u32>,
    pub(super) projects: Slab<Project>,
    /// Jobs placed and not finished, by project index: read for every lane of a scanned class
    /// top, so kept dense.
    pub(super) running: Vec<u32>,
    pub(super) project_ids: HashMap<Name, u32>,
    pub(super) groups: Slab<Group>,
    pub(super) group_ids: HashMap<Name, u32>,
    pub(super) lanes: Slab<Lane>,
    pub(super) lane_ids: IdMap<(u32, u32, Option<u32>), u32>,
    pub(super) jobs: Slab<JobEntry>,
    pub(super) job_ids: IdMap<JobId, u32>,
    /// Every class that has queued, unparked jobs and is not blocked, by the bound of its best
    /// job's key (see `queue.rs`).
    pub(super) ready: MinTree<LaneKey>,
    /// The jobs that hold a worker reservation.
    pub(super) reservations: Vec<u32>,
    /// Blocked classes to look at for starvation from an instant on (see `starve.rs`).
    pub(super) watch: BinaryHeap<Reverse<(Timestamp, u32)>>,
    /// Starving classes for which no worker could be reserved.
    pub(super) awaiting: Vec<u32>,
    /// Reserved jobs to try in the next round's first phase.
    pub(super) due: Vec<u32>,
    pub(super) queued: usize,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new(Policy::default())
    }
}

impl Cluster {
    /// An empty cluster: no worker, no job.
    pub fn new(policy: Policy) -> Cluster {
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Cluster {
            aging_ms: millis(policy.aging_interval).max(1),
            reserve_after_ms: millis(policy.reserve_after),
            policy,
            workers: Slab::default(),
            worker_ids: HashMap::new(),
            next_reg: 0,
            pools: Slab::default(),
            pool_ids: HashMap::new(),
            needs: Slab::default(),
            need_ids: HashMap::new(),
            classes: Slab::default(),
            class_ids: IdMap::default(),
            projects: Slab::default(),
            running: Vec::new(),
            project_ids: HashMap::new(),
            groups: Slab::default(),
            group_ids: HashMap::new(),
            lanes: Slab::default(),
            lane_ids: IdMap::default(),
            jobs: Slab::default(),
            job_ids: IdMap::default(),
            ready: MinTree::default(),
            reservations: Vec::new(),
            watch: BinaryHeap::new(),
            awaiting: Vec::new(),
            due: Vec::new(),
            queued: 0,
        }
    }

    /// The policy the cluster was made with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Registers a worker. It takes jobs at the next [`place`](Cluster::place) if it is ready.
    pub fn add_worker(&mut self, worker: Worker) -> Result<(), ScheduleError> {
        if self.worker_ids.contains_key(&worker.id) {
            return Err(ScheduleError::DuplicateWorker { worker: worker.id });
        }
        let pool = self.pool_for(&worker.labels);
        let reg = self.next_reg;
        self.next_reg += 1;
        let id = worker.id.clone();
        let index = self.workers.insert(WorkerEntry {
            spec: worker,
            pool,
            reg,
            used_slots: 0,
            used_cpu: 0,
            used_memory: 0,
            jobs: Vec::new(),
            reserved_for: None,
            avail: None,
        });
        self.worker_ids.insert(id, index);
        self.pools[pool].workers.push(index);
        self.worker_reservable();
        self.worker_changed(index);
        Ok(())
    }

    /// Replaces what a registered worker offers (labels, slots, capacity, state). Its placed jobs
    /// stay placed, even if it no longer has their labels or room for them: a worker left with
    /// less room than its jobs use takes no new job until they fit again. A reservation on it is
    /// dropped (its job reserves again at a later round if it still starves).
    pub fn update_worker(&mut self, worker: Worker) -> Result<(), ScheduleError> {
        let Some(&index) = self.worker_ids.get(&worker.id) else {
            return Err(ScheduleError::UnknownWorker { worker: worker.id });
        };
        if let Some(job) = self.workers[index].reserved_for {
            self.cancel_reservation(job);
        }
        if worker.labels != self.workers[index].spec.labels {
            self.leave_pool(index);
            let pool = self.pool_for(&worker.labels);
            self.pools[pool].workers.push(index);
            self.workers[index].pool = pool;
        }
        self.workers[index].spec = worker;
        self.worker_reservable();
        self.worker_changed(index);
        Ok(())
    }

    /// Changes only the state of a registered worker: drain it, bring it back, mark it offline.
    pub fn set_worker_state(
        &mut self,
        worker: &WorkerId,
        state: WorkerState,
    ) -> Result<(), ScheduleError> {
        let spec = self
            .worker(worker)
            .ok_or_else(|| ScheduleError::UnknownWorker {
                worker: worker.clone(),
            })?;
        let spec = Worker {
            state,
            ..spec.clone()
        };
        self.update_worker(spec)
    }

    /// Unregisters a worker and hands back the jobs that were placed on it, as they were queued
    /// (same `seq` and `queued_at`, so they keep their age), in placement order: the caller queues
    /// them again or fails them. Their concurrency groups are free again.
    pub fn remove_worker(&mut self, worker: &WorkerId) -> Result<Vec<QueuedJob>, ScheduleError> {
        let Some(index) = self.worker_ids.remove(worker) else {
            return Err(ScheduleError::UnknownWorker {
                worker: worker.clone(),
            });
        };
        // Offline first, so that releasing its reservation does not offer its room to anyone.
        self.workers[index].spec.state = WorkerState::Offline;
        self.refresh_available(index);
        if let Some(job) = self.workers[index].reserved_for {
            self.cancel_reservation(job);
        }
        let placed = self.workers[index].jobs.clone();
        let evicted = placed
            .into_iter()
            .map(|job| {
                let queued = self.queued_job(job);
                self.unplace(job);
                self.forget_job(job);
                queued
            })
            .collect();
        self.leave_pool(index);
        self.workers.remove(index);
        Ok(evicted)
    }

    /// Queues a job. It is considered at the next [`place`](Cluster::place).
    pub fn enqueue(&mut self, job: QueuedJob) -> Result<(), ScheduleError> {
        if self.job_ids.contains_key(&job.job) {
            return Err(ScheduleError::DuplicateJob { job: job.job });
        }
        let demand = Demand::of(job.resources);
        let (class, project, group, lane) =
            self.intern(&job.runs_on, demand, &job.project, job.concurrency.as_ref());
        let index = self.jobs.insert(JobEntry {
            id: job.job,
            run: job.run,
            class,
            project,
            group,
            priority: job.priority,
            rank: rank(job.queued_at, job.priority, self.aging_ms),
            seq: job.seq,
            queued_at: job.queued_at,
            state: JobState::Queued { lane },
            reserved: None,
        });
        self.job_ids.insert(job.job, index);
        self.push_job(index);
        Ok(())
    }

    /// Takes a queued job out of the queue (it was cancelled). A job already placed is not
    /// queued: report it [`finished`](Cluster::finished) instead.
    pub fn dequeue(&mut self, job: JobId) -> Result<(), ScheduleError> {
        let index = self.find_job(job)?;
        if let Some(worker) = self.jobs[index].worker() {
            return Err(ScheduleError::AlreadyPlaced {
                job,
                worker: self.workers[worker].spec.id.clone(),
            });
        }
        if self.jobs[index].reserved.is_some() {
            self.cancel_reservation(index);
        }
        let lane = self.pull_job(index);
        self.drop_lane_if_empty(lane);
        self.forget_job(index);
        Ok(())
    }

    /// A placed job ended (succeeded, failed, was cancelled or lost): its slot, CPU and memory
    /// are free again, and so is its concurrency group.
    pub fn finished(&mut self, job: JobId) -> Result<(), ScheduleError> {
        let index = self.find_job(job)?;
        let Some(worker) = self.jobs[index].worker() else {
            return Err(ScheduleError::StillQueued { job });
        };
        self.unplace(index);
        self.forget_job(index);
        self.worker_changed(worker);
        Ok(())
    }

    /// A registered worker.
    pub fn worker(&self, worker: &WorkerId) -> Option<&Worker> {
        let index = *self.worker_ids.get(worker)?;
        Some(&self.workers[index].spec)
    }

    /// Every registered worker, in no particular order.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().map(|(_, entry)| &entry.spec)
    }

    /// What a registered worker has in use.
    pub fn usage(&self, worker: &WorkerId) -> Option<Usage> {
        let index = *self.worker_ids.get(worker)?;
        Some(self.workers[index].usage(|job| self.jobs[job].id))
    }

    /// The worker a job is placed on, if it is placed.
    pub fn placed_on(&self, job: JobId) -> Option<&WorkerId> {
        let worker = self.jobs[*self.job_ids.get(&job)?].worker()?;
        Some(&self.workers[worker].spec.id)
    }

    /// A queued or placed job as the caller queued it.
    pub fn queued(&self, job: JobId) -> Option<QueuedJob> {
        Some(self.queued_job(*self.job_ids.get(&job)?))
    }

    /// The run of a queued or placed job.
    pub fn run_of(&self, job: JobId) -> Option<RunId> {
        Some(self.jobs[*self.job_ids.get(&job)?].run)
    }

    /// Whether a job is queued (not yet placed).
    pub fn is_queued(&self, job: JobId) -> bool {
        self.job_ids
            .get(&job)
            .is_some_and(|&index| self.jobs[index].lane().is_some())
    }

    /// The same workers, queue and placements, with every index built anew: what a restarted
    /// scheduler keeps of a state that a panic may have left half-updated. The primary facts are
    /// kept — worker specs, each job as it was queued (its `seq` and age), which worker holds
    /// which job — and everything derived from them (lanes, classes, usage, concurrency
    /// holders) is recomputed; reservations of starving jobs are made again when due.
    pub fn rebuilt(&self) -> Cluster {
        let mut fresh = Cluster::new(self.policy);
        let mut workers: Vec<&WorkerEntry> = self.workers.iter().map(|(_, w)| w).collect();
        workers.sort_by_key(|w| w.reg);
        for worker in &workers {
            let _ = fresh.add_worker(worker.spec.clone());
        }
        // Placements first, in the order each worker took its jobs; then the queue.
        for worker in &workers {
            let Some(&at) = fresh.worker_ids.get(&worker.spec.id) else {
                continue;
            };
            for &index in &worker.jobs {
                if fresh.enqueue(self.queued_job(index)).is_ok()
                    && let Ok(job) = fresh.find_job(self.jobs[index].id)
                {
                    fresh.occupy(job, at);
                }
            }
        }
        let mut queued: Vec<(u32, &JobEntry)> = self
            .jobs
            .iter()
            .filter(|(_, entry)| entry.lane().is_some())
            .collect();
        queued.sort_by_key(|(_, entry)| entry.seq);
        for (index, _) in queued {
            let _ = fresh.enqueue(self.queued_job(index));
        }
        fresh
    }

    /// How many jobs are queued.
    pub fn queued_len(&self) -> usize {
        self.queued
    }

    /// How many jobs are placed and not finished.
    pub fn placed_len(&self) -> usize {
        self.jobs.len() - self.queued
    }

    pub(super) fn find_job(&self, job: JobId) -> Result<u32, ScheduleError> {
        self.job_ids
            .get(&job)
            .copied()
            .ok_or(ScheduleError::UnknownJob { job })
    }

    /// A job as the caller queued it.
    pub(super) fn queued_job(&self, job: u32) -> QueuedJob {
        let entry = &self.jobs[job];
        let class = &self.classes[entry.class];
        QueuedJob {
            job: entry.id,
            run: entry.run,
            project: self.projects[entry.project].name.clone(),
            runs_on: self.needs[class.need].labels.clone(),
            resources: class.demand.resources(),
            priority: entry.priority,
            concurrency: entry.group.map(|group| self.groups[group].name.clone()),
            seq: entry.seq,
            queued_at: entry.queued_at,
        }
    }

    /// Releases what a placed job holds: its share of the worker, its project's running count,
    /// its concurrency group. The job entry stays for the caller to forget.
    pub(super) fn unplace(&mut self, job: u32) {
        let entry = &self.jobs[job];
        let worker = entry.worker().expect("an unplaced job is placed");
        let (project, group) = (entry.project, entry.group);
        let demand = self.classes[entry.class].demand;
        let worker_entry = &mut self.workers[worker];
        worker_entry.used_slots -= 1;
        worker_entry.used_cpu -= demand.cpu;
        worker_entry.used_memory -= demand.memory;
        let position = worker_entry
            .jobs
            .iter()
            .position(|&j| j == job)
            .expect("a placed job is listed on its worker");
        worker_entry.jobs.remove(position);
        self.running[project as usize] -= 1;
        self.lower_bounds(project);
        if let Some(group) = group
            && self.groups[group].holder == Some(job)
        {
            self.groups[group].holder = None;
            self.rekey_group(group);
            // Reserved jobs of the group may go now.
            let jobs = &self.jobs;
            self.due.extend(
                self.reservations
                    .iter()
                    .filter(|&&j| jobs[j].group == Some(group)),
            );
        }
    }
}
