//! The reference the property tests check the cluster against: the same state as plain maps
//! ([`Model`], with the documented policy by brute force in [`Model::reference_round`]), and
//! [`check_invariants`], which recomputes every index of a cluster from its entries.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::job::rank;
use super::worker::{Demand, WorkerState};
use super::*;
use crate::ids::{JobId, RunId, Timestamp, WorkerId};
use crate::model::{Cpu, Label, Memory, Name, Resources};

pub(super) const LABELS: [&str; 3] = ["a", "b", "c"];
pub(super) const GROUPS: [&str; 2] = ["deploy", "release"];
pub(super) const PROJECTS: [&str; 3] = ["p0", "p1", "p2"];
pub(super) const SECOND: i64 = 1000;

#[derive(Debug, Clone)]
pub(super) struct WorkerSpec {
    pub labels: u8,
    pub slots: u32,
    pub cpu: Option<u32>,
    pub memory: Option<u64>,
    pub state: WorkerState,
}

#[derive(Debug, Clone)]
pub(super) struct JobSpec {
    pub runs_on: u8,
    pub cpu: Option<u32>,
    pub memory: Option<u64>,
    pub priority: i32,
    pub group: Option<usize>,
    pub project: usize,
}

pub(super) fn labels_of(mask: u8) -> Vec<Label> {
    (0..LABELS.len())
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| LABELS[bit].parse().unwrap())
        .collect()
}

/// The cluster's state as plain maps: what the rules are checked against.
#[derive(Debug, Default)]
pub(super) struct Model {
    pub now: i64,
    pub next_job: u64,
    pub next_worker: u64,
    pub next_reg: u64,
    pub aging_ms: u64,
    /// Registered workers with their registration number.
    pub workers: BTreeMap<WorkerId, (Worker, u64)>,
    pub queued: BTreeMap<JobId, QueuedJob>,
    /// Placed jobs in placement order.
    pub placed: Vec<(QueuedJob, WorkerId)>,
}

impl Model {
    pub(super) fn worker(&mut self, spec: &WorkerSpec, id: Option<WorkerId>) -> Worker {
        let id = id.unwrap_or_else(|| {
            self.next_worker += 1;
            WorkerId(format!("w{}", self.next_worker))
        });
        Worker {
            id,
            labels: labels_of(spec.labels).into_iter().collect(),
            slots: spec.slots,
            capacity: Resources {
                cpu: spec.cpu.and_then(Cpu::from_millis),
                memory: spec.memory.and_then(Memory::from_bytes),
            },
            state: spec.state,
        }
    }

    pub(super) fn job(&mut self, spec: &JobSpec) -> QueuedJob {
        self.next_job += 1;
        QueuedJob {
            job: JobId(self.next_job),
            run: RunId(self.next_job % 7),
            project: PROJECTS[spec.project].parse().unwrap(),
            runs_on: labels_of(spec.runs_on),
            resources: Resources {
                cpu: spec.cpu.and_then(Cpu::from_millis),
                memory: spec.memory.and_then(Memory::from_bytes),
            },
            priority: spec.priority,
            concurrency: spec.group.map(|g| GROUPS[g].parse::<Name>().unwrap()),
            seq: self.next_job,
            queued_at: Timestamp(self.now),
        }
    }

    pub(super) fn add_worker(&mut self, worker: Worker) {
        self.next_reg += 1;
        self.workers
            .insert(worker.id.clone(), (worker, self.next_reg));
    }

    pub(super) fn used(&self, worker: &WorkerId) -> (u32, u64, u64, Vec<JobId>) {
        let mut used = (0, 0, 0, Vec::new());
        for (job, on) in &self.placed {
            if on == worker {
                let demand = Demand::of(job.resources);
                used.0 += 1;
                used.1 += demand.cpu;
                used.2 += demand.memory;
                used.3.push(job.job);
            }
        }
        used
    }

    pub(super) fn fits(&self, worker: &Worker, job: &QueuedJob) -> bool {
        let (slots, cpu, memory, _) = self.used(&worker.id);
        let demand = Demand::of(job.resources);
        worker.state == WorkerState::Ready
            && job.runs_on.iter().all(|l| worker.labels.contains(l))
            && slots < worker.slots
            && worker
                .capacity
                .cpu
                .is_none_or(|c| cpu + demand.cpu <= u64::from(c.millis()))
            && worker
                .capacity
                .memory
                .is_none_or(|m| memory + demand.memory <= m.bytes())
    }

    pub(super) fn group_free(&self, job: &QueuedJob) -> bool {
        job.concurrency.as_ref().is_none_or(|g| {
            self.placed
                .iter()
                .all(|(p, _)| p.concurrency.as_ref() != Some(g))
        })
    }

    pub(super) fn running(&self, project: &Name) -> usize {
        self.placed
            .iter()
            .filter(|(p, _)| &p.project == project)
            .count()
    }

    /// Checks one placement against the rules, then records it.
    pub(super) fn apply(&mut self, placement: &Placement) -> Result<(), TestCaseError> {
        let job = self.queued.remove(&placement.job).ok_or_else(|| {
            TestCaseError::fail(format!("{} placed but not queued", placement.job))
        })?;
        let (worker, _) = &self.workers[&placement.worker];
        prop_assert!(
            self.fits(worker, &job),
            "{job:?} does not fit {worker:?} using {:?}",
            self.used(&worker.id)
        );
        prop_assert!(self.group_free(&job), "group of {job:?} already held");
        self.placed.push((job, placement.worker.clone()));
        Ok(())
    }

