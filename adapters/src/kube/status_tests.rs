//! A pod's statuses, as a cluster reports them, and what the job makes of them.

use serde_json::json;

use super::*;

const T0: i64 = 1_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp(T0 + seconds * 1000)
}

fn pod(status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": "hodei-s-run-1-job-1-1", "namespace": "ci" },
        "status": status,
    }))
    .expect("a pod")
}

fn waiting(container: &str, image: &str, reason: &str, message: &str) -> Pod {
    pod(json!({
        "phase": "Pending",
        "initContainerStatuses": [{
            "name": "hodei-entrypoint", "image": "hodei:0.1.0", "imageID": "", "ready": false,
            "restartCount": 0, "state": { "terminated": { "exitCode": 0, "reason": "Completed" } },
        }],
        "containerStatuses": [{
            "name": container, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": reason, "message": message } },
        }],
    }))
}

fn steps(state: serde_json::Value, phase: &str) -> Pod {
    pod(json!({
        "phase": phase,
        "containerStatuses": [{
            "name": "steps", "image": "busybox:1", "imageID": "", "ready": true,
            "restartCount": 0, "state": state,
        }],
    }))
}

fn unschedulable() -> Pod {
    pod(json!({
        "phase": "Pending",
        "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory.",
        }],
    }))
}

/// Feeds `(seconds, pod)` in order; the verdicts.
fn verdicts(seen: &[(i64, Pod)]) -> Vec<PodVerdict> {
    let mut watch = PodWatch::new(Graces::default());
    seen.iter()
        .map(|(seconds, pod)| {
            let (next, verdict) = watch.clone().on_status(pod, at(*seconds));
            watch = next;
            verdict
        })
        .collect()
}

#[test]
fn an_image_that_cannot_be_pulled_ends_the_job_after_the_pull_grace() {
    let back_off = waiting(
        "steps",
        "no-such/image:1",
        "ImagePullBackOff",
        "Back-off pulling image \"no-such/image:1\"",
    );
    let err = waiting(
        "steps",
        "no-such/image:1",
        "ErrImagePull",
        "manifest unknown",
    );
    let seen = verdicts(&[
        (0, err),
        (30, back_off.clone()),
        (59, back_off.clone()),
        (60, back_off),
    ]);
    assert_eq!(
        seen[..3],
        [
            PodVerdict::Starting,
            PodVerdict::Starting,
            PodVerdict::Starting
        ]
    );
    let PodVerdict::Failed(failure) = &seen[3] else {
        panic!("not failed after the grace: {:?}", seen[3]);
    };
    assert_eq!(
        failure.to_string(),
        "cannot pull the image `no-such/image:1` of container `steps` (ImagePullBackOff): Back-off pulling image \"no-such/image:1\""
    );
}

#[test]
fn an_image_that_may_never_be_pulled_ends_the_job_at_once() {
    let never = waiting(
        "svc-db",
        "postgres:16",
        "ErrImageNeverPull",
        "Container image \"postgres:16\" is not present with pull policy of Never",
    );
    let seen = verdicts(&[(0, never)]);
    assert!(
        matches!(&seen[0], PodVerdict::Failed(PodFailure::ImagePull { container, .. }) if container == "svc-db"),
        "{seen:?}"
    );
}

#[test]
fn a_pod_the_cluster_cannot_place_ends_the_job_after_the_schedule_grace() {
    let seen = verdicts(&[
        (0, unschedulable()),
        (299, unschedulable()),
        (300, unschedulable()),
    ]);
    assert_eq!(seen[..2], [PodVerdict::Starting, PodVerdict::Starting]);
    assert_eq!(
        seen[2],
        PodVerdict::Failed(PodFailure::Unschedulable {
            message: "0/3 nodes are available: 3 Insufficient memory.".into()
        })
    );
}

