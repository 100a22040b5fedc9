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

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::reference::{JobSpec, Model, SECOND, WorkerSpec, check_invariants};
use super::worker::{Demand, WorkerState};
use super::*;
use crate::ids::{JobId, Timestamp};

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
        prop::option::weighted(0.25, 0..super::reference::GROUPS.len()),
        0..super::reference::PROJECTS.len(),
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
    run_rebuilding(policy, workers, ops, reference, false)
}

/// [`run`], rebuilding the cluster's indexes ([`Cluster::rebuilt`]) after every third call when
/// `rebuild` is set, as a restarted scheduler does.
fn run_rebuilding(
    policy: Policy,
    workers: &[WorkerSpec],
    ops: &[Op],
    reference: bool,
    rebuild: bool,
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
    for (i, op) in ops.iter().enumerate() {
        step(&mut c, &mut m, op, reference)?;
        if rebuild && i % 3 == 0 {
            c = c.rebuilt();
            check_invariants(&c)?;
        }
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

    #[test]
    fn a_rebuilt_cluster_goes_on_as_the_original_would(
        workers in prop::collection::vec(worker_spec(), 0..6),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let policy = Policy {
            aging_interval: Duration::from_secs(2),
            reserve_after: Duration::MAX,
        };
        run_rebuilding(policy, &workers, &ops, true, true)?;
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
