//! Behaviour of the policy, one rule per test: eligibility, order, fair share, aging, groups,
//! starvation and worker changes. The queue view and the errors are in `explain_tests.rs`, which
//! shares the helpers here.

use std::time::Duration;

use super::*;
use crate::ids::{JobId, RunId, Timestamp, WorkerId};
use crate::model::{Cpu, Label, Memory, Resources};

pub(super) const T0: Timestamp = Timestamp(0);
const MINUTE: i64 = 60_000;

pub(super) fn labels(names: &[&str]) -> Vec<Label> {
    names.iter().map(|name| name.parse().unwrap()).collect()
}

pub(super) fn wid(id: &str) -> WorkerId {
    WorkerId(id.to_owned())
}

pub(super) fn worker(id: &str, names: &[&str], slots: u32) -> Worker {
    Worker::ready(wid(id), labels(names), slots)
}

pub(super) fn sized(id: &str, names: &[&str], slots: u32, cpu: u32, gib: u64) -> Worker {
    Worker {
        capacity: Resources {
            cpu: Cpu::from_millis(cpu),
            memory: Memory::from_bytes(gib << 30),
        },
        ..worker(id, names, slots)
    }
}

pub(super) fn job(id: u64) -> QueuedJob {
    QueuedJob {
        job: JobId(id),
        run: RunId(id / 100),
        project: "web".parse().unwrap(),
        runs_on: Vec::new(),
        resources: Resources::default(),
        priority: 0,
        concurrency: None,
        seq: id,
        queued_at: T0,
    }
}

pub(super) fn on(id: u64, names: &[&str]) -> QueuedJob {
    QueuedJob {
        runs_on: labels(names),
        ..job(id)
    }
}

pub(super) fn needing(id: u64, cpu: u32, gib: u64) -> QueuedJob {
    QueuedJob {
        resources: Resources {
            cpu: Cpu::from_millis(cpu),
            memory: Memory::from_bytes(gib << 30),
        },
        ..job(id)
    }
}

pub(super) fn of(id: u64, project: &str) -> QueuedJob {
    QueuedJob {
        project: project.parse().unwrap(),
        ..job(id)
    }
}

pub(super) fn in_group(id: u64, group: &str) -> QueuedJob {
    QueuedJob {
        concurrency: Some(group.parse().unwrap()),
        ..job(id)
    }
}

pub(super) fn cluster(workers: Vec<Worker>, jobs: Vec<QueuedJob>) -> Cluster {
    let mut cluster = Cluster::default();
    for worker in workers {
        cluster.add_worker(worker).unwrap();
    }
    for job in jobs {
        cluster.enqueue(job).unwrap();
    }
    cluster
}

/// `(job, worker)` of each placement, in order.
pub(super) fn place(cluster: &mut Cluster, now: Timestamp, max: usize) -> Vec<(u64, String)> {
    cluster
        .place(now, max)
        .into_iter()
        .map(|p| (p.job.0, p.worker.0))
        .collect()
}

pub(super) fn placed_ids(cluster: &mut Cluster, now: Timestamp) -> Vec<u64> {
    place(cluster, now, usize::MAX)
        .into_iter()
        .map(|(job, _)| job)
        .collect()
}

#[test]
fn a_job_goes_only_to_a_worker_with_all_its_labels() {
    let mut c = cluster(
        vec![
            worker("mac", &["macos"], 4),
            worker("linux", &["linux"], 4),
            worker("gpu", &["linux", "gpu"], 4),
        ],
        vec![on(1, &["linux", "gpu"]), on(2, &["gpu", "gpu", "linux"])],
    );
    assert_eq!(
        place(&mut c, T0, 10),
        [(1, "gpu".to_owned()), (2, "gpu".to_owned())]
    );
}

#[test]
fn draining_and_offline_workers_take_no_new_jobs() {
    let mut c = cluster(vec![worker("a", &[], 2), worker("b", &[], 2)], vec![job(1)]);
    c.set_worker_state(&wid("a"), WorkerState::Draining)
        .unwrap();
    c.set_worker_state(&wid("b"), WorkerState::Offline).unwrap();
    assert!(c.place(T0, 10).is_empty());
    c.set_worker_state(&wid("b"), WorkerState::Ready).unwrap();
    assert_eq!(place(&mut c, T0, 10), [(1, "b".to_owned())]);
}