    /// The documented policy by brute force: the first job, in order, that fits somewhere, on
    /// the worker with the most free slots, then registered first.
    pub(super) fn reference_round(&self, max: usize) -> Vec<Placement> {
        let mut model = Model {
            workers: self.workers.clone(),
            queued: self.queued.clone(),
            placed: self.placed.clone(),
            ..Model::default()
        };
        let mut out = Vec::new();
        while out.len() < max {
            let best = model
                .queued
                .values()
                .filter(|job| {
                    model.group_free(job) && model.workers.values().any(|(w, _)| model.fits(w, job))
                })
                .min_by_key(|job| {
                    (
                        rank(job.queued_at, job.priority, self.aging_ms),
                        model.running(&job.project),
                        job.seq,
                    )
                });
            let Some(job) = best.cloned() else { break };
            let (worker, _) = model
                .workers
                .values()
                .filter(|(w, _)| model.fits(w, &job))
                .min_by_key(|(w, reg)| (Reverse(w.slots - model.used(&w.id).0), *reg))
                .unwrap();
            let placement = Placement {
                job: job.job,
                run: job.run,
                worker: worker.id.clone(),
            };
            model.queued.remove(&job.job);
            model.placed.push((job, placement.worker.clone()));
            out.push(placement);
        }
        out
    }
}

/// Recomputes every index of the cluster from its entries and compares.
pub(super) fn check_invariants(c: &Cluster) -> Result<(), TestCaseError> {
    let mut ready = std::collections::BTreeSet::new();
    for (index, class) in c.classes.iter() {
        let head = c.class_head(index);
        prop_assert_eq!(class.bound.is_some(), head.is_some());
        if let (Some(bound), Some(head)) = (class.bound, head) {
            prop_assert!(
                bound <= head,
                "class {index}: bound {bound:?} above {head:?}"
            );
            if class.exact {
                prop_assert_eq!(bound, head, "class {} marked exact", index);
            }
        }
        let expected = class.bound.filter(|_| !class.blocked);
        prop_assert_eq!(class.ready_key, expected);
        prop_assert_eq!(c.ready.get(index), expected);
        ready.extend(expected.map(|key| (key, index)));
        if class.blocked {
            for &pool in &c.needs[class.need].pools {
                for &(_, _, worker) in &c.pools[pool].available {
                    prop_assert!(
                        !c.workers[worker].fits_now(class.demand),
                        "class {index} blocked but worker {worker} fits it"
                    );
                }
            }
        }
        let entries: std::collections::BTreeSet<_> = c
            .lanes
            .iter()
            .filter(|(_, lane)| lane.class == index)
            .filter_map(|(i, lane)| lane.entry.map(|(rank, seq)| (rank, seq, i, lane.project)))
            .collect();
        let grouped: std::collections::BTreeSet<_> = class
            .lanes
            .iter()
            .flat_map(|(&rank, group)| {
                group
                    .iter()
                    .map(move |&(seq, lane, project)| (rank, seq, lane, project))
            })
            .collect();
        prop_assert_eq!(&entries, &grouped);
        for (rank, group) in &class.lanes {
            prop_assert!(!group.is_empty());
            for (pos, &(_, lane, _)) in group.iter().enumerate() {
                prop_assert_eq!(c.lanes[lane].pos as usize, pos);
                prop_assert_eq!(c.lanes[lane].entry.map(|(r, _)| r), Some(*rank));
            }
        }
    }
    prop_assert_eq!(ready.len(), c.ready.len());
    prop_assert_eq!(ready.first().copied(), c.ready.first());
    for (index, lane) in c.lanes.iter() {
        let listed = c.projects[lane.project].lanes[lane.slot as usize];
        prop_assert_eq!(
            listed,
            super::queue::ProjectLane {
                lane: index,
                class: lane.class,
                head: lane.entry,
            }
        );
        prop_assert!(!lane.jobs.is_empty(), "empty lane {index} kept");
        let parked = lane.group.is_some_and(|g| c.groups[g].holder.is_some());
        let &(rank, seq, _) = lane.jobs.first().unwrap();
        let expected = (!parked).then_some((rank, seq));
        prop_assert_eq!(lane.entry, expected);
    }
    for (index, worker) in c.workers.iter() {
        let key = worker.is_available().then(|| worker.avail_key(index));
        prop_assert_eq!(worker.avail, key);
        let pool = &c.pools[worker.pool];
        prop_assert_eq!(
            key.is_some_and(|k| pool.available.contains(&k)),
            key.is_some()
        );
    }
    let available: usize = c.pools.iter().map(|(_, p)| p.available.len()).sum();
    let expected = c.workers.iter().filter(|(_, w)| w.avail.is_some()).count();
    prop_assert_eq!(available, expected);
    for (index, project) in c.projects.iter() {
        let lanes = c
            .lanes
            .iter()
            .filter(|(_, l)| c.projects[l.project].name == project.name);
        prop_assert_eq!(lanes.count(), project.lanes.len());
        let running = c
            .jobs
            .iter()
            .filter(|(_, j)| j.worker().is_some() && c.projects[j.project].name == project.name)
            .count();
        prop_assert_eq!(c.running[index as usize] as usize, running);
    }
    for &job in &c.reservations {
        let worker = c.jobs[job].reserved.unwrap();
        prop_assert_eq!(c.workers[worker].reserved_for, Some(job));
        prop_assert_eq!(c.classes[c.jobs[job].class].reservation, Some(job));
    }
    Ok(())
}
