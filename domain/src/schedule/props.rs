//! Property tests: random clusters, queues and sequences of calls, checked against a model kept
//! beside the cluster (plain maps, no index) and against a naive reference placement.
//!
//! - `random_calls_never_break_the_rules`: with reservations on, every placement goes to a
//!   ready worker with the job's labels and room for it (slots, CPU, memory), no two jobs of a
//!   group are ever placed at once, the internal indexes agree with a recomputation from
//!   scratch, and after a round without limit no queued job fits a worker that is not reserved
//!   (no head-of-line blocking).
//! - `placement_matches_the_reference_policy`: with reservations off, every round places exactly
//!   what a scan of the whole queue in the documented order places.
//! - `every_placeable_job_is_placed_under_a_stream_of_arrivals`: liveness under aging and
//!   reservations, with jobs arriving every round for the whole test.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::job::rank;
use super::worker::{Demand, WorkerState};
use super::*;
use crate::ids::{JobId, RunId, Timestamp, WorkerId};
use crate::model::{Cpu, Label, Memory, Name, Resources};

const LABELS: [&str; 3] = ["a", "b", "c"];
const GROUPS: [&str; 2] = ["deploy", "release"];
const PROJECTS: [&str; 3] = ["p0", "p1", "p2"];
const SECOND: i64 = 1000;

#[derive(Debug, Clone)]
struct WorkerSpec {
    labels: u8,
    slots: u32,
    cpu: Option<u32>,
    memory: Option<u64>,
    state: WorkerState,
}

#[derive(Debug, Clone)]
struct JobSpec {
    runs_on: u8,
    cpu: Option<u32>,
    memory: Option<u64>,
    priority: i32,
    group: Option<usize>,
    project: usize,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(JobSpec),
    Place(usize),
    Finish(usize),
    Dequeue(usize),
    AddWorker(WorkerSpec),
    UpdateWorker(usize, WorkerSpec),
    RemoveWorker(usize),
    Advance(u8),
}

fn labels_of(mask: u8) -> Vec<Label> {
    (0..LABELS.len())
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| LABELS[bit].parse().unwrap())
        .collect()
}

fn worker_spec() -> impl Strategy<Value = WorkerSpec> {
    (
        0..8u8,
        0..4u32,
        prop::option::weighted(0.6, 1..=4u32),
        prop::option::weighted(0.4, 1..=4u64),
        prop_oneof![
            8 => Just(WorkerState::Ready),
            1 => Just(WorkerState::Draining),
            1 => Just(WorkerState::Offline),
        ],
    )
        .prop_map(|(labels, slots, cpu, memory, state)| WorkerSpec {
            labels,
            slots,
            cpu: cpu.map(|cores| cores * 1000),
            memory,
            state,
        })
}

fn job_spec() -> impl Strategy<Value = JobSpec> {
    (
        prop_oneof![3 => Just(0u8), 2 => 1..8u8],
        prop::option::weighted(0.5, 1..=8u32),
        prop::option::weighted(0.3, 1..=3u64),
        -2..=2i32,
        prop::option::weighted(0.25, 0..GROUPS.len()),
        0..PROJECTS.len(),
    )
        .prop_map(|(runs_on, cpu, memory, priority, group, project)| JobSpec {
            runs_on,
            cpu: cpu.map(|halves| halves * 500),
            memory,
            priority,
            group,
            project,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => job_spec().prop_map(Op::Enqueue),
        4 => prop_oneof![Just(usize::MAX), 1..4usize].prop_map(Op::Place),
        5 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Dequeue),
        1 => worker_spec().prop_map(Op::AddWorker),
        1 => (any::<usize>(), worker_spec()).prop_map(|(i, s)| Op::UpdateWorker(i, s)),
        1 => any::<usize>().prop_map(Op::RemoveWorker),
        2 => (1..=5u8).prop_map(Op::Advance),
    ]
}

/// The cluster's state as plain maps: what the rules are checked against.
#[derive(Debug, Default)]
struct Model {
    now: i64,
    next_job: u64,
    next_worker: u64,
    next_reg: u64,
    aging_ms: u64,
    /// Registered workers with their registration number.
    workers: BTreeMap<WorkerId, (Worker, u64)>,
    queued: BTreeMap<JobId, QueuedJob>,
    /// Placed jobs in placement order.
    placed: Vec<(QueuedJob, WorkerId)>,
}