#[test]
fn scheduler_never_overcommits_slots_cpu_or_memory() {
    let mut c = cluster(
        vec![sized("w", &[], 3, 4000, 8)],
        vec![
            needing(1, 3000, 1),
            needing(2, 2000, 1),
            needing(3, 1000, 6),
            needing(4, 1000, 2),
            job(5),
        ],
    );
    // 1 (3 cpu, 1Gi); 2 does not fit (5 cpu); 3 does (4 cpu, 7Gi); 4 does not (5 cpu, 9Gi); 5
    // takes the last slot.
    assert_eq!(placed_ids(&mut c, T0), [1, 3, 5]);
    let usage = c.usage(&wid("w")).unwrap();
    assert_eq!(
        (usage.slots, usage.cpu_millis, usage.memory_bytes),
        (3, 4000, 7 << 30)
    );
    assert_eq!(usage.jobs, [JobId(1), JobId(3), JobId(5)]);
    c.finished(JobId(5)).unwrap();
    assert!(c.place(T0, 10).is_empty());
    c.finished(JobId(1)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [2]);
}

#[test]
fn higher_priority_goes_first() {
    let mut c = cluster(
        vec![worker("w", &[], 1)],
        vec![
            job(1),
            QueuedJob {
                priority: 5,
                ..job(2)
            },
        ],
    );
    assert_eq!(placed_ids(&mut c, T0), [2]);
}

#[test]
fn equal_priority_goes_in_submission_order() {
    let mut c = cluster(vec![worker("w", &[], 3)], vec![job(3), job(1), job(2)]);
    assert_eq!(placed_ids(&mut c, T0), [1, 2, 3]);
}

#[test]
fn fair_share_interleaves_a_burst_with_the_other_projects_jobs() {
    let mut jobs: Vec<QueuedJob> = (1..=4).map(|id| of(id, "big")).collect();
    jobs.extend((5..=6).map(|id| of(id, "small")));
    let mut c = cluster(vec![worker("w", &[], 6)], jobs);
    // big:1 (big 0 running = small 0, seq 1 < 5), small:5 (small 0 < big 1), then big:2 (1 = 1,
    // seq 2 < 6), small:6, then big's rest.
    assert_eq!(placed_ids(&mut c, T0), [1, 5, 2, 6, 3, 4]);
}

#[test]
fn fair_share_prefers_the_project_with_fewest_running_jobs() {
    let mut c = cluster(vec![worker("w", &[], 3)], vec![of(1, "a"), of(2, "a")]);
    assert_eq!(placed_ids(&mut c, T0), [1, 2]);
    c.enqueue(of(3, "a")).unwrap();
    c.enqueue(of(4, "b")).unwrap();
    // a has 2 running, b none: b's later job goes first.
    assert_eq!(place(&mut c, T0, 1), [(4, "w".to_owned())]);
}

#[test]
fn priority_outranks_fair_share() {
    let mut c = cluster(vec![worker("w", &[], 2)], vec![of(1, "a")]);
    c.place(T0, 1);
    c.enqueue(QueuedJob {
        priority: 1,
        ..of(2, "a")
    })
    .unwrap();
    c.enqueue(of(3, "b")).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [2]);
}

#[test]
fn a_job_that_cannot_be_placed_does_not_hold_back_the_jobs_behind_it() {
    let mut c = cluster(
        vec![worker("linux", &["linux"], 2)],
        vec![
            QueuedJob {
                priority: 10,
                ..on(1, &["gpu"])
            },
            on(2, &["linux"]),
            needing(3, 1000, 1),
        ],
    );
    assert_eq!(placed_ids(&mut c, T0), [2, 3]);
    assert!(c.is_queued(JobId(1)));
}

#[test]
fn aging_lets_an_old_job_overtake_later_jobs_of_higher_priority() {
    let mut c = cluster(vec![worker("w", &[], 1)], vec![job(1)]);
    // Queued 3 minutes later with 2 more levels: behind; with 4 more: ahead.
    c.enqueue(QueuedJob {
        priority: 2,
        queued_at: Timestamp(3 * MINUTE),
        ..job(2)
    })
    .unwrap();
    c.enqueue(QueuedJob {
        priority: 4,
        queued_at: Timestamp(3 * MINUTE),
        ..job(3)
    })
    .unwrap();
    let now = Timestamp(3 * MINUTE);
    assert_eq!(c.effective_priority(JobId(1), now), Some(3));
    assert_eq!(c.effective_priority(JobId(3), now), Some(4));
    assert_eq!(c.queue_order(), [JobId(3), JobId(1), JobId(2)]);
    assert_eq!(placed_ids(&mut c, now), [3]);
}