#[test]
fn a_problem_that_went_away_and_came_back_gets_its_grace_anew() {
    let pending = pod(json!({ "phase": "Pending" }));
    let seen = verdicts(&[
        (0, unschedulable()),
        (200, pending),
        (250, unschedulable()),
        (500, unschedulable()),
        (550, unschedulable()),
    ]);
    assert!(
        seen[..4].iter().all(|v| *v == PodVerdict::Starting),
        "{seen:?}"
    );
    assert!(matches!(
        seen[4],
        PodVerdict::Failed(PodFailure::Unschedulable { .. })
    ));
}

#[test]
fn a_container_that_cannot_be_created_ends_the_job_after_its_grace() {
    let config = waiting(
        "steps",
        "busybox:1",
        "CreateContainerConfigError",
        "secret \"x\" not found",
    );
    let seen = verdicts(&[(0, config.clone()), (60, config)]);
    assert_eq!(seen[0], PodVerdict::Starting);
    assert!(
        matches!(&seen[1], PodVerdict::Failed(PodFailure::Create { reason, .. }) if reason == "CreateContainerConfigError")
    );
}

#[test]
fn the_steps_container_running_and_its_end_with_an_oom_kill_as_data() {
    let running = steps(
        json!({ "running": { "startedAt": "2026-12-07T07:00:00Z" } }),
        "Running",
    );
    let oom = steps(
        json!({ "terminated": { "exitCode": 137, "reason": "OOMKilled" } }),
        "Failed",
    );
    let seen = verdicts(&[(0, running), (5, oom)]);
    assert_eq!(seen[0], PodVerdict::Running);
    assert_eq!(
        seen[1],
        PodVerdict::Ended(StepExit {
            code: Some(137),
            signal: None,
            oom_killed: true
        })
    );
}

#[test]
fn an_init_container_that_fails_ends_the_job_with_its_message() {
    let failed = pod(json!({
        "phase": "Failed",
        "initContainerStatuses": [{
            "name": "hodei-entrypoint", "image": "hodei:0.1.0", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": { "terminated": { "exitCode": 1, "reason": "Error", "message": "No space left on device" } },
        }],
    }));
    assert_eq!(
        verdicts(&[(0, failed)]),
        [PodVerdict::Failed(PodFailure::Init {
            code: 1,
            message: "No space left on device".into()
        })]
    );
}

#[test]
fn a_service_that_ends_ends_the_job() {
    let crashed = pod(json!({
        "phase": "Running",
        "containerStatuses": [
            { "name": "steps", "image": "busybox:1", "imageID": "", "ready": true, "restartCount": 0,
              "state": { "running": {} } },
            { "name": "svc-db", "image": "postgres:16", "imageID": "", "ready": false, "restartCount": 0,
              "state": { "terminated": { "exitCode": 1, "reason": "Error" } } },
        ],
    }));
    assert_eq!(
        verdicts(&[(0, crashed)])[0].clone(),
        PodVerdict::Failed(PodFailure::ServiceEnded {
            container: "svc-db".into(),
            code: 1,
            reason: "Error".into()
        })
    );
}

#[test]
fn an_evicted_pod_or_one_past_its_deadline_ends_the_job_with_the_reason() {
    for (reason, message) in [
        (
            "Evicted",
            "The node was low on resource: ephemeral-storage.",
        ),
        (
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
        ),
    ] {
        let failed = pod(json!({ "phase": "Failed", "reason": reason, "message": message }));
        let seen = verdicts(&[(0, failed)]);
        assert_eq!(
            seen,
            [PodVerdict::Failed(PodFailure::PodFailed {
                reason: reason.into(),
                message: message.into()
            })]
        );
    }
}

#[test]
fn a_pod_deleted_from_outside_ends_the_job() {
    let mut deleting = steps(json!({ "running": {} }), "Running");
    deleting.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-12-07T07:00:00Z")).expect("time"));
    assert_eq!(
        verdicts(&[(0, deleting)]),
        [PodVerdict::Failed(PodFailure::Deleted)]
    );
    let (_, gone) = PodWatch::new(Graces::default()).on_deleted();
    assert_eq!(gone, PodVerdict::Failed(PodFailure::Deleted));
    assert_eq!(
        PodFailure::Deleted.to_string(),
        "the pod was deleted from outside Hodei"
    );
}
