//! Behaviour of the queue view (why a job waits, its position, the workers that could take it)
//! and of refused calls.

use super::tests::{T0, cluster, in_group, job, labels, needing, on, sized, wid, worker};
use super::*;
use crate::ids::JobId;
use crate::model::{Cpu, Memory, Name, Resources};

#[test]
fn explain_names_the_labels_no_worker_has() {
    let c = cluster(
        vec![worker("a", &["linux"], 1), worker("b", &["gpu"], 1)],
        vec![on(1, &["linux", "arm64", "fpga"]), on(2, &["linux", "gpu"])],
    );
    assert_eq!(
        c.explain(JobId(1)),
        Some(WaitReason::NoWorkerHasLabels {
            missing: labels(&["arm64", "fpga"])
        })
    );
    assert_eq!(
        c.explain(JobId(2)),
        Some(WaitReason::NoWorkerHasAllLabels {
            closest: wid("a"),
            lacking: labels(&["gpu"])
        })
    );
    assert_eq!(
        c.explain(JobId(1)).unwrap().to_string(),
        "no worker has the label(s) `arm64`, `fpga`"
    );
}

#[test]
fn explain_tells_draining_workers_and_resources_apart() {
    let mut c = cluster(
        vec![
            sized("a", &["linux"], 2, 2000, 4),
            sized("b", &["linux"], 2, 1000, 8),
            worker("c", &["gpu"], 2),
        ],
        vec![on(1, &["linux"]), needing(2, 4000, 1), on(3, &["gpu"])],
    );
    c.set_worker_state(&wid("c"), WorkerState::Draining)
        .unwrap();
    assert_eq!(
        c.explain(JobId(3)),
        Some(WaitReason::EligibleWorkersDraining {
            draining: 1,
            offline: 0
        })
    );
    assert_eq!(
        c.explain(JobId(2)),
        Some(WaitReason::InsufficientResources {
            requested: needing(2, 4000, 1).resources,
            largest: Resources {
                cpu: Cpu::from_millis(2000),
                memory: Memory::from_bytes(8 << 30),
            },
        })
    );
    assert_eq!(
        c.explain(JobId(1)),
        Some(WaitReason::QueuedBehind { position: 0 })
    );
}

#[test]
fn explain_counts_the_busy_workers_that_could_take_the_job() {
    let mut c = cluster(
        vec![worker("a", &[], 1), worker("b", &[], 1)],
        vec![job(1), job(2), job(3)],
    );
    c.place(T0, 10);
    assert_eq!(
        c.explain(JobId(3)),
        Some(WaitReason::AllEligibleBusy {
            eligible: 2,
            reserved: None
        })
    );
    assert_eq!(c.candidates(JobId(3)), Some(vec![wid("a"), wid("b")]));
    assert_eq!(c.explain(JobId(1)), None);
    assert_eq!(c.explain(JobId(99)), None);
}

#[test]
fn position_counts_the_jobs_ahead_in_the_policy_order() {
    let c = cluster(
        vec![],
        vec![
            job(1),
            QueuedJob {
                priority: 1,
                ..job(2)
            },
            on(3, &["gpu"]),
        ],
    );
    assert_eq!(c.position(JobId(2)), Some(0));
    assert_eq!(c.position(JobId(1)), Some(1));
    assert_eq!(c.position(JobId(3)), Some(2));
    assert_eq!(c.queue_order(), [JobId(2), JobId(1), JobId(3)]);
}

#[test]
fn refused_calls_say_why_and_change_nothing() {
    let mut c = cluster(vec![worker("w", &[], 1)], vec![job(1), job(2)]);
    c.place(T0, 1);
    assert_eq!(
        c.add_worker(worker("w", &[], 1)),
        Err(ScheduleError::DuplicateWorker { worker: wid("w") })
    );
    assert_eq!(
        c.update_worker(worker("x", &[], 1)),
        Err(ScheduleError::UnknownWorker { worker: wid("x") })
    );
    assert_eq!(
        c.enqueue(job(1)),
        Err(ScheduleError::DuplicateJob { job: JobId(1) })
    );
    let err = c.dequeue(JobId(1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "job-1 is placed on worker `w`, not queued; report it finished instead"
    );
    assert_eq!(
        c.finished(JobId(2)),
        Err(ScheduleError::StillQueued { job: JobId(2) })
    );
    assert_eq!(
        c.finished(JobId(9)),
        Err(ScheduleError::UnknownJob { job: JobId(9) })
    );
    assert_eq!((c.queued_len(), c.placed_len()), (1, 1));
}

#[test]
fn interned_entries_are_dropped_when_their_last_job_leaves() {
    let mut c = cluster(
        vec![worker("w", &["linux"], 2)],
        vec![
            QueuedJob {
                project: "p".parse::<Name>().unwrap(),
                ..in_group(1, "g")
            },
            on(2, &["linux"]),
        ],
    );
    c.place(T0, 10);
    c.finished(JobId(1)).unwrap();
    c.finished(JobId(2)).unwrap();
    assert_eq!(
        (
            c.classes.len(),
            c.needs.len(),
            c.lanes.len(),
            c.projects.len(),
            c.groups.len(),
            c.jobs.len()
        ),
        (0, 0, 0, 0, 0, 0)
    );
    c.remove_worker(&wid("w")).unwrap();
    assert_eq!((c.pools.len(), c.workers.len()), (0, 0));
}
