//! Property tests of the run engine: random DAGs, random outcomes, `when` conditions and
//! cancels at random moments, driven to the end by [`advance`] the way the run actor drives it,
//! with attempts that hold their jobs for a while.

use proptest::prelude::*;

use super::tests::Sim;
use super::*;
use crate::plan::RunInputs;
use crate::state::{DomainEvent, StepExit, StepFailure, Verdict};

/// How a job's attempt ends when it runs.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Succeed,
    Fail,
}

#[derive(Debug, Clone)]
struct Case {
    /// For each job, the earlier jobs it needs.
    needs: Vec<Vec<usize>>,
    outcomes: Vec<Outcome>,
    lenient: Vec<bool>,
    /// Jobs whose `when` is false.
    when_false: Vec<bool>,
    post: bool,
    /// After how many scheduler actions the run is cancelled, if at all.
    cancel_at: Option<usize>,
    /// Which held attempt ends next, as a choice among them.
    picks: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (1..8usize).prop_flat_map(|n| {
        let needs = (0..n)
            .map(|i| prop::collection::vec(0..i.max(1), 0..=i.min(3)))
            .collect::<Vec<_>>();
        (
            needs,
            prop::collection::vec(
                prop_oneof![3 => Just(Outcome::Succeed), 1 => Just(Outcome::Fail)],
                n,
            ),
            prop::collection::vec(prop::bool::weighted(0.2), n),
            prop::collection::vec(prop::bool::weighted(0.15), n),
            any::<bool>(),
            prop::option::weighted(0.4, 0..12usize),
            prop::collection::vec(0..4usize, 40),
        )
            .prop_map(
                |(needs, outcomes, lenient, when_false, post, cancel_at, picks)| {
                    let needs = needs
                        .into_iter()
                        .enumerate()
                        .map(|(i, mut n)| {
                            n.retain(|&need| need < i);
                            n.sort_unstable();
                            n.dedup();
                            n
                        })
                        .collect();
                    Case {
                        needs,
                        outcomes,
                        lenient,
                        when_false,
                        post,
                        cancel_at,
                        picks,
                    }
                },
            )
    })
}

fn yaml(case: &Case) -> String {
    let mut yaml = String::from("name: p\njobs:\n");
    for (i, needs) in case.needs.iter().enumerate() {
        let needs: Vec<String> = needs.iter().map(|n| format!("j{n}")).collect();
        yaml.push_str(&format!(
            "  j{i}: {{needs: [{}], continue_on_error: {}, steps: [{{run: x}}]{}}}\n",
            needs.join(", "),
            case.lenient[i],
            if case.when_false[i] {
                ", when: \"branch == 'never'\""
            } else {
                ""
            }
        ));
    }
    if case.post {
        yaml.push_str("post: {always: [{run: bye}]}\n");
    }
    yaml
}

fn failed() -> JobEvent {
    JobEvent::StepFailed {
        step: 0,
        failure: StepFailure::Exit(StepExit::code(1)),
    }
}

