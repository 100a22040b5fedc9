//! Workers as the scheduler sees them: what a worker offers ([`Worker`]), what it has in use
//! ([`Usage`]), the pools that group workers by label set, and the bookkeeping that follows a
//! change of a worker's room.
//!
//! A [`Pool`] holds every worker with one exact label set. Eligibility is decided per pool, not
//! per worker: a job class lists the pools whose labels include its `runs_on` once, when the
//! class or the pool appears. Each pool keeps its *available* workers (ready, not reserved, with
//! a free slot) ordered by preference, so the best worker of a pool is its first available one
//! that fits. When a worker gets room, the blocked classes of its pool that it now fits are
//! unblocked ([`Cluster::worker_changed`]).

use std::cmp::Reverse;
use std::collections::BTreeSet;

use super::Cluster;
use crate::ids::{JobId, WorkerId};
use crate::model::{Label, Resources};

/// Whether a worker takes new jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerState {
    /// Takes new jobs.
    Ready,
    /// Keeps the jobs it has, takes no new one (an operator asked it to stop).
    Draining,
    /// Lost or stopped: takes nothing. Its jobs stay placed on it until the caller reports them
    /// finished or removes the worker.
    Offline,
}

/// A worker: the local machine, an agent, or an ephemeral container or pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub id: WorkerId,
    /// A job goes only to a worker whose labels include all of the job's `runs_on`.
    pub labels: BTreeSet<Label>,
    /// How many jobs it runs at once. A worker with no slot takes nothing.
    pub slots: u32,
    /// The CPU and memory it offers to jobs. `None` in a dimension: not tracked, any request fits
    /// and nothing is counted.
    pub capacity: Resources,
    pub state: WorkerState,
}

impl Worker {
    /// A ready worker with these labels and slots, and no CPU or memory accounting.
    pub fn ready(id: WorkerId, labels: impl IntoIterator<Item = Label>, slots: u32) -> Worker {
        Worker {
            id,
            labels: labels.into_iter().collect(),
            slots,
            capacity: Resources::default(),
            state: WorkerState::Ready,
        }
    }
}

/// What a worker has in use: the sums over the jobs placed on it and not finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub slots: u32,
    /// CPU requested by its jobs, in millicores.
    pub cpu_millis: u64,
    /// Memory requested by its jobs, in bytes.
    pub memory_bytes: u64,
    /// Its jobs, in the order they were placed.
    pub jobs: Vec<JobId>,
}

/// What one job takes from a worker besides a slot, in millicores and bytes (0: no request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(super) struct Demand {
    pub cpu: u64,
    pub memory: u64,
}

impl Demand {
    pub(super) fn of(resources: Resources) -> Demand {
        Demand {
            cpu: resources.cpu.map_or(0, |cpu| u64::from(cpu.millis())),
            memory: resources.memory.map_or(0, |memory| memory.bytes()),
        }
    }

    /// Back to the user's terms: a dimension that was not requested is `None` again.
    pub(super) fn resources(self) -> Resources {
        Resources {
            cpu: u32::try_from(self.cpu)
                .ok()
                .and_then(crate::model::Cpu::from_millis),
            memory: crate::model::Memory::from_bytes(self.memory),
        }
    }
}

/// The order of a pool's available workers: the most free slots first, then the worker
/// registered first (`reg`), then the index (unique).
pub(super) type AvailKey = (Reverse<u32>, u64, u32);

/// A registered worker and what it has in use.
#[derive(Debug, Clone)]
pub(super) struct WorkerEntry {
    pub spec: Worker,
    pub pool: u32,
    /// Registration number: earlier workers win ties.
    pub reg: u64,
    pub used_slots: u32,
    pub used_cpu: u64,
    pub used_memory: u64,
    /// Indices of its jobs, in the order they were placed.
    pub jobs: Vec<u32>,
    /// The starving job this worker is kept for; it takes no other job meanwhile.
    pub reserved_for: Option<u32>,
    /// Its key in its pool's `available` set, if it is there.
    pub avail: Option<AvailKey>,
}