#[test]
fn a_concurrency_group_runs_one_job_at_a_time_across_runs() {
    let mut c = cluster(
        vec![worker("w", &[], 4)],
        vec![
            in_group(101, "production"),
            in_group(202, "production"),
            in_group(303, "staging"),
            job(404),
        ],
    );
    assert_eq!(placed_ids(&mut c, T0), [101, 303, 404]);
    assert_eq!(
        c.explain(JobId(202)),
        Some(WaitReason::ConcurrencyGroupHeld {
            group: "production".parse().unwrap(),
            by_job: JobId(101),
            by_run: RunId(1),
        })
    );
    c.finished(JobId(101)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [202]);
}

#[test]
fn removing_a_worker_hands_back_its_jobs_as_queued_and_frees_their_group() {
    let deploy = QueuedJob {
        priority: 3,
        queued_at: Timestamp(42),
        ..in_group(1, "production")
    };
    let mut c = cluster(
        vec![worker("w", &[], 2)],
        vec![deploy.clone(), job(2), in_group(3, "production")],
    );
    assert_eq!(placed_ids(&mut c, T0), [1, 2]);
    let evicted = c.remove_worker(&wid("w")).unwrap();
    assert_eq!(evicted, [deploy.clone(), job(2)]);
    assert_eq!(c.placed_len(), 0);
    c.add_worker(worker("v", &[], 1)).unwrap();
    // The group is free again: 3 is placeable; the evicted deploy, queued again, goes first.
    c.enqueue(deploy).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [1]);
    assert!(c.remove_worker(&wid("w")).is_err());
}

#[test]
fn finishing_a_job_frees_its_slot_for_the_next_one() {
    let mut c = cluster(vec![worker("w", &[], 1)], vec![job(1), job(2)]);
    assert_eq!(placed_ids(&mut c, T0), [1]);
    assert!(c.place(T0, 1).is_empty());
    c.finished(JobId(1)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [2]);
    assert_eq!(c.placed_on(JobId(2)), Some(&wid("w")));
}

#[test]
fn the_worker_with_most_free_slots_is_chosen_then_the_earliest_registered() {
    let mut c = cluster(
        vec![
            worker("a", &[], 2),
            worker("b", &[], 3),
            worker("c", &[], 3),
        ],
        vec![job(1), job(2), job(3), job(4)],
    );
    assert_eq!(
        place(&mut c, T0, 4),
        [
            (1, "b".to_owned()),
            (2, "c".to_owned()),
            (3, "a".to_owned()),
            (4, "b".to_owned())
        ]
    );
}

#[test]
fn a_large_job_is_not_starved_by_a_stream_of_small_ones() {
    let policy = Policy {
        aging_interval: Duration::from_secs(60),
        reserve_after: Duration::from_secs(300),
    };
    let mut c = Cluster::new(policy);
    c.add_worker(sized("w", &[], 8, 4000, 16)).unwrap();
    c.enqueue(job(1)).unwrap();
    c.place(T0, 1);
    c.enqueue(needing(1000, 4000, 1)).unwrap();
    // Every minute one small job finishes and a new one arrives; each new one fits the freed
    // CPU, the big one never does, until it starves and reserves the worker.
    let mut running = vec![1];
    let mut big_placed_at = None;
    for minute in 1..60 {
        let now = Timestamp(minute * MINUTE);
        if let Some(oldest) = running.first().copied() {
            c.finished(JobId(oldest as u64)).unwrap();
            running.remove(0);
        }
        c.enqueue(QueuedJob {
            priority: 50,
            queued_at: now,
            ..needing(minute as u64 + 1, 1000, 1)
        })
        .unwrap();
        for (id, _) in place(&mut c, now, usize::MAX) {
            if id == 1000 {
                big_placed_at = Some(minute);
            } else {
                running.push(id as i64);
            }
        }
        if big_placed_at.is_some() {
            break;
        }
    }
    let minute = big_placed_at.expect("the big job is placed");
    assert!((5..=10).contains(&minute), "placed at minute {minute}");
}

/// A cluster where job 2 (1000m) starves at once and reserves `w`, busy with job 1 (600m).
fn starving_job_with_reservation() -> Cluster {
    let policy = Policy {
        aging_interval: Duration::from_secs(60),
        reserve_after: Duration::ZERO,
    };
    let mut c = Cluster::new(policy);
    c.add_worker(sized("w", &[], 2, 1000, 1)).unwrap();
    c.enqueue(needing(1, 600, 0)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [1]);
    c.enqueue(needing(2, 1000, 0)).unwrap();
    assert!(c.place(T0, 10).is_empty());
    assert_eq!(
        c.explain(JobId(2)),
        Some(WaitReason::AllEligibleBusy {
            eligible: 1,
            reserved: Some(wid("w")),
        })
    );
    c.enqueue(job(3)).unwrap();
    c
}