impl Model {
    fn worker(&mut self, spec: &WorkerSpec, id: Option<WorkerId>) -> Worker {
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

    fn job(&mut self, spec: &JobSpec) -> QueuedJob {
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

    fn add_worker(&mut self, worker: Worker) {
        self.next_reg += 1;
        self.workers
            .insert(worker.id.clone(), (worker, self.next_reg));
    }

    fn used(&self, worker: &WorkerId) -> (u32, u64, u64, Vec<JobId>) {
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

    fn fits(&self, worker: &Worker, job: &QueuedJob) -> bool {
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

    fn group_free(&self, job: &QueuedJob) -> bool {
        job.concurrency.as_ref().is_none_or(|g| {
            self.placed
                .iter()
                .all(|(p, _)| p.concurrency.as_ref() != Some(g))
        })
    }

    fn running(&self, project: &Name) -> usize {
        self.placed
            .iter()
            .filter(|(p, _)| &p.project == project)
            .count()
    }

    /// Checks one placement against the rules, then records it.
    fn apply(&mut self, placement: &Placement) -> Result<(), TestCaseError> {
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
    fn reference_round(&self, max: usize) -> Vec<Placement> {
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
fn check_invariants(c: &Cluster) -> Result<(), TestCaseError> {
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

/// Runs one call on both the cluster and the model, checking what the cluster returns.
fn step(c: &mut Cluster, m: &mut Model, op: &Op, reference: bool) -> Result<(), TestCaseError> {
    match op {
        Op::Enqueue(spec) => {
            let job = m.job(spec);
            c.enqueue(job.clone()).unwrap();
            m.queued.insert(job.job, job);
        }
        Op::Place(max) => {
            let expected = reference.then(|| m.reference_round(*max));
            let placements = c.place(Timestamp(m.now), *max);
            prop_assert!(placements.len() <= *max);
            if let Some(expected) = expected {
                prop_assert_eq!(&placements, &expected);
            }
            for placement in &placements {
                m.apply(placement)?;
            }
            if *max == usize::MAX {
                // Nothing left that fits a worker not kept for another job.
                for job in m.queued.values() {
                    let fits = m.workers.values().any(|(w, _)| m.fits(w, job));
                    if fits && m.group_free(job) {
                        prop_assert!(
                            matches!(
                                c.explain(job.job),
                                Some(WaitReason::EligibleWorkersReserved { .. })
                            ),
                            "{:?} fits but waits: {:?}",
                            job,
                            c.explain(job.job)
                        );
                    }
                }
            }
        }
        Op::Finish(i) if !m.placed.is_empty() => {
            let (job, _) = m.placed.remove(i % m.placed.len());
            c.finished(job.job).unwrap();
        }
        Op::Dequeue(i) if !m.queued.is_empty() => {
            let job = *m.queued.keys().nth(i % m.queued.len()).unwrap();
            c.dequeue(job).unwrap();
            m.queued.remove(&job);
        }
        Op::AddWorker(spec) => {
            let worker = m.worker(spec, None);
            c.add_worker(worker.clone()).unwrap();
            m.add_worker(worker);
        }
        Op::UpdateWorker(i, spec) if !m.workers.is_empty() => {
            let id = m.workers.keys().nth(i % m.workers.len()).unwrap().clone();
            let worker = m.worker(spec, Some(id.clone()));
            c.update_worker(worker.clone()).unwrap();
            m.workers.get_mut(&id).unwrap().0 = worker;
        }
        Op::RemoveWorker(i) if !m.workers.is_empty() => {
            let id = m.workers.keys().nth(i % m.workers.len()).unwrap().clone();
            let evicted = c.remove_worker(&id).unwrap();
            let expected: Vec<QueuedJob> = m
                .placed
                .iter()
                .filter(|(_, w)| *w == id)
                .map(|(job, _)| job.clone())
                .collect();
            prop_assert_eq!(&evicted, &expected);
            m.placed.retain(|(_, w)| *w != id);
            m.workers.remove(&id);
            for job in evicted {
                c.enqueue(job.clone()).unwrap();
                m.queued.insert(job.job, job);
            }
        }
        Op::Advance(seconds) => m.now += i64::from(*seconds) * SECOND,
        _ => {}
    }
    for (id, (worker, _)) in &m.workers {
        let usage = c.usage(id).unwrap();
        let (slots, cpu, memory, jobs) = m.used(id);
        prop_assert_eq!(
            (
                usage.slots,
                usage.cpu_millis,
                usage.memory_bytes,
                usage.jobs
            ),
            (slots, cpu, memory, jobs),
            "usage of {:?}",
            worker
        );
    }
    prop_assert_eq!(c.queued_len(), m.queued.len());
    prop_assert_eq!(c.placed_len(), m.placed.len());
    check_invariants(c)
}

fn run(
    policy: Policy,
    workers: &[WorkerSpec],
    ops: &[Op],
    reference: bool,
) -> Result<(), TestCaseError> {
    let mut c = Cluster::new(policy);
    let mut m = Model {
        aging_ms: policy.aging_interval.as_millis() as u64,
        ..Model::default()
    };
    for spec in workers {
        let worker = m.worker(spec, None);
        c.add_worker(worker.clone()).unwrap();
        m.add_worker(worker);
    }
    for op in ops {
        step(&mut c, &mut m, op, reference)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_calls_never_break_the_rules(
        workers in prop::collection::vec(worker_spec(), 0..6),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let policy = Policy {
            aging_interval: Duration::from_secs(2),
            reserve_after: Duration::from_secs(4),
        };
        run(policy, &workers, &ops, false)?;
    }

    #[test]
    fn placement_matches_the_reference_policy(
        workers in prop::collection::vec(worker_spec(), 0..6),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let policy = Policy {
            aging_interval: Duration::from_secs(2),
            reserve_after: Duration::MAX,
        };
        run(policy, &workers, &ops, true)?;
    }
}

/// A job of the liveness test: how many rounds it runs once placed.
#[derive(Debug, Clone)]
struct Timed {
    spec: JobSpec,
    rounds: u8,
}

fn timed() -> impl Strategy<Value = Timed> {
    (job_spec(), 1..=3u8).prop_map(|(spec, rounds)| Timed { spec, rounds })
}

fn enqueue(
    c: &mut Cluster,
    m: &mut Model,
    rounds_of: &mut BTreeMap<JobId, u8>,
    job: &Timed,
) -> QueuedJob {
    let queued = m.job(&job.spec);
    rounds_of.insert(queued.job, job.rounds);
    c.enqueue(queued.clone()).unwrap();
    queued
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_placeable_job_is_placed_under_a_stream_of_arrivals(
        workers in prop::collection::vec(worker_spec(), 1..5),
        initial in prop::collection::vec(timed(), 1..20),
        arrivals in prop::collection::vec(prop::collection::vec(timed(), 0..4), 300),
    ) {
        // One round per second; aging every second; starving after 3 seconds.
        let policy = Policy {
            aging_interval: Duration::from_secs(1),
            reserve_after: Duration::from_secs(3),
        };
        let mut c = Cluster::new(policy);
        let mut m = Model { aging_ms: 1000, ..Model::default() };
        for spec in &workers {
            let worker = m.worker(&WorkerSpec { state: WorkerState::Ready, ..spec.clone() }, None);
            c.add_worker(worker.clone()).unwrap();
            m.add_worker(worker);
        }
        let mut rounds_of = BTreeMap::new();
        // The initial jobs some worker could hold when idle: each must be placed.
        let mut waiting: Vec<JobId> = Vec::new();
        for job in &initial {
            let queued = enqueue(&mut c, &mut m, &mut rounds_of, job);
            let demand = Demand::of(queued.resources);
            let placeable = m.workers.values().any(|(w, _)| {
                w.slots >= 1
                    && queued.runs_on.iter().all(|l| w.labels.contains(l))
                    && w.capacity.cpu.is_none_or(|cap| demand.cpu <= u64::from(cap.millis()))
                    && w.capacity.memory.is_none_or(|cap| demand.memory <= cap.bytes())
            });
            if placeable {
                waiting.push(queued.job);
            }
        }
        let mut running: Vec<(JobId, i64)> = Vec::new();
        for (round, arriving) in arrivals.iter().enumerate() {
            let now = round as i64 * SECOND;
            m.now = now;
            running.retain(|&(job, until)| {
                if until <= now {
                    c.finished(job).unwrap();
                    false
                } else {
                    true
                }
            });
            for job in arriving {
                enqueue(&mut c, &mut m, &mut rounds_of, job);
            }
            for placement in c.place(Timestamp(now), usize::MAX) {
                let rounds = i64::from(rounds_of[&placement.job]);
                running.push((placement.job, now + rounds * SECOND));
                waiting.retain(|&job| job != placement.job);
            }
        }
        prop_assert!(waiting.is_empty(), "never placed: {:?}", waiting
            .iter()
            .map(|&job| (job, c.explain(job), c.effective_priority(job, Timestamp(m.now))))
            .collect::<Vec<_>>());
    }
}