impl WorkerEntry {
    pub(super) fn free_slots(&self) -> u32 {
        self.spec.slots.saturating_sub(self.used_slots)
    }

    /// Whether a job of `demand` fits in what is free now (a slot, CPU, memory).
    pub(super) fn fits_now(&self, demand: Demand) -> bool {
        self.free_slots() >= 1
            && self
                .spec
                .capacity
                .cpu
                .is_none_or(|cap| self.used_cpu + demand.cpu <= u64::from(cap.millis()))
            && self
                .spec
                .capacity
                .memory
                .is_none_or(|cap| self.used_memory + demand.memory <= cap.bytes())
    }

    /// Whether a job of `demand` would fit if the worker were idle.
    pub(super) fn could_hold(&self, demand: Demand) -> bool {
        self.spec.slots >= 1 && self.capacity_covers(demand)
    }

    /// Whether the worker's CPU and memory capacity cover `demand`, slots aside.
    pub(super) fn capacity_covers(&self, demand: Demand) -> bool {
        self.spec
            .capacity
            .cpu
            .is_none_or(|cap| demand.cpu <= u64::from(cap.millis()))
            && self
                .spec
                .capacity
                .memory
                .is_none_or(|cap| demand.memory <= cap.bytes())
    }

    /// Whether it may take a job now: ready, kept for nobody, with a free slot.
    pub(super) fn is_available(&self) -> bool {
        self.spec.state == WorkerState::Ready
            && self.reserved_for.is_none()
            && self.free_slots() >= 1
    }

    pub(super) fn avail_key(&self, index: u32) -> AvailKey {
        (Reverse(self.free_slots()), self.reg, index)
    }

    pub(super) fn usage(&self, job_id: impl Fn(u32) -> JobId) -> Usage {
        Usage {
            slots: self.used_slots,
            cpu_millis: self.used_cpu,
            memory_bytes: self.used_memory,
            jobs: self.jobs.iter().map(|&job| job_id(job)).collect(),
        }
    }
}

/// The workers with one exact label set.
#[derive(Debug, Clone)]
pub(super) struct Pool {
    pub labels: BTreeSet<Label>,
    /// Every worker of the pool, whatever its state.
    pub workers: Vec<u32>,
    /// The ready, unreserved workers with a free slot, best first.
    pub available: BTreeSet<AvailKey>,
    /// The job classes whose `runs_on` these labels include.
    pub classes: Vec<u32>,
}

impl Pool {
    pub(super) fn new(labels: BTreeSet<Label>) -> Pool {
        Pool {
            labels,
            workers: Vec::new(),
            available: BTreeSet::new(),
            classes: Vec::new(),
        }
    }

    /// Whether every label of `runs_on` (sorted, no duplicate) is one of the pool's.
    pub(super) fn includes(&self, runs_on: &[Label]) -> bool {
        runs_on.iter().all(|label| self.labels.contains(label))
    }
}

impl Cluster {
    /// After anything that may give a worker more room: its entry in its pool's available set is
    /// brought up to date, and the blocked classes it now fits are tried again.
    pub(super) fn worker_changed(&mut self, worker: u32) {
        self.refresh_available(worker);
        let entry = &self.workers[worker];
        if let Some(job) = entry.reserved_for {
            self.due.push(job);
        }
        if !entry.is_available() {
            return;
        }
        let pool = entry.pool;
        for i in 0..self.pools[pool].classes.len() {
            let class = self.pools[pool].classes[i];
            let class_entry = &self.classes[class];
            if class_entry.blocked && self.workers[worker].fits_now(class_entry.demand) {
                self.set_blocked(class, false);
            }
        }
    }