#[test]
fn a_reserved_worker_takes_nothing_but_its_starving_job() {
    let mut c = starving_job_with_reservation();
    // `w` has a free slot, but it is kept for job 2.
    assert!(c.place(T0, 10).is_empty());
    assert_eq!(
        c.explain(JobId(3)),
        Some(WaitReason::EligibleWorkersReserved {
            for_jobs: vec![JobId(2)]
        })
    );
    c.finished(JobId(1)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [2, 3]);
}

#[test]
fn a_reservation_is_dropped_when_its_job_is_dequeued() {
    let mut c = starving_job_with_reservation();
    c.dequeue(JobId(2)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [3]);
}

#[test]
fn a_job_too_big_for_every_worker_reserves_none() {
    let policy = Policy {
        aging_interval: Duration::from_secs(60),
        reserve_after: Duration::ZERO,
    };
    let mut c = Cluster::new(policy);
    c.add_worker(sized("w", &[], 2, 1000, 1)).unwrap();
    c.enqueue(QueuedJob {
        priority: 9,
        ..needing(1, 2000, 0)
    })
    .unwrap();
    c.enqueue(job(2)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [2]);
    assert!(matches!(
        c.explain(JobId(1)),
        Some(WaitReason::InsufficientResources { .. })
    ));
    c.enqueue(job(3)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [3]);
}

#[test]
fn a_worker_shrunk_below_its_usage_keeps_its_jobs_and_takes_none_until_they_fit() {
    let mut c = cluster(vec![worker("w", &[], 3)], vec![job(1), job(2), job(3)]);
    c.place(T0, 2);
    c.update_worker(worker("w", &[], 1)).unwrap();
    assert!(c.place(T0, 10).is_empty());
    assert_eq!(c.usage(&wid("w")).unwrap().slots, 2);
    c.finished(JobId(1)).unwrap();
    assert!(c.place(T0, 10).is_empty());
    c.finished(JobId(2)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [3]);
}

#[test]
fn a_worker_given_new_labels_takes_the_jobs_that_waited_for_them() {
    let mut c = cluster(vec![worker("w", &["linux"], 2)], vec![on(1, &["gpu"])]);
    assert!(c.place(T0, 10).is_empty());
    c.update_worker(worker("w", &["linux", "gpu"], 2)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [1]);
}

#[test]
fn max_bounds_the_placements_of_a_round() {
    let mut c = cluster(vec![worker("w", &[], 5)], (1..=5).map(job).collect());
    assert!(c.place(T0, 0).is_empty());
    assert_eq!(placed_ids(&mut c, T0).len(), 5);
    let mut c = cluster(vec![worker("w", &[], 5)], (1..=5).map(job).collect());
    assert_eq!(c.place(T0, 2).len(), 2);
    assert_eq!(c.queued_len(), 3);
}

#[test]
fn a_dequeued_job_is_never_placed() {
    let mut c = cluster(vec![worker("w", &[], 5)], vec![job(1), job(2)]);
    c.dequeue(JobId(1)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [2]);
}

#[test]
fn a_job_that_runs_on_a_worker_already_takes_its_place_back_even_when_the_worker_is_full() {
    // After a restart, new jobs filled the agent's slots before the job it still runs was
    // queued again: that job goes back to it at once, and the worker takes nothing more until
    // it has room again.
    let mut c = cluster(vec![worker("agent", &[], 1)], vec![job(1)]);
    assert_eq!(placed_ids(&mut c, T0), [1]);
    c.enqueue(job(2)).unwrap();
    c.enqueue(job(3)).unwrap();
    assert!(c.place(T0, 10).is_empty(), "the worker is full");
    let back = c.place_back(JobId(2), &wid("agent")).expect("placed back");
    assert_eq!((back.job, back.worker), (JobId(2), wid("agent")));
    assert_eq!(c.usage(&wid("agent")).unwrap().slots, 2, "over-committed");
    assert!(c.place(T0, 10).is_empty());
    assert!(
        c.place_back(JobId(2), &wid("agent")).is_none(),
        "not queued any more"
    );
    assert!(
        c.place_back(JobId(3), &wid("elsewhere")).is_none(),
        "unknown worker"
    );
    c.finished(JobId(1)).unwrap();
    assert!(c.place(T0, 10).is_empty(), "still full with job 2");
    c.finished(JobId(2)).unwrap();
    assert_eq!(placed_ids(&mut c, T0), [3]);
}
