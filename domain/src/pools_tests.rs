use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn label(text: &str) -> Label {
    text.parse().unwrap()
}

fn rule(max: u32) -> PoolRule {
    PoolRule {
        labels: vec![label("linux"), label("ephemeral")],
        max,
        start_deadline: Duration::from_secs(60),
        idle_deadline: Duration::from_secs(120),
    }
}

fn worker(name: &str, phase: Phase) -> Observed {
    Observed {
        name: name.into(),
        phase,
        launched: Timestamp(0),
        registered: None,
    }
}

const NOW: Timestamp = Timestamp(10_000);

#[test]
fn a_pool_starts_one_worker_per_job_it_serves_and_none_for_others() {
    let linux = [label("linux")];
    let gpu = [label("gpu")];
    let both = [label("linux"), label("ephemeral")];
    let queue: [&[Label]; 4] = [&linux, &gpu, &both, &[]];
    let moves = decide(&rule(10), &queue, &[], &Backoff::default(), NOW);
    assert_eq!(moves, [Move::Start { count: 3 }]);
}

#[test]
fn a_pool_scales_to_zero_when_nothing_waits() {
    let moves = decide(&rule(10), &[], &[], &Backoff::default(), NOW);
    assert!(moves.is_empty(), "{moves:?}");
}

#[test]
fn workers_starting_or_idle_stand_for_queued_jobs_and_busy_ones_count_toward_max() {
    let linux = [label("linux")];
    let queue: [&[Label]; 3] = [&linux, &linux, &linux];
    let workers = [
        worker("a", Phase::Starting),
        worker("b", Phase::Idle),
        worker("c", Phase::Busy),
    ];
    let moves = decide(&rule(10), &queue, &workers, &Backoff::default(), NOW);
    assert_eq!(moves, [Move::Start { count: 1 }]);
    let moves = decide(&rule(3), &queue, &workers, &Backoff::default(), NOW);
    assert!(moves.is_empty(), "max 3 is reached: {moves:?}");
}

#[test]
fn exited_workers_are_removed_and_a_failure_before_a_job_is_a_failed_start() {
    let workers = [
        worker(
            "done",
            Phase::Exited {
                code: Some(0),
                took_job: true,
            },
        ),
        worker(
            "idle-timeout",
            Phase::Exited {
                code: Some(0),
                took_job: false,
            },
        ),
        worker(
            "crashed",
            Phase::Exited {
                code: Some(127),
                took_job: false,
            },
        ),
        worker(
            "failed-job",
            Phase::Exited {
                code: Some(1),
                took_job: true,
            },
        ),
    ];
    let moves = decide(&rule(10), &[], &workers, &Backoff::default(), NOW);
    let remove = |name: &str, failure: Option<&str>| Move::Remove {
        name: name.into(),
        failure: failure.map(str::to_owned),
    };
    assert_eq!(
        moves,
        [
            remove("done", None),
            remove("idle-timeout", None),
            remove(
                "crashed",
                Some("the worker exited with code 127 before it took a job")
            ),
            remove("failed-job", None),
        ]
    );
}

#[test]
fn a_worker_that_never_registers_or_stays_idle_too_long_is_removed() {
    let mut idle = worker("idle", Phase::Idle);
    idle.registered = Some(Timestamp(1_000));
    let workers = [worker("stuck", Phase::Starting), idle];
    let later = Timestamp(200_000);
    let moves = decide(&rule(10), &[], &workers, &Backoff::default(), later);
    assert_eq!(
        moves,
        [
            Move::Remove {
                name: "stuck".into(),
                failure: Some("the worker did not reach the server within 60 s".into()),
            },
            Move::Remove {
                name: "idle".into(),
                failure: None,
            },
        ]
    );
}

#[test]
fn a_pool_backing_off_starts_nothing_until_its_delay_is_over() {
    let linux = [label("linux")];
    let queue: [&[Label]; 1] = [&linux];
    let mut backoff = Backoff::default();
    backoff.failed(NOW);
    backoff.failed(NOW);
    assert_eq!(backoff.until, Some(Timestamp(NOW.0 + 2_000)));
    assert!(decide(&rule(1), &queue, &[], &backoff, Timestamp(NOW.0 + 1_999)).is_empty());
    assert_eq!(
        decide(&rule(1), &queue, &[], &backoff, Timestamp(NOW.0 + 2_000)),
        [Move::Start { count: 1 }]
    );
    backoff.succeeded();
    assert!(backoff.ready(NOW));
}

proptest! {
    #[test]
    fn backoff_doubles_and_stays_in_bounds(failures in 1u32..10_000) {
        let delay = Backoff::delay(failures);
        prop_assert!(delay >= Backoff::BASE && delay <= Backoff::MAX);
        prop_assert!(Backoff::delay(failures + 1) >= delay);
        if Backoff::delay(failures + 1) < Backoff::MAX {
            prop_assert_eq!(Backoff::delay(failures + 1), delay * 2);
        }
    }

    #[test]
    fn a_pool_never_goes_past_max(
        max in 1u32..8,
        queued in 0usize..30,
        phases in proptest::collection::vec(0u8..4, 0..12),
    ) {
        let linux = [label("linux")];
        let queue: Vec<&[Label]> = (0..queued).map(|_| &linux[..]).collect();
        let workers: Vec<Observed> = phases
            .iter()
            .enumerate()
            .map(|(i, p)| worker(&format!("w{i}"), match p {
                0 => Phase::Starting,
                1 => Phase::Idle,
                2 => Phase::Busy,
                _ => Phase::Exited { code: Some(0), took_job: true },
            }))
            .collect();
        let live = workers.iter().filter(|w| !matches!(w.phase, Phase::Exited { .. })).count() as u32;
        let started: u32 = decide(&rule(max), &queue, &workers, &Backoff::default(), NOW)
            .iter()
            .map(|m| match m { Move::Start { count } => *count, _ => 0 })
            .sum();
        prop_assert!(started == 0 || live + started <= max);
        prop_assert!(started as usize <= queued);
    }
}