    /// Puts the worker in its pool's available set, or takes it out, as its state says.
    pub(super) fn refresh_available(&mut self, worker: u32) {
        let entry = &self.workers[worker];
        let key = entry.is_available().then(|| entry.avail_key(worker));
        if key == entry.avail {
            return;
        }
        let (pool, old) = (entry.pool, entry.avail);
        self.workers[worker].avail = key;
        let available = &mut self.pools[pool].available;
        if let Some(old) = old {
            available.remove(&old);
        }
        if let Some(key) = key {
            available.insert(key);
        }
    }

    /// The pool of this label set, made (and linked to the classes it can serve) if needed.
    pub(super) fn pool_for(&mut self, labels: &BTreeSet<Label>) -> u32 {
        if let Some(&pool) = self.pool_ids.get(labels) {
            return pool;
        }
        let mut entry = Pool::new(labels.clone());
        let mut serves = Vec::new();
        for (need, need_entry) in self.needs.iter() {
            if entry.includes(&need_entry.labels) {
                serves.push(need);
                entry.classes.extend_from_slice(&need_entry.classes);
            }
        }
        let pool = self.pools.insert(entry);
        self.pool_ids.insert(labels.clone(), pool);
        for need in serves {
            self.needs[need].pools.push(pool);
        }
        pool
    }

    /// Takes a worker out of its pool; an empty pool is dropped.
    pub(super) fn leave_pool(&mut self, worker: u32) {
        let entry = &mut self.workers[worker];
        let pool = entry.pool;
        if let Some(key) = entry.avail.take() {
            self.pools[pool].available.remove(&key);
        }
        let pool_entry = &mut self.pools[pool];
        pool_entry.workers.retain(|&w| w != worker);
        if pool_entry.workers.is_empty() {
            let pool_entry = self.pools.remove(pool);
            self.pool_ids.remove(&pool_entry.labels);
            for (_, need) in self.needs.iter_mut() {
                need.pools.retain(|&p| p != pool);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cpu, Memory};

    fn entry(slots: u32, cpu: Option<u32>, memory: Option<u64>) -> WorkerEntry {
        let mut spec = Worker::ready(WorkerId("w".into()), [], slots);
        spec.capacity = Resources {
            cpu: cpu.and_then(Cpu::from_millis),
            memory: memory.and_then(Memory::from_bytes),
        };
        WorkerEntry {
            spec,
            pool: 0,
            reg: 0,
            used_slots: 0,
            used_cpu: 0,
            used_memory: 0,
            jobs: Vec::new(),
            reserved_for: None,
            avail: None,
        }
    }

    #[test]
    fn a_worker_without_capacity_accounting_fits_any_request() {
        let worker = entry(1, None, None);
        let huge = Demand {
            cpu: 1_000_000,
            memory: 1 << 50,
        };
        assert!(worker.fits_now(huge));
        assert!(worker.could_hold(huge));
    }

    #[test]
    fn a_worker_fits_a_request_up_to_its_capacity_exactly() {
        let mut worker = entry(2, Some(2000), Some(1024));
        worker.used_slots = 1;
        worker.used_cpu = 1500;
        worker.used_memory = 24;
        assert!(worker.fits_now(Demand {
            cpu: 500,
            memory: 1000
        }));
        assert!(!worker.fits_now(Demand {
            cpu: 501,
            memory: 0
        }));
        assert!(!worker.fits_now(Demand {
            cpu: 0,
            memory: 1001
        }));
        worker.used_slots = 2;
        assert!(!worker.fits_now(Demand::default()));
        assert!(worker.could_hold(Demand {
            cpu: 2000,
            memory: 1024
        }));
    }

    #[test]
    fn a_worker_shrunk_below_its_usage_has_no_free_slot() {
        let mut worker = entry(1, None, None);
        worker.used_slots = 3;
        assert_eq!(worker.free_slots(), 0);
        assert!(!worker.is_available());
    }

    #[test]
    fn demand_round_trips_to_resources() {
        let resources = Resources {
            cpu: Cpu::from_millis(250),
            memory: None,
        };
        assert_eq!(Demand::of(resources).resources(), resources);
        assert_eq!(Demand::default().resources(), Resources::default());
    }
}