/// Drives a run to its end; checks every rule on the way; answers the recorded events.
fn drive(case: &Case) -> Result<(Sim, Vec<Move>), TestCaseError> {
    let mut sim = Sim::new(&yaml(case), RunInputs::default());
    let mut held: Vec<(JobRef, JobMachine)> = Vec::new();
    let mut every_move = Vec::new();
    let mut actions = 0;
    let mut picks = case.picks.iter().cycle();
    for _ in 0..200 {
        let cancelled_before = sim.run.state() == RunState::Cancelling;
        let moves = sim.advance();
        for m in &moves {
            match m {
                Move::Job(JobRef::Planned(i), JobEvent::NeedsMet) => {
                    prop_assert!(!cancelled_before, "j{i} made ready after the cancel");
                    for &need in &sim.plan.jobs[*i].needs {
                        let machine = sim.jobs[need].machine.as_ref();
                        let ok = machine.is_some_and(|m| {
                            m.state() == &JobState::Succeeded
                                || (m.policy().continue_on_error
                                    && matches!(
                                        m.state(),
                                        JobState::Failed { .. } | JobState::TimedOut
                                    ))
                        });
                        prop_assert!(ok, "j{i} ready before its need j{need} allowed it");
                    }
                }
                Move::Job(JobRef::Post, JobEvent::NeedsMet) => {
                    prop_assert!(sim.jobs.iter().all(JobSlot::is_done));
                }
                Move::StopAttempt(job) => {
                    prop_assert!(cancelled_before);
                    // The attempt stops and hands its job back cancelled.
                    if let Some(at) = held.iter().position(|(j, _)| j == job) {
                        let (job, machine) = held.remove(at);
                        sim.hand_back(job, machine, JobEvent::Cancel);
                    }
                }
                _ => {}
            }
        }
        every_move.extend(moves);
        if sim.run.is_terminal() {
            prop_assert!(held.is_empty(), "the run ended while attempts held jobs");
            return Ok((sim, every_move));
        }
        if cancelled_before {
            for slot in &sim.jobs {
                if let Some(machine) = &slot.machine {
                    prop_assert!(
                        !matches!(
                            machine.state(),
                            JobState::Pending | JobState::WaitingApproval
                        ),
                        "a pending job outlived the cancel: {machine:?}"
                    );
                }
            }
        }
        // The world acts: a cancel, a placement, or an attempt ending.
        actions += 1;
        if case.cancel_at == Some(actions) {
            let _ = sim
                .run
                .apply(RunEvent::Cancel { by: "ana".into() }, sim.now);
            continue;
        }
        let queued: Vec<JobRef> = (0..sim.jobs.len())
            .filter(|&i| sim.jobs[i].enqueued)
            .map(JobRef::Planned)
            .chain(sim.post.iter().filter(|p| p.enqueued).map(|_| JobRef::Post))
            .collect();
        let pick = *picks.next().unwrap_or(&0);
        if !queued.is_empty() && (held.is_empty() || pick.is_multiple_of(2)) {
            let job = queued[pick % queued.len()];
            let machine = sim.take(job);
            held.push((job, machine));
        } else if !held.is_empty() {
            let (job, machine) = held.remove(pick % held.len());
            let event = match job {
                JobRef::Planned(i) => match case.outcomes[i] {
                    Outcome::Succeed => JobEvent::Succeed,
                    Outcome::Fail => failed(),
                },
                JobRef::Post => JobEvent::Succeed,
            };
            sim.hand_back(job, machine, event);
        }
    }
    Err(TestCaseError::fail(
        "the run never ended: likely deadlocked",
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_run_ends_by_the_rules(case in case()) {
        let (sim, moves) = drive(&case)?;
        // The post hooks start once, the run finishes once.
        let post_starts = moves
            .iter()
            .filter(|m| **m == Move::Job(JobRef::Post, JobEvent::NeedsMet))
            .count();
        prop_assert_eq!(post_starts, usize::from(case.post));
        let finishes: Vec<&Verdict> = moves
            .iter()
            .filter_map(|m| match m {
                Move::Run(RunEvent::Finish(verdict)) => Some(verdict),
                _ => None,
            })
            .collect();
        prop_assert_eq!(finishes.len(), 1);
        let ended = sim.events.iter().filter(|e| matches!(
            e,
            DomainEvent::RunSucceeded { .. } | DomainEvent::RunFailed { .. } | DomainEvent::RunCancelled { .. }
        ));
        prop_assert_eq!(ended.count(), 1);
        // The verdict is the jobs'.
        let machines: Vec<&JobMachine> =
            sim.jobs.iter().filter_map(|s| s.machine.as_ref()).collect();
        prop_assert_eq!(machines.len(), sim.jobs.len());
        let expected = crate::state::verdict(machines.iter().copied());
        prop_assert_eq!(Some(finishes[0]), expected.as_ref());
        let cancelled = case.cancel_at.is_some() && sim.run.state() == RunState::Cancelled;
        for (i, machine) in machines.iter().enumerate() {
            let needs_ok = case.needs[i].iter().all(|&n| {
                let need = machines[n].state();
                need == &JobState::Succeeded
                    || (case.lenient[n] && matches!(need, JobState::Failed { .. }))
            });
            let needs_skipped = case.needs[i]
                .iter()
                .any(|&n| matches!(machines[n].state(), JobState::Skipped { .. }));
            match machine.state() {
                // `when` skips propagate to the jobs that need the skipped one.
                JobState::Skipped { reason: JobSkipReason::WhenFalse } => {
                    prop_assert!(case.when_false[i] && needs_ok);
                }
                JobState::Skipped { reason: JobSkipReason::NeedSkipped { .. } } => {
                    prop_assert!(needs_skipped);
                }
                JobState::Skipped { reason: JobSkipReason::NeedFailed { .. } } => {
                    prop_assert!(!needs_ok);
                }
                JobState::Skipped { reason: JobSkipReason::RunCancelled } => {
                    prop_assert!(cancelled);
                }
                JobState::Succeeded | JobState::Failed { .. } => {
                    prop_assert!(needs_ok && !case.when_false[i], "j{} ran: {:?}", i, machine);
                }
                JobState::Cancelled => prop_assert!(cancelled),
                other => prop_assert!(false, "j{} ended {:?}", i, other),
            }
        }
    }
}
